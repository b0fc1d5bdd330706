//! Prometheus metrics and readiness of one agent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::check::metrics::PeerMetrics;
use crate::http::{encode_registry, Endpoints};

pub struct Metrics {
    registry: Registry,
    /// Our routes in the kernel as of the latest pass's read.
    pub owned_routes: Gauge,
    pub owned_neighbours: Gauge,
    pub owned_fdb_entries: Gauge,
    /// Generations are at most i64::MAX (Kubernetes integers), so they fit.
    pub applied_generation: Gauge,
    pub ready_gauge: Gauge,
    pub reconcile_seconds: Histogram,
    pub reconciles: Counter,
    pub drift_repairs: Counter,
    pub netlink_errors: Counter,
    pub update_refused: Gauge,
    pub refused_updates: Counter,
    pub excluded_peers: Gauge,
    pub condition_overwrites: Counter,
    pub condition_contested: Gauge,
    /// The periodic check's.
    pub peers: PeerMetrics,
    /// What `/readyz` answers: the latest pass verified a plan in the
    /// kernel (with a note, e.g. an update it refused), or why not.
    readiness: Mutex<Result<String, String>>,
    /// When the reconcile loop last finished a pass, and how long it may
    /// go without one before `/healthz` says it is stuck.
    heartbeat: Mutex<Instant>,
    stall_limit: Duration,
}

/// A loop that wakes at least every `resync` is stuck after missing three
/// resyncs, plus a minute for one slow pass (10 000 routes take seconds).
pub fn stall_limit(resync: Duration) -> Duration {
    resync * 3 + Duration::from_secs(60)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podroute");
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let owned_routes = gauge(
            "owned_routes",
            "Routes podroute holds in the kernel, as of the latest pass",
        );
        let owned_neighbours = gauge(
            "owned_neighbours",
            "Permanent neighbours podroute holds on its VXLAN device, as of the latest pass",
        );
        let owned_fdb_entries = gauge(
            "owned_fdb_entries",
            "Permanent FDB entries podroute holds on its VXLAN device, as of the latest pass",
        );
        let ready_gauge = gauge(
            "ready",
            "1 when the latest pass verified a plan in the kernel",
        );
        let update_refused = gauge(
            "update_refused",
            "1 while the agent keeps the last good plan because the latest update cannot be used",
        );
        let excluded_peers = gauge(
            "excluded_peers",
            "Peers this node leaves out (their pod CIDR overlaps its underlay subnet)",
        );
        let condition_contested = gauge(
            "condition_contested",
            "1 while another writer keeps overwriting NetworkUnavailable and the agent backs off",
        );
        let applied_generation = gauge(
            "applied_generation",
            "Generation of the plan the kernel holds, verified",
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile: read, plan, write, read back",
            reconcile_seconds.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let reconciles = counter("reconciles", "Reconcile passes");
        let drift_repairs = counter(
            "drift_repairs",
            "Repairs of state someone else had changed: one write for the object a kernel event named, or a full pass",
        );
        let netlink_errors = counter("netlink_errors", "Reconciles that failed");
        let refused_updates = counter(
            "refused_updates",
            "Updates the agent refused to apply (it kept the last good plan)",
        );
        let condition_overwrites = counter(
            "condition_overwrites",
            "Times another writer changed the NetworkUnavailable condition the agent had written",
        );
        let peers = PeerMetrics::register(&mut registry);
        Metrics {
            registry,
            peers,
            owned_routes,
            owned_neighbours,
            owned_fdb_entries,
            applied_generation,
            ready_gauge,
            reconcile_seconds,
            reconciles,
            drift_repairs,
            netlink_errors,
            update_refused,
            refused_updates,
            excluded_peers,
            condition_overwrites,
            condition_contested,
            readiness: Mutex::new(Err("no plan applied yet".into())),
            heartbeat: Mutex::new(Instant::now()),
            stall_limit: stall_limit(Duration::from_secs(60)),
        }
    }
}

impl Metrics {
    pub fn with_stall_limit(stall_limit: Duration) -> Metrics {
        Metrics {
            stall_limit,
            ..Metrics::default()
        }
    }

    /// What `/readyz` says: `Ok(note)` or `Err(why not)`.
    pub fn readiness(&self) -> Result<String, String> {
        self.readiness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest pass's verdict.
    pub fn set_readiness(&self, readiness: Result<String, String>) {
        self.ready_gauge.set(i64::from(readiness.is_ok()));
        *self.readiness.lock().unwrap_or_else(|e| e.into_inner()) = readiness;
    }

    /// The reconcile loop finished a pass (applied, waiting or failed).
    pub fn beat(&self) {
        *self.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Stuck when no pass finished within the stall limit before `now`.
    pub fn liveness_at(&self, now: Instant) -> Result<(), String> {
        let last = *self.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = now.saturating_duration_since(last);
        match quiet > self.stall_limit {
            false => Ok(()),
            true => Err(format!(
                "the reconcile loop has not finished a pass for {}s (limit {}s)",
                quiet.as_secs(),
                self.stall_limit.as_secs()
            )),
        }
    }
}

impl Endpoints for Metrics {
    fn liveness(&self) -> Result<(), String> {
        self.liveness_at(Instant::now())
    }

    fn readiness(&self) -> Result<String, String> {
        Metrics::readiness(self)
    }

    fn render(&self) -> String {
        encode_registry(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_misses_three_resyncs_is_stuck() {
        let metrics = Metrics::with_stall_limit(stall_limit(Duration::from_secs(60)));
        let start = Instant::now();
        metrics.beat();
        assert!(metrics
            .liveness_at(start + Duration::from_secs(240))
            .is_ok());
        let stuck = metrics
            .liveness_at(start + Duration::from_secs(242))
            .expect_err("no pass for 242 s");
        assert!(stuck.contains("limit 240s"), "{stuck}");
        metrics.beat();
        assert!(metrics.liveness_at(Instant::now()).is_ok());
    }
}
