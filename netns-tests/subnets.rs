//! Off-subnet peers in native mode: through the tunnel (`encap`) or left to
//! the underlay's routes (`underlay`).

use podroute::api::{Mode, OffSubnet};
use podroute::lab::topology::Topology;

use crate::support::{have_root, our_routes, steady, Lab};

fn two_subnets() -> Lab {
    Lab::new(Topology::builder().nodes(0, 2).nodes(1, 1).router(true))
}

#[test]
fn off_subnet_peer_goes_through_vxlan_with_encap() {
    if !have_root() {
        return;
    }
    let lab = two_subnets();
    let plan = steady(Mode::Native);
    let out = lab.converge_all(&plan);
    // The node-3 pod CIDR is not on node-1's link: vxlan, so the pod MTU shrinks.
    assert_eq!(out["node-1"].pod_mtu, Some(1450));
    let routes = our_routes(&lab, "node-1");
    let n2 = lab.node("node-2");
    let n3 = lab.node("node-3");
    assert!(
        routes
            .iter()
            .any(|r| r.trim() == format!("{} via {} dev eth0", n2.pod_cidr, n2.ip)),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.starts_with(&format!(
            "{} via {} dev vxlan.calico",
            n3.pod_cidr,
            n3.pod_cidr.ip()
        ))),
        "{routes:?}"
    );
    lab.assert_all_pods_talk(1450);
}

#[test]
fn off_subnet_peer_is_left_to_the_underlay() {
    if !have_root() {
        return;
    }
    let lab = two_subnets();
    let plan = steady(Mode::Native);
    for node in lab.names() {
        let mut config = lab.config(&node);
        config.off_subnet = OffSubnet::Underlay;
        let out = lab.converge_with(&node, &plan, config).expect("converge");
        lab.topo
            .set_pod_mtu(&node, out.pod_mtu.expect("mtu"))
            .expect("mtu");
    }
    let n3 = lab.node("node-3");
    let routes = our_routes(&lab, "node-1");
    assert_eq!(routes.len(), 1, "only the on-link peer: {routes:?}");
    assert!(!routes.iter().any(|r| r.contains(&n3.pod_cidr.to_string())));
    assert!(!lab.ip("node-1", &["link", "show"]).contains("vxlan.calico"));
    assert!(
        !lab.udp("node-1", "node-3", 64, false),
        "no underlay route yet, so no path"
    );
    // The cloud route table's part: the router knows every pod CIDR.
    lab.topo.add_router_pod_routes().expect("router routes");
    lab.assert_all_pods_talk(1500);
}
