//! The static cluster file (`--cluster FILE`): the whole cluster in YAML, for
//! hosts without Kubernetes and for one-shot `podroute apply`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{validate_nodes, Config, Mode, Node, OffSubnet, Plan};
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    mode: Mode,
    #[serde(default)]
    off_subnet: Option<OffSubnet>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    generation: Option<u64>,
    /// Extra encapsulations to receive; only set during a switch.
    #[serde(default)]
    decap: Option<BTreeSet<Mode>>,
    #[serde(default)]
    vxlan: Option<RawVxlan>,
    nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    vni: Option<u32>,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNode {
    name: String,
    ip: Option<String>,
    #[serde(default, rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
}

/// A validated cluster: nodes, the plan every node follows, and the
/// cluster-wide settings that override node-local defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub plan: Plan,
    pub off_subnet: Option<OffSubnet>,
    pub mtu: Option<u32>,
    pub vxlan_vni: Option<u32>,
    pub vxlan_port: Option<u16>,
}

impl Cluster {
    pub fn load(path: &Path) -> Result<Cluster> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Cluster::parse(&text).map_err(|e| match e {
            Error::Invalid { field, reason } => {
                Error::invalid(format!("{}: {field}", path.display()), reason)
            }
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Cluster> {
        let raw: RawCluster = serde_yaml::from_str(text).map_err(|e| {
            let field = e
                .location()
                .map(|l| format!("cluster file line {}", l.line()))
                .unwrap_or_else(|| "cluster file".into());
            Error::invalid(field, e.to_string())
        })?;
        let mut nodes = Vec::with_capacity(raw.nodes.len());
        for (i, n) in raw.nodes.iter().enumerate() {
            let field = format!("nodes[{i}]");
            let cidrs = match (&n.pod_cidr, n.pod_cidrs.is_empty()) {
                (Some(_), false) => {
                    return Err(Error::invalid(field, "give podCIDR or podCIDRs, not both"));
                }
                (Some(one), true) => vec![one.clone()],
                (None, _) => n.pod_cidrs.clone(),
            };
            nodes.push(Node::parse(&field, &n.name, n.ip.as_deref(), &cidrs)?);
        }
        validate_nodes(&nodes)?;
        let mut decap = raw.decap.unwrap_or_default();
        decap.insert(raw.mode);
        let plan = Plan {
            generation: raw.generation.unwrap_or(1),
            route_mode: raw.mode,
            decap,
        };
        Ok(Cluster {
            nodes,
            plan,
            off_subnet: raw.off_subnet,
            mtu: raw.mtu,
            vxlan_vni: raw.vxlan.as_ref().and_then(|v| v.vni),
            vxlan_port: raw.vxlan.as_ref().and_then(|v| v.port),
        })
    }

    /// Cluster-wide settings win over node-local defaults.
    pub fn apply_to(&self, config: &mut Config) {
        if let Some(v) = self.off_subnet {
            config.off_subnet = v;
        }
        if let Some(v) = self.mtu {
            config.mtu = Some(v);
        }
        if let Some(v) = self.vxlan_vni {
            config.vxlan_vni = v;
        }
        if let Some(v) = self.vxlan_port {
            config.vxlan_port = v;
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
