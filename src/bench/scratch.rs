//! The bench's fixture: a scratch namespace with the uplink the engine expects,
//! and a cluster of on-link peers, IPv4 or dual-stack.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::Family;
use crate::api::{Mode, Plan};
use crate::lab::netns::{unique_name, Netns};
use crate::model::{Cluster, Node};
use crate::Result;

/// The local node's IP; peers follow it on the same /16.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const UNDERLAY_PREFIX: u8 = 16;
/// Pod CIDRs are the /24s of 100.64.0.0/10; the local node takes the first.
pub(super) const POD_RANGE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
pub(super) const POD_RANGE_PREFIX: u8 = 10;
const POD_PREFIX: u8 = 24;
pub(super) const MAX_PEERS: usize = (1 << (POD_PREFIX - POD_RANGE_PREFIX)) - 1;
/// The local node's IPv6 address; peers follow it on the same /64 (ULA).
const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 1);
const UNDERLAY6_PREFIX: u8 = 64;
/// IPv6 pod CIDRs are `fd00:244:<i>::/64`: node i in the third hextet.
const POD6_RANGE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, 0);
const POD6_PREFIX: u8 = 64;
pub(super) const UPLINK: &str = "eth0";
pub(super) const UPLINK_MTU: u32 = 1500;

/// A namespace with the uplink the engine expects: veth `eth0` (peer `eth1`
/// in the same namespace), both up, node IP 10.250.0.1/16 on `eth0`, and
/// for IPv6 also fd00:250::1/64 (without duplicate address detection, so it
/// is usable at once). Deleted on drop, so also when a later step fails.
pub(super) fn scratch_netns(family: Family) -> Result<Netns> {
    let ns = Netns::create(&unique_name("prbench"))?;
    let mtu = UPLINK_MTU.to_string();
    let address = format!("{NODE_IP}/{UNDERLAY_PREFIX}");
    ns.ip(&["link", "set", "lo", "up"])?;
    ns.ip(&[
        "link", "add", UPLINK, "mtu", &mtu, "type", "veth", "peer", "name", "eth1", "mtu", &mtu,
    ])?;
    ns.ip(&["link", "set", "eth1", "up"])?;
    ns.ip(&["link", "set", UPLINK, "up"])?;
    ns.ip(&["addr", "add", &address, "dev", UPLINK])?;
    if family.has_v6() {
        let address6 = format!("{NODE_IP6}/{UNDERLAY6_PREFIX}");
        ns.ip(&["-6", "addr", "add", &address6, "dev", UPLINK, "nodad"])?;
    }
    Ok(ns)
}

/// Local node `node-0` (10.250.0.1, 100.64.0.0/24) and `peers` peers on-link.
/// With IPv6 every node also has fd00:250::<i + 1> and fd00:244:<i>::/64
/// (the model requires the IPv4 half of every node).
pub(super) fn cluster(peers: usize, mode: Mode, family: Family) -> Cluster {
    let nodes = (0..=peers)
        .map(|i| {
            let i = i as u32;
            let mut pod_cidrs = Vec::with_capacity(2);
            let node_ip = family.has_v4().then(|| {
                let pod = Ipv4Addr::from(u32::from(POD_RANGE) + (i << (32 - POD_PREFIX)));
                pod_cidrs.push(IpNetwork::V4(
                    Ipv4Network::new(pod, POD_PREFIX).expect("a /24 is a valid prefix"),
                ));
                Ipv4Addr::from(u32::from(NODE_IP) + i)
            });
            let node_ip6 = family.has_v6().then(|| {
                let pod6 = Ipv6Addr::from(u128::from(POD6_RANGE) + (u128::from(i) << 80));
                pod_cidrs.push(IpNetwork::V6(
                    Ipv6Network::new(pod6, POD6_PREFIX).expect("a /64 is a valid prefix"),
                ));
                Ipv6Addr::from(u128::from(NODE_IP6) + u128::from(i))
            });
            Node {
                name: format!("node-{i}"),
                node_ip,
                node_ip6,
                pod_cidrs,
            }
        })
        .collect();
    Cluster {
        nodes,
        plan: Plan::steady(mode, 1),
        settings: crate::model::Settings::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses_are_on_link_and_disjoint() {
        let c = cluster(300, Mode::Native, Family::Ipv4);
        assert_eq!(c.nodes.len(), 301);
        assert_eq!(c.nodes[0].node_ip, Some(NODE_IP));
        assert_eq!(c.nodes[0].pod_cidr().unwrap().to_string(), "100.64.0.0/24");
        assert_eq!(c.nodes[300].node_ip, Some(Ipv4Addr::new(10, 250, 1, 45)));
        assert_eq!(
            c.nodes[300].pod_cidr().unwrap().to_string(),
            "100.65.44.0/24"
        );
        let underlay = Ipv4Network::new(NODE_IP, UNDERLAY_PREFIX).unwrap();
        assert!(c
            .nodes
            .iter()
            .all(|n| n.node_ip.is_some_and(|ip| underlay.contains(ip))));
        assert!(c.nodes.iter().all(|n| n.v6().is_none()));
        crate::model::validate_nodes(&c.nodes).unwrap();
    }

    #[test]
    fn ipv6_cluster_addresses_are_on_link_and_disjoint() {
        for family in [Family::Ipv6, Family::Dual] {
            let c = cluster(300, Mode::Vxlan, family);
            assert_eq!(c.nodes.len(), 301);
            let ip4 = (family == Family::Dual).then_some(NODE_IP);
            assert_eq!(c.nodes[0].node_ip, ip4);
            assert_eq!(c.nodes[0].v4().is_some(), family == Family::Dual);
            assert_eq!(c.nodes[0].v6().unwrap().0, NODE_IP6);
            assert_eq!(c.nodes[0].v6().unwrap().1.to_string(), "fd00:244::/64");
            let (ip6, cidr6) = c.nodes[300].v6().unwrap();
            assert_eq!(ip6.to_string(), "fd00:250::12d");
            assert_eq!(cidr6.to_string(), "fd00:244:12c::/64");
            let underlay = Ipv6Network::new(NODE_IP6, UNDERLAY6_PREFIX).unwrap();
            assert!(c
                .nodes
                .iter()
                .all(|n| n.v6().is_some_and(|(ip, _)| underlay.contains(ip))));
            crate::model::validate_nodes(&c.nodes).unwrap();
        }
    }

    #[test]
    fn the_largest_cluster_fits_the_pod_range() {
        let c = cluster(MAX_PEERS, Mode::Native, Family::Dual);
        let range = Ipv4Network::new(POD_RANGE, POD_RANGE_PREFIX).unwrap();
        assert!(c.nodes[MAX_PEERS]
            .pod_cidr()
            .is_some_and(|c| range.contains(c.network())));
        let range6 = Ipv6Network::new(POD6_RANGE, 32).unwrap();
        let (_, last6) = c.nodes[MAX_PEERS].v6().unwrap();
        assert!(range6.contains(last6.network()));
        crate::model::validate_nodes(&c.nodes).unwrap();
    }
}
