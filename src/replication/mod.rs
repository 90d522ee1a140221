//! Replication: SQLite WAL -> LTX files -> replica, and back (restore). Storage-compatible with Litestream 0.5.

pub mod compact;
pub mod db;
pub mod engine;
pub mod fsguard;
pub mod ltx;
pub mod meta;
pub mod restore;
pub mod shm;
pub mod sync;
pub mod verify;
pub mod wal;
pub mod watch;
