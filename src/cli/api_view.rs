//! `status` on a node of a real cluster: the desired state read from the
//! Kubernetes API exactly as this node's agent reads it (its records, its
//! own Node, ClusterRouting, through the agent's own store, validation
//! included), plus what the operator asks next: the plan's generation and
//! phase, and this node's annotation and condition. Read-only: the store is
//! the agent's without its record writer, and the rest are GETs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as KubeNodeObject;
use kube::Api;
use serde::Serialize;

use crate::api::{ClusterRouting, APPLIED_ANNOTATION, CLUSTER_ROUTING_NAME, NETWORK_UNAVAILABLE};
use crate::model::Cluster;
use crate::store::crd::crd_missing;
use crate::store::{ClusterStore, KubeStore};
use crate::{Error, Result};

/// How long the first read of the API may take.
const FIRST_READ: Duration = Duration::from_secs(15);

/// What the API says about the cluster and this node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiView {
    pub node: String,
    /// The generation and mode of the plan in force; none before a
    /// coordinator published one.
    pub plan_generation: Option<u64>,
    pub plan_mode: Option<String>,
    /// `Steady`, `Prepare`, `Switch` or `Finalize`.
    pub phase: Option<String>,
    /// Nodes the coordinator waits for, and those blocking it.
    pub waiting: Vec<String>,
    pub blocked: Vec<String>,
    /// `podroute.io/applied` on this Node: `<generation>/<mode>`.
    pub applied_annotation: Option<String>,
    pub network_unavailable: Option<ConditionView>,
    /// Peers the agent leaves out, with the reason (a field it refuses).
    pub peers_left_out: BTreeMap<String, String>,
    /// Peers this node routes to.
    pub peers_routed: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The cluster this node's agent would plan with (`None` without a plan),
/// and the view around it.
pub async fn read(kubeconfig: Option<&Path>, node: &str) -> Result<(Option<Cluster>, ApiView)> {
    let client = KubeStore::client(kubeconfig).await?;
    let store = KubeStore::observing(client.clone(), node)?;
    let mut snapshots = store.subscribe();
    let snapshot = tokio::time::timeout(FIRST_READ, snapshots.wait_for(Option::is_some))
        .await
        .map_err(|_| {
            Error::io(
                "reading the cluster from the Kubernetes API",
                std::io::Error::other(format!("no answer in {FIRST_READ:?}")),
            )
        })?
        .map_err(|e| Error::io("reading the cluster", std::io::Error::other(e.to_string())))?
        .clone()
        .ok_or_else(|| Error::io("reading the cluster", std::io::Error::other("no snapshot")))?;
    let cluster = snapshot.cluster();
    let routing = match Api::<ClusterRouting>::all(client.clone())
        .get_opt(CLUSTER_ROUTING_NAME)
        .await
    {
        Ok(r) => r,
        Err(e) if crd_missing(&e) => None,
        Err(e) => return Err(Error::kube("reading ClusterRouting default", e)),
    };
    let status = routing.and_then(|r| r.status).unwrap_or_default();
    let own = Api::<KubeNodeObject>::all(client)
        .get_opt(node)
        .await
        .map_err(|e| Error::kube(format!("reading Node {node}"), e))?
        .ok_or_else(|| Error::invalid("--node", format!("the cluster has no Node {node}")))?;
    let applied_annotation = own
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_ANNOTATION).cloned());
    let network_unavailable = own
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == NETWORK_UNAVAILABLE)
        .map(|c| ConditionView {
            status: c.status,
            reason: c.reason,
            message: c.message,
        });
    let plan = snapshot.plan.as_ref();
    let view = ApiView {
        node: node.to_string(),
        plan_generation: plan.map(|p| p.generation),
        plan_mode: plan.map(|p| p.route_mode.to_string()),
        phase: plan.map(|_| status.current_phase().to_string()),
        waiting: status.nodes.clone().unwrap_or_default().waiting,
        blocked: status.blocked.clone(),
        applied_annotation,
        network_unavailable,
        peers_left_out: store.invalid_nodes(),
        // Less those this node leaves out itself (status subtracts them).
        peers_routed: snapshot
            .nodes
            .iter()
            .filter(|n| n.node.name != node)
            .count(),
    };
    Ok((cluster, view))
}
