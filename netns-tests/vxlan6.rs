//! `vxlan-v6.calico`: the IPv6 tunnel of the vxlan and ipip modes, proven
//! by the kernel's state and by pod packets in both families; routes via
//! link-local gateways that replace native routes in place; its retirement,
//! a foreign address on it that keeps it, and drift repaired by an agent.

use std::time::Duration;

use podroute::api::{Mode, Plan};
use podroute::model::Mac;

use crate::agent::{bridge, wait_for, AgentProcess};
use crate::support::{have_ipip, have_root, steady, write_dual_cluster, Family, Lab};

fn routes6(lab: &Lab, node: &str) -> Vec<String> {
    lab.ip(node, &["-6", "route", "show", "proto", "91"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// `<peer cidr6> via <link-local of its IPv6 VTEP> dev vxlan-v6.calico ...`
fn tunnel_route6(lab: &Lab, node: &str, peer: &str) -> Option<String> {
    let cidr = lab.node(peer).pod_cidr6.expect("dual-stack");
    let gateway = Mac::for_node_v6(peer).link_local();
    let head = format!("{cidr} via {gateway} dev vxlan-v6.calico ");
    routes6(lab, node)
        .into_iter()
        .find(|r| r.starts_with(&head))
}

fn transition(route_mode: Mode, decap: &[Mode]) -> Plan {
    Plan {
        generation: 2,
        route_mode,
        decap: decap.iter().copied().collect(),
    }
}

#[test]
fn vxlan_v6_device_routes_neighbours_fdb_and_packets() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(3);
    let out = lab.converge_all(&steady(Mode::Vxlan));
    let pod_mtu = out["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1430, "the smallest over both families: 1500 - 70");

    let n1 = lab.node("node-1");
    let link = lab.ip("node-1", &["-d", "link", "show", "vxlan-v6.calico"]);
    for want in [
        "vxlan id 4096".to_string(),
        format!("local {}", n1.ip6.expect("dual-stack")),
        "dev eth0".into(),
        "dstport 4789".into(),
        "nolearning".into(),
        "mtu 1430".into(),
        Mac::for_node_v6("node-1").to_string(),
    ] {
        assert!(
            link.contains(&want),
            "vxlan-v6.calico lacks {want:?}:\n{link}"
        );
    }
    // The IPv4 device shares the VNI and the port: the kernel tells them apart by family.
    let v4 = lab.ip("node-1", &["-d", "link", "show", "vxlan.calico"]);
    assert!(
        v4.contains("vxlan id 4096") && v4.contains("dstport 4789"),
        "{v4}"
    );
    let addr = lab.ip("node-1", &["-6", "addr", "show", "dev", "vxlan-v6.calico"]);
    let own = n1.pod_cidr6.expect("dual-stack").network();
    assert!(addr.contains(&format!("inet6 {own}/128")), "{addr}");
    // No prefix route for our /128: it would be state that is not ours.
    let kernel = lab.ip(
        "node-1",
        &[
            "-6",
            "route",
            "show",
            "dev",
            "vxlan-v6.calico",
            "proto",
            "kernel",
        ],
    );
    assert!(!kernel.contains(&format!("{own}")), "{kernel}");

    let neigh = lab.ip("node-1", &["-6", "neigh", "show", "dev", "vxlan-v6.calico"]);
    let fdb = lab
        .topo
        .node_netns("node-1")
        .expect("ns")
        .exec(&["bridge", "fdb", "show", "dev", "vxlan-v6.calico"])
        .expect("bridge");
    for peer in ["node-2", "node-3"] {
        let mac = Mac::for_node_v6(peer);
        let route = tunnel_route6(&lab, "node-1", peer)
            .unwrap_or_else(|| panic!("no tunnel route to {peer}: {:?}", routes6(&lab, "node-1")));
        assert!(
            route.contains("metric 1024") && route.contains("mtu 1430"),
            "{route}"
        );
        assert!(!route.contains("onlink"), "{route}");
        assert!(
            neigh.contains(&format!("{} lladdr {mac} PERMANENT", mac.link_local())),
            "neigh for {peer}:\n{neigh}"
        );
        let dst = lab.node(peer).ip6.expect("dual-stack");
        assert!(
            fdb.contains(&format!("{mac} dst {dst} self permanent")),
            "fdb for {peer}:\n{fdb}"
        );
    }

    let before = lab.tx_packets("node-1", "vxlan-v6.calico");
    lab.assert_all_pods_talk(pod_mtu);
    assert!(
        lab.tx_packets("node-1", "vxlan-v6.calico") > before,
        "IPv6 traffic did not use vxlan-v6.calico"
    );
    for (from, to) in [("node-1", "node-2"), ("node-3", "node-1")] {
        let over = lab.payload_at(Family::V6, pod_mtu) + 1;
        assert!(
            !lab.udp_in(Family::V6, from, to, over, true),
            "{from} -> {to}: a DF packet one byte over the pod MTU passed"
        );
    }
}

/// The switch's three phases, both ways: the IPv6 route of each peer is
/// replaced in place (a link-local gateway is never looked up in the table,
/// so the native route to the peer does not block it), and pods talk in
/// both families after every phase.
#[test]
fn native_and_vxlan_switch_in_place_in_both_families() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(2);
    let phases = [
        steady(Mode::Native),
        transition(Mode::Native, &[Mode::Native, Mode::Vxlan]),
        transition(Mode::Vxlan, &[Mode::Native, Mode::Vxlan]),
        steady(Mode::Vxlan),
        transition(Mode::Vxlan, &[Mode::Native, Mode::Vxlan]),
        transition(Mode::Native, &[Mode::Native, Mode::Vxlan]),
        steady(Mode::Native),
    ];
    for plan in phases {
        let out = lab.converge_all(&plan);
        let mtu = out["node-1"].pod_mtu.expect("pod mtu");
        let routes = routes6(&lab, "node-1");
        assert_eq!(
            routes.len(),
            2,
            "{plan:?}: one peer route, one unreachable: {routes:?}"
        );
        let tunnel = tunnel_route6(&lab, "node-1", "node-2");
        assert_eq!(
            tunnel.is_some(),
            plan.route_mode == Mode::Vxlan,
            "{plan:?}: {routes:?}"
        );
        lab.assert_all_pods_talk(mtu);
    }
    let links = lab.ip("node-1", &["link", "show"]);
    assert!(!links.contains("vxlan-v6.calico"), "left behind:\n{links}");
    let neigh = lab.ip("node-1", &["-6", "neigh", "show", "nud", "permanent"]);
    assert!(neigh.trim().is_empty(), "left behind: {neigh}");
}

/// ipip has no IPv6 in Linux: IPv4 rides tunl0, IPv6 vxlan-v6.calico.
#[test]
fn ipip_mode_carries_ipv6_over_vxlan_v6() {
    if !have_root() || !have_ipip() {
        return;
    }
    let lab = Lab::dual(2);
    let out = lab.converge_all(&steady(Mode::Ipip));
    let pod_mtu = out["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1430);
    assert!(
        out["node-1"]
            .notes
            .iter()
            .any(|n| n.contains("carries IPv6 over vxlan-v6.calico")),
        "{:?}",
        out["node-1"].notes
    );
    assert!(tunnel_route6(&lab, "node-1", "node-2").is_some());
    let v4 = lab.ip("node-1", &["route", "show", "proto", "91"]);
    assert!(v4.contains("dev tunl0"), "{v4}");
    let (tunl, vx6) = (
        lab.tx_packets("node-1", "tunl0"),
        lab.tx_packets("node-1", "vxlan-v6.calico"),
    );
    lab.assert_all_pods_talk(pod_mtu);
    assert!(
        lab.tx_packets("node-1", "tunl0") > tunl,
        "IPv4 did not use tunl0"
    );
    assert!(
        lab.tx_packets("node-1", "vxlan-v6.calico") > vx6,
        "IPv6 did not use vxlan-v6"
    );
}

/// Someone's address on vxlan-v6.calico: leaving the tunnel modes removes
/// only what is ours and keeps the device, saying so.
#[test]
fn a_foreign_address_keeps_vxlan_v6_and_survives() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(2);
    lab.converge_all(&steady(Mode::Vxlan));
    lab.ip(
        "node-1",
        &[
            "-6",
            "addr",
            "add",
            "fd00:99::1/64",
            "dev",
            "vxlan-v6.calico",
            "nodad",
        ],
    );
    let out = lab.converge_all(&steady(Mode::Native));
    let kept = &out["node-1"].kept;
    assert!(
        kept.iter().any(|k| k.contains("vxlan-v6.calico")),
        "{kept:?}"
    );
    let addr = lab.ip("node-1", &["-6", "addr", "show", "dev", "vxlan-v6.calico"]);
    assert!(addr.contains("fd00:99::1/64"), "theirs went: {addr}");
    let own = lab.node("node-1").pod_cidr6.expect("dual-stack").network();
    assert!(!addr.contains(&format!("{own}/128")), "ours stayed: {addr}");
    lab.assert_all_pods_talk(out["node-1"].pod_mtu.expect("pod mtu"));
    assert!(lab
        .converge("node-1", &steady(Mode::Native))
        .steps
        .is_empty());
}

/// A running agent repairs IPv6 drift at once: a deleted route, neighbour,
/// FDB entry or tunnel address of vxlan-v6.calico comes back.
#[test]
fn an_agent_repairs_ipv6_drift() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(2);
    let dir = lab.config("node-1").mtu_file;
    let dir = dir.parent().and_then(std::path::Path::parent).expect("dir");
    let cluster = write_dual_cluster(&lab, &dir.join("dual.yaml"), "vxlan");
    let _agents: Vec<AgentProcess> = ["node-1", "node-2"]
        .iter()
        .map(|n| AgentProcess::start(&lab, n, std::path::Path::new(&cluster)))
        .collect();
    let converged = || tunnel_route6(&lab, "node-1", "node-2").is_some();
    wait_for("IPv6 over vxlan-v6", Duration::from_secs(10), converged);

    let cidr = lab
        .node("node-2")
        .pod_cidr6
        .expect("dual-stack")
        .to_string();
    lab.ip("node-1", &["-6", "route", "del", &cidr, "proto", "91"]);
    wait_for("the IPv6 route back", Duration::from_secs(5), converged);

    let mac = Mac::for_node_v6("node-2");
    let gateway = mac.link_local().to_string();
    let neigh = || lab.ip("node-1", &["-6", "neigh", "show", "dev", "vxlan-v6.calico"]);
    lab.ip(
        "node-1",
        &["-6", "neigh", "del", &gateway, "dev", "vxlan-v6.calico"],
    );
    wait_for("the neighbour back", Duration::from_secs(5), || {
        neigh().contains(&format!("{gateway} lladdr {mac} PERMANENT"))
    });

    let dst = lab.node("node-2").ip6.expect("dual-stack").to_string();
    let fdb = || bridge(&lab, "node-1", &["fdb", "show", "dev", "vxlan-v6.calico"]);
    let mac = mac.to_string();
    bridge(
        &lab,
        "node-1",
        &[
            "fdb",
            "del",
            &mac,
            "dev",
            "vxlan-v6.calico",
            "dst",
            &dst,
            "self",
        ],
    );
    wait_for("the FDB entry back", Duration::from_secs(5), || {
        fdb().contains(&format!("{mac} dst {dst} self permanent"))
    });

    let own = format!(
        "{}/128",
        lab.node("node-1").pod_cidr6.expect("dual-stack").network()
    );
    let addr = || lab.ip("node-1", &["-6", "addr", "show", "dev", "vxlan-v6.calico"]);
    lab.ip(
        "node-1",
        &["-6", "addr", "del", &own, "dev", "vxlan-v6.calico"],
    );
    wait_for("the tunnel address back", Duration::from_secs(5), || {
        addr().contains(&format!("inet6 {own}"))
    });
    wait_for(
        "the IPv6 route still there",
        Duration::from_secs(5),
        converged,
    );
    lab.topo.set_pod_mtu("node-1", 1430).expect("mtu");
    lab.topo.set_pod_mtu("node-2", 1430).expect("mtu");
    lab.assert_all_pods_talk(1430);
}

/// A host whose new devices come without IPv6 (`default.disable_ipv6=1`):
/// vxlan-v6.calico gets IPv6 turned on before its address, and carries.
#[test]
fn vxlan_v6_works_where_new_devices_have_ipv6_disabled() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(2);
    for node in lab.names() {
        let ns = lab.topo.node_netns(&node).expect("netns");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .expect("sysctl");
    }
    let out = lab.converge_all(&steady(Mode::Vxlan));
    let addr = lab.ip("node-1", &["-6", "addr", "show", "dev", "vxlan-v6.calico"]);
    let own = lab.node("node-1").pod_cidr6.expect("dual-stack").network();
    assert!(addr.contains(&format!("inet6 {own}/128")), "{addr}");
    assert!(tunnel_route6(&lab, "node-1", "node-2").is_some());
    lab.assert_all_pods_talk(out["node-1"].pod_mtu.expect("pod mtu"));
    // Converged: the sysctl is not written again.
    assert!(lab
        .converge("node-1", &steady(Mode::Vxlan))
        .steps
        .is_empty());
}
