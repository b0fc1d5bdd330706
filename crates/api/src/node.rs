//! What podroute reads and writes on a Node.

use serde::Deserialize;

/// The plan a node holds: `<generation>/<mode>`.
pub const APPLIED_ANNOTATION: &str = "podroute.io/applied";
/// The Node condition podroute writes (False: routes in place).
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";
/// The reason of NetworkUnavailable=False.
pub const REASON_ROUTE_CREATED: &str = "RouteCreated";

/// A Node condition, as much of it as podroute reads (the one parser of
/// conditions, for the agents' store and the coordinator's signals).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<String>,
}
