//! Plain data: nodes, node-local config, cluster-wide settings, the cluster
//! file; parsing and validation with errors that name the field.

pub mod address;
mod cluster_file;
mod config;
mod mac;
mod node;
mod settings;

pub use cluster_file::{Cluster, MAX_FLOW_DEPTH};
pub use config::{
    parse_adopted_protocols, parse_pod_network, parse_route_protocol, validate_ifname, Config,
    RpFilter, DEFAULT_ROUTE_PROTOCOL, MAIN_TABLE, MIN_MTU,
};
pub use mac::Mac;
pub use node::{cross_node_conflicts, validate_nodes, Conflict, Node, NodeIps};
pub use settings::{Settings, MAX_MTU, MAX_VNI};
