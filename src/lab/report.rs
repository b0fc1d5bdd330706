//! What a lab run measured (the CLI renders it as JSON or a table).

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
