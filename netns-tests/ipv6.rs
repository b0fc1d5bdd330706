//! IPv6 pod CIDRs of a dual-stack lab: native routes read back from the
//! kernel and proven with packets in both families, their removal,
//! off-subnet peers via the underlay router, and a foreign IPv6 route that
//! stays. The tunnel modes are in `vxlan6`.

use podroute::api::{Mode, OffSubnet};
use podroute::lab::topology::{IpFamily, Topology};

use crate::support::{have_root, our_routes, steady, Lab};

/// Lines of `ip -6 route show proto 91` in `node` (ip leaves the protocol
/// out: the filter proves it).
fn our_routes6(lab: &Lab, node: &str) -> Vec<String> {
    lab.ip(node, &["-6", "route", "show", "proto", "91"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// The native route of `node`'s IPv6 pod CIDR towards `peer`, as the kernel
/// shows it, if there is one.
fn native_route6(lab: &Lab, node: &str, peer: &str) -> Option<String> {
    let p = lab.node(peer);
    let head = format!(
        "{} via {} dev eth0 ",
        p.pod_cidr6.expect("dual-stack"),
        p.ip6.expect("dual-stack")
    );
    our_routes6(lab, node)
        .into_iter()
        .find(|l| l.starts_with(&head))
}

fn forwarding6(lab: &Lab, node: &str) -> String {
    lab.topo
        .node_netns(node)
        .and_then(|ns| ns.read_sysctl("net.ipv6.conf.all.forwarding"))
        .expect("sysctl")
}

#[test]
fn native_ipv6_routes_and_packets() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(3);
    assert!(
        !lab.udp6("node-1", "node-2", 64, false),
        "no IPv6 path between pods before podroute routes them"
    );
    assert_eq!(forwarding6(&lab, "node-1"), "0");
    let out = lab.converge_all(&steady(Mode::Native));
    let mtu = out["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(mtu, 1500);

    let routes = our_routes6(&lab, "node-1");
    for peer in ["node-2", "node-3"] {
        let route = native_route6(&lab, "node-1", peer)
            .unwrap_or_else(|| panic!("no native IPv6 route to {peer}: {routes:?}"));
        assert!(route.contains(" metric 1024"), "{route}");
    }
    let own = format!(
        "unreachable {} ",
        lab.node("node-1").pod_cidr6.expect("dual-stack")
    );
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with(&own) && r.contains(" metric 4294967295")),
        "{routes:?}"
    );
    assert_eq!(routes.len(), 3, "two peers and our own CIDR: {routes:?}");
    assert_eq!(forwarding6(&lab, "node-1"), "1");

    lab.assert_all_pods_talk(mtu);
    for from in lab.names() {
        for to in lab.names().into_iter().filter(|t| *t != from) {
            for family in lab.families() {
                let over = lab.payload_at(family, mtu) + 1;
                assert!(
                    !lab.udp_in(family, &from, &to, over, true),
                    "{family:?} {from} -> {to}: a DF packet one byte over the pod MTU passed"
                );
            }
        }
    }
}

#[test]
fn ipv6_routes_are_removed_when_the_plan_goes() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(2);
    lab.converge_all(&steady(Mode::Native));
    assert!(native_route6(&lab, "node-1", "node-2").is_some());
    assert!(lab.udp6("node-1", "node-2", 64, false));

    for node in lab.names() {
        lab.cleanup(&node, lab.config(&node));
    }
    for node in lab.names() {
        let left = our_routes6(&lab, &node);
        assert!(
            left.is_empty(),
            "{node}: IPv6 routes of ours left: {left:?}"
        );
        assert!(our_routes(&lab, &node).is_empty());
    }
    assert!(
        !lab.udp6("node-1", "node-2", 64, false),
        "IPv6 pods still talk with no routes"
    );
    assert!(!lab.udp6("node-2", "node-1", 64, false));
}

#[test]
fn ipv6_off_subnet_goes_through_the_router_with_underlay() {
    if !have_root() {
        return;
    }
    let lab = Lab::new(
        Topology::builder()
            .ip_family(IpFamily::Dual)
            .nodes(0, 2)
            .nodes(1, 1)
            .router(true),
    );
    let plan = steady(Mode::Native);
    for node in lab.names() {
        let mut config = lab.config(&node);
        config.off_subnet = OffSubnet::Underlay;
        let out = lab.converge_with(&node, &plan, config).expect("converge");
        lab.topo
            .set_pod_mtu(&node, out.pod_mtu.expect("mtu"))
            .expect("mtu");
    }
    assert!(native_route6(&lab, "node-1", "node-2").is_some());
    let n3 = lab
        .node("node-3")
        .pod_cidr6
        .expect("dual-stack")
        .to_string();
    let routes = our_routes6(&lab, "node-1");
    assert!(!routes.iter().any(|r| r.contains(&n3)), "{routes:?}");
    assert!(
        !lab.udp6("node-1", "node-3", 64, false),
        "no underlay route yet, so no path"
    );

    // The cloud route table's part: the router knows every pod CIDR.
    lab.topo.add_router_pod_routes().expect("router routes");
    let router = lab
        .topo
        .router()
        .and_then(|r| lab.topo.netns(&r.netns))
        .expect("router");
    let via = lab.ip(
        "node-1",
        &["-6", "route", "get", &lab.pod_ip6("node-3").to_string()],
    );
    let gw = std::net::Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 254);
    assert!(via.contains(&format!("via {gw} dev eth0")), "{via}");
    let leg_tx = || {
        crate::support::tx_packets_by_device(router)
            .into_iter()
            .find(|(dev, _)| dev == "s1")
            .map_or(0, |(_, packets)| packets)
    };
    let before = leg_tx();
    assert!(lab.udp6("node-1", "node-3", 64, false));
    assert!(leg_tx() > before, "the router did not forward to subnet 1");
    lab.assert_all_pods_talk(1500);
}

#[test]
fn foreign_ipv6_route_is_a_conflict_left_alone() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(3);
    let n2 = lab.node("node-2").clone();
    let cidr6 = n2.pod_cidr6.expect("dual-stack").to_string();
    let n3_ip6 = lab.node("node-3").ip6.expect("dual-stack").to_string();
    let foreign = [
        "-6", "route", "add", &cidr6, "via", &n3_ip6, "dev", "eth0", "proto", "static",
    ];
    lab.ip("node-1", &foreign);
    let plan = steady(Mode::Native);
    // node-3 stays unconverged: it does not forward, so the foreign route,
    // while it holds, is a dead end for IPv6 to node-2's pods.
    let first = lab.converge("node-1", &plan);
    lab.converge("node-2", &plan);
    assert_eq!(
        first
            .conflicts
            .iter()
            .map(|k| k.dst.to_string())
            .collect::<Vec<_>>(),
        vec![cidr6.clone()],
        "the IPv6 route held by a static route is the one conflict"
    );
    let again = lab.converge("node-1", &plan);
    assert_eq!(again.changes, 0, "{:?}", again.steps);
    assert_eq!(again.conflicts, first.conflicts);

    let kept = lab.ip("node-1", &["-6", "route", "show", &cidr6]);
    assert!(
        kept.contains(&format!("via {n3_ip6} dev eth0 proto static")),
        "{kept}"
    );
    assert!(native_route6(&lab, "node-1", "node-2").is_none());
    let v4 = our_routes(&lab, "node-1");
    assert!(
        v4.iter()
            .any(|r| r.starts_with(&format!("{} via {} dev eth0", n2.pod_cidr, n2.ip))),
        "{v4:?}"
    );
    assert!(lab.udp("node-1", "node-2", 64, false));
    assert!(
        !lab.udp6("node-1", "node-2", 64, false),
        "IPv6 went around the foreign route"
    );

    // Once its owner takes it away, the route is ours to install.
    lab.ip("node-1", &["-6", "route", "del", &cidr6, "proto", "static"]);
    let then = lab.converge("node-1", &plan);
    assert!(then.conflicts.is_empty(), "{:?}", then.conflicts);
    assert!(native_route6(&lab, "node-1", "node-2").is_some());
    assert!(lab.udp6("node-1", "node-2", 64, false));
}
