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

mod contest;
mod events;
mod kernel;
pub mod metrics;
pub mod readiness;
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant as Deadline;

pub use events::pump;
pub use kernel::Kernel;
pub use metrics::Metrics;
pub use readiness::Refusal;

use self::contest::Contest;
use crate::check::{periodic, CheckOptions, Responder};
use crate::dataplane::monitor::KernelEvent;
use crate::engine::Outcome;
use crate::model::{Cluster, Node};
use crate::plan::check::ProbeTarget;
use crate::plan::Excluded;
use crate::store::{ClusterStore, NodeReport, Snapshot};
use crate::{Error, Result};

/// The Event reason when another writer keeps overwriting the condition.
pub const REASON_CONDITION_CONTESTED: &str = "PodrouteConditionContested";

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
    /// How long failures must last (besides their count) before the node
    /// reports NetworkUnavailable=True.
    pub unavailable_after: Duration,
    /// The check responder and the periodic check; `None`: neither.
    pub check: Option<CheckOptions>,
}

impl AgentOptions {
    pub fn new(node: impl Into<String>) -> AgentOptions {
        AgentOptions {
            node: node.into(),
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(5),
            backoff: Duration::from_millis(200),
            unavailable_after: readiness::UNAVAILABLE_AFTER,
            check: None,
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
        /// The update the agent did not apply (it kept the last good plan).
        refused: Option<Refusal>,
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

/// The plan inputs a pass used: the cluster and this node in it.
type Inputs = (Cluster, Node);

pub struct Agent<K: Kernel> {
    options: AgentOptions,
    store: Arc<dyn ClusterStore>,
    kernel: K,
    /// The inputs of the last pass the kernel verified: kept, and repaired
    /// against, while an update cannot be used.
    last_good: Option<Inputs>,
    /// The update the agent refuses now, if any.
    refused: Option<Refusal>,
    /// The report the agent means the Node to show (the last one decided).
    intended: Option<NodeReport>,
    /// The report the store last accepted from us.
    written: Option<NodeReport>,
    /// A report the store refused (API server away), retried with backoff.
    unreported: Option<NodeReport>,
    /// Refusals in a row of the report in `unreported`.
    report_failures: u32,
    /// Failed reconciles in a row, and since when.
    failures: u32,
    failing_since: Option<Instant>,
    /// Peers left out and devices kept, as last logged.
    excluded: Vec<Excluded>,
    kept: Vec<String>,
    contest: Contest,
    /// The last pass made the kernel hold a plan (not waiting, not failed):
    /// only then may a kernel event be repaired alone against that plan.
    last_pass_applied: bool,
    metrics: Arc<Metrics>,
    uplink: watch::Sender<Option<String>>,
    /// The peers the last applied plan routes, as probes see them.
    probes: watch::Sender<Arc<Vec<ProbeTarget>>>,
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
            last_good: None,
            refused: None,
            intended: None,
            written: None,
            unreported: None,
            report_failures: 0,
            failures: 0,
            failing_since: None,
            excluded: Vec::new(),
            kept: Vec::new(),
            contest: Contest::default(),
            last_pass_applied: false,
            metrics,
            uplink: watch::Sender::new(None),
            probes: watch::Sender::new(Arc::new(Vec::new())),
            passes: None,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The uplink the last pass used (for [`pump`], which has the netlink
    /// monitor watch it: IPv4 drops routes through a device that goes down
    /// without a notification).
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
        self.start_checks(&shutdown)?;
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
                let snapshot = snapshots.borrow_and_update().clone();
                if wake.retry_only() && self.failures == 0 && self.unreported.is_some() {
                    // The kernel was fine; only the store said no.
                    self.retry_report(snapshot.as_deref()).await;
                } else {
                    let pass = self.reconcile(snapshot.as_deref()).await;
                    self.last_pass_applied = matches!(pass, Pass::Applied { .. });
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
                        let store_changed = snapshots.has_changed().unwrap_or(true);
                        if !self.repair_alone(&event, store_changed).await {
                            wake.kernel = true;
                        }
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

    /// Repair the one object `event` names at once, without a dump and
    /// without the debounce, when the last pass succeeded and no store
    /// change waits. False: a full pass must follow.
    async fn repair_alone(&mut self, event: &KernelEvent, store_changed: bool) -> bool {
        let KernelEvent::Object { touched, .. } = event else {
            return false;
        };
        if store_changed || !self.last_pass_applied {
            return false;
        }
        let started = Instant::now();
        match self.kernel.repair(touched).await {
            Ok(Some(0)) => true,
            Ok(Some(changes)) => {
                self.metrics.drift_repairs.inc();
                tracing::info!(
                    changes,
                    took_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "drift repaired: {touched}"
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("repairing {touched} alone failed, doing a full pass: {e}");
                false
            }
        }
    }

    /// Metrics and readiness from the pass just finished: never from an
    /// earlier one.
    fn record(&self, pass: &Pass, wake: Wake) {
        let m = &self.metrics;
        m.beat();
        if let Some(held) = self.kernel.held() {
            m.owned_routes.set(held.routes as i64);
            m.owned_neighbours.set(held.neighbours as i64);
            m.owned_fdb_entries.set(held.fdb_entries as i64);
        }
        match pass {
            Pass::Waiting(why) => {
                tracing::debug!("waiting: {why}");
                m.set_readiness(Err(why.clone()));
            }
            Pass::Applied {
                outcome,
                took,
                refused,
            } => {
                m.reconciles.inc();
                m.reconcile_seconds.observe(took.as_secs_f64());
                // Only the kernel side woke us and something had to be put back.
                if wake.kernel && !wake.store && outcome.changes > 0 {
                    m.drift_repairs.inc();
                    tracing::info!(
                        changes = outcome.changes,
                        took_ms = took.as_secs_f64() * 1000.0,
                        "drift repaired"
                    );
                }
                m.set_readiness(Ok(refused.as_ref().map_or(String::new(), |r| {
                    format!("keeping the last good plan, {r}")
                })));
            }
            Pass::Failed { error, .. } => {
                m.reconciles.inc();
                m.netlink_errors.inc();
                m.set_readiness(Err(format!("the last reconcile failed: {error}")));
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

    /// What to plan with: the snapshot's cluster, or, while no plan is
    /// published (the ClusterRouting object is gone), its nodes with the
    /// last good plan and settings.
    fn inputs(&self, snapshot: &Snapshot, local: &Node) -> Option<(Inputs, Option<Refusal>)> {
        if let Some(cluster) = snapshot.cluster() {
            return Some(((cluster, local.clone()), None));
        }
        let (good, _) = self.last_good.as_ref()?;
        let cluster = Cluster {
            nodes: snapshot.nodes.iter().map(|n| n.node.clone()).collect(),
            plan: good.plan.clone(),
            settings: good.settings.clone(),
        };
        let refusal = Refusal {
            generation: None,
            reason: "no plan is published (is the ClusterRouting object gone?)".into(),
        };
        Some(((cluster, local.clone()), Some(refusal)))
    }

    async fn reconcile(&mut self, snapshot: Option<&Snapshot>) -> Pass {
        let node = self.options.node.clone();
        let Some(snapshot) = snapshot else {
            return Pass::Waiting("the store has not synced yet".into());
        };
        let Some(state) = snapshot.node(&node) else {
            // Deleted: a re-created Node starts from nothing we wrote.
            self.written = None;
            return Pass::Waiting(format!("node {node} is not in the cluster"));
        };
        let shown = state.report.clone();
        let Some((mut used, mut refused)) = self.inputs(snapshot, &state.node) else {
            return Pass::Waiting("no plan published yet".into());
        };
        let started = Instant::now();
        let mut result = self.kernel.converge(&used.0, &used.1).await;
        if let Err(e @ Error::Invalid { .. }) = &result {
            // An update this node cannot use: keep the last good plan, if
            // the kernel can still hold it.
            if let Some(good) = self.last_good.clone().filter(|good| *good != used) {
                let generation = used.0.plan.generation;
                let refusal = Refusal {
                    generation: (generation != good.0.plan.generation).then_some(generation),
                    reason: e.to_string(),
                };
                let fallback = self.kernel.converge(&good.0, &good.1).await;
                if fallback.is_ok() {
                    (used, refused, result) = (good, Some(refusal), fallback);
                }
            }
        }
        let took = started.elapsed();
        self.follow_uplink();
        let (report, pass) = match result {
            Ok(outcome) => {
                self.follow_probes();
                self.failures = 0;
                self.failing_since = None;
                if outcome.changes > 0 {
                    tracing::info!(
                        changes = outcome.changes,
                        generation = used.0.plan.generation,
                        mode = %used.0.plan.route_mode,
                        took_ms = took.as_secs_f64() * 1000.0,
                        "kernel converged"
                    );
                }
                let generation = used.0.plan.generation;
                self.metrics
                    .applied_generation
                    .set(i64::try_from(generation).unwrap_or(i64::MAX));
                self.note_refusal(refused.as_ref(), &used);
                self.note_excluded_and_kept(&outcome);
                let report = readiness::applied(&used.0.plan, &outcome, refused.as_ref());
                self.last_good = Some(used);
                (
                    report,
                    Pass::Applied {
                        outcome,
                        took,
                        refused,
                    },
                )
            }
            Err(e) => {
                self.failures += 1;
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                let error = e.to_string();
                tracing::error!(failures = self.failures, "reconcile failed: {error}");
                let previous = self.intended.clone().unwrap_or_else(|| shown.clone());
                (
                    readiness::failed(
                        &previous,
                        self.failures,
                        since.elapsed(),
                        self.options.unavailable_after,
                        &error,
                    ),
                    Pass::Failed {
                        error,
                        failures: self.failures,
                    },
                )
            }
        };
        self.publish(Some(&shown), report).await;
        pass
    }

    /// The responder (bound now: a taken port is a start-up error) and the
    /// periodic check, when configured.
    fn start_checks(&self, shutdown: &watch::Receiver<bool>) -> Result<()> {
        let Some(check) = self.options.check.clone() else {
            return Ok(());
        };
        let responder = Responder::bind(check.port)?;
        tracing::debug!(port = responder.port(), "check responder listening");
        tokio::spawn(responder.run(shutdown.clone()));
        if !check.interval.is_zero() {
            let targets = self.probes.subscribe();
            let metrics = self.metrics.peers.clone();
            tokio::spawn(periodic::run(check, targets, metrics, shutdown.clone()));
        }
        Ok(())
    }

    /// Publish the peers the applied plan routes to the periodic check.
    fn follow_probes(&self) {
        let targets = self.kernel.probe_targets();
        self.probes.send_if_modified(|current| {
            if **current == targets {
                return false;
            }
            *current = Arc::new(targets);
            true
        });
    }

    /// Arm the monitor on the uplink the pass used.
    fn follow_uplink(&self) {
        let uplink = self.kernel.uplink();
        self.uplink.send_if_modified(|current| {
            if *current == uplink {
                return false;
            }
            tracing::debug!(?uplink, "watching the uplink");
            *current = uplink;
            true
        });
    }

    /// One log line when the agent starts or stops refusing an update.
    fn note_refusal(&mut self, refused: Option<&Refusal>, used: &Inputs) {
        if self.refused.as_ref() == refused {
            return;
        }
        match refused {
            Some(r) => {
                self.metrics.refused_updates.inc();
                tracing::warn!(
                    kept_generation = used.0.plan.generation,
                    "refusing the update, keeping the last good plan: {r}"
                );
            }
            None => tracing::info!(
                generation = used.0.plan.generation,
                "the update is applied; no longer keeping an older plan"
            ),
        }
        self.metrics
            .update_refused
            .set(i64::from(refused.is_some()));
        self.refused = refused.cloned();
    }

    /// Peers left out and devices kept: logged when they change.
    fn note_excluded_and_kept(&mut self, outcome: &Outcome) {
        if outcome.excluded != self.excluded {
            for peer in outcome
                .excluded
                .iter()
                .filter(|p| !self.excluded.contains(p))
            {
                tracing::warn!(peer = %peer.node, "not routing this peer: {}", peer.reason);
            }
            self.metrics
                .excluded_peers
                .set(outcome.excluded.len() as i64);
            self.excluded = outcome.excluded.clone();
        }
        if outcome.kept != self.kept {
            for note in outcome.kept.iter().filter(|k| !self.kept.contains(k)) {
                tracing::warn!("{note}");
            }
            self.kept = outcome.kept.clone();
        }
    }
}

fn note_kernel_event(event: &KernelEvent) {
    match event {
        KernelEvent::Changed(what) | KernelEvent::Object { what, .. } => {
            tracing::debug!("kernel: {what}")
        }
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
