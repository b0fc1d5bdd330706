//! What podroute writes on a Node.

/// The plan a node holds: `<generation>/<mode>`.
pub const APPLIED_ANNOTATION: &str = "podroute.io/applied";
/// The Node condition podroute writes (False: routes in place).
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";
/// The reason of NetworkUnavailable=False.
pub const REASON_ROUTE_CREATED: &str = "RouteCreated";
