//! What a node reports, decided from what its reconciles did. Pure.

use std::time::Duration;

use crate::api::Plan;
use crate::engine::Outcome;
use crate::store::{Applied, Network, NodeReport};

/// Consecutive failed reconciles before the node says it cannot route.
/// One failure is usually a race (a device moved under us); several mean
/// the dataplane really cannot be programmed.
pub const FAILURES_BEFORE_UNAVAILABLE: u32 = 3;

/// How long the dataplane must have failed, on top of the count, before the
/// node says it cannot route: NetworkUnavailable=True taints the node, and a
/// blip (an uplink down for a second) is not worth a taint.
pub const UNAVAILABLE_AFTER: Duration = Duration::from_secs(5);

pub const REASON_DATAPLANE_FAILED: &str = "PodrouteDataplaneFailed";

/// An update the agent did not apply: it kept the last good plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Generation of the plan it refused, when there was one.
    pub generation: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.generation {
            Some(g) => write!(f, "generation {g} cannot be used: {}", self.reason),
            None => write!(f, "the update cannot be used: {}", self.reason),
        }
    }
}

/// The report after a pass that verified `plan` in the kernel; `refused`
/// names the update it did not apply instead.
pub fn applied(plan: &Plan, outcome: &Outcome, refused: Option<&Refusal>) -> NodeReport {
    let mut message = format!(
        "podroute: {} routes in place, generation {}",
        plan.route_mode, plan.generation
    );
    if !outcome.conflicts.is_empty() {
        message.push_str(&format!(
            " ({} pod routes held by foreign routes)",
            outcome.conflicts.len()
        ));
    }
    if let Some(refused) = refused {
        message.push_str(&format!("; {refused}"));
    }
    NodeReport {
        applied: Some(Applied {
            generation: plan.generation,
            mode: plan.route_mode,
        }),
        network: Some(Network::Available { message }),
    }
}

/// The report after `failures` consecutive failed reconciles over
/// `failing_for`: the last applied plan stays (the kernel still holds what it
/// held); the condition turns True only once failures persist, in count and
/// in time, never on the first error.
pub fn failed(
    previous: &NodeReport,
    failures: u32,
    failing_for: Duration,
    unavailable_after: Duration,
    error: &str,
) -> NodeReport {
    if failures < FAILURES_BEFORE_UNAVAILABLE || failing_for < unavailable_after {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Mode;

    fn outcome() -> Outcome {
        Outcome {
            changes: 0,
            steps: Vec::new(),
            conflicts: Vec::new(),
            kept: Vec::new(),
            excluded: Vec::new(),
            notes: Vec::new(),
            families: Default::default(),
            pod_mtu: Some(1450),
            routes: 2,
        }
    }

    #[test]
    fn success_reports_generation_and_route_created() {
        let report = applied(&Plan::steady(Mode::Vxlan, 4), &outcome(), None);
        assert_eq!(
            report.applied.map(|a| a.to_string()),
            Some("4/vxlan".into())
        );
        assert!(report.is_available());
        assert_eq!(crate::api::REASON_ROUTE_CREATED, "RouteCreated");
    }

    #[test]
    fn a_refused_update_keeps_the_plan_in_place_and_says_why() {
        let refused = Refusal {
            generation: Some(5),
            reason: "invalid mtu: 9000 is over the MTU 1500 of the uplink eth0".into(),
        };
        let report = applied(&Plan::steady(Mode::Vxlan, 4), &outcome(), Some(&refused));
        assert_eq!(report.applied.map(|a| a.generation), Some(4));
        match report.network {
            Some(Network::Available { message }) => {
                assert!(message.contains("generation 4"), "{message}");
                assert!(
                    message.contains("generation 5 cannot be used: invalid mtu"),
                    "{message}"
                );
            }
            other => panic!("expected available, got {other:?}"),
        }
    }

    #[test]
    fn failures_must_persist_in_count_and_time_before_the_node_says_so() {
        let good = applied(&Plan::steady(Mode::Native, 2), &outcome(), None);
        let long = UNAVAILABLE_AFTER * 2;
        for n in 1..FAILURES_BEFORE_UNAVAILABLE {
            assert_eq!(failed(&good, n, long, UNAVAILABLE_AFTER, "boom"), good);
        }
        let quick = UNAVAILABLE_AFTER / 2;
        assert_eq!(
            failed(&good, 10, quick, UNAVAILABLE_AFTER, "boom"),
            good,
            "ten quick failures are a blip"
        );
        let bad = failed(
            &good,
            FAILURES_BEFORE_UNAVAILABLE,
            UNAVAILABLE_AFTER,
            UNAVAILABLE_AFTER,
            "boom",
        );
        assert_eq!(
            bad.applied, good.applied,
            "the kernel still holds the last plan"
        );
        assert!(!bad.is_available());
    }
}
