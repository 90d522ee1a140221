//! `litevisor check` (work in progress; owned by the config track).

#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

pub fn run(_args: CheckArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`check` is not implemented yet")
}
