//! Service output: every line reaches litevisor's stdout or stderr (the stream the service used)
//! whole, prefixed with `[name] `, even with services writing concurrently, even when longer than
//! the read buffer; a last line without a newline is completed; the prefix can be turned off.

mod support;

mod supervisor_support;

use std::collections::BTreeMap;

use supervisor_support::*;

const LINES: usize = 3000;

#[test]
fn concurrent_lines_stay_whole_and_prefixed() {
    // Two services print LINES lines each on stdout and on stderr as fast as they can; a third
    // prints one 200 KB line in the middle of it all.
    let payload = "x".repeat(150);
    let printer = |name: &str| {
        format!(
            r#"
[services.{name}]
type = "oneshot"
command = ["sh", "-c", "i=0; while [ $i -lt {LINES} ]; do echo {name}-$i-{payload}; echo {name}-err-$i >&2; i=$((i+1)); done"]
"#
        )
    };
    let mut config = printer("alpha");
    config.push_str(&printer("beta"));
    config.push_str(
        r#"
[services.big]
type = "oneshot"
command = ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' 'y'; echo; printf 'tail-without-newline'"]

[services.plain]
type = "oneshot"
log_prefix = false
command = ["sh", "-c", "echo unprefixed line"]
"#,
    );
    let s = Setup::new(&config);
    let mut lv = s.start(Mode::Direct, &[]);
    // Every service is a oneshot: the container ends when they all have.
    assert_eq!(lv.wait(PATIENCE), 0, "{}", s.stderr());

    let stdout = s.stdout();
    let stderr = s.stderr();
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    let mut big = 0;
    let mut tail = 0;
    let mut plain = 0;
    for line in stdout.lines() {
        if line == "unprefixed line" {
            plain += 1;
            continue;
        }
        let (prefix, rest) = line
            .split_once("] ")
            .unwrap_or_else(|| panic!("unprefixed or torn line: {:.200}", line));
        match prefix {
            "[alpha" | "[beta" => {
                let name = &prefix[1..];
                let expected = next
                    .entry(if name == "alpha" { "alpha" } else { "beta" })
                    .or_default();
                assert_eq!(
                    rest,
                    format!("{name}-{expected}-{payload}"),
                    "torn or out of order"
                );
                *expected += 1;
            }
            "[big" if rest == "tail-without-newline" => tail += 1,
            "[big" => {
                assert_eq!(rest.len(), 200_000, "the long line is whole");
                assert!(
                    rest.bytes().all(|b| b == b'y'),
                    "nothing inside the long line"
                );
                big += 1;
            }
            other => panic!("unexpected prefix {other:?}"),
        }
    }
    assert_eq!(next.get("alpha"), Some(&LINES));
    assert_eq!(next.get("beta"), Some(&LINES));
    assert_eq!((big, tail, plain), (1, 1, 1));
    assert!(stdout.ends_with('\n'));

    // Stderr: the services' lines, prefixed, intact, beside litevisor's own log lines.
    for name in ["alpha", "beta"] {
        let got: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("[{name}] ")))
            .collect();
        let want: Vec<String> = (0..LINES).map(|i| format!("{name}-err-{i}")).collect();
        assert_eq!(got, want, "{name} stderr lines");
    }
}
