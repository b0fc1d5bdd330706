//! The writes a report needs, decided against what the Node shows. Pure.

use serde_json::{json, Value};

use super::view::{CondStatus, RoutingFields};
use crate::api::{APPLIED_ANNOTATION, NETWORK_UNAVAILABLE, REASON_ROUTE_CREATED};
use crate::store::{Network, NodeReport};

#[derive(Debug, PartialEq)]
pub struct Writes {
    /// JSON merge patch on the Node (metadata.annotations).
    pub annotation: Option<Value>,
    /// Strategic merge patch on nodes/status (conditions merge by type).
    pub condition: Option<Value>,
}

/// Only what differs from `current` (`None`: the store does not know the
/// node; write everything). `applied: None` removes the annotation;
/// `network: None` leaves the condition alone (kubelet, cloud controllers
/// and other CNIs share it, podroute never deletes it). `now` is RFC 3339.
pub fn writes(current: Option<&RoutingFields>, report: &NodeReport, now: &str) -> Writes {
    let annotation = match current {
        Some(fields) if fields.report.applied == report.applied => None,
        _ => Some(json!({"metadata": {"annotations": {
            APPLIED_ANNOTATION: report.applied.map(|a| a.to_string()),
        }}})),
    };
    let condition = report.network.as_ref().and_then(|network| {
        let status_now = current.map_or(CondStatus::Absent, |f| f.network_status);
        if current.is_some_and(|f| f.report.network.as_ref() == Some(network)) {
            return None;
        }
        let (status, new_status, reason, message) = match network {
            Network::Available { message } => {
                ("False", CondStatus::False, REASON_ROUTE_CREATED, message)
            }
            Network::Unavailable { reason, message } => {
                ("True", CondStatus::True, reason.as_str(), message)
            }
        };
        let mut condition = json!({
            "type": NETWORK_UNAVAILABLE,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
        });
        if current.is_none() || status_now != new_status {
            condition["lastTransitionTime"] = json!(now);
        }
        Some(json!({"status": {"conditions": [condition]}}))
    });
    Writes {
        annotation,
        condition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Mode;
    use crate::store::Applied;

    const NOW: &str = "2030-01-01T00:00:00Z";

    fn fields(report: NodeReport, network_status: CondStatus) -> RoutingFields {
        RoutingFields {
            node: Err(super::super::view::LeftOut::Pending("-".into())),
            ready: true,
            report,
            network_status,
            facts: Default::default(),
            created: None,
        }
    }

    fn available(m: &str) -> Option<Network> {
        Some(Network::Available { message: m.into() })
    }

    fn applied(g: u64) -> Option<Applied> {
        Some(Applied {
            generation: g,
            mode: Mode::Vxlan,
        })
    }

    #[test]
    fn the_same_report_is_no_write() {
        let report = NodeReport {
            applied: applied(2),
            network: available("ok"),
        };
        let w = writes(
            Some(&fields(report.clone(), CondStatus::False)),
            &report,
            NOW,
        );
        assert_eq!(
            w,
            Writes {
                annotation: None,
                condition: None
            }
        );
    }

    #[test]
    fn only_the_part_that_differs_is_written() {
        let shown = NodeReport {
            applied: applied(2),
            network: available("ok"),
        };
        let next = NodeReport {
            applied: applied(3),
            network: available("ok"),
        };
        let w = writes(Some(&fields(shown.clone(), CondStatus::False)), &next, NOW);
        assert_eq!(
            w.annotation,
            Some(json!({"metadata": {"annotations": {"podroute.io/applied": "3/vxlan"}}}))
        );
        assert_eq!(w.condition, None);

        let next = NodeReport {
            applied: applied(2),
            network: available("new message"),
        };
        let w = writes(Some(&fields(shown, CondStatus::False)), &next, NOW);
        assert_eq!(w.annotation, None);
        let c = &w.condition.unwrap()["status"]["conditions"][0];
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "RouteCreated");
        assert_eq!(c["lastHeartbeatTime"], NOW);
        assert!(
            c.get("lastTransitionTime").is_none(),
            "status did not flip: {c}"
        );
    }

    #[test]
    fn transition_time_only_when_the_status_flips() {
        let shown = NodeReport {
            applied: None,
            network: None,
        };
        // another CNI's False: ours is False too, no flip
        let next = NodeReport {
            applied: None,
            network: available("ok"),
        };
        let w = writes(Some(&fields(shown.clone(), CondStatus::False)), &next, NOW);
        assert!(w.condition.unwrap()["status"]["conditions"][0]
            .get("lastTransitionTime")
            .is_none());
        // the cloud's True -> our False: flip
        let w = writes(Some(&fields(shown.clone(), CondStatus::True)), &next, NOW);
        assert_eq!(
            w.condition.unwrap()["status"]["conditions"][0]["lastTransitionTime"],
            NOW
        );
        // absent -> anything: flip
        let w = writes(Some(&fields(shown, CondStatus::Absent)), &next, NOW);
        assert_eq!(
            w.condition.unwrap()["status"]["conditions"][0]["lastTransitionTime"],
            NOW
        );
    }

    #[test]
    fn none_removes_the_annotation_and_leaves_the_condition() {
        let shown = NodeReport {
            applied: applied(1),
            network: available("ok"),
        };
        let next = NodeReport {
            applied: None,
            network: None,
        };
        let w = writes(Some(&fields(shown, CondStatus::False)), &next, NOW);
        assert_eq!(
            w.annotation,
            Some(json!({"metadata": {"annotations": {"podroute.io/applied": null}}}))
        );
        assert_eq!(w.condition, None);
    }

    #[test]
    fn unavailable_is_true_with_reason() {
        let next = NodeReport {
            applied: None,
            network: Some(Network::Unavailable {
                reason: "PodrouteDataplaneFailed".into(),
                message: "boom".into(),
            }),
        };
        let w = writes(None, &next, NOW);
        let c = &w.condition.unwrap()["status"]["conditions"][0];
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("PodrouteDataplaneFailed"))
        );
        assert_eq!(c["lastTransitionTime"], NOW);
    }
}
