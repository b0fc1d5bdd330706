//! From (local node, peers, plan, config, uplink) to the kernel state the
//! plan needs. Pure: every decision that can be made without root is here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::api::{Mode, OffSubnet, Plan};

use crate::model::{address, Config, Mac, Node, RpFilter, MIN_MTU};
use crate::{Error, Result};

use super::family6;
use super::state::{
    AdoptScope, Desired, Excluded, Fdb, IpipDevice, Neigh, Route, RouteKey, RouteKind, Uplink,
    VxlanDevice, VxlanIdentity, LOCAL_UNREACHABLE_METRIC,
};

/// Everything the planner needs about the node it runs on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub local: &'a Node,
    /// All nodes of the cluster; the local one is skipped.
    pub nodes: &'a [Node],
    pub plan: &'a Plan,
    pub config: &'a Config,
    pub uplink: &'a Uplink,
    /// The interface holding the local IPv6 node IP; `None` when the node
    /// has none.
    pub uplink6: Option<&'a Uplink>,
}

/// IPv6 needs this MTU on every link (RFC 8200); below it the kernel turns
/// IPv6 off on the device.
pub const MIN_IPV6_MTU: u32 = 1280;

/// The IPv6 metric the kernel stores for a route added with metric 0.
pub const IPV6_DEFAULT_METRIC: u32 = 1024;

/// MTUs derived from the underlay: one per mode, and the pod MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtus {
    pub base: u32,
}

impl Mtus {
    pub fn new(config: &Config, uplink: &Uplink) -> Result<Mtus> {
        let base = match config.mtu {
            None => uplink.mtu,
            Some(mtu) if mtu > uplink.mtu => {
                return Err(Error::invalid(
                    "mtu",
                    format!(
                        "{mtu} is over the MTU {} of the uplink {}",
                        uplink.mtu, uplink.name
                    ),
                ))
            }
            Some(mtu) => mtu,
        };
        let (min, family) = match uplink.address {
            IpNetwork::V4(_) => (MIN_MTU, "IPv4"),
            IpNetwork::V6(_) => (MIN_IPV6_MTU, "IPv6"),
        };
        if base < min {
            return Err(Error::invalid(
                "mtu",
                format!(
                    "{base} (uplink {}) is under the {family} minimum of {min}",
                    uplink.name
                ),
            ));
        }
        Ok(Mtus { base })
    }

    pub fn of(self, mode: Mode) -> u32 {
        self.base - mode.overhead()
    }

    /// The smallest MTU of the modes in play, so no pod sees a path MTU it cannot use.
    pub fn pod(self, tunnels: &BTreeSet<Mode>) -> u32 {
        tunnels
            .iter()
            .map(|m| self.of(*m))
            .min()
            .unwrap_or(self.base)
    }
}

pub fn desired(inputs: Inputs<'_>) -> Result<Desired> {
    let Inputs {
        local,
        nodes,
        plan,
        config,
        uplink,
        uplink6,
    } = inputs;
    check_uplink(local, uplink, IpAddr::V4(local.node_ip))?;
    let mtus = Mtus::new(config, uplink)?;
    let local_cidr = IpNetwork::V4(local.pod_cidr());
    if let Some(problem) = address::underlay_problem(local_cidr, uplink.address) {
        return Err(Error::invalid("podCIDRs[0]", problem));
    }
    let mut excluded = Vec::new();
    let peers: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.name != local.name)
        .filter(|peer| {
            let problem = address::underlay_problem(IpNetwork::V4(peer.pod_cidr()), uplink.address);
            keep(peer, problem, &mut excluded)
        })
        .collect();
    let on_link = |peer: &Node| uplink.address.contains(IpAddr::V4(peer.node_ip));

    // Native with `encap` sends to off-subnet peers through a tunnel. Any
    // plan where a node may route native (native in decap: a switch to or
    // from native is under way) must be able to receive that tunnel too.
    let cross_subnet_encap = (plan.route_mode == Mode::Native
        || plan.decap.contains(&Mode::Native))
        && config.off_subnet == OffSubnet::Encap
        && peers.iter().any(|p| !on_link(p));
    let mut tunnels = plan.tunnels();
    if cross_subnet_encap {
        tunnels.insert(config.cross_subnet_tunnel);
    }

    let mut out = Desired {
        pod_mtu: Some(mtus.pod(&tunnels)),
        adopt: adopt_scope(config, nodes),
        ..Desired::default()
    };
    let tunnel_addresses = BTreeSet::from([IpAddr::V4(local.tunnel_ip())]);
    if tunnels.contains(&Mode::Ipip) {
        out.ipip = Some(IpipDevice {
            name: config.ipip_device.clone(),
            mtu: mtus.of(Mode::Ipip),
            up: true,
            addresses: tunnel_addresses.clone(),
        });
    }
    if tunnels.contains(&Mode::Vxlan) {
        out.vxlan = Some(VxlanDevice {
            name: config.vxlan_device.clone(),
            identity: VxlanIdentity {
                vni: config.vxlan_vni,
                port: config.vxlan_port,
                local: IpAddr::V4(local.node_ip),
                link: uplink.name.clone(),
                mac: Mac::for_node(&local.name),
                learning: false,
            },
            mtu: mtus.of(Mode::Vxlan),
            up: true,
            addresses: tunnel_addresses,
        });
        // Every peer's VTEP is known, whichever mode routes: the device must
        // be able to answer and send for any peer that sends to us. (The
        // per-peer maps here and below are collected, not filled insert by
        // insert: collect builds full B-tree nodes, inserts leave them about
        // half full.)
        out.neighs = peers.iter().map(|p| vxlan_neigh(config, p)).collect();
        out.fdb = peers.iter().map(|p| vxlan_fdb(config, p)).collect();
    }

    out.routes = peers
        .iter()
        .filter_map(|peer| {
            let mode = match plan.route_mode {
                Mode::Native if on_link(peer) => Mode::Native,
                Mode::Native if config.off_subnet == OffSubnet::Underlay => return None,
                Mode::Native => config.cross_subnet_tunnel,
                tunnel => tunnel,
            };
            let route = peer_route(config, uplink, mtus, mode, peer);
            Some((route.key, route))
        })
        .chain([local_unreachable(config, local_cidr)].map(|r| (r.key, r)))
        .collect();
    add_sysctls(&mut out, config, uplink);
    match (local.v6(), uplink6) {
        (Some((ip6, _)), Some(uplink6)) => {
            check_uplink(local, uplink6, IpAddr::V6(ip6))?;
            family6::add(&mut out, inputs, uplink6, &mut excluded)?;
        }
        (Some((ip6, _)), None) => {
            return Err(Error::invalid(
                "uplink",
                format!(
                    "no interface holds the IPv6 node IP {ip6} of {}",
                    local.name
                ),
            ))
        }
        // An IPv6 address without IPv6 pods is an IPv4 cluster on a
        // dual-stack host: nothing to say.
        (None, _) if local.pod_cidr6().is_some() => out
            .notes
            .push("ipv6: not routed on this node: no IPv6 node address".into()),
        (None, _) => {}
    }
    out.excluded = excluded;
    Ok(out)
}

fn check_uplink(local: &Node, uplink: &Uplink, node_ip: IpAddr) -> Result<()> {
    if uplink.address.ip() == node_ip {
        return Ok(());
    }
    Err(Error::invalid(
        "uplink",
        format!(
            "{} holds {}, not the node IP {node_ip} of {}",
            uplink.name,
            uplink.address.ip(),
            local.name
        ),
    ))
}

/// Keeps a peer unless `problem` says why it cannot be routed.
pub(super) fn keep(peer: &Node, problem: Option<String>, excluded: &mut Vec<Excluded>) -> bool {
    let Some(reason) = problem else { return true };
    excluded.push(Excluded {
        node: peer.name.clone(),
        reason,
    });
    false
}

/// What [`desired`] wants when no plan is in force: nothing of ours, and
/// adopted routes taken over only within `--pod-network` and our devices.
pub fn nothing(config: &Config) -> Desired {
    Desired {
        adopt: adopt_scope(config, &[]),
        ..Desired::default()
    }
}

fn adopt_scope(config: &Config, nodes: &[Node]) -> AdoptScope {
    AdoptScope {
        within: nodes
            .iter()
            .flat_map(|n| n.pod_cidrs.iter().copied())
            .chain(config.pod_network.iter().map(|n| IpNetwork::V4(*n)))
            .collect(),
        devices: BTreeSet::from([
            config.ipip_device.clone(),
            config.vxlan_device.clone(),
            config.vxlan6_device.clone(),
        ]),
    }
}

/// The node's own pod CIDR, unreachable: a packet for an address no pod
/// holds gets an ICMP error here instead of following the default route
/// back to an underlay router that routes the CIDR to this node (a loop
/// until the TTL runs out).
pub(super) fn local_unreachable(config: &Config, cidr: IpNetwork) -> Route {
    Route {
        key: RouteKey {
            table: config.route_table,
            dst: cidr,
            metric: LOCAL_UNREACHABLE_METRIC,
        },
        kind: RouteKind::Unreachable,
        via: None,
        dev: String::new(),
        onlink: false,
        mtu: None,
        protocol: config.route_protocol,
    }
}

fn vxlan_neigh(config: &Config, peer: &Node) -> (IpAddr, Neigh) {
    let neigh = Neigh {
        dev: config.vxlan_device.clone(),
        ip: IpAddr::V4(peer.tunnel_ip()),
        mac: Mac::for_node(&peer.name),
    };
    (neigh.ip, neigh)
}

fn vxlan_fdb(config: &Config, peer: &Node) -> (Mac, Fdb) {
    let fdb = Fdb {
        dev: config.vxlan_device.clone(),
        mac: Mac::for_node(&peer.name),
        dst: IpAddr::V4(peer.node_ip),
    };
    (fdb.mac, fdb)
}

fn peer_route(config: &Config, uplink: &Uplink, mtus: Mtus, mode: Mode, peer: &Node) -> Route {
    let key = RouteKey {
        table: config.route_table,
        dst: IpNetwork::V4(peer.pod_cidr()),
        metric: config.route_metric,
    };
    let (via, dev, onlink, mtu) = match mode {
        Mode::Native => (peer.node_ip, uplink.name.clone(), false, None),
        Mode::Ipip => (
            peer.node_ip,
            config.ipip_device.clone(),
            true,
            Some(mtus.of(Mode::Ipip)),
        ),
        Mode::Vxlan => (
            peer.tunnel_ip(),
            config.vxlan_device.clone(),
            true,
            Some(mtus.of(Mode::Vxlan)),
        ),
    };
    Route {
        key,
        kind: RouteKind::Unicast,
        via: Some(IpAddr::V4(via)),
        dev,
        onlink,
        mtu,
        protocol: config.route_protocol,
    }
}

fn add_sysctls(out: &mut Desired, config: &Config, uplink: &Uplink) {
    let mut sysctls = BTreeMap::from([("net/ipv4/ip_forward".to_string(), "1".to_string())]);
    if config.rp_filter == RpFilter::Loose {
        let devices = std::iter::once(&uplink.name)
            .chain(out.ipip.as_ref().map(|d| &d.name))
            .chain(out.vxlan.as_ref().map(|d| &d.name));
        for dev in devices {
            sysctls.insert(format!("net/ipv4/conf/{dev}/rp_filter"), "2".into());
        }
    }
    out.sysctls = sysctls;
}
