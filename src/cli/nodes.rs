//! `podroute nodes`: every Node as the coordinator sees it: the plan it
//! reports applied, its NetworkUnavailable condition, and whether the
//! switch waits for it, skipped it or is blocked on it.

use kube::api::{Api, ListParams};
use serde::Serialize;

use k8s_openapi::api::core::v1::Node;

use super::switch::CommonArgs;
use super::table;
use crate::api::APPLIED_ANNOTATION;
use crate::api::{ClusterRouting, CLUSTER_ROUTING_NAME};
use crate::store::crd::crd_missing;
use crate::store::KubeStore;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    /// The families it has an InternalIP and a pod CIDR of (`ipv4`, `ipv6`).
    pub families: Vec<&'static str>,
    /// `podroute.io/applied`: `<generation>/<mode>`.
    pub applied: Option<String>,
    pub ready: Option<String>,
    /// NetworkUnavailable status and reason.
    pub network_unavailable: Option<String>,
    pub network_reason: Option<String>,
    /// `ok`, `waiting`, `skipped` or `blocked` (in the coordinator's status).
    pub state: String,
}

pub async fn run(args: NodesArgs) -> Result<()> {
    let client = KubeStore::client(args.common.kubeconfig.as_deref()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let routing = match Api::<ClusterRouting>::all(client)
        .get_opt(CLUSTER_ROUTING_NAME)
        .await
    {
        Ok(routing) => routing,
        Err(e) if crd_missing(&e) => {
            tracing::warn!("no ClusterRouting CRD in this cluster: the Nodes alone");
            None
        }
        Err(e) => return Err(Error::kube("reading ClusterRouting default", e)),
    };
    let status = routing.and_then(|r| r.status).unwrap_or_default();
    let waiting = status.nodes.clone().unwrap_or_default().waiting;
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Nodes", e))?;
    let mut rows: Vec<NodeRow> = list
        .items
        .into_iter()
        .map(|node| {
            let name = node.metadata.name.clone().unwrap_or_default();
            let applied = node
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_ANNOTATION).cloned());
            let families = families(&node);
            let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
            let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
            let network = find("NetworkUnavailable");
            let state = if status.blocked.contains(&name) {
                "blocked"
            } else if status.skipped.contains(&name) {
                "skipped"
            } else if waiting.contains(&name) {
                "waiting"
            } else {
                "ok"
            };
            NodeRow {
                families,
                applied,
                ready: find("Ready").map(|c| c.status.clone()),
                network_unavailable: network.map(|c| c.status.clone()),
                network_reason: network.and_then(|c| c.reason.clone()),
                state: state.into(),
                name,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let plan = status
        .plan
        .as_ref()
        .map(|p| format!("{}/{}", p.generation, p.route_mode));
    args.common.output.print(&rows, |rows| {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    match r.families.join(",") {
                        f if f.is_empty() => "-".into(),
                        f => f,
                    },
                    r.applied.clone().unwrap_or_else(|| "-".into()),
                    r.ready.clone().unwrap_or_else(|| "-".into()),
                    match (&r.network_unavailable, &r.network_reason) {
                        (Some(s), Some(reason)) => format!("{s} ({reason})"),
                        (Some(s), None) => s.clone(),
                        _ => "-".into(),
                    },
                    r.state.clone(),
                ]
            })
            .collect();
        let mut out = table(
            &[
                "NODE",
                "FAMILIES",
                "APPLIED",
                "READY",
                "NETWORKUNAVAILABLE",
                "STATE",
            ],
            &cells,
        );
        if let Some(plan) = &plan {
            out.push_str(&format!("plan in force: {plan}\n"));
        }
        out
    })
}

/// The families `node` has both an InternalIP and a pod CIDR of.
fn families(node: &Node) -> Vec<&'static str> {
    let family = |text: &str| {
        let ip = text.split('/').next()?.parse::<std::net::IpAddr>().ok()?;
        Some(crate::model::address::family_name(ip))
    };
    let spec = node.spec.as_ref();
    let cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    let cidrs = cidrs
        .into_iter()
        .chain(spec.and_then(|s| s.pod_cidr.clone()));
    let cidr_families: Vec<&str> = cidrs.filter_map(|c| family(&c)).collect();
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    let ip_families: Vec<&str> = addresses
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| family(&a.address))
        .collect();
    ["ipv4", "ipv6"]
        .into_iter()
        .filter(|f| cidr_families.contains(f) && ip_families.contains(f))
        .collect()
}
