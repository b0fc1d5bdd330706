//! Plain data: nodes, modes, plans, node-local config, the cluster file;
//! parsing and validation with errors that name the field.

mod cluster_file;
mod config;
mod mac;
mod mode;
mod node;
mod plan;

pub use cluster_file::Cluster;
pub use config::{
    parse_adopted_protocols, parse_route_protocol, validate_ifname, Config, DEFAULT_ROUTE_PROTOCOL,
    MAIN_TABLE, MIN_MTU,
};
pub use mac::Mac;
pub use mode::{Mode, OffSubnet, RpFilter};
pub use node::{validate_nodes, Node};
pub use plan::Plan;
