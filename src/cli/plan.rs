//! `podroute plan --cluster FILE [--node NAME]`: the ops apply would run.

use std::collections::BTreeMap;

use serde::Serialize;

use super::apply::{conflicts_text, families_text, notes_text, steps_table, warnings_text};
use super::host::{ClusterArgs, Host};
use super::{ConfigArgs, Output};
use crate::engine::{self, FamilyRoutes};
use crate::plan::{RouteKey, Step};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub node: String,
    pub mode: String,
    pub ops: Vec<Step>,
    pub conflicts: Vec<RouteKey>,
    /// Devices left in place because they carry state that is not ours.
    pub kept: Vec<String>,
    /// How the plan treats a family as a whole (`ipv6: ...`).
    pub notes: Vec<String>,
    /// Each family's peer routes: how many, through which devices.
    pub families: BTreeMap<&'static str, FamilyRoutes>,
    pub pod_mtu: Option<u32>,
}

pub async fn run(args: PlanArgs) -> Result<()> {
    let Host {
        mut dp,
        cluster,
        local,
        desired,
        ..
    } = Host::load(&args.target.cluster, &args.target.node, &args.config).await?;
    let outcome = engine::preview(&mut dp, &desired).await?;
    let report = PlanReport {
        node: local.name.clone(),
        mode: cluster.plan.route_mode.to_string(),
        ops: outcome.steps,
        conflicts: outcome.conflicts,
        kept: outcome.kept,
        notes: outcome.notes,
        families: outcome.families,
        pod_mtu: desired.pod_mtu,
    };
    args.output.print(&report, |r| {
        let mut out = if r.ops.is_empty() {
            format!("node {}: converged, no ops\n", r.node)
        } else {
            format!(
                "node {}: {} ops to reach mode {}\n{}",
                r.node,
                r.ops.len(),
                r.mode,
                steps_table(&r.ops)
            )
        };
        out.push_str(&conflicts_text(&r.conflicts));
        out.push_str(&warnings_text(&r.kept));
        out.push_str(&families_text(&r.families));
        out.push_str(&notes_text(&r.notes));
        out
    })
}
