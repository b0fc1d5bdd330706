//! Kernel objects as plain data. `Desired` is what a plan needs; `Observed`
//! is what the kernel holds of ours. Both use the same types so the diff is
//! a comparison of values.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::model::Mac;

/// The interface that holds the node IP of one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    pub name: String,
    pub mtu: u32,
    /// The node IP with the uplink's prefix: tells on-link peers from the rest.
    pub address: IpNetwork,
    /// IPv6 only: `net.ipv6.conf.<name>.accept_ra`, which forwarding turns
    /// into "ignore router advertisements" unless it is 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_ra: Option<u8>,
}

/// The ipip fallback device (`tunl0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpipDevice {
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    /// Our /32 tunnel addresses (marked with our protocol).
    pub addresses: BTreeSet<IpAddr>,
}

/// What makes a VXLAN device the one we want; any difference means the
/// device is deleted and created again (the kernel cannot change these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VxlanIdentity {
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub link: String,
    pub mac: Mac,
    pub learning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VxlanDevice {
    pub name: String,
    pub identity: VxlanIdentity,
    pub mtu: u32,
    pub up: bool,
    /// Our tunnel addresses: a /32, or a /128 on the IPv6 device.
    pub addresses: BTreeSet<IpAddr>,
}

/// The metric of the route that makes the node's own pod CIDR unreachable:
/// the lowest priority there is, so any other route for the same CIDR (a
/// bridge CNI's connected route, metric 0) wins, and more specific pod routes
/// win by prefix length.
pub const LOCAL_UNREACHABLE_METRIC: u32 = u32::MAX;

/// A route is identified in the kernel by table, destination and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteKey {
    pub table: u32,
    pub dst: IpNetwork,
    pub metric: u32,
}

/// Route type. Only unicast routes are installed; the others show up when
/// adopting (BIRD's blackhole routes for Calico blocks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    #[default]
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub key: RouteKey,
    pub kind: RouteKind,
    pub via: Option<IpAddr>,
    pub dev: String,
    pub onlink: bool,
    pub mtu: Option<u32>,
    pub protocol: u8,
}

/// A permanent neighbour entry for a peer VTEP on one of our VXLAN devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neigh {
    pub dev: String,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A permanent FDB entry: where to send frames for a peer VTEP MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fdb {
    pub dev: String,
    pub mac: Mac,
    pub dst: IpAddr,
}

/// Which routes of an adopted protocol (`--adopt-route-protocols`) become
/// ours: those inside the cluster's pod network (every node's pod CIDR and
/// `--pod-network`) or through one of our devices. Everything else of that
/// protocol (a BIRD route to an unrelated network) stays someone else's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AdoptScope {
    pub within: Vec<IpNetwork>,
    pub devices: BTreeSet<String>,
}

impl AdoptScope {
    pub fn covers(&self, route: &Route) -> bool {
        self.devices.contains(&route.dev)
            || self.within.iter().any(|net| {
                net.prefix() <= route.key.dst.prefix() && net.contains(route.key.dst.network())
            })
    }
}

/// A peer this node does not route, and why (its pod CIDR would take
/// addresses from this node's underlay subnet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub node: String,
    pub reason: String,
}

/// State that is not ours on one of our devices. While a device carries
/// any, it is never deleted or recreated (that would take this state with
/// it): retiring it removes only what is ours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForeignState {
    /// Addresses without our IFA_PROTO (the kernel's IPv6 link-local
    /// aside: it is neither ours nor foreign).
    pub addresses: BTreeSet<IpNetwork>,
    /// Destinations of routes in our table through the device that are not ours.
    pub routes: BTreeSet<IpNetwork>,
}

impl ForeignState {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.routes.is_empty()
    }
}

impl std::fmt::Display for ForeignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addresses = self.addresses.iter().map(|a| format!("address {a}"));
        let routes = self.routes.iter().map(|r| format!("route {r}"));
        let all: Vec<String> = addresses.chain(routes).collect();
        f.write_str(&all.join(", "))
    }
}

/// What the kernel must hold. Devices that are `None` are retired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub ipip: Option<IpipDevice>,
    pub vxlan: Option<VxlanDevice>,
    /// The IPv6 VXLAN device (`vxlan-v6.calico`).
    pub vxlan6: Option<VxlanDevice>,
    pub routes: BTreeMap<RouteKey, Route>,
    pub neighs: BTreeMap<IpAddr, Neigh>,
    pub fdb: BTreeMap<Mac, Fdb>,
    /// Path under /proc/sys -> value.
    pub sysctls: BTreeMap<String, String>,
    /// `None`: the MTU file is not ours to keep (cleanup removes it).
    pub pod_mtu: Option<u32>,
    /// Routes of an adopted protocol that become ours.
    pub adopt: AdoptScope,
    /// Peers left out by this node (not routed), with why.
    pub excluded: Vec<Excluded>,
    /// What this plan leaves unrouted as a whole, for `plan` and `status`
    /// (`ipv6: ...`).
    pub notes: Vec<String>,
}

/// Only what is ours, plus what we must know to never touch what is not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The ipip device, when it exists. `None` also when the kernel has no ipip.
    pub ipip: Option<IpipDevice>,
    pub vxlan: Option<VxlanDevice>,
    pub vxlan6: Option<VxlanDevice>,
    /// Routes with our protocol.
    pub routes: BTreeMap<RouteKey, Route>,
    /// Routes of an adopted protocol: ours where the plan's [`AdoptScope`]
    /// covers them, else someone else's.
    pub adoptable: BTreeMap<RouteKey, Route>,
    /// Keys of routes that belong to someone else: never replaced.
    pub foreign_routes: BTreeSet<RouteKey>,
    /// What is not ours on our devices (never touched), by device.
    pub foreign_state: BTreeMap<String, ForeignState>,
    /// Devices with one of our names but another kind: not ours, never
    /// touched. Name -> kind.
    pub foreign_devices: BTreeMap<String, String>,
    pub neighs: BTreeMap<IpAddr, Neigh>,
    pub fdb: BTreeMap<Mac, Fdb>,
    /// Current values of the sysctls the plan cares about (`None`: absent).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub pod_mtu: Option<u32>,
}
