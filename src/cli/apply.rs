//! `podroute apply --cluster FILE [--node NAME] [--dry-run]`

use std::collections::BTreeMap;

use serde::Serialize;

use super::host::{ClusterArgs, Host};
use super::output::table;
use super::{ConfigArgs, Output};
use crate::engine::{self, FamilyRoutes};
use crate::plan::{RouteKey, Step};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub node: String,
    pub mode: String,
    pub generation: u64,
    pub dry_run: bool,
    /// Kernel writes performed (0 when already converged, and on a dry run).
    pub changes: usize,
    pub steps: Vec<Step>,
    pub conflicts: Vec<RouteKey>,
    /// Devices left in place because they carry state that is not ours.
    pub kept: Vec<String>,
    /// How the plan treats a family as a whole (`ipv6: ...`).
    pub notes: Vec<String>,
    /// Each family's peer routes: how many, through which devices.
    pub families: BTreeMap<&'static str, FamilyRoutes>,
    pub pod_mtu: Option<u32>,
}

pub async fn run(args: ApplyArgs) -> Result<()> {
    let Host {
        mut dp,
        cluster,
        local,
        desired,
        ..
    } = Host::load(&args.target.cluster, &args.target.node, &args.config).await?;
    let outcome = if args.dry_run {
        engine::preview(&mut dp, &desired).await?
    } else {
        engine::converge(&mut dp, &desired).await?
    };
    let report = ApplyReport {
        node: local.name.clone(),
        mode: cluster.plan.route_mode.to_string(),
        generation: cluster.plan.generation,
        dry_run: args.dry_run,
        changes: outcome.changes,
        steps: outcome.steps,
        conflicts: outcome.conflicts,
        kept: outcome.kept,
        notes: outcome.notes,
        families: outcome.families,
        pod_mtu: desired.pod_mtu,
    };
    args.output.print(&report, render)
}

fn render(r: &ApplyReport) -> String {
    let verb = if r.dry_run { "would change" } else { "changed" };
    let mut out = format!(
        "node {}: mode {} (generation {}), pod MTU {}\n",
        r.node,
        r.mode,
        r.generation,
        r.pod_mtu.map_or("-".into(), |m| m.to_string())
    );
    if r.steps.is_empty() {
        out.push_str("already converged: nothing to change\n");
    } else {
        out.push_str(&steps_table(&r.steps));
        let n = if r.dry_run { r.steps.len() } else { r.changes };
        out.push_str(&format!("{n} {verb}\n"));
    }
    out.push_str(&conflicts_text(&r.conflicts));
    out.push_str(&warnings_text(&r.kept));
    out.push_str(&families_text(&r.families));
    out.push_str(&notes_text(&r.notes));
    out
}

/// `ipv6: 2 peer routes via vxlan-v6.calico`, when the plan routes IPv6.
pub(super) fn families_text(families: &BTreeMap<&'static str, FamilyRoutes>) -> String {
    if !families.contains_key("ipv6") {
        return String::new();
    }
    let line = |(family, f): (&&str, &FamilyRoutes)| {
        let devices: Vec<&str> = f.devices.iter().map(String::as_str).collect();
        format!(
            "{family}: {} peer routes via {}\n",
            f.routes,
            devices.join(", ")
        )
    };
    families.iter().map(line).collect()
}

pub(super) fn notes_text(notes: &[String]) -> String {
    notes
        .iter()
        .map(|n| {
            format!(
                "note: {n}
"
            )
        })
        .collect()
}

pub(super) fn warnings_text(warnings: &[String]) -> String {
    warnings.iter().map(|w| format!("warning: {w}\n")).collect()
}

pub(super) fn steps_table(steps: &[Step]) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![
                format!("{:?}", s.op.stage()).to_lowercase(),
                s.op.to_string(),
                s.why.clone(),
            ]
        })
        .collect();
    table(&["STAGE", "OP", "WHY"], &rows)
}

pub(super) fn conflicts_text(conflicts: &[RouteKey]) -> String {
    conflicts
        .iter()
        .map(|k| {
            format!(
                "warning: {} (table {}) is held by a route that is not ours; left alone\n",
                k.dst, k.table
            )
        })
        .collect()
}
