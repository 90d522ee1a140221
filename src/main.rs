//! litevisor: a container's init, its process supervisor and its SQLite database's backup, in one binary.
//!
//! `main` only parses the command line and hands over to the subcommand; every duty lives in its module.

mod cli;
mod config;
mod control;
mod fault;
mod init;
mod replica;
mod replication;
mod supervisor;
mod text;

fn main() {
    std::process::exit(cli::main());
}
