//! `litevisor example-app migrate|write|read DB`: the bundled example's application (see
//! [`crate::example_app`]); this file only parses its arguments.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::parse_duration;
use crate::example_app;

#[derive(clap::Args, Debug)]
pub struct ExampleAppArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Create the `items` table if it is missing.
    Migrate {
        /// The SQLite database (created if missing).
        db: PathBuf,
    },
    /// Insert a row per interval and print each id once committed; exit 0 on SIGTERM/SIGINT.
    Write {
        /// Time between two rows.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Write a newline to this descriptor after the first commit (`notification_fd`).
        #[arg(long, value_name = "FD", value_parser = clap::value_parser!(RawFd).range(3..))]
        notify_fd: Option<RawFd>,
        /// The SQLite database.
        db: PathBuf,
    },
    /// Print the row count per interval; exit 0 on SIGTERM/SIGINT.
    Read {
        /// Time between two counts.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        interval: Duration,
        /// The SQLite database.
        db: PathBuf,
    },
}

impl ExampleAppArgs {
    /// `write` and `read` wait for the stop signals themselves, so they keep them blocked.
    pub fn takes_stop_signals(&self) -> bool {
        !matches!(self.mode, Mode::Migrate { .. })
    }
}

pub fn run(args: ExampleAppArgs) -> anyhow::Result<i32> {
    match args.mode {
        Mode::Migrate { db } => example_app::migrate(&db)?,
        Mode::Write {
            interval,
            notify_fd,
            db,
        } => example_app::write(&db, interval, notify_fd)?,
        Mode::Read { interval, db } => example_app::read(&db, interval)?,
    }
    Ok(0)
}
