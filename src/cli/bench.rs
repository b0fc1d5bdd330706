//! `podroute bench` (being written).

use crate::Result;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<()> {
    Ok(())
}
