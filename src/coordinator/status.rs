//! The ClusterRouting status as stored: the Ready condition and a JSON merge
//! patch of the status subresource (fields that went away written as null).

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use crate::api::{
    rfc3339, ClusterRouting, ClusterRoutingStatus, Condition, NodesStatus, Phase,
    CLUSTER_ROUTING_NAME,
};
use crate::{Error, Result};

/// The condition the coordinator keeps on the ClusterRouting status.
pub const CONDITION_READY: &str = "Ready";

/// Patch the status from `old` (what the API server holds) to `new`.
pub async fn patch(
    api: &Api<ClusterRouting>,
    old: &ClusterRoutingStatus,
    new: &ClusterRoutingStatus,
) -> Result<()> {
    let json = |s| {
        serde_json::to_value(s)
            .map_err(|e| Error::io("encoding the status", std::io::Error::other(e)))
    };
    let patch = merge_patch(&json(old)?, &json(new)?);
    api.patch_status(
        CLUSTER_ROUTING_NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": patch })),
    )
    .await
    .map_err(|e| Error::kube("writing the ClusterRouting status", e))?;
    Ok(())
}

/// A JSON merge patch (RFC 7386) from `old` to `new`: keys of `old` that
/// `new` lacks become null, objects merge recursively, the rest is `new`.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                out.insert(
                    k.clone(),
                    match o.get(k) {
                        Some(ov) => merge_patch(ov, v),
                        None => v.clone(),
                    },
                );
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// The `Ready` condition: True once Steady with every node in scope
/// converged; False while switching (reason `Switching`), waiting
/// (`Waiting`) or blocked (`Blocked`). lastTransitionTime moves only when
/// the condition's status flips.
pub fn conditions(
    status: &ClusterRoutingStatus,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let plan = status.plan.as_ref().map_or("no plan".to_string(), |p| {
        format!("generation {} ({})", p.generation, p.route_mode)
    });
    let none = NodesStatus::default();
    let nodes = status.nodes.as_ref().unwrap_or(&none);
    let (ok, reason, message) = if !status.blocked.is_empty() {
        (
            false,
            "Blocked",
            format!(
                "{} did not converge on {plan} within nodeTimeout",
                status.blocked.join(", ")
            ),
        )
    } else if status.current_phase() != Phase::Steady {
        (
            false,
            "Switching",
            format!(
                "{}: {plan}, {}/{} nodes applied{}",
                status.current_phase(),
                nodes.applied,
                nodes.total,
                if nodes.waiting.is_empty() {
                    String::new()
                } else {
                    format!(", waiting for {}", some_names(&nodes.waiting))
                }
            ),
        )
    } else if !nodes.waiting.is_empty() {
        let heading = match status.to {
            Some(to) if status.plan.as_ref().is_some_and(|p| p.route_mode != to) => {
                format!(", heading to {to}")
            }
            _ => String::new(),
        };
        (
            false,
            "Waiting",
            format!(
                "waiting for {} on {plan}{heading}",
                some_names(&nodes.waiting)
            ),
        )
    } else {
        (
            true,
            "Steady",
            format!("{}/{} nodes hold {plan}", nodes.applied, nodes.total),
        )
    };
    let value = if ok { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_ == CONDITION_READY);
    let transition = match old {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Some(rfc3339(now)),
    };
    vec![Condition {
        type_: CONDITION_READY.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
        observed_generation: generation,
    }]
}

/// The first few of `names` (a condition message stays short; the status
/// lists them all).
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Mode, NodesStatus, Plan};

    #[test]
    fn merge_patch_nulls_what_went_away() {
        let old =
            json!({"phase": "Switch", "from": "vxlan", "nodes": {"total": 3, "waiting": ["a"]}});
        let new = json!({"phase": "Steady", "nodes": {"total": 3}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"phase": "Steady", "from": null, "nodes": {"total": 3, "waiting": null}})
        );
    }

    #[test]
    fn ready_flips_with_its_transition_time() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2030-01-01T00:01:00Z".parse().unwrap();
        let mut status = ClusterRoutingStatus {
            switch_phase: Some(Phase::Switch),
            plan: Some(Plan::steady(Mode::Native, 3)),
            nodes: Some(NodesStatus {
                total: 3,
                applied: 1,
                waiting: vec!["b".into(), "c".into()],
            }),
            ..ClusterRoutingStatus::default()
        };
        let first = conditions(&status, &[], Some(2), t0);
        assert_eq!(first[0].status, "False");
        assert_eq!(first[0].reason.as_deref(), Some("Switching"));
        let nodes = status.nodes.as_mut().unwrap();
        nodes.applied = 2;
        let second = conditions(&status, &first, Some(2), t1);
        assert_eq!(
            second[0].last_transition_time,
            first[0].last_transition_time
        );
        status.switch_phase = Some(Phase::Steady);
        let nodes = status.nodes.as_mut().unwrap();
        nodes.applied = 3;
        nodes.waiting.clear();
        let done = conditions(&status, &second, Some(2), t1);
        assert_eq!(done[0].status, "True");
        assert_ne!(done[0].last_transition_time, first[0].last_transition_time);
        status.blocked = vec!["c".into()];
        assert_eq!(
            conditions(&status, &done, Some(2), t1)[0].reason.as_deref(),
            Some("Blocked")
        );
    }
}
