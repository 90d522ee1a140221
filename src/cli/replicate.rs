//! `litevisor replicate` (work in progress; owned by the replication track).

#[derive(clap::Args, Debug)]
pub struct ReplicateArgs {}

pub fn run(_args: ReplicateArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`replicate` is not implemented yet")
}
