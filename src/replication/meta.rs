//! The local meta directory, laid out exactly like Litestream's so either tool can take over the
//! other's state: `<dir>/.<dbfile>-litestream/ltx/0/<min>-<max>.ltx` holds the L0 staging files (one
//! per sync, `T-T`), written through `*.tmp` + fsync + rename + directory fsync. The newest L0 header
//! is the replication position. litevisor adds one file of its own, `litevisor.lock`, the
//! single-replicator lock.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::replication::ltx::{
    self, Decoder, Encoder, HEADER_SIZE, Header, LtxError, PageEncoding,
};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("L0 file {path}: {source}")]
    Ltx { path: PathBuf, source: LtxError },
    #[error(
        "database {db} is already being replicated by another litevisor ({holder}, lock {path}); \
         two replicators would fork the replica's history",
        db = .db.display(),
        path = .path.display()
    )]
    Locked {
        db: PathBuf,
        path: PathBuf,
        /// `pid N on host H` as the holder recorded it, or `pid unknown`.
        holder: String,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + use<> {
    let path = path.to_path_buf();
    move |source| MetaError::Io { op, path, source }
}

/// Exclusive advisory lock on the meta directory, held for the replicator's lifetime.
#[derive(Debug)]
pub struct MetaLock {
    _lock: Flock<File>,
}

#[derive(Clone, Debug)]
pub struct Meta {
    dir: PathBuf,
}

impl Meta {
    pub fn new(dir: PathBuf) -> Meta {
        Meta { dir }
    }

    pub fn l0_dir(&self) -> PathBuf {
        self.dir.join("ltx").join("0")
    }

    pub fn l0_path(&self, txid: u64) -> PathBuf {
        self.l0_dir().join(ltx::file_name(txid, txid))
    }

    /// Creates the directories and removes temp files a crash may have left (like Litestream's Open).
    pub fn prepare(&self) -> Result<(), MetaError> {
        let dir = self.l0_dir();
        fs::create_dir_all(&dir).map_err(io("create meta directory", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Takes the single-replicator lock on `db`'s meta directory (creating it), non-blocking: a second
    /// replicator gets an error naming the database and the holder. flock(2) is released by the
    /// kernel when the holder dies, so a crash never leaves a stale lock; it works between containers
    /// sharing the volume because they share the kernel. The holder writes `pid host` into the file
    /// only so the refusal can name it (in the holder's PID namespace; the host name tells containers
    /// apart).
    pub fn lock(&self, db: &Path) -> Result<MetaLock, MetaError> {
        fs::create_dir_all(&self.dir).map_err(io("create meta directory", &self.dir))?;
        let path = self.dir.join("litevisor.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io("open lock file", &path))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| {
                        let mut it = s.split_whitespace();
                        let pid = it.next()?.parse::<u32>().ok()?;
                        Some(match it.next() {
                            Some(host) => format!("pid {pid} on host {host}"),
                            None => format!("pid {pid}"),
                        })
                    })
                    .unwrap_or_else(|| "pid unknown".to_string());
                return Err(MetaError::Locked {
                    db: db.to_path_buf(),
                    path,
                    holder,
                });
            }
            Err((_, errno)) => return Err(io("lock", &path)(errno.into())),
        };
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let who = format!("{} {}\n", std::process::id(), host.trim());
        // Best effort: the lock itself is what protects; the text only names the holder.
        if lock.set_len(0).is_ok() {
            use std::os::unix::fs::FileExt;
            let _ = lock.write_all_at(who.as_bytes(), 0);
        }
        Ok(MetaLock { _lock: lock })
    }

    /// Litestream's `reset`: removes the local LTX files (`<meta>/ltx`), so the next sync of `db`
    /// starts with a snapshot; the database itself is not touched. Refused while a replicator
    /// holds the lock (its state would be pulled from under it). Returns the files removed, or
    /// with `dry_run` those that would be.
    pub fn reset(&self, db: &Path, dry_run: bool) -> Result<Vec<PathBuf>, MetaError> {
        let ltx_dir = self.dir.join("ltx");
        let mut files = Vec::new();
        let mut dirs = vec![ltx_dir.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", &dir)(e)),
            };
            for entry in entries {
                let path = entry.map_err(io("list", &dir))?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        if dry_run || !ltx_dir.exists() {
            return Ok(files);
        }
        let _held = self.lock(db)?;
        fs::remove_dir_all(&ltx_dir).map_err(io("remove", &ltx_dir))?;
        fsync_dir(&self.dir)?;
        Ok(files)
    }

    /// TXIDs of the local L0 files (`T-T` only), ascending.
    pub fn l0_txids(&self) -> Result<Vec<u64>, MetaError> {
        let dir = self.l0_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        let mut txids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list", &dir))?;
            if let Some((min, max)) = ltx::parse_file_name(&entry.file_name().to_string_lossy())
                && min == max
            {
                txids.push(max);
            }
        }
        txids.sort_unstable();
        Ok(txids)
    }

    pub fn read_header(&self, txid: u64) -> Result<Header, MetaError> {
        let path = self.l0_path(txid);
        let mut f = File::open(&path).map_err(io("open", &path))?;
        let mut b = [0u8; HEADER_SIZE];
        f.read_exact(&mut b).map_err(io("read header of", &path))?;
        Header::from_bytes(&b).map_err(|source| MetaError::Ltx { path, source })
    }

    /// The newest local L0 header: the replication position.
    pub fn newest_header(&self) -> Result<Option<Header>, MetaError> {
        match self.l0_txids()?.last() {
            Some(&txid) => self.read_header(txid).map(Some),
            None => Ok(None),
        }
    }

    /// Finds page `pgno` in L0 file `txid` and returns its bytes (None when the file lacks it).
    pub fn find_page(&self, txid: u64, pgno: u32) -> Result<Option<Vec<u8>>, MetaError> {
        let path = self.l0_path(txid);
        let ltx_err = |source| MetaError::Ltx {
            path: path.clone(),
            source,
        };
        let f = File::open(&path).map_err(io("open", &path))?;
        let mut dec = Decoder::new(std::io::BufReader::new(f)).map_err(ltx_err)?;
        let mut buf = vec![0u8; dec.header().page_size as usize];
        while let Some(p) = dec.next_page(&mut buf).map_err(ltx_err)? {
            if p == pgno {
                return Ok(Some(buf));
            }
            if p > pgno {
                break;
            }
        }
        Ok(None)
    }

    /// Writes L0 file `header.max_txid` atomically: `fill` encodes the pages.
    pub fn write_l0(
        &self,
        header: &Header,
        encoding: PageEncoding,
        fill: impl FnOnce(&mut Encoder<BufWriter<File>>) -> Result<(), MetaError>,
    ) -> Result<u64, MetaError> {
        let path = self.l0_path(header.max_txid);
        let tmp = path.with_extension("ltx.tmp");
        let result = (|| {
            let file = File::create(&tmp).map_err(io("create", &tmp))?;
            let ltx_err = |source| MetaError::Ltx {
                path: tmp.clone(),
                source,
            };
            let mut enc =
                Encoder::new(BufWriter::with_capacity(256 * 1024, file), header, encoding)
                    .map_err(ltx_err)?;
            fill(&mut enc)?;
            let (mut w, _) = enc.finish().map_err(ltx_err)?;
            w.flush().map_err(io("write", &tmp))?;
            let file = w
                .into_inner()
                .map_err(|e| io("write", &tmp)(e.into_error()))?;
            file.sync_all().map_err(io("fsync", &tmp))?;
            let size = file.metadata().map_err(io("stat", &tmp))?.len();
            fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
            fsync_dir(&self.l0_dir())?;
            Ok(size)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Installs a complete L0 file fetched from elsewhere (the replica) atomically.
    pub fn install_l0(&self, txid: u64, data: &mut dyn Read) -> Result<(), MetaError> {
        let path = self.l0_path(txid);
        let tmp = path.with_extension("ltx.tmp");
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
            std::io::copy(data, &mut file).map_err(io("write", &tmp))?;
            file.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
            fsync_dir(&self.l0_dir())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn remove_l0(&self, txid: u64) -> Result<(), MetaError> {
        let path = self.l0_path(txid);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path)(e)),
            _ => Ok(()),
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<(), MetaError> {
    let d = File::open(dir).map_err(io("open directory", dir))?;
    d.sync_all().map_err(io("fsync directory", dir))
}
