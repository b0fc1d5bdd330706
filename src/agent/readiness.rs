//! What a node reports, decided from what its reconciles did. Pure.

use crate::engine::Outcome;
use crate::model::Plan;
use crate::store::{Applied, Network, NodeReport};

/// Consecutive failed reconciles before the node says it cannot route.
/// One failure is usually a race (a device moved under us); several mean
/// the dataplane really cannot be programmed.
pub const FAILURES_BEFORE_UNAVAILABLE: u32 = 3;

pub const REASON_DATAPLANE_FAILED: &str = "PodrouteDataplaneFailed";

/// The report after a successful reconcile of `plan`.
pub fn applied(plan: &Plan, outcome: &Outcome) -> NodeReport {
    let conflicts = if outcome.conflicts.is_empty() {
        String::new()
    } else {
        format!(
            " ({} pod routes held by foreign routes)",
            outcome.conflicts.len()
        )
    };
    NodeReport {
        applied: Some(Applied {
            generation: plan.generation,
            mode: plan.route_mode,
        }),
        network: Some(Network::Available {
            message: format!(
                "podroute: {} routes in place, generation {}{conflicts}",
                plan.route_mode, plan.generation
            ),
        }),
    }
}

/// The report after `failures` consecutive failed reconciles: the last
/// applied plan stays (the kernel still holds it); the condition turns True
/// only once failures persist, never on the first error.
pub fn failed(previous: &NodeReport, failures: u32, error: &str) -> NodeReport {
    if failures < FAILURES_BEFORE_UNAVAILABLE {
        return previous.clone();
    }
    NodeReport {
        applied: previous.applied,
        network: Some(Network::Unavailable {
            reason: REASON_DATAPLANE_FAILED.into(),
            message: format!("podroute cannot program the dataplane: {error}"),
        }),
    }
}

/// Whether a report says the node routes (what the coordinator waits for).
pub fn is_available(report: &NodeReport) -> bool {
    matches!(report.network, Some(Network::Available { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    fn outcome() -> Outcome {
        Outcome {
            changes: 0,
            steps: Vec::new(),
            conflicts: Vec::new(),
            pod_mtu: Some(1450),
            routes: 2,
        }
    }

    #[test]
    fn success_reports_generation_and_route_created() {
        let report = applied(&Plan::steady(Mode::Vxlan, 4), &outcome());
        assert_eq!(
            report.applied.map(|a| a.to_string()),
            Some("4/vxlan".into())
        );
        assert!(is_available(&report));
        assert_eq!(crate::store::REASON_ROUTE_CREATED, "RouteCreated");
    }

    #[test]
    fn a_few_failures_change_nothing_then_the_node_says_so() {
        let good = applied(&Plan::steady(Mode::Native, 2), &outcome());
        for n in 1..FAILURES_BEFORE_UNAVAILABLE {
            assert_eq!(failed(&good, n, "boom"), good);
        }
        let bad = failed(&good, FAILURES_BEFORE_UNAVAILABLE, "boom");
        assert_eq!(
            bad.applied, good.applied,
            "the kernel still holds the last plan"
        );
        assert!(!is_available(&bad));
    }
}
