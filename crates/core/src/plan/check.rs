//! Where `podroute check` and the agent's periodic check send their probes,
//! and where a path breaks when no answer comes back.
//!
//! A probe follows the route a pod's packet to the peer takes: over a tunnel
//! it goes from this node's tunnel address to the peer's (both are the
//! network address of a pod CIDR, on the tunnel device), so the packet and
//! its answer take the pod routes both ways; in native mode it goes to the
//! next hop of the pod route, the peer's node address, which is where the
//! pods' packets go (podroute puts no address of the pod CIDR on a node in
//! native mode). Each probe is as large as the route lets a pod's packet
//! be, with DF set: the MTU is checked on the way.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::model::address::family_name;
use crate::model::Node;

use super::state::{Desired, Observed, Route, RouteKind};

/// One peer address to probe, and the route that carries the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTarget {
    pub peer: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// The peer's pod CIDR: the route the probe follows.
    pub route: IpNetwork,
    pub dev: String,
    pub via: Option<IpAddr>,
    /// Over a tunnel device (else native).
    pub tunnel: bool,
    /// Where the probe goes: the peer's tunnel address, or its node address.
    pub dst: IpAddr,
    /// The source the probe is sent from: this node's tunnel address, so
    /// the answer comes back over the tunnel too. `None`: the kernel's choice.
    pub src: Option<IpAddr>,
    /// The largest IP packet a pod may send on this route: the DF probe's size.
    pub mtu: u32,
    /// The peer's node address the packet leaves this node for: the next
    /// hop of a native or ipip route, the FDB destination over VXLAN.
    pub underlay: Option<IpAddr>,
}

/// Every peer address `desired` routes, in route order. `uplink_mtu` is the
/// MTU of a route that sets none (native routes go by the uplink's).
pub fn targets(
    desired: &Desired,
    nodes: &[Node],
    local: &Node,
    uplink_mtu: u32,
) -> Vec<ProbeTarget> {
    // One lookup per route: a cluster of 5000 is planned every pass. The
    // first node holding a CIDR owns it, as in the node list.
    let mut owners: HashMap<&IpNetwork, &Node> = HashMap::with_capacity(nodes.len());
    for n in nodes.iter().filter(|n| n.name != local.name) {
        for cidr in &n.pod_cidrs {
            owners.entry(cidr).or_insert(n);
        }
    }
    let tunnels = tunnel_devices(desired);
    desired
        .routes
        .values()
        .filter(|r| r.kind == RouteKind::Unicast)
        .filter_map(|route| {
            let cidr = route.key.dst;
            let peer = owners.get(&cidr)?;
            let tunnel = tunnels.contains(&route.dev.as_str());
            let underlay = underlay(desired, route);
            let (dst, src) = if tunnel {
                let own = local
                    .pod_cidrs
                    .iter()
                    .find(|c| c.is_ipv4() == cidr.is_ipv4())?;
                (cidr.network(), Some(own.network()))
            } else {
                (route.via?, None)
            };
            Some(ProbeTarget {
                peer: peer.name.clone(),
                family: family_name(dst),
                route: cidr,
                dev: route.dev.clone(),
                via: route.via,
                tunnel,
                dst,
                src,
                mtu: route.mtu.unwrap_or(uplink_mtu),
                underlay,
            })
        })
        .collect()
}

/// The node address a packet on `route` goes to: over VXLAN the FDB entry
/// of the next hop's MAC, else the next hop itself (a native or ipip route
/// goes via the peer's node address).
fn underlay(desired: &Desired, route: &Route) -> Option<IpAddr> {
    let via = route.via?;
    match desired.neighs.get(&via) {
        Some(neigh) if neigh.dev == route.dev => desired.fdb.get(&neigh.mac).map(|f| f.dst),
        _ => Some(via),
    }
}

/// The tunnel devices the plan holds: a route through one is tunnelled.
fn tunnel_devices(desired: &Desired) -> Vec<&str> {
    let vxlans = [&desired.vxlan, &desired.vxlan6].into_iter().flatten();
    vxlans
        .map(|d| d.name.as_str())
        .chain(desired.ipip.iter().map(|d| d.name.as_str()))
        .collect()
}

/// Where along the path a probe was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// No route to the peer's pod CIDR, or not the plan's.
    Route,
    /// The tunnel device is missing, down, or lacks the tunnel address.
    Device,
    /// The peer's VTEP neighbour, or the underlay next hop, is missing.
    Neighbour,
    /// The FDB entry that sends the peer's VTEP MAC to its node is missing.
    Fdb,
    /// Small probes pass, full-size ones with DF do not.
    Mtu,
    /// Everything here is in place; the peer does not answer.
    Answer,
}

/// Where a path breaks, and what was found there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub stage: Stage,
    pub detail: String,
}

impl Break {
    pub fn new(stage: Stage, detail: impl Into<String>) -> Break {
        Break {
            stage,
            detail: detail.into(),
        }
    }
}

/// The first piece of `target`'s path on this node that the kernel does not
/// hold as planned, in the order a packet meets them: route, device, VXLAN
/// neighbour, FDB entry. `None` when this node holds all of it.
pub fn locate(target: &ProbeTarget, desired: &Desired, observed: &Observed) -> Option<Break> {
    let planned = desired
        .routes
        .values()
        .find(|r| r.key.dst == target.route)?;
    let Some(held) = observed.routes.get(&planned.key) else {
        return Some(Break::new(
            Stage::Route,
            format!("no route to {} (table {})", target.route, planned.key.table),
        ));
    };
    if !same_path(held, planned) {
        return Some(Break::new(
            Stage::Route,
            format!(
                "the route to {} goes {}, the plan says {}",
                target.route,
                describe(held),
                describe(planned)
            ),
        ));
    }
    if !target.tunnel {
        return None;
    }
    if let Some(broken) = device_break(target, observed) {
        return Some(broken);
    }
    let vxlan = [&desired.vxlan, &desired.vxlan6]
        .into_iter()
        .flatten()
        .any(|d| d.name == target.dev);
    if !vxlan {
        return None;
    }
    let via = planned.via?;
    let want = desired.neighs.get(&via)?;
    match observed.neighs.get(&via) {
        Some(n) if n.mac == want.mac && n.dev == want.dev => {}
        Some(n) => {
            return Some(Break::new(
                Stage::Neighbour,
                format!(
                    "{via} on {} is {}, the plan says {}",
                    n.dev, n.mac, want.mac
                ),
            ))
        }
        None => {
            return Some(Break::new(
                Stage::Neighbour,
                format!("no neighbour {via} -> {} on {}", want.mac, want.dev),
            ))
        }
    }
    let want = desired.fdb.get(&want.mac)?;
    match observed.fdb.get(&want.mac) {
        Some(f) if f.dst == want.dst && f.dev == want.dev => None,
        Some(f) => Some(Break::new(
            Stage::Fdb,
            format!(
                "{} on {} goes to {}, the plan says {}",
                want.mac, f.dev, f.dst, want.dst
            ),
        )),
        None => Some(Break::new(
            Stage::Fdb,
            format!("no FDB entry {} -> {} on {}", want.mac, want.dst, want.dev),
        )),
    }
}

fn same_path(a: &Route, b: &Route) -> bool {
    a.via == b.via && a.dev == b.dev && a.kind == b.kind && a.mtu == b.mtu
}

fn describe(r: &Route) -> String {
    let via = r.via.map(|v| format!("via {v} ")).unwrap_or_default();
    let mtu = r.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    format!("{via}dev {}{mtu}", r.dev)
}

fn device_break(target: &ProbeTarget, observed: &Observed) -> Option<Break> {
    let dev = &target.dev;
    let vxlans = [&observed.vxlan, &observed.vxlan6].into_iter().flatten();
    let held = vxlans
        .map(|d| (&d.name, d.up, &d.addresses))
        .chain(observed.ipip.iter().map(|d| (&d.name, d.up, &d.addresses)))
        .find(|(name, _, _)| *name == dev);
    match held {
        None => Some(Break::new(Stage::Device, format!("{dev} does not exist"))),
        Some((_, false, _)) => Some(Break::new(Stage::Device, format!("{dev} is down"))),
        Some((_, true, addresses)) => match target.src {
            Some(src) if !addresses.contains(&src) => Some(Break::new(
                Stage::Device,
                format!("{dev} lacks this node's tunnel address {src}"),
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
