//! The coordinator loop over an in-process memory store: what the lab runs.
//! It steps the state machine on every store change (and on a tick, for
//! timeouts) and publishes each new plan to the store.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::machine::{step, Inputs, RolloutNode, Spec};
use crate::api::ClusterRoutingStatus;
use crate::api::Mode;
use crate::store::{ClusterStore, MemoryStore};
use crate::{Error, Result};

const TICK: Duration = Duration::from_millis(200);

pub struct LocalCoordinator {
    spec: watch::Sender<Mode>,
    status: watch::Receiver<ClusterRoutingStatus>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl LocalCoordinator {
    pub fn spawn(store: Arc<MemoryStore>, mode: Mode) -> Result<LocalCoordinator> {
        let (spec, spec_rx) = watch::channel(mode);
        let (status_tx, status) = watch::channel(ClusterRoutingStatus::default());
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(store, spec_rx, status_tx, stop_rx)),
                    Err(e) => tracing::error!("coordinator runtime: {e}"),
                }
            })
            .map_err(|e| Error::io("spawning the coordinator", e))?;
        Ok(LocalCoordinator {
            spec,
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// What the operator asks for (`spec.mode`).
    pub fn set_mode(&self, mode: Mode) {
        self.spec.send_replace(mode);
    }

    pub fn status(&self) -> ClusterRoutingStatus {
        self.status.borrow().clone()
    }
}

impl Drop for LocalCoordinator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(
    store: Arc<MemoryStore>,
    mut spec: watch::Receiver<Mode>,
    status_tx: watch::Sender<ClusterRoutingStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let mut snapshots = store.subscribe();
    let mut status = ClusterRoutingStatus::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let facts: Vec<RolloutNode> = snapshot
                .nodes
                .iter()
                .map(RolloutNode::from_reported)
                .collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // No cloud here: never waits for an underlay signal.
            let wanted = Spec::new(*spec.borrow_and_update());
            let decision = step(&Inputs {
                spec: &wanted,
                status: &status,
                nodes: &facts,
                now,
            });
            for event in &decision.events {
                tracing::info!(reason = event.reason, "{}", event.message);
            }
            if decision.status != status {
                if decision.status.plan != status.plan {
                    if let Some(plan) = &decision.status.plan {
                        store.set_plan(plan.clone());
                    }
                }
                status = decision.status;
                status_tx.send_replace(status.clone());
            }
        }
        tokio::select! {
            _ = snapshots.changed() => {}
            _ = spec.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
}
