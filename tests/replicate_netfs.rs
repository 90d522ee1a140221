//! The network-filesystem refusal against a REAL FUSE mount (bindfs, the same kernel interface as
//! GlusterFS, sshfs, s3fs and Docker Desktop's file sharing): `litevisor replicate` refuses the
//! database with an explanation and touches nothing next to it; `-allow-network-fs` overrides. A
//! real overlayfs mount (a container's own layer) is local and replicates as usual.
//!
//! Needs root, /dev/fuse, overlayfs and bindfs (`scripts/install-test-deps` installs it).

mod support;

mod replicate_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use replicate_support::*;

/// A bindfs mount of `<dir>/src` on `<dir>/mnt`, unmounted on drop.
struct FuseMount {
    mnt: PathBuf,
}

impl FuseMount {
    fn new(dir: &Path) -> FuseMount {
        let src = dir.join("src");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        support::run_ok(
            "bindfs (from scripts/install-test-deps; the mount needs root and /dev/fuse)",
            Command::new("bindfs").arg(&src).arg(&mnt),
        );
        FuseMount { mnt }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.mnt).status();
    }
}

#[test]
fn a_database_on_fuse_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let fuse = FuseMount::new(dir.path());
    let db = fuse.mnt.join("app.db");
    let replica = dir.path().join("replica");
    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..30, 10);

    for extra in [&["-once"][..], &[][..]] {
        let (code, text) = replicate(extra, &db, &replica);
        assert_ne!(code, 0, "{extra:?} must be refused: {text}");
        for part in [
            format!("refusing to replicate {}", db.display()),
            format!(
                "its directory {} is on a network filesystem",
                fuse.mnt.display()
            ),
            "FUSE (fuse".to_string(),
            "0x65735546".to_string(),
            "corrupted without any error".to_string(),
            "allow_network_fs = true".to_string(),
            "-allow-network-fs".to_string(),
        ] {
            assert!(text.contains(&part), "{part:?} missing from:\n{text}");
        }
        // Refused before anything was created next to the database or in the replica.
        assert!(!fuse.mnt.join(".app.db-litestream").exists());
        assert!(!replica.exists());
    }

    let (code, text) = replicate(&["-once", "-allow-network-fs"], &db, &replica);
    assert_eq!(code, 0, "the override must replicate: {text}");
    assert!(
        text.contains("network filesystem"),
        "a warning is logged: {text}"
    );
    assert_same_rows(
        &db,
        &litevisor_restore(&replica, &dir.path().join("out.db")),
    );
    drop(c);
}

/// Overlayfs is what a container's own writable layer is: local, so it is replicated as usual.
#[test]
fn a_database_on_overlayfs_is_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let [lower, upper, work, mnt] = ["lower", "upper", "work", "mnt"].map(|d| dir.path().join(d));
    for d in [&lower, &upper, &work, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    support::run_ok(
        "overlay mount (needs root)",
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(&mnt),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());

    let db = mnt.join("app.db");
    let replica = dir.path().join("replica");
    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..30, 10);
    let (code, text) = replicate(&["-once"], &db, &replica);
    assert_eq!(code, 0, "overlayfs is local: {text}");
    assert!(!text.contains("network filesystem"), "{text}");
    assert_same_rows(
        &db,
        &litevisor_restore(&replica, &dir.path().join("out.db")),
    );
    drop(c);
}
