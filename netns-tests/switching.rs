//! Moving a node between plans leaves nothing stale behind.

use std::collections::BTreeSet;

use podroute::api::{Mode, Plan};
use podroute::plan::simulate;

use crate::support::{have_root, our_routes, steady, Lab};

fn assert_no_vxlan_leftovers(lab: &Lab, node: &str) {
    let links = lab.ip(node, &["link", "show"]);
    assert!(
        !links.contains("vxlan.calico"),
        "{node}: device left:\n{links}"
    );
    let observed = lab.observe(node);
    assert!(
        observed.neighs.is_empty() && observed.fdb.is_empty(),
        "{node}: {observed:?}"
    );
    for r in our_routes(lab, node) {
        assert!(r.contains("dev eth0"), "{node}: stale tunnel route {r}");
    }
}

#[test]
fn vxlan_native_and_back_leaves_nothing_stale() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    lab.converge_all(&steady(Mode::Vxlan));
    lab.assert_all_pods_talk(1450);

    // The three phases of a switch to native, then the way back.
    let both = BTreeSet::from([Mode::Vxlan, Mode::Native]);
    let phases = [
        Plan {
            generation: 2,
            route_mode: Mode::Vxlan,
            decap: both.clone(),
        },
        Plan {
            generation: 3,
            route_mode: Mode::Native,
            decap: both.clone(),
        },
        Plan::steady(Mode::Native, 4),
    ];
    for plan in &phases {
        let out = lab.converge_all(plan);
        let mtu = out["node-1"].pod_mtu.expect("mtu");
        lab.assert_all_pods_talk(mtu);
    }
    for node in lab.names() {
        assert_no_vxlan_leftovers(&lab, &node);
        assert_eq!(our_routes(&lab, &node).len(), 2);
    }

    lab.converge_all(&Plan::steady(Mode::Vxlan, 5));
    lab.assert_all_pods_talk(1450);
    for node in lab.names() {
        for r in our_routes(&lab, &node) {
            assert!(
                r.contains("dev vxlan.calico"),
                "{node}: stale native route {r}"
            );
        }
    }
}

#[test]
fn vxlan_identity_change_recreates_device() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(2);
    lab.converge_all(&steady(Mode::Vxlan));
    lab.ip("node-1", &["link", "set", "vxlan.calico", "mtu", "1300"]);
    let mut config = lab.config("node-1");
    config.vxlan_vni = 4097;
    let out = lab
        .converge_with("node-1", &steady(Mode::Vxlan), config)
        .expect("converge");
    assert!(
        out.steps.iter().any(|s| s.why.contains("vni 4096 -> 4097")),
        "{:?}",
        out.steps
    );
    let link = lab.ip("node-1", &["-d", "link", "show", "vxlan.calico"]);
    assert!(
        link.contains("vxlan id 4097") && link.contains("mtu 1450"),
        "{link}"
    );
    assert_eq!(
        our_routes(&lab, "node-1").len(),
        1,
        "routes restored after recreate"
    );
    let observed = lab.observe("node-1");
    assert_eq!(observed.neighs.len(), 1);
    assert_eq!(observed.fdb.len(), 1);
}

#[test]
fn peer_leaving_removes_its_route_neighbour_and_fdb() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::flat(3);
    lab.converge("node-1", &steady(Mode::Vxlan));
    assert_eq!(our_routes(&lab, "node-1").len(), 2);
    lab.nodes.retain(|n| n.name != "node-3");
    let out = lab.converge("node-1", &steady(Mode::Vxlan));
    assert_eq!(
        out.changes, 3,
        "route, neighbour and fdb entry of node-3: {:?}",
        out.steps
    );
    assert_eq!(our_routes(&lab, "node-1").len(), 1);
    let observed = lab.observe("node-1");
    assert_eq!((observed.neighs.len(), observed.fdb.len()), (1, 1));
}

#[test]
fn ipip_to_vxlan_to_native_retires_tunl0() {
    if !have_root() || !crate::support::have_ipip() {
        return;
    }
    let lab = Lab::flat(3);
    lab.converge_all(&steady(Mode::Ipip));
    lab.assert_all_pods_talk(1480);
    // Someone else (say, Calico) shares tunl0 on node-3: it must stay up there.
    lab.ip("node-3", &["addr", "add", "10.97.0.3/32", "dev", "tunl0"]);

    let both = BTreeSet::from([Mode::Ipip, Mode::Vxlan]);
    for plan in [
        Plan {
            generation: 2,
            route_mode: Mode::Ipip,
            decap: both.clone(),
        },
        Plan {
            generation: 3,
            route_mode: Mode::Vxlan,
            decap: both.clone(),
        },
        Plan::steady(Mode::Vxlan, 4),
    ] {
        let out = lab.converge_all(&plan);
        assert_eq!(out["node-1"].pod_mtu, Some(1450), "{plan:?}");
        lab.assert_all_pods_talk(1450);
    }
    for node in lab.names() {
        let tunl = lab.ip(&node, &["addr", "show", "dev", "tunl0"]);
        assert!(
            !tunl.contains(&format!("{}/32", lab.node(&node).pod_cidr.ip())),
            "{node}: our address left:\n{tunl}"
        );
        let shared = node == "node-3";
        assert_eq!(
            tunl.contains("state UP") || tunl.contains(",UP"),
            shared,
            "{node}: tunl0 up/down wrong:\n{tunl}"
        );
        for r in our_routes(&lab, &node) {
            assert!(r.contains("dev vxlan.calico"), "{node}: stale route {r}");
        }
    }
    assert!(lab
        .ip("node-3", &["addr", "show", "dev", "tunl0"])
        .contains("10.97.0.3/32"));

    lab.converge_all(&steady(Mode::Native));
    lab.assert_all_pods_talk(1500);
    lab.converge_all(&steady(Mode::Ipip));
    lab.assert_all_pods_talk(1480);
    for node in lab.names() {
        assert!(
            !lab.ip(&node, &["link", "show"]).contains("vxlan.calico"),
            "{node}"
        );
        let routes = our_routes(&lab, &node);
        assert_eq!(routes.len(), 2, "{node}: {routes:?}");
        for r in routes {
            assert!(r.contains("dev tunl0 "), "{node}: stale route {r}");
        }
    }
}

/// `plan::simulate` is the kernel model the property tests trust: here the
/// real kernel is held to it. Through a switch from vxlan to native and a
/// peer leaving, what the engine observes after each converge is what the
/// model predicts from the state before and the steps taken (sysctls aside:
/// `Lab::observe` reads none).
#[test]
fn the_kernel_holds_what_the_model_predicts() {
    if !have_root() {
        return;
    }
    let mut lab = Lab::flat(3);
    let both = BTreeSet::from([Mode::Vxlan, Mode::Native]);
    let plans = [
        steady(Mode::Vxlan),
        Plan {
            generation: 2,
            route_mode: Mode::Native,
            decap: both,
        },
        Plan::steady(Mode::Native, 3),
        Plan::steady(Mode::Vxlan, 4),
    ];
    for plan in &plans {
        check_model(&lab, plan);
    }
    lab.nodes.retain(|n| n.name != "node-3");
    check_model(&lab, &Plan::steady(Mode::Vxlan, 5));
}

fn check_model(lab: &Lab, plan: &Plan) {
    let mut predicted = lab.observe("node-1");
    let outcome = lab.converge("node-1", plan);
    assert!(outcome.changes > 0, "{plan:?}: nothing to check");
    simulate::apply_all(&mut predicted, outcome.steps.iter().map(|s| &s.op));
    predicted.sysctls.clear();
    assert_eq!(lab.observe("node-1"), predicted, "{plan:?}");
}
