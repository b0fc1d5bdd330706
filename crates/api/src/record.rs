//! The `PodrouteNode` custom resource (group `podroute.io`, version
//! `v1alpha1`, cluster-scoped, named like its Node): the routing facts of
//! one Node and nothing else, so that agents, which watch these records
//! instead of Nodes, hear about a node only when its routing changes.
//!
//! The record is a pure function of its Node ([`PodrouteNodeSpec`]): its
//! own agent writes it, and the coordinator writes any that is missing or
//! stale. It carries no status: reports stay on the Node.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The routing facts of a Node, copied unvalidated (agents validate them as
/// they validate a Node, and name the Node's field when they refuse one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(
    feature = "kube",
    derive(kube::CustomResource),
    kube(
        group = "podroute.io",
        version = "v1alpha1",
        kind = "PodrouteNode",
        plural = "podroutenodes",
        singular = "podroutenode",
        derive = "PartialEq",
        doc = "The routing facts of one Node (its InternalIPs and pod CIDRs), named like it. Written by the node's agent and by the coordinator; watched by every agent instead of Nodes.",
        printcolumn = r#"{"name": "Node IPs", "type": "string", "jsonPath": ".spec.nodeIPs"}"#,
        printcolumn = r#"{"name": "Pod CIDRs", "type": "string", "jsonPath": ".spec.podCIDRs"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )
)]
pub struct PodrouteNodeSpec {
    /// The Node's InternalIP addresses, in the Node's order.
    #[serde(rename = "nodeIPs", default)]
    #[schemars(length(max = 8))]
    pub node_ips: Vec<String>,
    /// The Node's `spec.podCIDRs` (or `spec.podCIDR` where only that is set).
    #[serde(rename = "podCIDRs", default)]
    #[schemars(length(max = 8))]
    pub pod_cidrs: Vec<String>,
}
