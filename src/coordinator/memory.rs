//! The coordinator's [`Port`] to an in-process [`MemoryStore`], what the lab runs:
//! it always leads, starts from the default status, publishes a plan before the status.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::driver::{self, Port};
use super::machine::{RolloutNode, Spec};
use crate::api::ClusterRoutingStatus;
use crate::api::Mode;
use crate::store::{ClusterStore, MemoryStore, Snapshot};
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
        let port = MemoryPort {
            snapshots: store.subscribe(),
            store,
            spec: spec_rx,
            status: status_tx,
        };
        let thread = std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => drop(rt.block_on(driver::run(port, TICK, stop_rx))),
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

struct MemoryPort {
    store: Arc<MemoryStore>,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    spec: watch::Receiver<Mode>,
    status: watch::Sender<ClusterRoutingStatus>,
}

impl Port for MemoryPort {
    async fn changed(&mut self) {
        tokio::select! {
            _ = self.snapshots.changed() => {}
            _ = self.spec.changed() => {}
        }
    }

    fn read(&mut self) -> Option<(Spec, Vec<RolloutNode>)> {
        let snapshot = self.snapshots.borrow_and_update().clone()?;
        let facts = snapshot
            .nodes
            .iter()
            .map(RolloutNode::from_reported)
            .collect();
        // No cloud here: never waits for an underlay signal.
        Some((Spec::new(*self.spec.borrow_and_update()), facts))
    }

    async fn write(&mut self, status: &ClusterRoutingStatus) -> Result<()> {
        let (changed, new_plan) = {
            let published = self.status.borrow();
            (*status != *published, status.plan != published.plan)
        };
        if new_plan {
            if let Some(plan) = &status.plan {
                self.store.set_plan(plan.clone());
            }
        }
        if changed {
            self.status.send_replace(status.clone());
        }
        Ok(())
    }
}
