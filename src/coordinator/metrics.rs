//! Prometheus metrics and readiness of one coordinator replica.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{ClusterRoutingStatus, Phase};
use crate::http::{encode_registry, Endpoints};

pub struct CoordinatorMetrics {
    registry: Registry,
    pub leader: Gauge,
    pub plan_generation: Gauge,
    pub nodes_in_scope: Gauge,
    pub nodes_applied: Gauge,
    pub blocked: Gauge,
    pub switch_phase: Gauge,
    pub api_errors: Counter,
    /// The last Lease attempt got an answer from the API server.
    reachable: AtomicBool,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podroute_coordinator");
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let leader = gauge(
            &mut registry,
            "leader",
            "1 while this replica holds the Lease",
        );
        let plan_generation = gauge(
            &mut registry,
            "plan_generation",
            "Generation of the plan in the ClusterRouting status (leader only)",
        );
        let nodes_in_scope = gauge(
            &mut registry,
            "nodes_in_scope",
            "Nodes the current plan must reach (leader only)",
        );
        let nodes_applied = gauge(
            &mut registry,
            "nodes_applied",
            "Nodes that report the current plan applied (leader only)",
        );
        let blocked = gauge(
            &mut registry,
            "blocked",
            "1 while late nodes block the switch (leader only)",
        );
        let switch_phase = gauge(
            &mut registry,
            "switch_phase",
            "Phase of the switch: 0 Steady, 1 Prepare, 2 Switch, 3 Finalize (leader only)",
        );
        let api_errors = Counter::default();
        registry.register(
            "api_errors",
            "Lease calls, status reads or writes, and Event writes that failed",
            api_errors.clone(),
        );
        CoordinatorMetrics {
            registry,
            leader,
            plan_generation,
            nodes_in_scope,
            nodes_applied,
            blocked,
            switch_phase,
            api_errors,
            reachable: AtomicBool::new(false),
        }
    }
}

impl CoordinatorMetrics {
    pub fn lease_answered(&self, leading: bool) {
        self.reachable.store(true, Ordering::SeqCst);
        self.leader.set(i64::from(leading));
    }

    pub fn lease_failed(&self) {
        self.reachable.store(false, Ordering::SeqCst);
        self.api_errors.inc();
    }

    /// An Event write that failed (it is not retried).
    pub fn event_failed(&self) {
        self.api_errors.inc();
    }

    pub fn status_written(&self, status: &ClusterRoutingStatus) {
        let generation = status.plan.as_ref().map_or(0, |p| p.generation);
        self.plan_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let (total, applied) = status
            .nodes
            .as_ref()
            .map_or((0, 0), |n| (n.total, n.applied));
        self.nodes_in_scope.set(i64::from(total));
        self.nodes_applied.set(i64::from(applied));
        self.blocked
            .set(i64::from(status.phase.as_deref() == Some("Blocked")));
        self.switch_phase.set(phase_number(status.current_phase()));
    }
}

/// The value of `podroute_coordinator_switch_phase`, in the order a switch
/// goes through them (dashboards map it back to names).
fn phase_number(phase: Phase) -> i64 {
    match phase {
        Phase::Steady => 0,
        Phase::Prepare => 1,
        Phase::Switch => 2,
        Phase::Finalize => 3,
    }
}

impl Endpoints for CoordinatorMetrics {
    /// Ready while the API server answers: the PodDisruptionBudget then
    /// keeps a replica that can take over, not one that cannot reach it.
    fn readiness(&self) -> Result<String, String> {
        match self.reachable.load(Ordering::SeqCst) {
            true => Ok(String::new()),
            false => Err("the API server did not answer the last Lease call".into()),
        }
    }

    fn render(&self) -> String {
        encode_registry(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_phase_follows_the_status_in_switch_order() {
        let metrics = CoordinatorMetrics::default();
        for (phase, want) in [
            (Phase::Prepare, 1),
            (Phase::Switch, 2),
            (Phase::Finalize, 3),
            (Phase::Steady, 0),
        ] {
            let status = ClusterRoutingStatus {
                switch_phase: Some(phase),
                ..Default::default()
            };
            metrics.status_written(&status);
            assert_eq!(metrics.switch_phase.get(), want, "{phase}");
        }
        assert!(metrics
            .render()
            .contains("# TYPE podroute_coordinator_switch_phase gauge"));
    }
}
