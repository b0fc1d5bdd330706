//! The per-node reconcile loop: triggers in, one reconcile at a time,
//! kernel read back, report out.
//!
//! Triggers: a store change (peers, plan), a kernel event on what we own
//! (restored at once), a periodic full resync, a netlink overrun. Bursts
//! are coalesced: after a trigger the loop waits `debounce`, drains what
//! else arrived, and reconciles once.
//!
//! A report the store refuses (API server away) is retried on its own,
//! without touching the kernel, with a delay that doubles per refusal.

mod events;
mod kernel;
pub mod metrics;
pub mod readiness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant as Deadline;

pub use events::pump;
pub use kernel::Kernel;
pub use metrics::Metrics;

use crate::dataplane::monitor::KernelEvent;
use crate::engine::Outcome;
use crate::store::{ClusterStore, NodeReport, Snapshot};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: String,
    /// Full resync even when nothing was heard.
    pub resync: Duration,
    /// Quiet time that gathers a burst of triggers into one reconcile.
    pub debounce: Duration,
    /// First retry delay after a failed reconcile or a refused report;
    /// doubles with each further failure, up to `resync`.
    pub backoff: Duration,
}

impl AgentOptions {
    pub fn new(node: impl Into<String>) -> AgentOptions {
        AgentOptions {
            node: node.into(),
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(5),
            backoff: Duration::from_millis(200),
        }
    }
}

/// What one reconcile did, for logs, metrics and tests.
#[derive(Debug, Clone)]
pub enum Pass {
    /// No plan yet, or this node is not in the cluster: the kernel is left alone.
    Waiting(String),
    Applied {
        outcome: Outcome,
        took: Duration,
    },
    Failed {
        error: String,
        failures: u32,
    },
}

/// Why the loop woke up; several may be gathered into one pass.
#[derive(Debug, Clone, Copy, Default)]
struct Wake {
    store: bool,
    kernel: bool,
    resync: bool,
    retry: bool,
}

impl Wake {
    fn any(self) -> bool {
        self.store || self.kernel || self.resync || self.retry
    }

    /// Only a retry timer fired: nothing new about the cluster or kernel.
    fn retry_only(self) -> bool {
        self.retry && !(self.store || self.kernel || self.resync)
    }
}

/// The delay before retry number `failures` (1 for the first): `first`,
/// doubling per failure, never more than `cap`.
fn retry_delay(first: Duration, cap: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(cap)
}

pub struct Agent<K: Kernel> {
    options: AgentOptions,
    store: Arc<dyn ClusterStore>,
    kernel: K,
    /// What the store last accepted from us; `None` before the first report.
    reported: Option<NodeReport>,
    /// A report the store refused (API server away), retried with backoff.
    unreported: Option<NodeReport>,
    /// Refusals in a row of the report in `unreported`.
    report_failures: u32,
    /// Failed reconciles in a row.
    failures: u32,
    metrics: Arc<Metrics>,
    uplink: watch::Sender<Option<String>>,
    passes: Option<mpsc::UnboundedSender<Pass>>,
}

impl<K: Kernel> Agent<K> {
    pub fn new(options: AgentOptions, store: Arc<dyn ClusterStore>, kernel: K) -> Agent<K> {
        let metrics = Arc::new(Metrics::with_stall_limit(metrics::stall_limit(
            options.resync,
        )));
        Agent {
            options,
            store,
            kernel,
            reported: None,
            unreported: None,
            report_failures: 0,
            failures: 0,
            metrics,
            uplink: watch::Sender::new(None),
            passes: None,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The uplink's name whenever a converge finds it (for [`pump`]).
    pub fn uplink_updates(&self) -> watch::Receiver<Option<String>> {
        self.uplink.subscribe()
    }

    /// Every pass is also sent here (tests, metrics).
    pub fn observe_passes(&mut self, tx: mpsc::UnboundedSender<Pass>) {
        self.passes = Some(tx);
    }

    /// Run until `shutdown` turns true. The dataplane is left as it is on
    /// the way out: traffic keeps flowing while the agent is away.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<KernelEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut snapshots = self.store.subscribe();
        let mut wake = Wake {
            resync: true,
            ..Wake::default()
        };
        let mut next_resync = Deadline::now() + self.options.resync;
        let mut retry_at: Option<Deadline> = None;
        let mut events_open = true;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            if wake.any() {
                // Gather the rest of a burst, then one pass.
                tokio::time::sleep(self.options.debounce).await;
                while let Ok(event) = events.try_recv() {
                    note_kernel_event(&event);
                    wake.kernel = true;
                }
                if wake.retry_only() && self.failures == 0 && self.unreported.is_some() {
                    // The kernel was fine; only the store said no.
                    self.retry_report().await;
                } else {
                    let snapshot = snapshots.borrow_and_update().clone();
                    let pass = self.reconcile(snapshot.as_deref()).await;
                    self.record(&pass, wake);
                    if wake.resync {
                        next_resync = Deadline::now() + self.options.resync;
                    }
                    if let Some(tx) = &self.passes {
                        let _ = tx.send(pass);
                    }
                }
                retry_at = self.next_retry().map(|delay| Deadline::now() + delay);
                wake = Wake::default();
            }
            let retry = sleep_until_opt(retry_at);
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return Err(Error::io("cluster store", std::io::Error::other("closed")));
                    }
                    wake.store = true;
                }
                event = events.recv(), if events_open => match event {
                    Some(event) => {
                        note_kernel_event(&event);
                        wake.kernel = true;
                    }
                    None => {
                        tracing::warn!("kernel event stream ended; relying on the periodic resync");
                        events_open = false;
                    }
                },
                _ = tokio::time::sleep_until(next_resync) => wake.resync = true,
                _ = retry => wake.retry = true,
                _ = shutdown.changed() => {}
            }
        }
    }

    fn record(&self, pass: &Pass, wake: Wake) {
        let m = &self.metrics;
        m.beat();
        match pass {
            Pass::Waiting(why) => tracing::debug!("waiting: {why}"),
            Pass::Applied { outcome, took } => {
                m.reconciles.inc();
                m.reconcile_seconds.observe(took.as_secs_f64());
                m.owned_routes.set(outcome.routes as i64);
                // Only the kernel side woke us and something had to be put back.
                if wake.kernel && !wake.store && outcome.changes > 0 {
                    m.drift_repairs.inc();
                    tracing::info!(
                        changes = outcome.changes,
                        took_ms = took.as_secs_f64() * 1000.0,
                        "drift repaired"
                    );
                }
                m.ready.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Pass::Failed { .. } => {
                m.reconciles.inc();
                m.netlink_errors.inc();
            }
        }
    }

    /// How long until the next retry: a failed reconcile first (it
    /// reports too), else a refused report; `None` when nothing failed.
    fn next_retry(&self) -> Option<Duration> {
        let failures = match (self.failures, &self.unreported) {
            (0, None) => return None,
            (0, Some(_)) => self.report_failures,
            (failures, _) => failures,
        };
        Some(retry_delay(
            self.options.backoff,
            self.options.resync,
            failures,
        ))
    }

    async fn reconcile(&mut self, snapshot: Option<&Snapshot>) -> Pass {
        let node = &self.options.node;
        let Some(snapshot) = snapshot else {
            return Pass::Waiting("the store has not synced yet".into());
        };
        let Some(state) = snapshot.node(node) else {
            return Pass::Waiting(format!("node {node} is not in the cluster"));
        };
        if self.reported.is_none() {
            // After a restart the store remembers what we said last time;
            // saying the same again is no write.
            self.reported = Some(state.report.clone());
        }
        let Some(cluster) = snapshot.cluster() else {
            return Pass::Waiting("no plan published yet".into());
        };
        let local = state.node.clone();
        let started = Instant::now();
        let result = self.kernel.converge(&cluster, &local).await;
        let took = started.elapsed();
        let previous = self.reported.clone().unwrap_or(NodeReport {
            applied: None,
            network: None,
        });
        let (report, pass) = match result {
            Ok(outcome) => {
                self.failures = 0;
                if outcome.changes > 0 {
                    tracing::info!(
                        changes = outcome.changes,
                        generation = cluster.plan.generation,
                        mode = %cluster.plan.route_mode,
                        took_ms = took.as_secs_f64() * 1000.0,
                        "kernel converged"
                    );
                }
                self.metrics
                    .applied_generation
                    .set(cluster.plan.generation as i64);
                (
                    readiness::applied(&cluster.plan, &outcome),
                    Pass::Applied { outcome, took },
                )
            }
            Err(e) => {
                self.failures += 1;
                let error = e.to_string();
                tracing::error!(failures = self.failures, "reconcile failed: {error}");
                (
                    readiness::failed(&previous, self.failures, &error),
                    Pass::Failed {
                        error,
                        failures: self.failures,
                    },
                )
            }
        };
        self.publish(report).await;
        pass
    }

    /// Tell the store `report` unless it already holds it; a refusal
    /// leaves it in `unreported` for a retry.
    async fn publish(&mut self, report: NodeReport) {
        if self.reported.as_ref() == Some(&report) {
            self.unreported = None;
            self.report_failures = 0;
            return;
        }
        match self.store.report(&self.options.node, &report).await {
            Ok(()) => {
                self.reported = Some(report);
                self.unreported = None;
                self.report_failures = 0;
            }
            Err(e) => {
                self.report_failures += 1;
                tracing::warn!(
                    refusals = self.report_failures,
                    "could not report to the cluster store (will retry): {e}"
                );
                self.unreported = Some(report);
            }
        }
    }

    async fn retry_report(&mut self) {
        if let Some(report) = self.unreported.take() {
            self.publish(report).await;
        }
    }
}

fn note_kernel_event(event: &KernelEvent) {
    match event {
        KernelEvent::Changed(what) => tracing::debug!("kernel: {what}"),
        KernelEvent::Overrun => tracing::warn!("netlink notifications were lost; full resync"),
    }
}

async fn sleep_until_opt(at: Option<Deadline>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
