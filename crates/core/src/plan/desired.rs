//! From (local node, peers, plan, config, uplink) to the kernel state the
//! plan needs. Pure: every decision that can be made without root is here.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::api::{Mode, OffSubnet, Plan};

use crate::model::{Config, Node, MIN_MTU};
use crate::{Error, Result};

use super::state::{
    AdoptScope, Desired, Excluded, Route, RouteKey, RouteKind, Uplink, LOCAL_UNREACHABLE_METRIC,
};
use super::{family4, family6};

/// Everything the planner needs about the node it runs on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub local: &'a Node,
    /// All nodes of the cluster; the local one is skipped.
    pub nodes: &'a [Node],
    pub plan: &'a Plan,
    pub config: &'a Config,
    /// The interface holding the local IPv4 node IP; `None` when the node
    /// has none.
    pub uplink: Option<&'a Uplink>,
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
        config,
        uplink,
        uplink6,
        ..
    } = inputs;
    let mut out = Desired {
        adopt: adopt_scope(config, nodes),
        ..Desired::default()
    };
    let mut excluded = Vec::new();
    match (local.v4(), uplink) {
        (Some((ip, _)), Some(uplink)) => {
            check_uplink(local, uplink, IpAddr::V4(ip))?;
            family4::add(&mut out, inputs, uplink, &mut excluded)?;
        }
        (Some((ip, _)), None) => return Err(no_uplink(local, IpAddr::V4(ip))),
        (None, _) => {}
    }
    match (local.v6(), uplink6) {
        (Some((ip6, _)), Some(uplink6)) => {
            check_uplink(local, uplink6, IpAddr::V6(ip6))?;
            family6::add(&mut out, inputs, uplink6, &mut excluded)?;
        }
        (Some((ip6, _)), None) => return Err(no_uplink(local, IpAddr::V6(ip6))),
        (None, _) => {}
    }
    // An address without pods of its family is a single-stack cluster on a
    // dual-stack host: nothing to say. Pods without an address are.
    if local.pod_cidr6().is_some() && local.node_ip6.is_none() {
        out.notes
            .push("ipv6: not routed on this node: no IPv6 node address".into());
    }
    if local.pod_cidr().is_some() && local.node_ip.is_none() {
        out.notes
            .push("ipv4: not routed on this node: no IPv4 node address".into());
    }
    out.excluded = excluded;
    Ok(out)
}

fn no_uplink(local: &Node, ip: IpAddr) -> Error {
    Error::invalid(
        "uplink",
        format!("no interface holds the node IP {ip} of {}", local.name),
    )
}

/// Native with `encap` sends to off-subnet peers through a tunnel. Any plan
/// where a node may route native (native in decap: a switch to or from
/// native is under way) must be able to receive that tunnel too.
pub(super) fn may_encap_off_subnet(plan: &Plan, config: &Config) -> bool {
    (plan.route_mode == Mode::Native || plan.decap.contains(&Mode::Native))
        && config.off_subnet == OffSubnet::Encap
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
            .chain(config.pod_network.iter().copied())
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
