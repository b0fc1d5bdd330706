//! The IPv4 family of a node: one route per peer in the plan's mode, the
//! tunnel devices in play with their neighbours and FDB entries, and the
//! IPv4 sysctls.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};

use crate::api::{Mode, OffSubnet};
use crate::model::{address, Config, Mac, Node, RpFilter};
use crate::{Error, Result};

use super::desired::{keep, local_unreachable, may_encap_off_subnet, Inputs, Mtus};
use super::health::rp_filter_key;
use super::state::{
    Desired, Excluded, Fdb, IpipDevice, Neigh, Route, RouteKey, RouteKind, Uplink, VxlanDevice,
    VxlanIdentity,
};

/// A peer that routes IPv4: its address and pod CIDR.
struct Peer<'a> {
    node: &'a Node,
    ip: Ipv4Addr,
    cidr: Ipv4Network,
}

/// Adds the IPv4 half of `inputs.local`'s plan to `out`.
pub(super) fn add(
    out: &mut Desired,
    inputs: Inputs<'_>,
    uplink: &Uplink,
    excluded: &mut Vec<Excluded>,
) -> Result<()> {
    let Inputs {
        local,
        nodes,
        plan,
        config,
        ..
    } = inputs;
    let Some((local_ip, local_cidr)) = local.v4() else {
        return Ok(());
    };
    let mtus = Mtus::new(config, uplink)?;
    let tunnel_addresses = BTreeSet::from([IpAddr::V4(local_cidr.network())]);
    let local_cidr = IpNetwork::V4(local_cidr);
    if let Some(problem) = address::underlay_problem(local_cidr, uplink.address) {
        return Err(Error::invalid("podCIDRs", problem));
    }
    let peers: Vec<Peer> = nodes
        .iter()
        .filter(|n| n.name != local.name)
        .filter_map(|n| {
            let (ip, cidr) = n.v4()?;
            Some(Peer { node: n, ip, cidr })
        })
        .filter(|peer| {
            let problem = address::underlay_problem(IpNetwork::V4(peer.cidr), uplink.address);
            keep(peer.node, problem, excluded)
        })
        .collect();
    let on_link = |peer: &Peer| uplink.address.contains(IpAddr::V4(peer.ip));

    let cross_subnet_encap =
        may_encap_off_subnet(plan, config) && peers.iter().any(|p| !on_link(p));
    let mut tunnels = plan.tunnels();
    if cross_subnet_encap {
        tunnels.insert(config.cross_subnet_tunnel);
    }

    out.pod_mtu = Some(mtus.pod(&tunnels));
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
                local: IpAddr::V4(local_ip),
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
    add_sysctls(out, config, uplink);
    Ok(())
}

fn vxlan_neigh(config: &Config, peer: &Peer) -> (IpAddr, Neigh) {
    let neigh = Neigh {
        dev: config.vxlan_device.clone(),
        ip: IpAddr::V4(peer.cidr.network()),
        mac: Mac::for_node(&peer.node.name),
    };
    (neigh.ip, neigh)
}

fn vxlan_fdb(config: &Config, peer: &Peer) -> (Mac, Fdb) {
    let fdb = Fdb {
        dev: config.vxlan_device.clone(),
        mac: Mac::for_node(&peer.node.name),
        dst: IpAddr::V4(peer.ip),
    };
    (fdb.mac, fdb)
}

fn peer_route(config: &Config, uplink: &Uplink, mtus: Mtus, mode: Mode, peer: &Peer) -> Route {
    let key = RouteKey {
        table: config.route_table,
        dst: IpNetwork::V4(peer.cidr),
        metric: config.route_metric,
    };
    let (via, dev, onlink, mtu) = match mode {
        Mode::Native => (peer.ip, uplink.name.clone(), false, None),
        Mode::Ipip => (
            peer.ip,
            config.ipip_device.clone(),
            true,
            Some(mtus.of(Mode::Ipip)),
        ),
        Mode::Vxlan => (
            peer.cidr.network(),
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
    out.sysctls.insert("net/ipv4/ip_forward".into(), "1".into());
    if config.rp_filter == RpFilter::Loose {
        let devices = std::iter::once(&uplink.name)
            .chain(out.ipip.as_ref().map(|d| &d.name))
            .chain(out.vxlan.as_ref().map(|d| &d.name));
        for dev in devices {
            out.sysctls.insert(rp_filter_key(dev), "2".into());
        }
    }
}
