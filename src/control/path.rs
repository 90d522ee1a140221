//! Where the control socket lives, for the server and for a client looking for it.
//!
//! A socket path shared by every litevisor on a host lets one answer for another: a user's
//! `litevisor status` once showed an unrelated litevisor's databases through a shared
//! `/run/litevisor.sock`. So only PID 1 (a container's init: one litevisor per PID namespace)
//! keeps that simple path; every other litevisor listens at a path of its own process:
//!
//! | who | socket |
//! |---|---|
//! | `$LITEVISOR_SOCKET` set | that path |
//! | PID 1 (with a writable `/run`) | `/run/litevisor.sock` |
//! | `$XDG_RUNTIME_DIR` set | `$XDG_RUNTIME_DIR/litevisor/<pid>.sock` |
//! | root (with a writable `/run`) | `/run/litevisor/<pid>.sock` |
//! | anyone else (and a `FROM scratch` image without `/run`) | `/tmp/litevisor-<uid>/<pid>.sock` |
//!
//! The directories are created with mode 0700; one that exists must belong to litevisor's user
//! and be writable by nobody else, or litevisor runs without a socket rather than listen where
//! another user could replace the socket. The socket itself is 0600 and the server also checks
//! each connection's peer credentials (see [`super::Server`]).
//!
//! A client (`status`, `sync`, ...) takes `-socket` / `$LITEVISOR_SOCKET`; else the live sockets
//! among `/run/litevisor.sock` and the directory a server started in the same environment would
//! use, then (only if none is there) the user's other per-process directories: exactly one is
//! used; several is an error that lists them, none one that says where it looked.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The container-init path, kept for PID 1.
pub const PID1_SOCKET: &str = "/run/litevisor.sock";

/// Why a client could not pick a socket.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no litevisor is running for this user (looked for {}); name its socket with -socket PATH or {}",
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        super::SOCKET_ENV
    )]
    None { looked: Vec<PathBuf> },
    #[error(
        "several litevisor processes are running: {}; pick one with -socket PATH or {}",
        found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        super::SOCKET_ENV
    )]
    Several { found: Vec<PathBuf> },
}

/// The path this litevisor listens at (see the module docs). Creates its directory; `Err` says
/// why no safe path exists (the caller runs without a socket).
pub fn server_path() -> Result<PathBuf, String> {
    if let Some(p) = env_path(super::SOCKET_ENV) {
        return Ok(p);
    }
    let pid = std::process::id();
    // A `FROM scratch` image may have no /run: PID 1 then listens where anyone else would.
    if pid == 1 && writable(Path::new("/run")) {
        return Ok(PathBuf::from(PID1_SOCKET));
    }
    let dir = own_dir();
    ensure_private_dir(&dir)?;
    Ok(dir.join(format!("{pid}.sock")))
}

/// `-socket PATH` when given, else [`client_path`].
pub fn resolve(flag: Option<PathBuf>) -> Result<PathBuf, FindError> {
    match flag {
        Some(path) => Ok(path),
        None => client_path(),
    }
}

/// The socket a client should talk to (see the module docs).
pub fn client_path() -> Result<PathBuf, FindError> {
    if let Some(p) = env_path(super::SOCKET_ENV) {
        return Ok(p);
    }
    let own = own_dir();
    let others: Vec<PathBuf> = other_dirs().into_iter().filter(|d| *d != own).collect();
    find_in(Path::new(PID1_SOCKET), &[vec![own], others])
}

/// The one live socket of the first tier that has any: `pid1` and the first tier's directories,
/// then each further tier's. A tier with several is an error: the client must not guess.
fn find_in(pid1: &Path, tiers: &[Vec<PathBuf>]) -> Result<PathBuf, FindError> {
    let mut looked = vec![pid1.to_path_buf()];
    for (i, dirs) in tiers.iter().enumerate() {
        let mut found: Vec<PathBuf> = Vec::new();
        if i == 0 && is_live_socket(pid1) {
            found.push(pid1.to_path_buf());
        }
        for dir in dirs {
            looked.push(dir.join("<pid>.sock"));
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut here: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sock") && is_live_socket(p))
                .collect();
            here.sort();
            found.extend(here);
        }
        match found.len() {
            0 => continue,
            1 => return Ok(found.remove(0)),
            _ => return Err(FindError::Several { found }),
        }
    }
    Err(FindError::None { looked })
}

/// The per-process directory of this user.
fn own_dir() -> PathBuf {
    if let Some(dir) = env_path("XDG_RUNTIME_DIR") {
        return dir.join("litevisor");
    }
    if euid() == 0 && writable(Path::new("/run")) {
        return PathBuf::from("/run/litevisor");
    }
    PathBuf::from(format!("/tmp/litevisor-{}", euid()))
}

/// `dir` exists and this process may create files in it (false on a read-only mount too).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads the NUL-terminated path only.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Where a litevisor of this user started in another environment listens (root's shells rarely
/// set XDG_RUNTIME_DIR the way a service manager does, or the other way round): looked at only when
/// none listens where a server started here would.
fn other_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if euid() == 0 {
        dirs.push(PathBuf::from("/run/litevisor"));
    }
    dirs.push(PathBuf::from(format!("/tmp/litevisor-{}", euid())));
    dirs
}

/// Creates `dir` (0700) or checks that the existing one is this user's and private.
fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} exists and is not a directory", dir.display()));
    }
    if meta.uid() != euid() {
        return Err(format!(
            "{} belongs to uid {}, not to litevisor's user ({}): another user could replace the socket",
            dir.display(),
            meta.uid(),
            euid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {:o}): another user could replace the socket",
            dir.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

/// A socket a process listens on (connecting succeeds or is refused for permissions, not because
/// nobody listens). Leftovers of SIGKILLed processes are skipped.
fn is_live_socket(path: &Path) -> bool {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_directory_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        ensure_private_dir(&own).unwrap();
        let mode = std::fs::metadata(&own).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&own).unwrap();

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            ensure_private_dir(&open)
                .unwrap_err()
                .contains("writable by other users")
        );

        if euid() == 0 {
            let theirs = dir.path().join("theirs");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&theirs)
                .unwrap();
            std::os::unix::fs::lchown(&theirs, Some(65534), None).unwrap();
            assert!(
                ensure_private_dir(&theirs)
                    .unwrap_err()
                    .contains("belongs to uid 65534")
            );
        }
    }

    #[test]
    fn a_client_uses_the_one_live_socket_of_the_first_tier_that_has_any() {
        let dir = tempfile::tempdir().unwrap();
        let [pid1, near, far] = ["pid1.sock", "near", "far"].map(|n| dir.path().join(n));
        std::fs::create_dir(&near).unwrap();
        std::fs::create_dir(&far).unwrap();
        let tiers = [vec![near.clone()], vec![far.clone()]];
        match find_in(&pid1, &tiers) {
            Err(FindError::None { looked }) => {
                assert_eq!(
                    looked,
                    [
                        pid1.clone(),
                        near.join("<pid>.sock"),
                        far.join("<pid>.sock")
                    ]
                )
            }
            other => panic!("{other:?}"),
        }
        let _far = std::os::unix::net::UnixListener::bind(far.join("7.sock")).unwrap();
        assert_eq!(find_in(&pid1, &tiers).unwrap(), far.join("7.sock"));
        let _near = std::os::unix::net::UnixListener::bind(near.join("8.sock")).unwrap();
        assert_eq!(
            find_in(&pid1, &tiers).unwrap(),
            near.join("8.sock"),
            "the first tier wins"
        );
        let _pid1 = std::os::unix::net::UnixListener::bind(&pid1).unwrap();
        match find_in(&pid1, &tiers) {
            Err(FindError::Several { found }) => assert_eq!(found, [pid1, near.join("8.sock")]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_listening_sockets_count() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("1.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let stale = dir.path().join("2.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let plain = dir.path().join("3.sock");
        std::fs::write(&plain, "").unwrap();
        assert!(is_live_socket(&live));
        assert!(!is_live_socket(&stale), "nobody listens");
        assert!(!is_live_socket(&plain));
    }
}
