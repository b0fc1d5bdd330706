//! Prometheus metrics and readiness of one agent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::http::{encode_registry, Endpoints};

pub struct Metrics {
    registry: Registry,
    pub owned_routes: Gauge,
    pub applied_generation: Gauge,
    pub reconcile_seconds: Histogram,
    pub reconciles: Counter,
    pub drift_repairs: Counter,
    pub netlink_errors: Counter,
    /// True once a plan was applied and verified.
    pub ready: AtomicBool,
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
        let owned_routes = Gauge::default();
        let applied_generation = Gauge::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let reconciles = Counter::default();
        let drift_repairs = Counter::default();
        let netlink_errors = Counter::default();
        registry.register(
            "owned_routes",
            "Routes podroute holds in the kernel",
            owned_routes.clone(),
        );
        registry.register(
            "applied_generation",
            "Generation of the plan the kernel holds, verified",
            applied_generation.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile: read, plan, write, read back",
            reconcile_seconds.clone(),
        );
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        registry.register(
            "drift_repairs",
            "Passes that rewrote state someone else had changed",
            drift_repairs.clone(),
        );
        registry.register(
            "netlink_errors",
            "Reconciles that failed",
            netlink_errors.clone(),
        );
        Metrics {
            registry,
            owned_routes,
            applied_generation,
            reconcile_seconds,
            reconciles,
            drift_repairs,
            netlink_errors,
            ready: AtomicBool::new(false),
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

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
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

    fn readiness(&self) -> Result<(), String> {
        match self.is_ready() {
            true => Ok(()),
            false => Err("no plan applied yet".into()),
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
