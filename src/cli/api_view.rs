//! `status` and `plan` on a node of a real cluster: the desired state read
//! from the Kubernetes API exactly as this node's agent reads it (its
//! records, its own Node, ClusterRouting, through the agent's own store,
//! validation included), plus what the operator asks next: the plan's
//! generation and phase, and this node's annotation and condition. Read-only:
//! the store is the agent's without its record writer, and the rest are GETs.
//! Then which node that is ([`api_node`]), and its desired state against this
//! host's kernel ([`desired_state`]), computed as the agent computes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as KubeNodeObject;
use kube::Api;
use serde::Serialize;

use super::host::NodeArgs;
use super::ConfigArgs;
use crate::api::{ClusterRouting, APPLIED_ANNOTATION, CLUSTER_ROUTING_NAME, NETWORK_UNAVAILABLE};
use crate::dataplane::Dataplane;
use crate::engine;
use crate::model::{Cluster, Config};
use crate::plan::{Desired, Uplink};
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
    /// Peers this node routes to (less those [`desired_state`] leaves out).
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
        // Less those this node leaves out itself (`desired_state` subtracts them).
        peers_routed: snapshot
            .nodes
            .iter()
            .filter(|n| n.node.name != node)
            .count(),
    };
    Ok((cluster, view))
}

/// The node whose desired state the API is read for, when it is read:
/// `--kubeconfig`, or in a pod, unless a cluster file is given. `None`: not
/// read (a cluster file, neither, or a pod that is not an agent's: no NODE_NAME).
pub fn api_node(
    cluster: Option<&Path>,
    kubeconfig: Option<&Path>,
    node: &NodeArgs,
) -> Result<Option<String>> {
    let in_a_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if cluster.is_some() || (kubeconfig.is_none() && !in_a_pod) {
        return Ok(None);
    }
    if kubeconfig.is_none() && node.node.is_none() {
        return Ok(None);
    }
    let node = node.node.clone().ok_or_else(|| {
        Error::invalid(
            "--node",
            "reading the Kubernetes API needs this node's name (--node or NODE_NAME)",
        )
    })?;
    Ok(Some(node))
}

/// This node's desired state from what the API said ([`read`]), or why
/// there is none.
pub enum ApiDesired {
    Planned(Box<Planned>),
    Unplanned(Box<Unplanned>),
}

/// No plan published yet, or this node is not in the cluster.
pub struct Unplanned {
    /// The node-local settings, with the cluster's where it has them.
    pub config: Config,
    pub why: String,
    pub view: ApiView,
}

/// What this node's agent would program, and this host's kernel to compare.
pub struct Planned {
    pub dp: Dataplane,
    pub cluster: Cluster,
    pub desired: Desired,
    pub uplink: Uplink,
    /// With the peers this node leaves out itself among `peers_left_out`.
    pub view: ApiView,
}

/// The desired state as this node's agent computes it (`engine::desired_for`
/// on the API's cluster), against the kernel of the calling thread's network
/// namespace. Reads the kernel only.
pub async fn desired_state(
    cluster: Option<Cluster>,
    mut view: ApiView,
    config: &ConfigArgs,
) -> Result<ApiDesired> {
    let node = view.node.clone();
    let local = cluster
        .as_ref()
        .and_then(|c| c.nodes.iter().find(|n| n.name == node).cloned());
    let (cluster, local) = match (cluster, local) {
        (Some(cluster), Some(local)) => (cluster, local),
        (cluster, _) => {
            let why = match (&cluster, view.peers_left_out.get(&node)) {
                (None, _) => "no plan published yet".to_string(),
                (Some(_), Some(reason)) => {
                    format!("this node is left out of the cluster: {reason}")
                }
                (Some(_), None) => "this node is not in the cluster yet (no pod CIDR?)".to_string(),
            };
            view.peers_routed = 0;
            return Ok(ApiDesired::Unplanned(Box::new(Unplanned {
                config: config.config(cluster.as_ref())?,
                why,
                view,
            })));
        }
    };
    let mut dp = Dataplane::connect(config.config(Some(&cluster))?)?;
    let (desired, uplink) = engine::desired_for(&mut dp, &cluster, &local).await?;
    for e in &desired.excluded {
        view.peers_left_out.insert(e.node.clone(), e.reason.clone());
    }
    view.peers_routed = view.peers_routed.saturating_sub(desired.excluded.len());
    Ok(ApiDesired::Planned(Box::new(Planned {
        dp,
        cluster,
        desired,
        uplink,
        view,
    })))
}

/// The view as text, for the top of a table.
pub fn render_api(v: &ApiView) -> String {
    let mut out = format!("node {} (from the Kubernetes API)\n", v.node);
    match (v.plan_generation, &v.plan_mode, &v.phase) {
        (Some(generation), Some(mode), Some(phase)) => out.push_str(&format!(
            "plan: generation {generation}, {mode}, phase {phase}\n"
        )),
        _ => out.push_str("plan: none published yet\n"),
    }
    if !v.blocked.is_empty() {
        out.push_str(&format!("switch blocked by: {}\n", v.blocked.join(", ")));
    } else if !v.waiting.is_empty() {
        out.push_str(&format!("switch waits for: {}\n", v.waiting.join(", ")));
    }
    out.push_str(&format!(
        "this node: applied {}; NetworkUnavailable {}\n",
        v.applied_annotation.as_deref().unwrap_or("(no annotation)"),
        v.network_unavailable
            .as_ref()
            .map_or("(no condition)".to_string(), |c| {
                format!(
                    "{} {} {}",
                    c.status,
                    c.reason.as_deref().unwrap_or(""),
                    c.message
                        .as_deref()
                        .map(|m| format!("({m})"))
                        .unwrap_or_default()
                )
                .trim_end()
                .to_string()
            })
    ));
    out.push_str(&format!(
        "peers: {} routed, {} left out\n",
        v.peers_routed,
        v.peers_left_out.len()
    ));
    for (name, why) in &v.peers_left_out {
        out.push_str(&format!("  left out {name}: {why}\n"));
    }
    out
}
