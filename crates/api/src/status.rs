use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::crd::{conditions_schema, decap_schema, mode_schema, switch_phase_schema};
use super::{Mode, Plan};

/// Written by the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoutingStatus {
    /// The coordinator's phase (e.g. Steady, Prepare, Switch, Finalize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The plan every agent follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Rollout progress of `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodesStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The phase of the switch (Steady, Prepare, Switch, Finalize); `phase`
    /// shows `Blocked` instead while late nodes hold it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "switch_phase_schema")]
    pub switch_phase: Option<Phase>,
    /// The mode the switch in progress comes from; absent when Steady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub from: Option<Mode>,
    /// The mode the cluster is heading to (the steady mode when Steady).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub to: Option<Mode>,
    /// Unix seconds when `plan` was published: node deadlines count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub phase_started_at: Option<u64>,
    /// What the plans nodes may still hold amount to: a re-target (abort)
    /// is published at once only when it is safe against all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// NotReady nodes left out of scope (policy Skip, past nodeTimeout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Nodes in scope past nodeTimeout without converging.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
}

impl ClusterRoutingStatus {
    /// `switch_phase`, or for a status written by an older coordinator
    /// (none), what `phase` says: under way when it has a source.
    pub fn current_phase(&self) -> Phase {
        self.switch_phase
            .unwrap_or_else(|| match self.phase.as_deref() {
                Some("Prepare") => Phase::Prepare,
                Some("Switch") => Phase::Switch,
                Some("Finalize") => Phase::Finalize,
                Some("Steady") | None => Phase::Steady,
                Some(_) if self.from.is_some() => Phase::Switch,
                Some(_) => Phase::Steady,
            })
    }

    /// What the printer column shows: the phase, or `Blocked`.
    pub fn phase_name(&self) -> String {
        if self.blocked.is_empty() {
            self.current_phase().to_string()
        } else {
            "Blocked".into()
        }
    }
}

/// Where a switch stands: Steady, or the phase of the plan in force
/// (`coordinator::phases` has the plans of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Steady,
    Prepare,
    Switch,
    Finalize,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the plans nodes may still hold amount to (the coordinator's
/// state machine keeps it; see its module doc). Empty: unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InFlight {
    /// Route modes some node may still use.
    #[serde(default)]
    #[schemars(schema_with = "decap_schema")]
    pub routes: BTreeSet<Mode>,
    /// Modes every node can receive.
    #[serde(default)]
    #[schemars(schema_with = "decap_schema")]
    pub receive: BTreeSet<Mode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodesStatus {
    /// Nodes in scope of the plan.
    #[schemars(extend("format" = "int32"))]
    pub total: u32,
    /// Nodes that report the current generation applied.
    #[schemars(extend("format" = "int32"))]
    pub applied: u32,
    /// Nodes the coordinator waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A time as Kubernetes writes it in conditions (RFC 3339, whole seconds).
#[cfg(feature = "kube")]
pub fn rfc3339(time: k8s_openapi::jiff::Timestamp) -> String {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    serde_json::to_value(Time(time))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_holds_the_whole_machine_status() {
        let status = ClusterRoutingStatus {
            phase: Some("Blocked".into()),
            switch_phase: Some(Phase::Switch),
            plan: Some(Plan {
                generation: 7,
                route_mode: Mode::Native,
                decap: BTreeSet::from([Mode::Vxlan, Mode::Native]),
            }),
            from: Some(Mode::Vxlan),
            to: Some(Mode::Native),
            phase_started_at: Some(1_700_000_000),
            in_flight: Some(InFlight {
                routes: BTreeSet::from([Mode::Vxlan, Mode::Native]),
                receive: BTreeSet::from([Mode::Vxlan, Mode::Native]),
            }),
            nodes: Some(NodesStatus {
                total: 3,
                applied: 1,
                waiting: vec!["b".into(), "c".into()],
            }),
            skipped: vec!["d".into()],
            blocked: vec!["c".into()],
            conditions: Vec::new(),
            observed_generation: Some(4),
        };
        assert_eq!(status.phase_name(), "Blocked");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["switchPhase"], "Switch");
        assert_eq!(json["phaseStartedAt"], 1_700_000_000u64);
        assert_eq!(
            json["inFlight"]["routes"],
            serde_json::json!(["vxlan", "native"])
        );
        let back: ClusterRoutingStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
        assert_eq!(back.observed_generation, Some(4));

        // Written by an older coordinator: no switchPhase, no inFlight.
        let old: ClusterRoutingStatus = serde_json::from_value(serde_json::json!({
            "phase": "Blocked", "from": "vxlan", "to": "native",
            "plan": {"generation": 2, "routeMode": "native", "decap": ["native", "vxlan"]},
        }))
        .unwrap();
        assert_eq!(old.current_phase(), Phase::Switch);
        assert_eq!(old.in_flight, None);
        assert_eq!(
            ClusterRoutingStatus::default().current_phase(),
            Phase::Steady
        );
    }
}
