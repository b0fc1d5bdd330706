//! The wire: what podroute reads and writes outside the process (the
//! ClusterRouting CRD, Node annotations and conditions, the modes and plans
//! in them). A leaf: it uses no other podroute crate. The `kube` feature adds
//! the `ClusterRouting` and `PodrouteNode` resource types and RFC 3339 times.

mod crd;
mod duration;
mod int_or_string;
mod mode;
mod node;
mod plan;
mod record;
mod status;

#[cfg(feature = "kube")]
pub use crd::ClusterRouting;
pub use crd::{
    ClusterRoutingSpec, NativeSpec, NotReadyPolicy, RolloutSpec, VxlanSpec, CLUSTER_ROUTING_NAME,
};
pub use duration::parse_duration;
pub use int_or_string::{Mtu, NodeTimeout};
pub use mode::{Mode, OffSubnet};
pub use node::{NodeCondition, APPLIED_ANNOTATION, NETWORK_UNAVAILABLE, REASON_ROUTE_CREATED};
pub use plan::{Plan, MAX_GENERATION};
#[cfg(feature = "kube")]
pub use record::PodrouteNode;
pub use record::PodrouteNodeSpec;
#[cfg(feature = "kube")]
pub use status::rfc3339;
pub use status::{ClusterRoutingStatus, Condition, InFlight, NodesStatus, Phase};

/// A value the wire does not allow; `Error::Invalid` once it leaves
/// this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    fn new(field: &str, reason: String) -> Invalid {
        Invalid {
            field: field.into(),
            reason,
        }
    }
}
