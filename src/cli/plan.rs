//! `podroute plan --cluster FILE [--node NAME]`: the ops apply would run.

use std::path::PathBuf;

use serde::Serialize;

use super::apply::{conflicts_text, steps_table};
use super::{ConfigArgs, Output};
use crate::dataplane::Dataplane;
use crate::engine;
use crate::model::Cluster;
use crate::plan::{RouteKey, Step};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Static cluster file (YAML).
    #[arg(long, env = "PODROUTE_CLUSTER")]
    pub cluster: PathBuf,
    /// This host's node name; default: the node whose IP is on this host.
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,
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
    pub pod_mtu: Option<u32>,
}

pub async fn run(args: PlanArgs) -> Result<()> {
    let cluster = Cluster::load(&args.cluster)?;
    let config = args.config.config(Some(&cluster))?;
    let mut dp = Dataplane::connect(config)?;
    let local = engine::local_node(&dp, &cluster, args.node.as_deref()).await?;
    let (desired, _) = engine::desired_for(&mut dp, &cluster, local).await?;
    let diff = engine::dry_run(&mut dp, &desired).await?;
    let report = PlanReport {
        node: local.name.clone(),
        mode: cluster.plan.route_mode.to_string(),
        ops: diff.steps,
        conflicts: diff.conflicts,
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
        out
    })
}
