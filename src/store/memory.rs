//! In-process store: a snapshot behind a watch channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::model::Settings;

use super::{ClusterStore, NodeReport, ReportedNode, Snapshot};
use crate::api::Plan;
use crate::model::{Cluster, Node};
use crate::{Error, Result};

pub struct MemoryStore {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    report_writes: AtomicU64,
    events: std::sync::Mutex<Vec<NodeEvent>>,
}

/// An event a store was asked to record about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub node: String,
    pub reason: String,
    pub message: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Snapshot::default())
    }
}

impl MemoryStore {
    pub fn new(initial: Snapshot) -> MemoryStore {
        MemoryStore {
            tx: watch::Sender::new(Some(Arc::new(initial))),
            report_writes: AtomicU64::new(0),
            events: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone().unwrap_or_default()
    }

    /// Reports that changed something (the number of API writes a real
    /// store would have made).
    pub fn report_writes(&self) -> u64 {
        self.report_writes.load(Ordering::SeqCst)
    }

    /// Events recorded so far (what a real store would have sent).
    pub fn events(&self) -> Vec<NodeEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Overwrite a node's report as another writer would (tests).
    pub fn overwrite_report(&self, node: &str, report: NodeReport) {
        self.update(|s| match s.nodes.iter_mut().find(|n| n.node.name == node) {
            Some(n) if n.report != report => {
                n.report = report;
                true
            }
            _ => false,
        });
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot) -> bool) {
        self.tx.send_if_modified(|current| {
            let mut next = current.as_deref().cloned().unwrap_or_default();
            let changed = f(&mut next);
            if changed {
                *current = Some(Arc::new(next));
            }
            changed
        });
    }

    /// Add or replace a node (its report survives a replace).
    pub fn upsert_node(&self, node: Node) {
        self.update(
            |s| match s.nodes.iter_mut().find(|n| n.node.name == node.name) {
                Some(existing) if existing.node == node => false,
                Some(existing) => {
                    existing.node = node;
                    true
                }
                None => {
                    s.nodes.push(ReportedNode {
                        node,
                        ready: true,
                        report: NodeReport {
                            applied: None,
                            network: None,
                        },
                    });
                    true
                }
            },
        );
    }

    pub fn remove_node(&self, name: &str) {
        self.update(|s| {
            let before = s.nodes.len();
            s.nodes.retain(|n| n.node.name != name);
            s.nodes.len() != before
        });
    }

    pub fn set_plan(&self, plan: Plan) {
        self.update(|s| {
            let changed = s.plan.as_ref() != Some(&plan);
            s.plan = Some(plan);
            changed
        });
    }

    /// Take nodes, plan and settings from `cluster`; reports of nodes that
    /// stay are kept.
    pub fn replace_cluster(&self, cluster: &Cluster) {
        let mut next = Snapshot::from_cluster(cluster);
        self.update(|s| {
            for n in &mut next.nodes {
                if let Some(old) = s.node(&n.node.name) {
                    n.report = old.report.clone();
                    n.ready = old.ready;
                }
            }
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    pub fn set_settings(&self, settings: Settings) {
        self.update(|s| {
            let changed = s.settings != settings;
            s.settings = settings;
            changed
        });
    }
}

impl ClusterStore for MemoryStore {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.tx.subscribe()
    }

    fn report<'a>(&'a self, node: &'a str, report: &'a NodeReport) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut known = false;
            let mut wrote = false;
            self.update(|s| {
                let Some(n) = s.nodes.iter_mut().find(|n| n.node.name == node) else {
                    return false;
                };
                known = true;
                // As on a Node: no network report leaves the condition alone.
                let next = NodeReport {
                    applied: report.applied,
                    network: report.network.clone().or_else(|| n.report.network.clone()),
                };
                wrote = n.report != next;
                n.report = next;
                wrote
            });
            if !known {
                return Err(Error::invalid(
                    "node",
                    format!("{node:?} is not in the store"),
                ));
            }
            if wrote {
                self.report_writes.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    }

    fn warn_event<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
        message: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(NodeEvent {
                node: node.into(),
                reason: reason.into(),
                message: message.into(),
            });
        Box::pin(async { Ok(()) })
    }
}
