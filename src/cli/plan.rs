//! `podroute plan [--cluster FILE | --kubeconfig FILE] [--node NAME]`: the
//! ops apply would run, for the desired state of a cluster file or the one
//! this node's agent computes from the Kubernetes API (`--kubeconfig`, or in
//! a pod the service account). Writes nothing, to the kernel or the API.

use std::collections::BTreeMap;

use serde::Serialize;

use super::api_view::{render_api, ApiView};
use super::apply::{conflicts_text, families_text, notes_text, steps_table, warnings_text};
use super::source::{Loaded, Source, SourceArgs};
use super::{ConfigArgs, Output};
use crate::engine::{self, FamilyRoutes};
use crate::lab::netns::in_netns_or_here;
use crate::plan::{RouteKey, Step};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
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
    /// Peers this node leaves out, with why: from the API (a cluster file
    /// with such a peer is refused instead).
    pub peers_left_out: BTreeMap<String, String>,
    /// What the Kubernetes API says (only when read from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ApiView>,
}

pub async fn run(args: PlanArgs) -> Result<()> {
    let source = Source::from_flags(&args.source, "plan").await?;
    let output = args.output;
    let netns = args.source.netns.clone();
    let report =
        in_netns_or_here(netns, move || async move { report(&args, source).await }).await?;
    output.print(&report, render)
}

/// The desired state previewed against this kernel.
async fn report(args: &PlanArgs, source: Source) -> Result<PlanReport> {
    let Loaded {
        mut dp,
        cluster,
        local,
        desired,
        view,
        ..
    } = source
        .load(&args.source.node, &args.config, "planning")
        .await?;
    let outcome = engine::preview(&mut dp, &desired).await?;
    Ok(PlanReport {
        node: local.name,
        mode: cluster.plan.route_mode.to_string(),
        ops: outcome.steps,
        conflicts: outcome.conflicts,
        kept: outcome.kept,
        notes: outcome.notes,
        families: outcome.families,
        pod_mtu: desired.pod_mtu,
        peers_left_out: view
            .as_ref()
            .map(|v| v.peers_left_out.clone())
            .unwrap_or_default(),
        cluster: view,
    })
}

fn render(r: &PlanReport) -> String {
    let mut out = r.cluster.as_ref().map(render_api).unwrap_or_default();
    if r.ops.is_empty() {
        out.push_str(&format!("node {}: converged, no ops\n", r.node));
    } else {
        out.push_str(&format!(
            "node {}: {} ops to reach mode {}\n{}",
            r.node,
            r.ops.len(),
            r.mode,
            steps_table(&r.ops)
        ));
    }
    out.push_str(&conflicts_text(&r.conflicts));
    out.push_str(&warnings_text(&r.kept));
    out.push_str(&families_text(&r.families));
    out.push_str(&notes_text(&r.notes));
    out
}
