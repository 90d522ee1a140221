//! The file replica backend: Litestream's layout `<root>/ltx/<level>/<min>-<max>.ltx`, with the LTX
//! header timestamp kept as the file's mtime. Writes are atomic: a `.tmp` sibling is written, fsynced,
//! given its mtime, renamed into place, and the directory fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{FileInfo, ReplicaClient, ReplicaError};
use crate::replication::ltx;

#[derive(Debug, Clone)]
pub struct FileReplica {
    root: PathBuf,
}

impl FileReplica {
    pub fn new(root: impl Into<PathBuf>) -> FileReplica {
        FileReplica { root: root.into() }
    }

    pub fn level_dir(&self, level: u8) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }

    pub fn file_path(&self, level: u8, min: u64, max: u64) -> PathBuf {
        self.level_dir(level).join(ltx::file_name(min, max))
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ReplicaError + 'a {
    move |cause| ReplicaError::Io {
        op,
        path: path.to_path_buf(),
        cause,
    }
}

impl ReplicaClient for FileReplica {
    /// Every directory below the root holding an `ltx/<level>/` directory with an LTX file.
    fn databases_below(&self) -> Result<Vec<String>, ReplicaError> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ReplicaError> {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err("list", dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("list", dir))?;
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                if entry.file_name() == "ltx" {
                    let holds_ltx =
                        fs::read_dir(&path)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .any(|level| {
                                fs::read_dir(level.path())
                                    .into_iter()
                                    .flatten()
                                    .flatten()
                                    .any(|f| {
                                        f.file_name()
                                            .to_str()
                                            .and_then(ltx::parse_file_name)
                                            .is_some()
                                    })
                            });
                    if holds_ltx
                        && dir != root
                        && let Ok(rel) = dir.strip_prefix(root)
                    {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                    continue;
                }
                walk(root, &path, out)?;
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out)?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn ltx_files(&self, level: u8) -> Result<Vec<FileInfo>, ReplicaError> {
        let dir = self.level_dir(level);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some((min_txid, max_txid)) =
                entry.file_name().to_str().and_then(ltx::parse_file_name)
            else {
                continue;
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Deleted between readdir and stat (retention running concurrently).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &entry.path())(e)),
            };
            if !meta.is_file() {
                continue;
            }
            let created_at = meta.modified().map_err(io_err("stat", &entry.path()))?;
            files.push(FileInfo {
                level,
                min_txid,
                max_txid,
                size: meta.len(),
                created_at,
            });
        }
        files.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(files)
    }

    fn open_ltx(
        &self,
        level: u8,
        min: u64,
        max: u64,
    ) -> Result<Box<dyn Read + Send>, ReplicaError> {
        let path = self.file_path(level, min, max);
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ReplicaError::NotFound(path.display().to_string()))
            }
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    fn write_ltx(
        &self,
        level: u8,
        min: u64,
        max: u64,
        created_at: SystemTime,
        data: &mut dyn Read,
    ) -> Result<FileInfo, ReplicaError> {
        let dir = self.level_dir(level);
        create_dir_all_durable(&dir).map_err(io_err("create directory", &dir))?;
        let path = dir.join(ltx::file_name(min, max));
        let tmp = dir.join(format!("{}.tmp", ltx::file_name(min, max)));
        let result = write_tmp(&tmp, created_at, data).and_then(|size| {
            fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
            fsync_dir(&dir).map_err(io_err("fsync", &dir))?;
            Ok(size)
        });
        match result {
            Ok(size) => Ok(FileInfo {
                level,
                min_txid: min,
                max_txid: max,
                size,
                created_at,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn delete_ltx(&self, files: &[FileInfo]) -> Result<(), ReplicaError> {
        let mut dirs: Vec<u8> = Vec::new();
        for f in files {
            let path = self.file_path(f.level, f.min_txid, f.max_txid);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete", &path)(e)),
            }
            if !dirs.contains(&f.level) {
                dirs.push(f.level);
            }
        }
        for level in dirs {
            let dir = self.level_dir(level);
            match fsync_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("fsync", &dir)(e)),
            }
        }
        Ok(())
    }

    fn locate(&self, level: u8, min: u64, max: u64) -> String {
        self.file_path(level, min, max).display().to_string()
    }
}

fn write_tmp(tmp: &Path, created_at: SystemTime, data: &mut dyn Read) -> Result<u64, ReplicaError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    let mut w = BufWriter::with_capacity(256 * 1024, file);
    let size = io::copy(data, &mut w).map_err(io_err("write", tmp))?;
    let file = w
        .into_inner()
        .map_err(|e| io_err("write", tmp)(e.into_error()))?;
    // The mtime is the file's creation time for every reader: set it before the fsync makes it durable.
    set_mtime(&file, created_at).map_err(io_err("set mtime of", tmp))?;
    file.sync_all().map_err(io_err("fsync", tmp))?;
    Ok(size)
}

fn set_mtime(file: &File, t: SystemTime) -> io::Result<()> {
    let since = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => nix::sys::time::TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64),
        Err(_) => nix::sys::time::TimeSpec::new(0, 0),
    };
    let ts = since(t);
    nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(file), &ts, &ts)
        .map_err(io::Error::from)
}

/// `mkdir -p` that fsyncs the parent of every directory it creates, so the new path survives a crash.
pub(crate) fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => fsync_dir(parent),
        None => fsync_dir(Path::new(".")),
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn write_list_open_delete() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("a/b"));
        assert!(r.ltx_files(0).unwrap().is_empty(), "missing level is empty");

        let info = r
            .write_ltx(0, 2, 2, at(1_700_000_000_123), &mut &b"two"[..])
            .unwrap();
        assert_eq!(info.size, 3);
        r.write_ltx(0, 1, 1, at(1_700_000_000_000), &mut &b"one!"[..])
            .unwrap();
        r.write_ltx(0, 1, 3, at(1_700_000_001_000), &mut &b"x"[..])
            .unwrap();
        fs::write(r.level_dir(0).join("junk.ltx"), b"").unwrap();
        fs::write(
            r.level_dir(0)
                .join("0000000000000005-0000000000000005.ltx.tmp"),
            b"",
        )
        .unwrap();
        fs::write(
            r.level_dir(0).join("000000000000000A-000000000000000A.ltx"),
            b"",
        )
        .unwrap();

        let files = r.ltx_files(0).unwrap();
        let ranges: Vec<_> = files.iter().map(|f| (f.min_txid, f.max_txid)).collect();
        assert_eq!(ranges, [(1, 1), (1, 3), (2, 2)]);
        assert_eq!(files[0].size, 4);
        assert_eq!(
            files[2].created_at,
            at(1_700_000_000_123),
            "mtime carries the header timestamp"
        );
        assert!(
            r.file_path(0, 2, 2)
                .ends_with("ltx/0/0000000000000002-0000000000000002.ltx")
        );
        assert!(
            !r.level_dir(0)
                .join("0000000000000002-0000000000000002.ltx.tmp")
                .exists()
        );

        let mut s = String::new();
        r.open_ltx(0, 2, 2).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "two");
        assert!(matches!(
            r.open_ltx(0, 9, 9),
            Err(ReplicaError::NotFound(_))
        ));

        r.delete_ltx(&files[..2]).unwrap();
        r.delete_ltx(&files[..2]).unwrap(); // already gone: fine
        assert_eq!(r.ltx_files(0).unwrap().len(), 1);
    }

    #[test]
    fn failed_source_leaves_nothing() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("source broke"));
                }
                self.0 -= 1;
                buf[0] = 7;
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path());
        let err = r.write_ltx(1, 1, 5, at(0), &mut Failing(10)).unwrap_err();
        assert!(err.to_string().contains("source broke"), "{err}");
        assert_eq!(
            fs::read_dir(r.level_dir(1)).unwrap().count(),
            0,
            "no file and no temp file"
        );
    }
}
