//! Pure planning: what the kernel must hold, and the writes that get it there.

pub mod check;
mod desired;
mod diff;
mod family4;
mod family6;
pub mod health;
mod ops;
mod ownership;
mod repair;
pub mod simulate;
mod state;

pub use desired::{desired, nothing, Inputs, Mtus, IPV6_DEFAULT_METRIC, MIN_IPV6_MTU};
pub use diff::{diff, Diff};
pub use family6::VXLAN6_OVERHEAD;
pub use ops::{sysctl_name, Op, Stage, Step};
pub use ownership::{is_our_device, route_owner, RouteOwner};
pub use repair::{repair, Repair, Touched};
pub use state::{
    AdoptScope, Desired, Excluded, Fdb, ForeignState, IpipDevice, Neigh, Observed, Route, RouteKey,
    RouteKind, Uplink, VxlanDevice, VxlanIdentity, LOCAL_UNREACHABLE_METRIC,
};
