//! What a lab run measured: the JSON report scripts read and the table
//! people read.

use serde::Serialize;

use crate::api::Mode;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuCheck {
    /// Size of the DF packets sent, equal to the pods' MTU.
    pub mtu: u32,
    pub ok: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub name: String,
    pub generation: u64,
    pub duration_ms: u64,
    pub sent: u64,
    pub lost: u64,
    pub mtu_check: Option<MtuCheck>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub rollout: &'static str,
    pub from: Mode,
    pub to: Mode,
    pub nodes: usize,
    pub subnets: usize,
    pub sent: u64,
    pub lost: u64,
    pub phases: Vec<PhaseReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabReport {
    /// Why these modes: e.g. the kernel has no ipip.
    pub modes_chosen: String,
    #[serde(flatten)]
    pub run: RunReport,
    /// The naive rollout measured the same way (`--compare`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naive: Option<RunReport>,
    /// Namespaces left in place with `--keep`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_namespaces: Vec<String>,
}

pub fn render_run(run: &RunReport) -> String {
    let rows: Vec<Vec<String>> = run
        .phases
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.generation.to_string(),
                format!("{:.1}s", p.duration_ms as f64 / 1000.0),
                p.sent.to_string(),
                p.lost.to_string(),
                p.mtu_check
                    .as_ref()
                    .map_or("-".into(), |m| format!("{} {}/{}", m.mtu, m.ok, m.total)),
            ]
        })
        .collect();
    let mut out = format!(
        "{} rollout {} -> {} on {} nodes ({} subnet{}):\n",
        run.rollout,
        run.from,
        run.to,
        run.nodes,
        run.subnets,
        if run.subnets == 1 { "" } else { "s" }
    );
    out.push_str(&crate::cli::table(
        &["PHASE", "GEN", "TIME", "SENT", "LOST", "DF AT POD MTU"],
        &rows,
    ));
    out.push_str(&format!(
        "total: {} probes sent, {} lost\n",
        run.sent, run.lost
    ));
    out
}
