//! `litevisor [run]` (work in progress; owned by the PID-1 track).

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Program and arguments to run as the main child, passed verbatim.
    #[arg(last = true)]
    pub command: Vec<std::ffi::OsString>,
}

pub fn run(_args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`run` is not implemented yet")
}
