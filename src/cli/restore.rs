//! `litevisor restore` (work in progress; owned by the replication track).

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {}

pub fn run(_args: RestoreArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`restore` is not implemented yet")
}
