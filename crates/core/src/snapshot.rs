//! What a store holds: nodes with their reports, and the plan in force.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::api::{Mode, Plan, APPLIED_ANNOTATION};
use crate::model::{Cluster, Node, Settings};
use crate::Error;

/// A plan that a node holds in its kernel, verified by reading it back.
/// On a Node: annotation `podroute.io/applied: <generation>/<mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub generation: u64,
    pub mode: Mode,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.generation, self.mode)
    }
}

impl FromStr for Applied {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(
                APPLIED_ANNOTATION,
                format!("{s:?} is not <generation>/<mode>"),
            )
        };
        let (generation, mode) = s.split_once('/').ok_or_else(bad)?;
        Ok(Applied {
            generation: generation.parse().map_err(|_| bad())?,
            mode: mode.parse().map_err(|_| bad())?,
        })
    }
}

/// The node's NetworkUnavailable condition as podroute writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Network {
    /// NetworkUnavailable=False, reason RouteCreated.
    Available { message: String },
    /// NetworkUnavailable=True: the dataplane cannot be programmed.
    Unavailable { reason: String, message: String },
}

/// What one node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub applied: Option<Applied>,
    pub network: Option<Network>,
}

impl NodeReport {
    /// Whether the node says it routes (what the coordinator waits for).
    pub fn is_available(&self) -> bool {
        matches!(self.network, Some(Network::Available { .. }))
    }
}

/// A node, whether the kubelet calls it Ready, and its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportedNode {
    pub node: Node,
    pub ready: bool,
    pub report: NodeReport,
}

impl AsRef<Node> for ReportedNode {
    fn as_ref(&self) -> &Node {
        &self.node
    }
}

/// Everything a store knows at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub nodes: Vec<ReportedNode>,
    /// The plan in force; `None` before a coordinator published one.
    pub plan: Option<Plan>,
    pub settings: Settings,
}

impl Snapshot {
    pub fn from_cluster(cluster: &Cluster) -> Snapshot {
        Snapshot {
            nodes: cluster
                .nodes
                .iter()
                .map(|node| ReportedNode {
                    node: node.clone(),
                    ready: true,
                    report: NodeReport {
                        applied: None,
                        network: None,
                    },
                })
                .collect(),
            plan: Some(cluster.plan.clone()),
            settings: cluster.settings.clone(),
        }
    }

    /// The cluster an agent plans with; `None` while there is no plan.
    pub fn cluster(&self) -> Option<Cluster> {
        Some(Cluster {
            nodes: self.nodes.iter().map(|n| n.node.clone()).collect(),
            plan: self.plan.clone()?,
            settings: self.settings.clone(),
        })
    }

    pub fn node(&self, name: &str) -> Option<&ReportedNode> {
        self.nodes.iter().find(|n| n.node.name == name)
    }
}
