//! Interop of the LTX codec with the real Litestream 0.5.17 binary, both directions:
//! - every file `litestream replicate` writes (L0 incrementals, L1 compactions, L9 snapshots, the
//!   local staging copies) decodes with a verified checksum, and merging the chain with `Merger`
//!   yields byte-for-byte the database `litestream restore` produces;
//! - a replica written only by litevisor's `Encoder` (legacy frame or block pages) is restored by
//!   `litestream restore` into a database that passes `PRAGMA integrity_check` and holds the same rows
//!   (and the same bytes) as the source, at the latest TXID and at an earlier `-txid`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use litevisor::replication::ltx::*;
use rusqlite::Connection;

fn litestream() -> Command {
    let mut c = Command::new("litestream");
    // Litestream 0.5.17's S3 client refuses to start when AWS_CA_BUNDLE is set.
    c.env_remove("AWS_CA_BUNDLE");
    c
}

fn rows(db: &Path) -> Vec<(i64, String)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn integrity_check(db: &Path) -> String {
    let conn = Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn restore(replica: &Path, out: &Path, txid: Option<u64>) {
    let mut cmd = litestream();
    cmd.arg("restore").arg("-o").arg(out);
    if let Some(txid) = txid {
        cmd.arg("-txid").arg(format!("{txid:016x}"));
    }
    let url = format!("file://{}", replica.display());
    let output = cmd.arg(&url).output().expect("run litestream restore");
    assert!(
        output.status.success(),
        "litestream restore {url} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ltx_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
            .is_some()
    });
    files.sort();
    files
}

/// Decodes a whole file, verifying everything; returns its header and page numbers.
fn decode_file(path: &Path) -> (Header, Vec<u32>) {
    let f = fs::File::open(path).unwrap();
    let mut dec = Decoder::new(std::io::BufReader::new(f))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = *dec.header();
    let mut buf = vec![0u8; header.page_size as usize];
    let mut pgnos = Vec::new();
    while let Some(pgno) = dec
        .next_page(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    {
        pgnos.push(pgno);
    }
    let trailer = dec
        .finish()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(trailer.post_apply_checksum, 0);
    (header, pgnos)
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn decodes_and_merges_what_litestream_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let replica = dir.path().join("replica");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=wal;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) INSERT INTO t(v) SELECT hex(randomblob(200)) FROM s;",
    )
    .unwrap();
    let child = litestream()
        .arg("replicate")
        .arg(&db)
        .arg(format!("file://{}", replica.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start litestream replicate");

    // Several syncs, each a separate L0 file; one of them deletes rows (freed pages) and one grows.
    let l0 = replica.join("ltx/0");
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while ltx_files(&l0).len() < 5 && Instant::now() < deadline {
        let sql = match round % 3 {
            0 => {
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100) INSERT INTO t(v) SELECT hex(randomblob(500)) FROM s;"
            }
            1 => "DELETE FROM t WHERE id % 7 = 0;",
            _ => "UPDATE t SET v = 'x' || v WHERE id % 5 = 0;",
        };
        conn.execute_batch(sql).unwrap();
        round += 1;
        std::thread::sleep(Duration::from_millis(1200));
    }
    stop(child);
    drop(conn);
    let l0_files = ltx_files(&l0);
    assert!(
        l0_files.len() >= 5,
        "litestream wrote only {} L0 files",
        l0_files.len()
    );

    // Every file Litestream wrote, at every level and in its local staging dir, decodes and verifies.
    let mut checked = 0;
    for level_dir in [
        replica.join("ltx/0"),
        replica.join("ltx/1"),
        replica.join("ltx/9"),
        dir.path().join(".db.sqlite-litestream/ltx/0"),
    ] {
        for path in ltx_files(&level_dir) {
            let (header, pgnos) = decode_file(&path);
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                parse_file_name(name),
                Some((header.min_txid, header.max_txid)),
                "{name}"
            );
            assert_eq!(header.flags, HEADER_FLAG_NO_CHECKSUM);
            assert!(!pgnos.is_empty());
            if header.is_snapshot() {
                assert_eq!(
                    pgnos.len() as u32,
                    header.commit,
                    "{name}: snapshot holds every page"
                );
            }
            let mtime = fs::metadata(&path).unwrap().modified().unwrap();
            let mtime_ms = mtime.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
            if level_dir.starts_with(&replica) {
                assert_eq!(
                    mtime_ms, header.timestamp_ms,
                    "{name}: file mtime is the header timestamp"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 7);

    // Our Merger over L0 1..N must produce exactly the database Litestream restores.
    let decoders: Vec<_> = l0_files
        .iter()
        .map(|p| Decoder::new(std::io::BufReader::new(fs::File::open(p).unwrap())).unwrap())
        .collect();
    let mut merger = Merger::new(decoders).unwrap();
    let merged = merger.header();
    assert_eq!(merged.min_txid, 1);
    assert_eq!(merged.max_txid, l0_files.len() as u64);
    let mut ours = Vec::new();
    let mut buf = vec![0u8; merged.page_size as usize];
    let mut expect = 1;
    while let Some(pgno) = merger.next_page(&mut buf).unwrap() {
        assert_eq!(pgno, expect, "merged chain is missing pages");
        ours.extend_from_slice(&buf);
        expect += 1;
    }
    merger.finish().unwrap();
    assert_eq!(expect - 1, merged.commit);

    let restored = dir.path().join("restored.db");
    restore(&replica, &restored, None);
    let theirs = fs::read(&restored).unwrap();
    assert!(
        ours == theirs,
        "merged pages differ from litestream restore ({} vs {} bytes)",
        ours.len(),
        theirs.len()
    );
    assert_eq!(rows(&restored), rows(&db));
}

/// One committed state of a rollback-journal database: its file bytes and its rows.
struct Version {
    bytes: Vec<u8>,
    rows: Vec<(i64, String)>,
}

fn page_size_of(bytes: &[u8]) -> u32 {
    match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        n => u32::from(n),
    }
}

fn write_replica_file(
    replica: &Path,
    level: u8,
    header: &Header,
    pages: &[(u32, &[u8])],
    enc: PageEncoding,
) {
    let dir = replica.join(format!("ltx/{level}"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file_name(header.min_txid, header.max_txid));
    let mut e = Encoder::new(
        std::io::BufWriter::new(fs::File::create(&path).unwrap()),
        header,
        enc,
    )
    .unwrap();
    for (pgno, data) in pages {
        e.encode_page(*pgno, data).unwrap();
    }
    let (w, _) = e.finish().unwrap();
    let f = w.into_inner().unwrap();
    // The first page header says which encoding the file really uses.
    let bytes = fs::read(&path).unwrap();
    let flags = u16::from_be_bytes([bytes[HEADER_SIZE + 4], bytes[HEADER_SIZE + 5]]);
    assert_eq!(flags, if enc == PageEncoding::Frame { 0 } else { 1 });
    f.sync_all().unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_millis(header.timestamp_ms as u64))
        .unwrap();
}

/// Builds three versions of a real database, then a replica of them written only by our Encoder:
/// an L9 snapshot of version 1 and L0 files holding the pages that changed in versions 2 and 3.
fn litestream_restores_our_replica(encoding: PageEncoding) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=delete; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE b(x BLOB);",
    )
    .unwrap();
    let steps = [
        // Hex text compresses about 2:1, the padding very well, raw random blobs (overflow pages) not
        // at all: LZ4 stores those blocks uncompressed.
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400) INSERT INTO t(v) SELECT hex(randomblob(300)) || printf('%.500c', 'a') FROM s;",
        "UPDATE t SET v = 'updated ' || id WHERE id % 3 = 0; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) INSERT INTO t(v) SELECT hex(randomblob(2000)) FROM s;",
        "DELETE FROM t WHERE id % 2 = 0; INSERT INTO b SELECT randomblob(3000) FROM t LIMIT 20; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200) INSERT INTO t(v) SELECT hex(randomblob(800)) FROM s;",
    ];
    let mut versions = Vec::new();
    for sql in steps {
        conn.execute_batch(sql).unwrap();
        versions.push(Version {
            bytes: fs::read(&db).unwrap(),
            rows: rows(&db),
        });
    }
    drop(conn);

    let replica = dir.path().join("replica");
    let page_size = page_size_of(&versions[0].bytes);
    let ps = page_size as usize;
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    for (i, v) in versions.iter().enumerate() {
        let txid = i as u64 + 1;
        let commit = (v.bytes.len() / ps) as u32;
        let pages: Vec<(u32, &[u8])> = v
            .bytes
            .chunks(ps)
            .enumerate()
            .map(|(n, data)| (n as u32 + 1, data))
            .filter(|(pgno, data)| {
                // An incremental file holds the pages that differ from the previous version.
                i == 0
                    || versions[i - 1]
                        .bytes
                        .get((*pgno as usize - 1) * ps..*pgno as usize * ps)
                        != Some(*data)
            })
            .collect();
        assert!(!pages.is_empty());
        let header = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: base_ms + i as i64 * 1000,
            ..Header::default()
        };
        let level = if txid == 1 { SNAPSHOT_LEVEL } else { 0 };
        write_replica_file(&replica, level, &header, &pages, encoding);
    }

    for (txid, v) in [(None, &versions[2]), (Some(2), &versions[1])] {
        let out = dir.path().join(format!("restored-{txid:?}.db"));
        restore(&replica, &out, txid);
        assert_eq!(integrity_check(&out), "ok");
        assert_eq!(rows(&out), v.rows, "rows after restoring txid {txid:?}");
        assert!(
            fs::read(&out).unwrap() == v.bytes,
            "restored bytes differ at txid {txid:?}"
        );
    }
}

#[test]
fn litestream_restores_frame_encoded_replica() {
    litestream_restores_our_replica(PageEncoding::Frame);
}

#[test]
fn litestream_restores_block_encoded_replica() {
    litestream_restores_our_replica(PageEncoding::Block);
}
