//! Where agents and the coordinator meet: one trait, three stores.
//!
//! - `memory`: in-process, shared by the agents and coordinator of one
//!   process (the lab, fast tests);
//! - `file`: a static cluster file, followed with inotify (hosts without
//!   Kubernetes);
//! - `kube`: the API server (Nodes, their status, the ClusterRouting object).

pub mod crd;
mod file;
mod kube;
mod memory;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

pub use self::kube::{events, KubeStore, NODE_PAGE_SIZE};
pub(crate) use self::kube::{resource_view, WarnOnce};
pub use file::FileStore;
pub use memory::{MemoryStore, NodeEvent};
pub use podroute_core::snapshot::{
    self as types, Applied, Network, NodeReport, ReportedNode, Snapshot,
};

use crate::Result;

pub trait ClusterStore: Send + Sync + 'static {
    /// The latest snapshot, updated on every change; `None` until the store
    /// has read the cluster once. A store that loses its source keeps the
    /// last snapshot (the dataplane keeps working).
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>>;

    /// Record what `node` holds. Writing the same report again changes
    /// nothing and costs no write. `network: None` leaves the node's
    /// condition as it is.
    fn report<'a>(&'a self, node: &'a str, report: &'a NodeReport) -> BoxFuture<'a, Result<()>>;

    /// Tell operators something is wrong with `node` (a Warning Event on the
    /// Node in Kubernetes). Stores without such a channel only log it.
    fn warn_event<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
        message: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        tracing::warn!(%node, %reason, "{message}");
        Box::pin(async { Ok(()) })
    }
}
