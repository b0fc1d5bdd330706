//! The agent's side of the Node: what it reports, compared with what the
//! Node shows now (not with what the agent once wrote), restored when
//! someone overwrites it, and left to another writer that keeps at it.

use std::time::Instant;

use super::{Agent, Kernel, REASON_CONDITION_CONTESTED};
use crate::store::{Network, NodeReport, Snapshot};

impl<K: Kernel> Agent<K> {
    /// Make the Node show `report`, compared with what it shows now
    /// (`shown`), not with what we once wrote: an overwritten or lost
    /// condition or annotation is restored. If another writer keeps
    /// overwriting the condition, back off and leave it to them.
    pub(super) async fn publish(&mut self, shown: Option<&NodeReport>, report: NodeReport) {
        self.intended = Some(report.clone());
        let now = Instant::now();
        // A fight is over the status (True, False, absent), not the message:
        // a cloud route controller's own False/RouteCreated is no contest.
        let kind = |n: &Option<Network>| n.as_ref().map(std::mem::discriminant);
        let overwritten = !self.contest.holding_off(now)
            && shown.is_some_and(|shown| {
                kind(&shown.network) != kind(&report.network)
                    && self
                        .written
                        .as_ref()
                        .is_some_and(|w| w.network.is_some() && w.network == report.network)
            });
        if overwritten {
            self.metrics.condition_overwrites.inc();
            let now_shows = shown.and_then(|s| s.network.as_ref());
            match self.contest.overwritten(now) {
                Some(backoff) => {
                    let message = format!(
                        "NetworkUnavailable on node {} keeps being overwritten (now {now_shows:?}); \
                         podroute leaves it to the other writer for {}s",
                        self.options.node,
                        backoff.as_secs()
                    );
                    tracing::warn!("{message}");
                    if let Err(e) = self
                        .store
                        .warn_event(&self.options.node, REASON_CONDITION_CONTESTED, &message)
                        .await
                    {
                        tracing::warn!("recording an Event: {e}");
                    }
                }
                None => tracing::info!(
                    "NetworkUnavailable on node {} was overwritten (now {now_shows:?}); restoring it",
                    self.options.node
                ),
            }
        }
        let holding_off = self.contest.holding_off(now);
        self.metrics.condition_contested.set(i64::from(holding_off));
        let report = match holding_off {
            // The annotation is ours alone; the condition is left as it is.
            true => NodeReport {
                applied: report.applied,
                network: None,
            },
            false => report,
        };
        let differs = match shown {
            Some(shown) => {
                shown.applied != report.applied
                    || (report.network.is_some() && shown.network != report.network)
            }
            None => true,
        };
        if !differs {
            self.unreported = None;
            self.report_failures = 0;
            if !holding_off {
                self.written = Some(report);
            }
            return;
        }
        match self.store.report(&self.options.node, &report).await {
            Ok(()) => {
                if report.network.is_some() {
                    self.written = Some(report);
                }
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

    pub(super) async fn retry_report(&mut self, snapshot: Option<&Snapshot>) {
        if let Some(report) = self.unreported.take() {
            let shown = snapshot
                .and_then(|s| s.node(&self.options.node))
                .map(|n| n.report.clone());
            self.publish(shown.as_ref(), report).await;
        }
    }
}
