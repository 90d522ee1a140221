//! `litevisor ltx` prints exactly what `litestream ltx` prints (text and JSON, one level or all) for a
//! replica written by real Litestream, refuses bad levels and database paths clearly, and ignores files
//! that are not LTX names (temp files, uppercase hex, other widths), as Litestream does.

mod support;

mod restore_support;

use std::fs;

use restore_support::*;

#[test]
fn listing_matches_litestream() {
    let fx = build(
        4096,
        &[
            Burst::Insert { n: 10, size: 1000 },
            Burst::Insert { n: 2, size: 10 },
        ],
    );
    let replica = fx.copy_replica("listed");
    // Junk that both tools must ignore.
    let l0 = replica.join("ltx/0");
    fs::write(
        l0.join("0000000000000009-0000000000000009.ltx.tmp"),
        b"partial",
    )
    .unwrap();
    fs::write(l0.join("000000000000000A-000000000000000A.ltx"), b"upper").unwrap();
    fs::write(l0.join("00000009-00000009.ltx"), b"narrow").unwrap();
    let url = format!("file://{}", replica.display());

    for level in ["0", "1", "9", "all", "5"] {
        for json in [false, true] {
            let mut args = vec!["ltx", "-level", level];
            if json {
                args.push("-json");
            }
            args.push(&url);
            let (ours, theirs) = (litevisor(&args), litestream(&args));
            assert!(ours.status.success(), "{}", text(&ours));
            assert!(theirs.status.success(), "{}", text(&theirs));
            assert_eq!(
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&theirs.stdout),
                "{args:?}"
            );
        }
    }
    let all = litevisor(&["ltx", "-level", "all", &url]);
    let out = String::from_utf8_lossy(&all.stdout);
    assert!(
        out.starts_with("level  min_txid          max_txid          size"),
        "{out}"
    );
    assert!(out.lines().count() > fx.max_txid() as usize, "{out}");

    let o = litevisor(&["ltx", "-level", "10", &url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid -level"),
        "{}",
        text(&o)
    );
    let o = litevisor(&["ltx", "/var/lib/app.db"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("replica URL"),
        "{}",
        text(&o)
    );
    // A replica with nothing yet: header only, and an empty JSON array.
    let empty = fx.dir.path().join("empty");
    let eu = format!("file://{}", empty.display());
    assert_eq!(
        String::from_utf8_lossy(&litevisor(&["ltx", &eu]).stdout),
        "level  min_txid  max_txid  size  created\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&litevisor(&["ltx", "-json", &eu]).stdout),
        "[]\n"
    );
}
