//! Refusal to replicate a database that lives on a network filesystem.
//!
//! SQLite's locks and its WAL shared memory (`-shm`, mmapped) only coordinate processes of one kernel.
//! On NFS, SMB/CIFS, 9p, Ceph, GlusterFS (FUSE) and the like, a second host (or the VM behind Docker
//! Desktop's file sharing) can write while this one holds a lock, and the database is corrupted
//! without any error. Litestream's deployment guide says the same: local volumes only. This module
//! classifies the filesystem of the database's *directory* (the database itself may not exist yet) by
//! its `statfs` magic number (values from `linux/magic.h` and the filesystems' own sources) and turns
//! a network filesystem into an error that says why and how to override it (`allow_network_fs`).
//!
//! FUSE carries one magic number for every FUSE filesystem, local or remote; `/proc/self/mountinfo`
//! names the actual type, so block-device FUSE (`fuseblk`, e.g. ntfs-3g) and fuse-overlayfs (rootless
//! containers' root filesystem) are recognised as local, and every other FUSE mount is refused.
//! Overlayfs, tmpfs and block filesystems are local; an unknown magic number is allowed (litevisor
//! refuses only what it knows to be remote).

use std::path::{Path, PathBuf};

/// A filesystem type known to be shared over a network (or with another kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkFs {
    pub magic: u32,
    pub name: &'static str,
}

pub const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;

/// statfs `f_type` values of filesystems whose locking does not protect a SQLite database.
const NETWORK_FILESYSTEMS: &[NetworkFs] = &[
    NetworkFs {
        magic: 0x6969,
        name: "NFS",
    },
    NetworkFs {
        magic: 0x517B,
        name: "SMB",
    },
    NetworkFs {
        magic: 0xFF53_4D42,
        name: "SMB/CIFS",
    },
    NetworkFs {
        magic: 0xFE53_4D42,
        name: "SMB2/SMB3",
    },
    NetworkFs {
        magic: 0x0102_1997,
        name: "9p (a host directory shared into a VM: WSL2, Docker Desktop, QEMU)",
    },
    NetworkFs {
        magic: FUSE_SUPER_MAGIC,
        name: "FUSE (GlusterFS, sshfs, s3fs, virtiofs, Docker Desktop file sharing)",
    },
    NetworkFs {
        magic: 0x00C3_6400,
        name: "CephFS",
    },
    NetworkFs {
        magic: 0x5346_414F,
        name: "AFS",
    },
    NetworkFs {
        magic: 0x6B41_4653,
        name: "kAFS",
    },
    NetworkFs {
        magic: 0x7375_7245,
        name: "Coda",
    },
    NetworkFs {
        magic: 0x564C,
        name: "NCP (NetWare)",
    },
    NetworkFs {
        magic: 0x7461_636F,
        name: "OCFS2 (a cluster filesystem)",
    },
    NetworkFs {
        magic: 0x0116_1970,
        name: "GFS2 (a cluster filesystem)",
    },
    NetworkFs {
        magic: 0x0BD0_0BD0,
        name: "Lustre",
    },
    NetworkFs {
        magic: 0x4750_4653,
        name: "IBM Spectrum Scale (GPFS)",
    },
    NetworkFs {
        magic: 0x786F_4256,
        name: "VirtualBox shared folder (vboxsf)",
    },
];

/// The network filesystem a statfs `f_type` denotes, if any.
pub fn classify(magic: u32) -> Option<NetworkFs> {
    NETWORK_FILESYSTEMS
        .iter()
        .copied()
        .find(|fs| fs.magic == magic)
}

/// FUSE mount types (the mountinfo type field) that are backed by this kernel's own storage.
fn local_fuse_type(fstype: &str) -> bool {
    matches!(fstype, "fuseblk" | "fuse.fuse-overlayfs" | "fuse-overlayfs")
}

/// What the directory of a database turned out to be on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub dir: PathBuf,
    pub magic: u32,
    /// Human name, including the mount's own type for FUSE (`FUSE (fuse.sshfs)`).
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FsGuardError {
    #[error(
        "refusing to replicate {db}: its directory {dir} is on a network filesystem, {name} \
         (statfs type {magic:#x}). SQLite's locks and WAL shared memory only work within one host: \
         on a network filesystem another host can write while this one holds a lock, and the \
         database is corrupted without any error. Keep the database on a local volume; if you are \
         certain only this one host ever opens it, set `allow_network_fs = true` for this database \
         (`-allow-network-fs` on the command line)",
        db = .db.display(),
        dir = .fs.dir.display(),
        name = .fs.name,
        magic = .fs.magic
    )]
    Network { db: PathBuf, fs: Detected },
    #[error(
        "the database's directory {} does not exist: create it first (a missing database file is \
         waited for, a missing directory is not)",
        .0.display()
    )]
    MissingDir(PathBuf),
    #[error("statfs {}: {source}", .dir.display())]
    Statfs { dir: PathBuf, source: nix::Error },
}

/// The directory whose filesystem decides: the database's parent (`.` for a bare file name).
pub fn db_dir(db: &Path) -> &Path {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Classifies the filesystem holding `dir`: `Some` when it is a network filesystem.
pub fn detect(dir: &Path) -> Result<Option<Detected>, FsGuardError> {
    let st = nix::sys::statfs::statfs(dir).map_err(|source| match source {
        nix::Error::ENOENT => FsGuardError::MissingDir(dir.to_path_buf()),
        source => FsGuardError::Statfs {
            dir: dir.to_path_buf(),
            source,
        },
    })?;
    // f_type is a signed word on some targets; the magic numbers are 32-bit patterns.
    let magic = st.filesystem_type().0 as u32;
    let Some(fs) = classify(magic) else {
        return Ok(None);
    };
    let mut name = fs.name.to_string();
    if magic == FUSE_SUPER_MAGIC
        && let Some(mount) = mount_of(dir)
    {
        if local_fuse_type(&mount.fstype) {
            return Ok(None);
        }
        name = format!("FUSE ({}, mounted from {})", mount.fstype, mount.source);
    }
    Ok(Some(Detected {
        dir: dir.to_path_buf(),
        magic,
        name,
    }))
}

/// Refuses (`Err`) a database whose directory is on a network filesystem unless `allow` is set; with
/// `allow` the detection is returned so the caller can log it.
pub fn check(db: &Path, allow: bool) -> Result<Option<Detected>, FsGuardError> {
    match detect(db_dir(db))? {
        Some(fs) if !allow => Err(FsGuardError::Network {
            db: db.to_path_buf(),
            fs,
        }),
        other => Ok(other),
    }
}

/// The mount that holds a directory, as mountinfo describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mount {
    /// `fuse.sshfs`, `virtiofs`, `fuseblk`, ...
    fstype: String,
    /// `user@host:/srv`, `server:/volume`, a device, ...
    source: String,
}

/// The mount that holds `dir` (best effort: None when unknown).
fn mount_of(dir: &Path) -> Option<Mount> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_in(&info, &dir)
}

/// Finds the deepest mount point containing `dir` in mountinfo text; the last one listed wins
/// among equal mount points (it is mounted on top).
fn mount_in(mountinfo: &str, dir: &Path) -> Option<Mount> {
    let mut best: Option<(usize, Mount)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 2))
        else {
            continue;
        };
        let point = PathBuf::from(unescape_octal(point));
        if dir.starts_with(&point) {
            let depth = point.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((
                    depth,
                    Mount {
                        fstype: unescape_octal(fstype),
                        source: unescape_octal(source),
                    },
                ));
            }
        }
    }
    best.map(|(_, m)| m)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_magic_numbers_are_refused() {
        for (magic, name) in [
            (0x6969, "NFS"),
            (0x517B, "SMB"),
            (0xFF53_4D42, "CIFS"),
            (0xFE53_4D42, "SMB2"),
            (0x0102_1997, "9p"),
            (0x6573_5546, "FUSE"),
            (0x00C3_6400, "Ceph"),
            (0x5346_414F, "AFS"),
        ] {
            let fs = classify(magic).unwrap_or_else(|| panic!("{magic:#x} must be a network fs"));
            assert!(fs.name.contains(name), "{magic:#x}: {}", fs.name);
        }
    }

    #[test]
    fn local_magic_numbers_are_allowed() {
        for magic in [
            0xEF53u32,   // ext2/3/4
            0x5846_5342, // xfs
            0x9123_683E, // btrfs
            0x0102_1994, // tmpfs
            0x794C_7630, // overlayfs (Docker's container layer: local)
            0x2FC1_2FC1, // zfs
            0xF2F5_2010, // f2fs
        ] {
            assert_eq!(classify(magic), None, "{magic:#x}");
        }
    }

    #[test]
    fn real_local_directories_pass_the_check() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(&dir.path().join("app.db"), false).unwrap(), None);
        // /dev/shm is tmpfs on Linux; the working directory (a bare file name) is the build's disk.
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(check(Path::new("/dev/shm/app.db"), false).unwrap(), None);
        }
        assert_eq!(check(Path::new("app.db"), false).unwrap(), None);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let err = check(Path::new("/nonexistent-litevisor-dir/app.db"), false).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-litevisor-dir"),
            "{err}"
        );
    }

    #[test]
    fn refusal_message_names_path_filesystem_reason_and_override() {
        let err = FsGuardError::Network {
            db: PathBuf::from("/data/app.db"),
            fs: Detected {
                dir: PathBuf::from("/data"),
                magic: 0x6969,
                name: "NFS".to_string(),
            },
        };
        let msg = err.to_string();
        for part in [
            "/data/app.db",
            "/data",
            "NFS",
            "0x6969",
            "corrupted",
            "allow_network_fs = true",
            "-allow-network-fs",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
    }

    #[test]
    fn mountinfo_lookup_takes_the_deepest_and_newest_mount() {
        let info = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
40 22 0:39 / /data rw,relatime - fuse.sshfs host:/srv rw
41 22 0:40 / /data/local rw,relatime - fuseblk /dev/sdb1 rw
42 22 0:41 / /mnt/my\\040share rw,relatime - fuse.glusterfs srv:/vol rw
43 22 0:42 / /data rw,relatime - virtiofs shared rw
";
        let t = |p: &str| mount_in(info, Path::new(p)).map(|m| m.fstype);
        assert_eq!(t("/data/db").as_deref(), Some("virtiofs"));
        assert_eq!(t("/data/local/x").as_deref(), Some("fuseblk"));
        assert_eq!(
            mount_in(info, Path::new("/mnt/my share/x")),
            Some(Mount {
                fstype: "fuse.glusterfs".to_string(),
                source: "srv:/vol".to_string()
            })
        );
        assert_eq!(t("/var/lib").as_deref(), Some("ext4"));
        assert_eq!(t("/database").as_deref(), Some("ext4"));
        assert!(local_fuse_type("fuseblk"));
        assert!(local_fuse_type("fuse.fuse-overlayfs"));
        assert!(!local_fuse_type("fuse.sshfs"));
        assert!(!local_fuse_type("virtiofs"));
    }
}
