//! Materializing a planned restore: every chosen file streamed through one [`Merger`] (one page
//! buffer per file, never the database in memory) into `<out>.tmp`, every page 1..=commit checked
//! to arrive in order (the lock page written as zeros), every file checksum verified by the
//! merger, optionally SQLite's integrity check, and only then the rename over `out`. On any
//! failure the temp file is removed and an existing `out` is untouched.

use super::*;

/// A decoder over one replica file of a restore chain.
pub(crate) type ChainDecoder = Decoder<BufReader<Box<dyn Read + Send>>>;

/// Opens the files of a chain as decoders (in order), naming the file in any error.
pub(crate) fn open_chain(
    replica: &dyn ReplicaClient,
    files: &[FileInfo],
) -> Result<Vec<ChainDecoder>, RestoreError> {
    raise_open_file_limit();
    // Large reads for few files, smaller buffers when a chain is long, to keep memory bounded.
    let capacity = (32 << 20) / files.len().max(1);
    let capacity = capacity.clamp(16 << 10, 1 << 20);
    let mut decoders = Vec::with_capacity(files.len());
    let readers = replica.open_ltx_many(files)?;
    for (f, r) in files.iter().zip(readers) {
        let name = || replica.locate(f.level, f.min_txid, f.max_txid);
        let dec = Decoder::new(BufReader::with_capacity(capacity, r)).map_err(|source| {
            RestoreError::File {
                file: name(),
                source,
            }
        })?;
        let h = dec.header();
        if (h.min_txid, h.max_txid) != (f.min_txid, f.max_txid) {
            return Err(RestoreError::File {
                file: name(),
                source: LtxError::InvalidHeader(format!(
                    "header says TXIDs {:016x}-{:016x}, the file name says otherwise",
                    h.min_txid, h.max_txid
                )),
            });
        }
        decoders.push(dec);
    }
    Ok(decoders)
}

/// Maps a merger error to the name of the input it came from (`names[i]` names input `i`).
pub(crate) fn named_error(names: &[String], e: LtxError) -> RestoreError {
    match e {
        LtxError::Input { index, source, .. } if index < names.len() => RestoreError::File {
            file: names[index].clone(),
            source: *source,
        },
        LtxError::NonContiguous { .. } => {
            RestoreError::Chain(format!("restore chain is broken: {e}"))
        }
        other => RestoreError::Chain(other.to_string()),
    }
}

/// Chains longer than this are merged in batches through temporary LTX files next to the output, so
/// open files and page buffers stay bounded whatever the replica looks like.
const MAX_MERGE_INPUTS: usize = if cfg!(test) { 3 } else { 256 };

pub(crate) type ChainMerger = Merger<BufReader<Box<dyn Read + Send>>>;

/// A merger over the whole chain, plus the names of its inputs and the intermediate file (if any) it
/// reads, which must live as long as the merger.
pub(crate) fn open_merger(
    replica: &dyn ReplicaClient,
    files: &[FileInfo],
    tmp: &Path,
) -> Result<(ChainMerger, Vec<String>, Option<TempFile>), RestoreError> {
    let mut carried: Option<TempFile> = None;
    let mut rest = files;
    let mut round = 0;
    loop {
        let take = rest
            .len()
            .min(MAX_MERGE_INPUTS - usize::from(carried.is_some()));
        let (batch, after) = rest.split_at(take);
        let mut names = Vec::with_capacity(take + 1);
        let mut decoders = Vec::with_capacity(take + 1);
        if let Some(c) = &carried {
            let name = format!("intermediate merge file {}", c.0.display());
            let r: Box<dyn Read + Send> = Box::new(File::open(&c.0).map_err(io_err("open", &c.0))?);
            let dec = Decoder::new(BufReader::with_capacity(1 << 20, r)).map_err(|source| {
                RestoreError::File {
                    file: name.clone(),
                    source,
                }
            })?;
            decoders.push(dec);
            names.push(name);
        }
        decoders.extend(open_chain(replica, batch)?);
        names.extend(
            batch
                .iter()
                .map(|f| replica.locate(f.level, f.min_txid, f.max_txid)),
        );
        let merger = Merger::new(decoders).map_err(|e| named_error(&names, e))?;
        if after.is_empty() {
            return Ok((merger, names, carried));
        }
        round += 1;
        let mut path = tmp.as_os_str().to_owned();
        path.push(format!(".merge{round}"));
        let next = TempFile(PathBuf::from(path));
        fold(merger, &next.0, &names)?;
        carried = Some(next); // drops (removes) the previous intermediate file
        rest = after;
    }
}

/// Writes a merged batch as one LTX file (block encoding: only this process reads it).
fn fold(mut merger: ChainMerger, path: &Path, names: &[String]) -> Result<(), RestoreError> {
    let header = merger.header();
    let file = File::create(path).map_err(io_err("create", path))?;
    let encode_err =
        |source| RestoreError::Chain(format!("cannot write {}: {source}", path.display()));
    let mut enc = ltx::Encoder::new(
        BufWriter::with_capacity(1 << 20, file),
        &header,
        ltx::PageEncoding::Block,
    )
    .map_err(encode_err)?;
    let mut page = vec![0u8; header.page_size as usize];
    while let Some(pgno) = merger
        .next_page(&mut page)
        .map_err(|e| named_error(names, e))?
    {
        enc.encode_page(pgno, &page).map_err(encode_err)?;
    }
    merger.finish().map_err(|e| named_error(names, e))?;
    let (w, _) = enc.finish().map_err(encode_err)?;
    w.into_inner()
        .map_err(|e| io_err("write", path)(e.into_error()))?;
    Ok(())
}

/// Materializes an already planned chain into `out` (see the module doc).
pub fn restore_files(
    replica: &dyn ReplicaClient,
    files: &[FileInfo],
    out: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let first = files.first().ok_or(RestoreError::TxNotAvailable)?;
    if first.min_txid != 1 {
        return Err(RestoreError::MissingFirstTxid {
            min: first.min_txid,
            file: replica.locate(first.level, first.min_txid, first.max_txid),
        });
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dir_all_durable(&dir).map_err(io_err("create directory", &dir))?;
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = TempFile(PathBuf::from(tmp_name));

    let (page_size, pages) = write_database(replica, files, &tmp.0, opts.progress)?;
    if opts.integrity_check != IntegrityCheck::None {
        integrity_check(&tmp.0, opts.integrity_check)?;
    }
    // A stale -wal/-journal next to the new file would be applied to it by SQLite: remove them now
    // that the restore is complete (the caller already refused, or was told to -force, if any existed).
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = out.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &p)(e)),
            _ => {}
        }
    }
    fs::rename(&tmp.0, out).map_err(io_err("rename restored database to", out))?;
    std::mem::forget(tmp);
    fsync_dir(&dir).map_err(io_err("fsync", &dir))?;
    let txid = files.last().map_or(0, |f| f.max_txid);
    Ok(RestoreReport {
        txid,
        page_size,
        pages,
        files: files.to_vec(),
    })
}

/// Removes the temp output unless the restore got as far as renaming it.
pub(crate) struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        for suffix in ["-wal", "-shm"] {
            let mut p = self.0.as_os_str().to_owned();
            p.push(suffix);
            let _ = fs::remove_file(PathBuf::from(p));
        }
    }
}

fn write_database(
    replica: &dyn ReplicaClient,
    files: &[FileInfo],
    tmp: &Path,
    progress: bool,
) -> Result<(u32, u32), RestoreError> {
    let (mut merger, names, _intermediate) = open_merger(replica, files, tmp)?;
    let header = merger.header();
    let (page_size, commit) = (header.page_size, header.commit);
    let lock = ltx::lock_pgno(page_size);

    let file = File::create(tmp).map_err(io_err("create", tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut page = vec![0u8; page_size as usize];
    let zeros = vec![0u8; page_size as usize];
    let mut progress = Progress::new(progress && io::stderr().is_terminal(), commit);
    let mut expected: u32 = 1;
    let last_file = || {
        let f = &files[files.len() - 1];
        replica.locate(f.level, f.min_txid, f.max_txid)
    };
    while let Some(pgno) = merger
        .next_page(&mut page)
        .map_err(|e| named_error(&names, e))?
    {
        if expected == lock && pgno != lock {
            w.write_all(&zeros).map_err(io_err("write", tmp))?;
            expected += 1;
        }
        if pgno != expected {
            return Err(RestoreError::Chain(format!(
                "restore chain ending with {} is missing page {expected} (next page present is {pgno}; \
                 the database has {commit} pages)",
                last_file()
            )));
        }
        w.write_all(&page).map_err(io_err("write", tmp))?;
        expected += 1;
        progress.update(pgno);
    }
    if expected == lock && lock == commit {
        w.write_all(&zeros).map_err(io_err("write", tmp))?;
        expected += 1;
    }
    if expected - 1 != commit {
        return Err(RestoreError::Chain(format!(
            "restore chain ending with {} holds pages 1..{} but the database has {commit} pages",
            last_file(),
            expected - 1
        )));
    }
    merger.finish().map_err(|e| named_error(&names, e))?;
    let file = w
        .into_inner()
        .map_err(|e| io_err("write", tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("fsync", tmp))?;
    let len = file.metadata().map_err(io_err("stat", tmp))?.len();
    if len != u64::from(commit) * u64::from(page_size) {
        return Err(RestoreError::Chain(format!(
            "restored file {} is {len} bytes, expected {commit} pages of {page_size} bytes",
            tmp.display()
        )));
    }
    progress.done();
    Ok((page_size, commit))
}

/// Runs `PRAGMA quick_check`/`integrity_check` on the (not yet renamed) restored file, read-only and
/// without creating sidecar files (`immutable=1`).
pub fn integrity_check(path: &Path, mode: IntegrityCheck) -> Result<(), RestoreError> {
    let pragma = match mode {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "quick_check",
        IntegrityCheck::Full => "integrity_check",
    };
    let fail = |result: String| RestoreError::Integrity {
        path: path.to_path_buf(),
        result,
    };
    let uri = format!("file:{}?immutable=1", uri_escape(&path.to_string_lossy()));
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn =
        rusqlite::Connection::open_with_flags(uri, flags).map_err(|e| fail(e.to_string()))?;
    let mut stmt = conn
        .prepare(&format!("PRAGMA {pragma}"))
        .map_err(|e| fail(e.to_string()))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| fail(e.to_string()))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(fail(rows.join("; ")))
    }
}

fn uri_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        match c {
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

/// Go raises RLIMIT_NOFILE's soft limit to the hard limit at startup; a long restore chain holds one
/// descriptor per file, so do the same before opening it.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A carriage-return progress line on stderr, redrawn at most every 200ms.
struct Progress {
    enabled: bool,
    total: u32,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new(enabled: bool, total: u32) -> Progress {
        Progress {
            enabled,
            total,
            started: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, pgno: u32) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        if self.last.is_none() && self.started.elapsed() < Duration::from_millis(500) {
            return; // small restores finish before a progress line is worth drawing
        }
        self.last = Some(Instant::now());
        let pct = u64::from(pgno) * 100 / u64::from(self.total.max(1));
        eprint!("\rrestoring: {pgno}/{} pages ({pct}%)", self.total);
    }

    fn done(&mut self) {
        if self.enabled && self.last.is_some() {
            eprintln!("\rrestoring: {0}/{0} pages (100%)", self.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::replica::file::FileReplica;
    use crate::replication::ltx::{Encoder, HEADER_FLAG_NO_CHECKSUM, Header, PageEncoding};

    const PS: u32 = 1024;

    /// Writes an LTX file holding `pages` (pgno, fill byte) to the replica.
    fn put(r: &FileReplica, level: u8, min: u64, max: u64, commit: u32, pages: &[(u32, u8)]) {
        let header = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: PS,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1_700_000_000_000 + max as i64,
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &header, PageEncoding::Frame).unwrap();
        for &(pgno, fill) in pages {
            enc.encode_page(pgno, &vec![fill; PS as usize]).unwrap();
        }
        let (bytes, _) = enc.finish().unwrap();
        let at = timestamp_to_time(header.timestamp_ms);
        r.write_ltx(level, min, max, at, &mut bytes.as_slice())
            .unwrap();
    }

    fn restore_to(
        r: &FileReplica,
        target: Target,
        out: &Path,
    ) -> Result<RestoreReport, RestoreError> {
        restore(r, target, out, &RestoreOptions::default())
    }

    #[test]
    fn newest_page_wins_and_file_is_truncated_to_commit() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("replica"));
        put(&r, 0, 1, 1, 3, &[(1, 1), (2, 2), (3, 3)]);
        put(&r, 0, 2, 2, 4, &[(2, 20), (4, 40)]);
        put(&r, 0, 3, 3, 2, &[(1, 10)]); // shrink to 2 pages
        let out = dir.path().join("out.db");
        let report = restore_to(&r, Target::Latest, &out).unwrap();
        assert_eq!((report.txid, report.pages, report.page_size), (3, 2, PS));
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len(), 2 * PS as usize);
        assert_eq!((bytes[0], bytes[PS as usize]), (10, 20));
        let out2 = dir.path().join("out2.db");
        restore_to(&r, Target::Txid(2), &out2).unwrap();
        let bytes = fs::read(&out2).unwrap();
        assert_eq!(bytes.len(), 4 * PS as usize);
        assert_eq!(
            bytes
                .iter()
                .step_by(PS as usize)
                .copied()
                .collect::<Vec<_>>(),
            [1, 20, 3, 40]
        );
    }

    /// `dir` holds `n` entries.
    #[track_caller]
    fn assert_entries(dir: &Path, n: usize, why: &str) {
        let left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), n, "{why}: {left:?}");
    }

    #[test]
    fn long_chains_are_merged_in_batches_with_the_same_result() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("replica"));
        put(&r, 0, 1, 1, 2, &[(1, 1), (2, 2)]);
        for t in 2..=8u64 {
            // Each TXID rewrites page 1 and grows the database by one page.
            let grown = t as u32 + 1;
            put(&r, 0, t, t, grown, &[(1, t as u8), (grown, 100 + t as u8)]);
        }
        let out = dir.path().join("out.db");
        let report = restore_to(&r, Target::Latest, &out).unwrap();
        assert_eq!((report.txid, report.pages, report.files.len()), (8, 9, 8));
        let bytes = fs::read(&out).unwrap();
        let firsts: Vec<u8> = bytes.iter().step_by(PS as usize).copied().collect();
        assert_eq!(firsts, [8, 2, 102, 103, 104, 105, 106, 107, 108]);
        assert_entries(dir.path(), 2, "only the replica and the output remain");

        // A corrupt file folded into an intermediate merge is still named.
        let victim = r.file_path(0, 2, 2);
        let mut b = fs::read(&victim).unwrap();
        let n = b.len();
        b[n - 3] ^= 1;
        fs::write(&victim, b).unwrap();
        let err = restore_to(&r, Target::Latest, &dir.path().join("x.db"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&victim.display().to_string()), "{err}");
        assert_entries(dir.path(), 2, "temp and intermediate files removed");
    }

    #[test]
    fn missing_growth_page_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("replica"));
        put(&r, 0, 1, 1, 2, &[(1, 1), (2, 2)]);
        put(&r, 0, 2, 2, 4, &[(4, 4)]); // grew to 4 pages but page 3 is nowhere
        let out = dir.path().join("out.db");
        fs::write(&out, b"keep").unwrap();
        let err = restore_to(&r, Target::Latest, &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing page 3"), "{err}");
        assert_eq!(fs::read(&out).unwrap(), b"keep");
        assert!(!dir.path().join("out.db.tmp").exists());
    }

    #[test]
    fn chain_must_start_at_txid_1_and_names_must_match_headers() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("replica"));
        put(&r, 0, 2, 2, 1, &[(1, 1)]);
        let files = r.ltx_files(0).unwrap();
        let out = dir.path().join("out.db");
        let err = restore_files(&r, &files, &out, &RestoreOptions::default()).unwrap_err();
        assert!(
            matches!(err, RestoreError::MissingFirstTxid { min: 2, .. }),
            "{err}"
        );

        // A file whose name disagrees with its header (renamed by hand) is refused by name.
        put(&r, 1, 1, 1, 1, &[(1, 1)]);
        let src = r.file_path(1, 1, 1);
        fs::rename(&src, r.file_path(1, 1, 2)).unwrap();
        let err = restore_to(&r, Target::Latest, &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0000000000000001-0000000000000002.ltx"),
            "{err}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn integrity_check_runs_on_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("replica"));
        // Two pages of junk: not a SQLite database at all.
        put(&r, 0, 1, 1, 2, &[(1, 7), (2, 7)]);
        let out = dir.path().join("out.db");
        let opts = RestoreOptions {
            integrity_check: IntegrityCheck::Quick,
            progress: false,
        };
        let err = restore(&r, Target::Latest, &out, &opts).unwrap_err();
        assert!(matches!(err, RestoreError::Integrity { .. }), "{err}");
        assert!(!out.exists() && !dir.path().join("out.db.tmp").exists());
    }
}
