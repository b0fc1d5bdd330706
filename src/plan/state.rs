//! Kernel objects as plain data. `Desired` is what a plan needs; `Observed`
//! is what the kernel holds of ours. Both use the same types so the diff is
//! a comparison of values.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Serialize;

use crate::model::Mac;

/// The interface that holds the node IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    pub name: String,
    pub mtu: u32,
    /// The node IP with the uplink's prefix: tells on-link peers from the rest.
    pub address: Ipv4Network,
}

/// The ipip fallback device (`tunl0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpipDevice {
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    /// Our /32 tunnel addresses (marked with our protocol).
    pub addresses: BTreeSet<Ipv4Addr>,
}

/// What makes a VXLAN device the one we want; any difference means the
/// device is deleted and created again (the kernel cannot change these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VxlanIdentity {
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
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
    pub addresses: BTreeSet<Ipv4Addr>,
}

/// A route is identified in the kernel by table, destination and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteKey {
    pub table: u32,
    pub dst: Ipv4Network,
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
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    pub onlink: bool,
    pub mtu: Option<u32>,
    pub protocol: u8,
}

/// A permanent ARP entry for a peer VTEP on our VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neigh {
    pub dev: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent FDB entry: where to send frames for a peer VTEP MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fdb {
    pub dev: String,
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// What the kernel must hold. Devices that are `None` are retired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub ipip: Option<IpipDevice>,
    pub vxlan: Option<VxlanDevice>,
    pub routes: BTreeMap<RouteKey, Route>,
    pub neighs: BTreeMap<Ipv4Addr, Neigh>,
    pub fdb: BTreeMap<Mac, Fdb>,
    /// Path under /proc/sys -> value.
    pub sysctls: BTreeMap<String, String>,
    /// `None`: the MTU file is not ours to keep (cleanup removes it).
    pub pod_mtu: Option<u32>,
}

/// Only what is ours, plus what we must know to never touch what is not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The ipip device, when it exists. `None` also when the kernel has no ipip.
    pub ipip: Option<IpipDevice>,
    pub vxlan: Option<VxlanDevice>,
    /// Routes with our protocol or an adopted one.
    pub routes: BTreeMap<RouteKey, Route>,
    /// Keys of routes that belong to someone else: never replaced.
    pub foreign_routes: BTreeSet<RouteKey>,
    /// Addresses on our devices that are not ours (never touched), by device.
    pub foreign_addresses: BTreeMap<String, BTreeSet<Ipv4Network>>,
    pub neighs: BTreeMap<Ipv4Addr, Neigh>,
    pub fdb: BTreeMap<Mac, Fdb>,
    /// Current values of the sysctls the plan cares about (`None`: absent).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub pod_mtu: Option<u32>,
}
