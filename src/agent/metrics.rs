//! Prometheus metrics and readiness of one agent.

use std::sync::atomic::{AtomicBool, Ordering};

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
        }
    }
}

impl Metrics {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

impl Endpoints for Metrics {
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
