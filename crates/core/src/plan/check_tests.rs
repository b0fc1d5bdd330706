use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use proptest::prelude::*;

use super::*;
use crate::api::{Mode, Plan};
use crate::model::{Config, Mac, Node};
use crate::plan::{desired, diff, simulate, Desired, Inputs, Observed, Uplink};

fn node(i: u8) -> Node {
    Node {
        name: format!("node-{i}"),
        node_ip: Some(Ipv4Addr::new(10, 250, 0, i)),
        node_ip6: Some(format!("fd00:250::{i}").parse().expect("ip6")),
        pod_cidrs: vec![
            format!("10.244.{i}.0/24").parse().expect("cidr"),
            format!("fd00:244:{i}::/64").parse().expect("cidr6"),
        ],
    }
}

fn uplink(address: &str) -> Uplink {
    Uplink {
        name: "eth0".into(),
        mtu: 1500,
        address: address.parse().expect("address"),
        accept_ra: None,
    }
}

fn plan_of(mode: Mode, nodes: &[Node]) -> Desired {
    desired(Inputs {
        local: &nodes[0],
        nodes,
        plan: &Plan::steady(mode, 1),
        config: &Config::default(),
        uplink: Some(&uplink("10.250.0.1/24")),
        uplink6: Some(&uplink("fd00:250::1/64")),
    })
    .expect("valid inputs")
}

fn targets_of(mode: Mode, nodes: &[Node]) -> Vec<ProbeTarget> {
    targets(&plan_of(mode, nodes), nodes, &nodes[0], 1500)
}

/// The kernel after applying `desired` to nothing.
fn converged(desired: &Desired) -> Observed {
    let mut observed = Observed::default();
    let program = diff(desired, &observed);
    simulate::apply_all(&mut observed, program.steps.iter().map(|s| &s.op));
    observed
}

fn v4(targets: &[ProbeTarget]) -> Vec<&ProbeTarget> {
    targets.iter().filter(|t| t.family == "ipv4").collect()
}

#[test]
fn over_vxlan_a_probe_goes_tunnel_address_to_tunnel_address_at_the_tunnel_mtu() {
    let nodes = [node(1), node(2), node(3)];
    let all = targets_of(Mode::Vxlan, &nodes);
    let t = v4(&all);
    assert_eq!(t.len(), 2, "{all:#?}");
    assert_eq!(t[0].peer, "node-2");
    assert_eq!(t[0].dst, IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)));
    assert_eq!(t[0].src, Some(IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0))));
    assert_eq!(t[0].dev, "vxlan.calico");
    assert!(t[0].tunnel);
    assert_eq!(t[0].mtu, 1450);
    assert_eq!(
        t[0].underlay,
        Some(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2)))
    );
    let six: Vec<_> = all.iter().filter(|t| t.family == "ipv6").collect();
    assert_eq!(six.len(), 2, "{all:#?}");
    assert_eq!(six[0].dst, "fd00:244:2::".parse::<Ipv6Addr>().expect("ip6"));
    assert_eq!(six[0].dev, "vxlan-v6.calico");
    assert_eq!(six[0].mtu, 1430);
    assert_eq!(six[0].underlay, Some("fd00:250::2".parse().expect("ip6")));
}

#[test]
fn over_ipip_a_probe_goes_to_the_peers_tunnel_address_via_its_node() {
    let nodes = [node(1), node(2)];
    let all = targets_of(Mode::Ipip, &nodes);
    let t = v4(&all)[0];
    assert_eq!(t.dst, IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)));
    assert_eq!(t.via, Some(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2))));
    assert_eq!(t.dev, "tunl0");
    assert_eq!(t.mtu, 1480);
    assert_eq!(t.underlay, t.via);
}

#[test]
fn native_probes_go_to_the_next_hop_of_the_pod_route_at_the_uplink_mtu() {
    let nodes = [node(1), node(2)];
    let all = targets_of(Mode::Native, &nodes);
    let t = v4(&all)[0];
    assert_eq!(t.dst, IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2)));
    assert_eq!(t.src, None);
    assert!(!t.tunnel);
    assert_eq!(t.dev, "eth0");
    assert_eq!(t.mtu, 1500);
    assert_eq!(t.underlay, Some(t.dst));
}

#[test]
fn no_target_for_the_own_cidr_or_a_peer_without_a_route() {
    let mut nodes = vec![node(1), node(2)];
    // Overlaps the underlay: left out, so not routed, so not probed.
    nodes.push(Node {
        name: "odd".into(),
        node_ip: Some(Ipv4Addr::new(10, 250, 0, 9)),
        node_ip6: None,
        pod_cidrs: vec!["10.250.0.0/25".parse().expect("cidr")],
    });
    let all = targets_of(Mode::Vxlan, &nodes);
    assert!(all.iter().all(|t| t.peer == "node-2"), "{all:#?}");
}

#[test]
fn a_converged_node_holds_every_path() {
    for mode in [Mode::Vxlan, Mode::Ipip, Mode::Native] {
        let nodes = [node(1), node(2), node(3)];
        let desired = plan_of(mode, &nodes);
        let observed = converged(&desired);
        for t in targets(&desired, &nodes, &nodes[0], 1500) {
            assert_eq!(locate(&t, &desired, &observed), None, "{mode} {t:?}");
        }
    }
}

fn vxlan_node2() -> (Desired, Observed, ProbeTarget) {
    let nodes = [node(1), node(2), node(3)];
    let desired = plan_of(Mode::Vxlan, &nodes);
    let observed = converged(&desired);
    let t = targets(&desired, &nodes, &nodes[0], 1500)
        .into_iter()
        .find(|t| t.peer == "node-2" && t.family == "ipv4")
        .expect("target");
    (desired, observed, t)
}

#[test]
fn a_missing_route_is_located_at_the_route() {
    let (desired, mut observed, t) = vxlan_node2();
    observed.routes.retain(|k, _| k.dst != t.route);
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Route);
    assert!(b.detail.contains("no route to 10.244.2.0/24"), "{b:?}");
}

#[test]
fn a_route_elsewhere_is_located_at_the_route() {
    let (desired, mut observed, t) = vxlan_node2();
    for r in observed
        .routes
        .values_mut()
        .filter(|r| r.key.dst == t.route)
    {
        r.dev = "eth0".into();
    }
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Route);
    assert!(b.detail.contains("dev eth0"), "{b:?}");
}

#[test]
fn a_down_device_or_lost_address_is_located_at_the_device() {
    let (desired, mut observed, t) = vxlan_node2();
    if let Some(d) = observed.vxlan.as_mut() {
        d.addresses.clear();
    }
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Device);
    assert!(b.detail.contains("10.244.1.0"), "{b:?}");
    if let Some(d) = observed.vxlan.as_mut() {
        d.up = false;
    }
    let b = locate(&t, &desired, &observed).expect("broken");
    assert!(b.detail.contains("is down"), "{b:?}");
    observed.vxlan = None;
    let b = locate(&t, &desired, &observed).expect("broken");
    assert!(b.detail.contains("does not exist"), "{b:?}");
}

#[test]
fn a_missing_or_wrong_vtep_neighbour_is_located_at_the_neighbour() {
    let (desired, mut observed, t) = vxlan_node2();
    observed.neighs.remove(&t.dst);
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Neighbour);
    assert!(b.detail.contains("no neighbour 10.244.2.0"), "{b:?}");

    let (desired, mut observed, t) = vxlan_node2();
    if let Some(n) = observed.neighs.get_mut(&t.dst) {
        n.mac = Mac::for_node("someone-else");
    }
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Neighbour);
}

#[test]
fn a_missing_or_misdirected_fdb_entry_is_located_at_the_fdb() {
    let (desired, mut observed, t) = vxlan_node2();
    let mac = Mac::for_node("node-2");
    observed.fdb.remove(&mac);
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Fdb);
    assert!(b.detail.contains("10.250.0.2"), "{b:?}");

    let (desired, mut observed, t) = vxlan_node2();
    if let Some(f) = observed.fdb.get_mut(&mac) {
        f.dst = IpAddr::V4(Ipv4Addr::new(10, 250, 0, 3));
    }
    let b = locate(&t, &desired, &observed).expect("broken");
    assert_eq!(b.stage, Stage::Fdb);
    assert!(b.detail.contains("goes to 10.250.0.3"), "{b:?}");
}

#[test]
fn the_ipv6_path_has_its_own_neighbour_and_fdb_entry() {
    let nodes = [node(1), node(2)];
    let desired = plan_of(Mode::Vxlan, &nodes);
    let mut observed = converged(&desired);
    observed.fdb.remove(&Mac::for_node_v6("node-2"));
    let broken: Vec<_> = targets(&desired, &nodes, &nodes[0], 1500)
        .iter()
        .map(|t| (t.family, locate(t, &desired, &observed).map(|b| b.stage)))
        .collect();
    assert_eq!(broken, [("ipv4", None), ("ipv6", Some(Stage::Fdb))]);
}

#[test]
fn another_peers_break_is_not_this_peers() {
    let (desired, mut observed, t) = vxlan_node2();
    let other: IpNetwork = "10.244.3.0/24".parse().expect("cidr");
    observed.routes.retain(|k, _| k.dst != other);
    observed.fdb.remove(&Mac::for_node("node-3"));
    assert_eq!(locate(&t, &desired, &observed), None);
}

proptest! {
    /// Whatever single piece of a converged vxlan node is taken away, the
    /// probes whose path used it are located at it, and only those.
    #[test]
    fn a_removed_piece_breaks_exactly_the_paths_through_it(
        peers in 2u8..8,
        victim in 2u8..8,
        piece in 0usize..3,
    ) {
        let victim = victim.min(peers);
        let nodes: Vec<Node> = (1..=peers).map(node).collect();
        let desired = plan_of(Mode::Vxlan, &nodes);
        let mut observed = converged(&desired);
        let victim_cidr: IpNetwork = format!("10.244.{victim}.0/24").parse().expect("cidr");
        let stage = match piece {
            0 => {
                observed.routes.retain(|k, _| k.dst != victim_cidr);
                Stage::Route
            }
            1 => {
                observed.neighs.remove(&victim_cidr.network());
                Stage::Neighbour
            }
            _ => {
                observed.fdb.remove(&Mac::for_node(&format!("node-{victim}")));
                Stage::Fdb
            }
        };
        for t in targets(&desired, &nodes, &nodes[0], 1500) {
            let found = locate(&t, &desired, &observed).map(|b| b.stage);
            let through_victim = t.peer == format!("node-{victim}");
            // The IPv6 path has its own route, neighbour and MAC.
            let shares = through_victim && t.family == "ipv4";
            if shares {
                prop_assert_eq!(found, Some(stage), "{:?}", t);
            } else {
                prop_assert_eq!(found, None, "{:?}", t);
            }
        }
    }
}
