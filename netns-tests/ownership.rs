//! Only what is ours is ever changed: foreign routes and addresses survive
//! apply and cleanup; conflicts are reported, not overwritten; adoption
//! hands over stale BIRD/felix routes only when asked.

use podroute::api::Mode;

use podroute::model::{parse_adopted_protocols, parse_pod_network};

use crate::support::{have_ipip, have_root, our_routes, own_unreachable, steady, Lab};

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

    // Cleanup: vxlan.calico carries someone's address, so it stays, with
    // that address and nothing of ours.
    let cleaned = lab.cleanup("node-1", lab.config("node-1"));
    assert!(cleaned.changes > 0);
    assert_eq!(cleaned.kept.len(), 1, "{:?}", cleaned.kept);
    assert!(
        cleaned.kept[0].contains("10.98.0.1/32"),
        "{:?}",
        cleaned.kept
    );
    check("after cleanup");
    assert!(our_routes(&lab, "node-1").is_empty(), "cleanup left routes");
    assert_eq!(own_unreachable(&lab, "node-1"), None);
    let addr = lab.ip("node-1", &["addr", "show", "dev", "vxlan.calico"]);
    assert!(
        addr.contains("10.98.0.1/32"),
        "the foreign address went:\n{addr}"
    );
    assert!(
        !addr.contains("10.244.1.0/32"),
        "our address stayed:\n{addr}"
    );
    let neigh = lab.ip("node-1", &["neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        !neigh.contains("PERMANENT"),
        "our neighbours stayed:\n{neigh}"
    );
    assert!(
        !lab.config("node-1").mtu_file.exists(),
        "cleanup left the MTU file"
    );

    // Once the device is ours alone again, cleanup removes it.
    lab.ip(
        "node-1",
        &["addr", "del", "10.98.0.1/32", "dev", "vxlan.calico"],
    );
    let cleaned = lab.cleanup("node-1", lab.config("node-1"));
    assert!(cleaned.kept.is_empty(), "{:?}", cleaned.kept);
    let links = lab.ip("node-1", &["link", "show"]);
    assert!(
        !links.contains("vxlan.calico"),
        "cleanup left the device:\n{links}"
    );
    check("after the second cleanup");
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
    let bird = |args: &[&str]| {
        let mut command = vec!["route", "add"];
        command.extend_from_slice(args);
        command.extend_from_slice(&["proto", "bird"]);
        lab.ip("node-1", &command);
    };
    // What Calico leaves behind: BIRD routes (a peer's block, a gone peer's
    // block, the local blackhole) and a felix route (protocol 80); and a
    // BIRD route that has nothing to do with pods.
    bird(&[&peer, "via", &via, "dev", "eth0"]);
    bird(&["10.244.50.0/26", "via", &via, "dev", "eth0"]);
    bird(&["blackhole", "10.244.1.0/26"]);
    bird(&["10.99.0.0/16", "via", &via, "dev", "eth0"]);
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
    let bird_routes = || {
        let mut lines: Vec<String> = lab
            .ip("node-1", &["route", "show", "proto", "bird"])
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        lines.sort();
        lines
    };

    let plain = lab.converge("node-1", &steady(Mode::Native));
    assert_eq!(
        plain.conflicts.len(),
        1,
        "without adoption the BIRD route is foreign"
    );
    assert_eq!(bird_routes().len(), 4);

    // Adoption stays inside the cluster's pod CIDRs: the peer's block and
    // the local blackhole go; the gone peer's block and the unrelated
    // network stay.
    let mut config = lab.config("node-1");
    config.adopt_route_protocols = parse_adopted_protocols("bird,80").expect("protocols");
    let adopted = lab
        .converge_with("node-1", &steady(Mode::Native), config.clone())
        .expect("converge with adoption");
    assert!(adopted.conflicts.is_empty());
    assert_eq!(
        bird_routes(),
        [
            format!("10.244.50.0/26 via {via} dev eth0"),
            format!("10.99.0.0/16 via {via} dev eth0"),
        ]
    );
    // With the cluster's pod network named, the gone peer's block and the
    // felix route go too; the unrelated network never does, not even on cleanup.
    config.pod_network = parse_pod_network("10.244.0.0/16").expect("pod network");
    lab.converge_with("node-1", &steady(Mode::Native), config.clone())
        .expect("converge within the pod network");
    assert_eq!(bird_routes(), [format!("10.99.0.0/16 via {via} dev eth0")]);
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
    lab.cleanup("node-1", config);
    assert_eq!(bird_routes(), [format!("10.99.0.0/16 via {via} dev eth0")]);
}

/// The one rule on the ipip device too (the kernel only has it in the VM):
/// tunl0 carrying someone's route stays up with our address (removing the
/// last address would flush their route); carrying someone's address too,
/// it loses ours; what is theirs survives every step.
#[test]
fn foreign_state_on_tunl0_survives_its_retirement() {
    if !have_root() || !have_ipip() {
        return;
    }
    let lab = Lab::flat(2);
    lab.converge_all(&steady(Mode::Ipip));
    let tunl0 = || lab.ip("node-1", &["addr", "show", "dev", "tunl0"]);
    let theirs = || lab.ip("node-1", &["route", "show", "192.168.79.0/24"]);
    lab.ip(
        "node-1",
        &[
            "route",
            "add",
            "192.168.79.0/24",
            "dev",
            "tunl0",
            "proto",
            "boot",
        ],
    );

    let retired = lab.converge("node-1", &steady(Mode::Native));
    assert_eq!(retired.kept.len(), 1, "{:?}", retired.kept);
    assert!(
        theirs().contains("dev tunl0"),
        "their route went: {}",
        theirs()
    );
    assert!(tunl0().contains("UP"), "{}", tunl0());
    assert!(
        tunl0().contains("10.244.1.0/32"),
        "our last address went: {}",
        tunl0()
    );
    assert!(our_routes(&lab, "node-1")
        .iter()
        .all(|r| !r.contains("tunl0")));

    lab.ip(
        "node-1",
        &["addr", "add", "192.168.77.1/24", "dev", "tunl0"],
    );
    lab.converge("node-1", &steady(Mode::Native));
    assert!(!tunl0().contains("10.244.1.0/32"), "{}", tunl0());
    assert!(tunl0().contains("192.168.77.1/24"), "{}", tunl0());
    assert!(theirs().contains("dev tunl0"), "{}", theirs());
    assert!(tunl0().contains("UP"), "{}", tunl0());

    let cleaned = lab.cleanup("node-1", lab.config("node-1"));
    assert_eq!(cleaned.kept.len(), 1, "{:?}", cleaned.kept);
    assert!(theirs().contains("dev tunl0"), "{}", theirs());
    assert!(tunl0().contains("192.168.77.1/24"), "{}", tunl0());
}
