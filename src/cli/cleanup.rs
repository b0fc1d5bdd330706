//! `podroute cleanup [--dry-run]`: remove every route, neighbour, FDB entry,
//! address and device podroute owns. sysctls are left as they are.

use serde::Serialize;

use super::apply::{steps_table, warnings_text};
use super::{ConfigArgs, Output};
use crate::dataplane::Dataplane;
use crate::engine;
use crate::plan::{self, Step};
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
    /// Devices left in place because they carry state that is not ours.
    pub kept: Vec<String>,
}

pub async fn run(args: CleanupArgs) -> Result<()> {
    let config = args.config.config(None)?;
    let nothing = plan::nothing(&config);
    let mut dp = Dataplane::connect(config)?;
    let outcome = if args.dry_run {
        engine::preview(&mut dp, &nothing).await?
    } else {
        engine::converge(&mut dp, &nothing).await?
    };
    let report = CleanupReport {
        dry_run: args.dry_run,
        changes: outcome.changes,
        steps: outcome.steps,
        kept: outcome.kept,
    };
    args.output.print(&report, |r| {
        let mut out = if r.steps.is_empty() {
            "nothing of podroute's on this host\n".to_string()
        } else {
            let verb = if r.dry_run { "would remove" } else { "removed" };
            format!("{}{} {verb}\n", steps_table(&r.steps), r.steps.len())
        };
        out.push_str(&warnings_text(&r.kept));
        out
    })
}
