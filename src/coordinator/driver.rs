//! The one coordinator loop, over a [`Port`] to where the cluster lives:
//! the API server ([`super::kube`]) or the lab's memory store ([`super::memory`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::machine::{step, Event, Inputs, RolloutNode, Spec};
use crate::api::ClusterRoutingStatus;
use crate::Result;

pub(crate) trait Port {
    /// Resolves when an input may have changed, or a timer of the port's
    /// own (a Lease renewal) is due.
    async fn changed(&mut self);
    /// Whether this coordinator leads (on Kubernetes: holds the Lease).
    async fn lead(&mut self) -> bool {
        true
    }
    /// The spec and the nodes, read together; `None` until both are known.
    fn read(&mut self) -> Option<(Spec, Vec<RolloutNode>)>;
    /// The status to resume from on becoming leader.
    async fn resume(&mut self) -> Result<ClusterRoutingStatus> {
        Ok(ClusterRoutingStatus::default())
    }
    /// Store `status` when what the port holds differs from it.
    async fn write(&mut self, status: &ClusterRoutingStatus) -> Result<()>;
    async fn emit(&mut self, _event: &Event) {}
    /// What the leader tells besides the machine's events, once a pass.
    async fn announce(&mut self) {}
}

/// Steps the machine on every change and every `tick` (timeouts), one step
/// per wake, until `shutdown` turns true; hands the port back.
pub(crate) async fn run<P: Port>(
    mut port: P,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> P {
    // The status last written, or read back on becoming leader.
    let mut last = None;
    while !*shutdown.borrow() {
        if port.lead().await {
            if let Err(e) = pass(&mut port, &mut last).await {
                tracing::warn!("coordinating: {e}; retrying");
            }
            port.announce().await;
        } else {
            // Whoever leads writes the status; read it back if we lead again.
            last = None;
        }
        tokio::select! {
            _ = port.changed() => {}
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
    }
    port
}

async fn pass(port: &mut impl Port, last: &mut Option<ClusterRoutingStatus>) -> Result<()> {
    let Some((spec, nodes)) = port.read() else {
        return Ok(());
    };
    let status = match last {
        Some(status) => status,
        None => last.insert(port.resume().await?),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    let decision = step(&Inputs {
        spec: &spec,
        status,
        nodes: &nodes,
        now: now.map_or(0, |d| d.as_secs()),
    });
    port.write(&decision.status).await?;
    *last = Some(decision.status);
    for event in &decision.events {
        tracing::info!(reason = event.reason, "{}", event.message);
        port.emit(event).await;
    }
    Ok(())
}
