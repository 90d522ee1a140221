//! litevisor: a container's init, its process supervisor and its SQLite database's backup, in one binary.
//!
//! This library is that binary's code; `src/main.rs` only calls [`cli::main`]. It is a library so that
//! the integration tests under `tests/` can use the codecs and replica clients directly. It is not a
//! stable API: only what the binary and the tests need is public.
//!
//! # Modules, bottom up
//! - `text`: tabwriter-style tables and JSON string literals for the CLI and the control socket.
//! - `fault`: fault injection for the tests (debug builds only).
//! - `example_app`: the bundled example's application (`litevisor example-app`).
//! - [`replica`]: the `ReplicaClient` trait, the file and S3 backends, replica URLs.
//! - `config`: litevisor.toml, services.d, s6-overlay directories and litestream.yml, loaded into one
//!   validated model (imports none of the engines).
//! - `init`: PID-1 duties: signals, fork/exec, the one `waitpid(-1)` reaper, tini mode.
//! - [`replication`]: WAL reader, LTX codec, sync engine, compaction and retention, restore, verify.
//! - `supervisor`: the service graph, its life cycle and the databases as restore + replicate units.
//! - `control`: the control socket and `litevisor status`.
//! - [`cli`]: the command line; it turns arguments into calls of the modules above and nothing imports it.

pub mod cli;
mod config;
mod control;
mod example_app;
mod fault;
mod init;
pub mod replica;
pub mod replication;
mod supervisor;
mod text;
