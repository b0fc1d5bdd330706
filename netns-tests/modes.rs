//! Each dataplane, proven by kernel state and by packets.

use podroute::api::Mode;
use podroute::lab::probe::OVERHEAD;
use podroute::lab::topology::Topology;
use podroute::model::Mac;

use crate::support::{have_ipip, have_root, our_routes, steady, Lab};

#[test]
fn vxlan_routes_neighbours_fdb_and_packets() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let plan = steady(Mode::Vxlan);
    let outcomes = lab.converge_all(&plan);
    let pod_mtu = outcomes["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1450);

    let n1 = lab.node("node-1");
    let link = lab.ip("node-1", &["-d", "link", "show", "vxlan.calico"]);
    for want in [
        "vxlan id 4096",
        &format!("local {}", n1.ip),
        "dev eth0",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
        &Mac::for_node("node-1").to_string(),
    ] {
        assert!(link.contains(want), "vxlan.calico lacks {want:?}:\n{link}");
    }
    let addr = lab.ip("node-1", &["addr", "show", "dev", "vxlan.calico"]);
    assert!(
        addr.contains(&format!("inet {}/32", n1.pod_cidr.ip())),
        "{addr}"
    );

    let routes = our_routes(&lab, "node-1");
    assert_eq!(routes.len(), 2, "{routes:?}");
    let neigh = lab.ip("node-1", &["neigh", "show", "dev", "vxlan.calico"]);
    let fdb = lab
        .topo
        .node_netns("node-1")
        .expect("ns")
        .exec(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
        .expect("bridge");
    for peer in ["node-2", "node-3"] {
        let p = lab.node(peer);
        let vtep = p.pod_cidr.ip();
        let mac = Mac::for_node(peer).to_string();
        let want_route = format!("{} via {vtep} dev vxlan.calico onlink mtu 1450", p.pod_cidr);
        assert!(
            routes.iter().any(|r| r.trim() == want_route),
            "missing {want_route:?} in {routes:?}"
        );
        assert!(
            neigh.contains(&format!("{vtep} lladdr {mac} PERMANENT")),
            "neigh for {peer}:\n{neigh}"
        );
        assert!(
            fdb.contains(&format!("{mac} dst {} self permanent", p.ip)),
            "fdb for {peer}:\n{fdb}"
        );
    }

    let before = lab.tx_packets("node-1", "vxlan.calico");
    lab.assert_all_pods_talk(pod_mtu);
    assert!(
        lab.tx_packets("node-1", "vxlan.calico") > before,
        "traffic did not use vxlan.calico"
    );
}

#[test]
fn native_routes_and_packets() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let outcomes = lab.converge_all(&steady(Mode::Native));
    let pod_mtu = outcomes["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1500);
    let routes = our_routes(&lab, "node-1");
    assert_eq!(routes.len(), 2, "{routes:?}");
    for peer in ["node-2", "node-3"] {
        let p = lab.node(peer);
        let want = format!("{} via {} dev eth0", p.pod_cidr, p.ip);
        assert!(
            routes.iter().any(|r| r.trim() == want),
            "missing {want:?} in {routes:?}"
        );
    }
    let links = lab.ip("node-1", &["link", "show"]);
    assert!(
        !links.contains("vxlan.calico"),
        "native needs no tunnel:\n{links}"
    );
    lab.assert_all_pods_talk(pod_mtu);
}

#[test]
fn ipip_routes_and_packets() {
    if !have_root() || !have_ipip() {
        return;
    }
    let lab = Lab::flat(3);
    let outcomes = lab.converge_all(&steady(Mode::Ipip));
    let pod_mtu = outcomes["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1480);
    let n1 = lab.node("node-1");
    let link = lab.ip("node-1", &["-d", "link", "show", "tunl0"]);
    assert!(
        link.contains("ipip") && link.contains("mtu 1480") && link.contains("UP"),
        "{link}"
    );
    let addr = lab.ip("node-1", &["addr", "show", "dev", "tunl0"]);
    assert!(
        addr.contains(&format!("inet {}/32", n1.pod_cidr.ip())),
        "{addr}"
    );
    let routes = our_routes(&lab, "node-1");
    for peer in ["node-2", "node-3"] {
        let p = lab.node(peer);
        let want = format!("{} via {} dev tunl0 onlink mtu 1480", p.pod_cidr, p.ip);
        assert!(
            routes.iter().any(|r| r.trim() == want),
            "missing {want:?} in {routes:?}"
        );
    }
    let before = lab.tx_packets("node-1", "tunl0");
    lab.assert_all_pods_talk(pod_mtu);
    assert!(
        lab.tx_packets("node-1", "tunl0") > before,
        "traffic did not use tunl0"
    );
}

#[test]
fn second_apply_writes_nothing() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let mut modes = vec![Mode::Vxlan, Mode::Native];
    if have_ipip() {
        modes.push(Mode::Ipip);
    }
    for mode in modes {
        let plan = steady(mode);
        let first = lab.converge("node-1", &plan);
        assert!(first.changes > 0, "{mode}: first apply wrote nothing");
        let second = lab.converge("node-1", &plan);
        assert_eq!(
            second.changes, 0,
            "{mode}: second apply wrote {:?}",
            second.steps
        );
    }
}

/// The tunnel MTU follows the uplink's: 1400 leaves 1350 for VXLAN, in the
/// pod MTU file, on the device, on the routes, and on the wire.
#[test]
fn vxlan_mtu_follows_a_smaller_uplink() {
    if !have_root() {
        return;
    }
    let lab = Lab::new(Topology::builder().uplink_mtu(1400).nodes(0, 2));
    let outcomes = lab.converge_all(&steady(Mode::Vxlan));
    assert_eq!(outcomes["node-1"].pod_mtu, Some(1350));
    let file = std::fs::read_to_string(lab.config("node-1").mtu_file).expect("pod MTU file");
    assert_eq!(file.trim(), "1350");
    let link = lab.ip("node-1", &["-d", "link", "show", "vxlan.calico"]);
    assert!(link.contains("mtu 1350 "), "{link}");
    for r in our_routes(&lab, "node-1") {
        assert!(r.ends_with("mtu 1350"), "{r}");
    }
    lab.assert_all_pods_talk(1350);

    // Widen the pods' veths to the uplink's 1400, so what stops a DF packet
    // over 1350 is the node's tunnel path, not the pod's own interface.
    for node in lab.names() {
        lab.topo.set_pod_mtu(&node, 1400).expect("pod MTU");
    }
    assert!(
        lab.udp("node-1", "node-2", 1350 - OVERHEAD, true),
        "DF packet of 1350 lost"
    );
    assert!(
        !lab.udp("node-1", "node-2", 1351 - OVERHEAD, true),
        "DF packet of 1351 crossed a 1350 tunnel"
    );
    assert!(
        lab.udp("node-1", "node-2", 1351 - OVERHEAD, false),
        "without DF the node fragments 1351 into the tunnel"
    );
}
