//! Replication: SQLite WAL -> LTX files -> replica, and back (restore). Storage-compatible with Litestream 0.5.

pub(crate) mod compact;
pub(crate) mod db;
pub(crate) mod engine;
pub(crate) mod follow;
pub(crate) mod fsguard;
pub mod ltx;
pub(crate) mod meta;
pub(crate) mod once;
pub(crate) mod pool;
pub(crate) mod prepare;
pub(crate) mod restore;
pub(crate) mod shm;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod verify;
pub mod wal;
pub(crate) mod watch;
