//! The bench's fixture: a scratch namespace with the uplink the engine expects,
//! and a cluster of on-link peers.

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};

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
pub(super) const UPLINK: &str = "eth0";
pub(super) const UPLINK_MTU: u32 = 1500;

/// A namespace with the uplink the engine expects: veth `eth0` (peer `eth1`
/// in the same namespace), both up, node IP 10.250.0.1/16 on `eth0`.
/// Deleted on drop, so also when a later step fails.
pub(super) fn scratch_netns() -> Result<Netns> {
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
    Ok(ns)
}

/// Local node `node-0` (10.250.0.1, 100.64.0.0/24) and `peers` peers on-link.
pub(super) fn cluster(peers: usize, mode: Mode) -> Cluster {
    let nodes = (0..=peers)
        .map(|i| {
            let i = i as u32;
            let pod = Ipv4Addr::from(u32::from(POD_RANGE) + (i << (32 - POD_PREFIX)));
            Node {
                name: format!("node-{i}"),
                node_ip: Some(Ipv4Addr::from(u32::from(NODE_IP) + i)),
                node_ip6: None,
                pod_cidrs: vec![IpNetwork::V4(
                    Ipv4Network::new(pod, POD_PREFIX).expect("a /24 is a valid prefix"),
                )],
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
        let c = cluster(300, Mode::Native);
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
        crate::model::validate_nodes(&c.nodes).unwrap();
    }

    #[test]
    fn the_largest_cluster_fits_the_pod_range() {
        let c = cluster(MAX_PEERS, Mode::Native);
        let range = Ipv4Network::new(POD_RANGE, POD_RANGE_PREFIX).unwrap();
        assert!(c.nodes[MAX_PEERS]
            .pod_cidr()
            .is_some_and(|c| range.contains(c.network())));
    }
}
