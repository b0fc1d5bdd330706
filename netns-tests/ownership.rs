//! Only what is ours is ever changed: foreign routes and addresses survive
//! apply and cleanup; conflicts are reported, not overwritten; adoption
//! hands over stale BIRD/felix routes only when asked.

use podroute::model::{parse_adopted_protocols, Mode};

use crate::support::{have_root, our_routes, steady, Lab};

#[test]
fn foreign_state_survives_apply_and_cleanup() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let n2 = lab.node("node-2").clone();
    // Someone else's: a static route, a route of ours by protocol but in
    // another table, an extra address on the uplink, and a route that holds
    // the key of a peer's pod CIDR.
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            "192.168.77.0/24",
            "via",
            &n2.ip.to_string(),
            "dev",
            "eth0",
        ],
    );
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            "10.244.99.0/24",
            "via",
            &n2.ip.to_string(),
            "table",
            "100",
            "proto",
            "91",
        ],
    );
    lab.ip("node-1", &["addr", "add", "10.99.0.1/32", "dev", "eth0"]);
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            &lab.node("node-3").pod_cidr.to_string(),
            "via",
            &n2.ip.to_string(),
            "proto",
            "static",
        ],
    );

    let outcome = lab.converge("node-1", &steady(Mode::Vxlan));
    assert_eq!(
        outcome.conflicts.len(),
        1,
        "the peer route held by a static route is a conflict"
    );
    // A foreign address on our own device is kept too.
    lab.ip(
        "node-1",
        &["addr", "add", "10.98.0.1/32", "dev", "vxlan.calico"],
    );
    let again = lab.converge("node-1", &steady(Mode::Vxlan));
    assert_eq!(again.changes, 0, "{:?}", again.steps);
    let addr = lab.ip("node-1", &["addr", "show", "dev", "vxlan.calico"]);
    assert!(addr.contains("10.98.0.1/32"), "{addr}");

    let check = |when: &str| {
        let main = lab.ip("node-1", &["route", "show"]);
        assert!(
            main.contains("192.168.77.0/24"),
            "{when}: static route gone:\n{main}"
        );
        let held = lab.ip(
            "node-1",
            &["route", "show", &lab.node("node-3").pod_cidr.to_string()],
        );
        assert!(
            held.contains("proto static"),
            "{when}: conflicting route replaced:\n{held}"
        );
        let t100 = lab.ip("node-1", &["route", "show", "table", "100"]);
        assert!(
            t100.contains("10.244.99.0/24"),
            "{when}: table 100 route gone:\n{t100}"
        );
        let eth0 = lab.ip("node-1", &["addr", "show", "dev", "eth0"]);
        assert!(
            eth0.contains("10.99.0.1/32"),
            "{when}: uplink address gone:\n{eth0}"
        );
    };
    check("after apply");

    let cleaned = lab.cleanup("node-1", lab.config("node-1"));
    assert!(cleaned.changes > 0);
    check("after cleanup");
    assert!(our_routes(&lab, "node-1").is_empty(), "cleanup left routes");
    let links = lab.ip("node-1", &["link", "show"]);
    assert!(
        !links.contains("vxlan.calico"),
        "cleanup left the device:\n{links}"
    );
    assert!(
        !lab.config("node-1").mtu_file.exists(),
        "cleanup left the MTU file"
    );
}

#[test]
fn adoption_removes_stale_bird_routes_only_when_asked() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let n2 = lab.node("node-2").clone();
    let via = n2.ip.to_string();
    let peer = n2.pod_cidr.to_string();
    // What Calico leaves behind: BIRD routes (a peer's block, a gone peer,
    // the local blackhole) and a felix route (protocol 80).
    lab.ip(
        "node-1",
        &[
            "route", "add", &peer, "via", &via, "dev", "eth0", "proto", "bird",
        ],
    );
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            "10.244.50.0/26",
            "via",
            &via,
            "dev",
            "eth0",
            "proto",
            "bird",
        ],
    );
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            "blackhole",
            "10.244.1.0/26",
            "proto",
            "bird",
        ],
    );
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            "10.244.51.0/26",
            "via",
            &via,
            "dev",
            "eth0",
            "proto",
            "80",
        ],
    );

    let plain = lab.converge("node-1", &steady(Mode::Native));
    assert_eq!(
        plain.conflicts.len(),
        1,
        "without adoption the BIRD route is foreign"
    );
    assert_eq!(
        lab.ip("node-1", &["route", "show", "proto", "bird"])
            .lines()
            .count(),
        3
    );

    let mut config = lab.config("node-1");
    config.adopt_route_protocols = parse_adopted_protocols("bird,80").expect("protocols");
    let adopted = lab
        .converge_with("node-1", &steady(Mode::Native), config)
        .expect("converge with adoption");
    assert!(adopted.conflicts.is_empty());
    assert_eq!(
        lab.ip("node-1", &["route", "show", "proto", "bird"]).trim(),
        ""
    );
    assert_eq!(
        lab.ip("node-1", &["route", "show", "proto", "80"]).trim(),
        ""
    );
    let ours = lab.ip("node-1", &["route", "show", &peer]);
    assert!(
        ours.contains(&format!("via {via} dev eth0 proto 91")),
        "{ours}"
    );
    lab.converge_all(&steady(Mode::Native));
    lab.assert_all_pods_talk(1500);
}
