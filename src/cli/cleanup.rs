//! `podroute cleanup [--dry-run]`: remove every route, neighbour, FDB entry,
//! address and device podroute owns. sysctls are left as they are.

use serde::Serialize;

use super::apply::steps_table;
use super::{ConfigArgs, Output};
use crate::dataplane::Dataplane;
use crate::engine;
use crate::plan::{Desired, Step};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// Print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    pub dry_run: bool,
    pub changes: usize,
    pub steps: Vec<Step>,
}

pub async fn run(args: CleanupArgs) -> Result<()> {
    let config = args.config.config(None)?;
    let mut dp = Dataplane::connect(config)?;
    let nothing = Desired::default();
    let report = if args.dry_run {
        let diff = engine::dry_run(&mut dp, &nothing).await?;
        CleanupReport {
            dry_run: true,
            changes: 0,
            steps: diff.steps,
        }
    } else {
        let outcome = engine::converge(&mut dp, &nothing).await?;
        CleanupReport {
            dry_run: false,
            changes: outcome.changes,
            steps: outcome.steps,
        }
    };
    args.output.print(&report, |r| {
        if r.steps.is_empty() {
            return "nothing of podroute's on this host\n".into();
        }
        let verb = if r.dry_run { "would remove" } else { "removed" };
        format!("{}{} {verb}\n", steps_table(&r.steps), r.steps.len())
    })
}
