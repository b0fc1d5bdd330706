//! The IPv6 family of a dual-stack node. Its modes follow IPv4's, with one
//! IPv6 tunnel, `vxlan-v6.calico`, for both ipip and vxlan: Linux's ipip
//! carries no IPv6 (docs/decisions.md). Its routes go via the peer device's
//! link-local address, which the kernel never looks up in the table, so
//! they replace native routes in place (an onlink route via the peer's
//! tunnel address is refused while a route to it leaves by the uplink).

use std::net::{IpAddr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::api::{Mode, OffSubnet};
use crate::model::{address, Config, Mac, Node};
use crate::{Error, Result};

use super::desired::{
    keep, local_unreachable, may_encap_off_subnet, Inputs, Mtus, IPV6_DEFAULT_METRIC, MIN_IPV6_MTU,
};
use super::health::{accept_ra_key, IPV6_FORWARDING};
use super::state::{
    Desired, Excluded, Fdb, Neigh, Route, RouteKey, RouteKind, Uplink, VxlanDevice, VxlanIdentity,
};

/// IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN6_OVERHEAD: u32 = 70;

/// Adds the IPv6 half of `inputs.local`'s plan to `out`, where the IPv4
/// half already is.
pub(super) fn add(
    out: &mut Desired,
    inputs: Inputs<'_>,
    uplink6: &Uplink,
    excluded: &mut Vec<Excluded>,
) -> Result<()> {
    let Inputs {
        local,
        nodes,
        plan,
        config,
        ..
    } = inputs;
    let Some((ip6, cidr6)) = local.v6() else {
        return Ok(());
    };
    let base = Mtus::new(config, uplink6)?.base;
    if let Some(problem) = address::underlay_problem(IpNetwork::V6(cidr6), uplink6.address) {
        return Err(Error::invalid("podCIDRs", problem));
    }
    let peers: Vec<(&Node, Ipv6Addr, ipnetwork::Ipv6Network)> = nodes
        .iter()
        .filter(|n| n.name != local.name)
        .filter_map(|n| Some((n, n.v6()?)))
        .filter(|(peer, (_, cidr))| {
            let problem = address::underlay_problem(IpNetwork::V6(*cidr), uplink6.address);
            keep(peer, problem.map(|p| format!("ipv6: {p}")), excluded)
        })
        .map(|(n, (ip, cidr))| (n, ip, cidr))
        .collect();
    let on_link = |ip: Ipv6Addr| uplink6.address.contains(IpAddr::V6(ip));

    let cross_subnet_encap =
        may_encap_off_subnet(plan, config) && peers.iter().any(|(_, ip, _)| !on_link(*ip));
    let tunnel_in_play = !plan.tunnels().is_empty() || cross_subnet_encap;
    let tunnel_mtu = base.saturating_sub(VXLAN6_OVERHEAD);
    let pod_mtu = if tunnel_in_play { tunnel_mtu } else { base };
    let pod_mtu = out.pod_mtu.map_or(pod_mtu, |mtu| mtu.min(pod_mtu));
    if pod_mtu < MIN_IPV6_MTU {
        return Err(Error::invalid(
            "mtu",
            format!(
                "the pod MTU would be {pod_mtu}, under the IPv6 minimum of {MIN_IPV6_MTU} \
                 (uplink {} MTU {base}{})",
                uplink6.name,
                if tunnel_in_play {
                    ", less 70 for vxlan-v6"
                } else {
                    ""
                }
            ),
        ));
    }
    out.pod_mtu = Some(pod_mtu);

    if tunnel_in_play {
        out.vxlan6 = Some(VxlanDevice {
            name: config.vxlan6_device.clone(),
            identity: VxlanIdentity {
                vni: config.vxlan_vni,
                port: config.vxlan_port,
                local: IpAddr::V6(ip6),
                link: uplink6.name.clone(),
                mac: Mac::for_node_v6(&local.name),
                learning: false,
            },
            mtu: tunnel_mtu,
            up: true,
            addresses: [IpAddr::V6(cidr6.network())].into(),
        });
        // A host whose `default/disable_ipv6` is 1 creates devices without
        // IPv6; ours needs it.
        let key = format!("net/ipv6/conf/{}/disable_ipv6", config.vxlan6_device);
        out.sysctls.insert(key, "0".into());
        for (peer, ip, _) in &peers {
            let mac = Mac::for_node_v6(&peer.name);
            let dev = config.vxlan6_device.clone();
            let gateway = IpAddr::V6(mac.link_local());
            let neigh = Neigh {
                dev: dev.clone(),
                ip: gateway,
                mac,
            };
            out.neighs.insert(gateway, neigh);
            let dst = IpAddr::V6(*ip);
            out.fdb.insert(mac, Fdb { dev, mac, dst });
        }
    }

    for (peer, ip, cidr) in &peers {
        let route = match plan.route_mode {
            Mode::Native if on_link(*ip) => peer_route(config, *cidr, *ip, &uplink6.name, None),
            Mode::Native if config.off_subnet == OffSubnet::Underlay => continue,
            _ => {
                let gateway = Mac::for_node_v6(&peer.name).link_local();
                let dev = &config.vxlan6_device;
                peer_route(config, *cidr, gateway, dev, Some(tunnel_mtu))
            }
        };
        out.routes.insert(route.key, route);
    }
    if plan.tunnels().contains(&Mode::Ipip)
        || (cross_subnet_encap && config.cross_subnet_tunnel == Mode::Ipip)
    {
        out.notes.push(format!(
            "ipv6: ipip mode carries IPv6 over {} (Linux ipip has no IPv6)",
            config.vxlan6_device
        ));
    }
    let unreachable = local_unreachable(config, IpNetwork::V6(cidr6));
    out.routes.insert(unreachable.key, unreachable);
    out.sysctls.insert(IPV6_FORWARDING.into(), "1".into());
    if uplink6.accept_ra == Some(1) {
        out.sysctls.insert(accept_ra_key(&uplink6.name), "2".into());
    }
    Ok(())
}

/// IPv6 stores a route added with metric 0 as 1024, so that is our key.
fn metric6(metric: u32) -> u32 {
    match metric {
        0 => IPV6_DEFAULT_METRIC,
        metric => metric,
    }
}

fn peer_route(
    config: &Config,
    cidr: ipnetwork::Ipv6Network,
    via: Ipv6Addr,
    dev: &str,
    mtu: Option<u32>,
) -> Route {
    Route {
        key: RouteKey {
            table: config.route_table,
            dst: IpNetwork::V6(cidr),
            metric: metric6(config.route_metric),
        },
        kind: RouteKind::Unicast,
        via: Some(IpAddr::V6(via)),
        dev: dev.into(),
        onlink: false,
        mtu,
        protocol: config.route_protocol,
    }
}
