//! `litevisor ltx` (work in progress; owned by the replication track).

#[derive(clap::Args, Debug)]
pub struct LtxArgs {}

pub fn run(_args: LtxArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`ltx` is not implemented yet")
}
