//! `plan::desired` for each mode on a small cluster: the routes, devices,
//! neighbours, FDB entries, sysctls and pod MTU a plan needs.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{assert_invalid, ip, net, node, uplink};
use podroute::api::{Mode, OffSubnet, Plan};
use podroute::model::{Config, Mac, Node, RpFilter};
use podroute::plan::{
    desired, AdoptScope, Desired, Fdb, Inputs, IpipDevice, Neigh, Route, RouteKey, RouteKind,
    Uplink, VxlanDevice, VxlanIdentity, LOCAL_UNREACHABLE_METRIC,
};
use podroute::Result;

/// node-1 (local), node-2 and node-3, all on 10.250.0.0/24.
fn cluster() -> Vec<Node> {
    vec![
        node("node-1", "10.250.0.1", "10.244.1.0/24"),
        node("node-2", "10.250.0.2", "10.244.2.0/24"),
        node("node-3", "10.250.0.3", "10.244.3.0/24"),
    ]
}

/// Like `cluster()` but node-3 sits on another subnet, behind a router.
fn split_cluster() -> Vec<Node> {
    vec![
        node("node-1", "10.250.0.1", "10.244.1.0/24"),
        node("node-2", "10.250.0.2", "10.244.2.0/24"),
        node("node-3", "10.251.0.3", "10.244.3.0/24"),
    ]
}

fn eth0() -> Uplink {
    uplink("eth0", 1500, "10.250.0.1/24")
}

fn transition(route: Mode, decap: &[Mode]) -> Plan {
    Plan {
        generation: 3,
        route_mode: route,
        decap: decap.iter().copied().collect(),
    }
}

fn run(nodes: &[Node], plan: &Plan, config: &Config, uplink: &Uplink) -> Result<Desired> {
    desired(Inputs {
        local: &nodes[0],
        nodes,
        plan,
        config,
        uplink: Some(uplink),
        uplink6: None,
    })
}

fn plan_for(plan: &Plan) -> Desired {
    run(&cluster(), plan, &Config::default(), &eth0()).unwrap()
}

fn key(dst: &str) -> RouteKey {
    RouteKey {
        table: 254,
        dst: net(dst).into(),
        metric: 0,
    }
}

fn route(dst: &str, via: &str, dev: &str, onlink: bool, mtu: Option<u32>) -> Route {
    Route {
        key: key(dst),
        kind: RouteKind::Unicast,
        via: Some(ip(via).into()),
        dev: dev.into(),
        onlink,
        mtu,
        protocol: 91,
    }
}

fn routes(list: Vec<Route>) -> BTreeMap<RouteKey, Route> {
    list.into_iter().map(|r| (r.key, r)).collect()
}

/// The routes to peers: everything but node-1's own pod CIDR, unreachable.
fn peer_routes(d: &Desired) -> BTreeMap<RouteKey, Route> {
    d.routes
        .iter()
        .filter(|(_, r)| r.kind == RouteKind::Unicast)
        .map(|(k, r)| (*k, r.clone()))
        .collect()
}

/// A whole `Desired` for node-1 of `cluster()`: peer routes plus its own
/// pod CIDR unreachable, and adoption scoped to the cluster's pod CIDRs
/// and our devices.
fn node1(mut d: Desired) -> Desired {
    let own = Route {
        key: RouteKey {
            table: 254,
            dst: net("10.244.1.0/24").into(),
            metric: LOCAL_UNREACHABLE_METRIC,
        },
        kind: RouteKind::Unreachable,
        via: None,
        dev: String::new(),
        onlink: false,
        mtu: None,
        protocol: 91,
    };
    d.routes.insert(own.key, own);
    d.adopt = AdoptScope {
        within: cluster()
            .iter()
            .map(|n| n.pod_cidr().unwrap().into())
            .collect(),
        devices: ["tunl0", "vxlan.calico", "vxlan-v6.calico"]
            .map(String::from)
            .into(),
    };
    d
}

fn tunl0(mtu: u32) -> IpipDevice {
    IpipDevice {
        name: "tunl0".into(),
        mtu,
        up: true,
        addresses: BTreeSet::from([ip("10.244.1.0").into()]),
    }
}

fn vxlan_calico(mtu: u32) -> VxlanDevice {
    VxlanDevice {
        name: "vxlan.calico".into(),
        identity: VxlanIdentity {
            vni: 4096,
            port: 4789,
            local: ip("10.250.0.1").into(),
            link: "eth0".into(),
            mac: Mac::for_node("node-1"),
            learning: false,
        },
        mtu,
        up: true,
        addresses: BTreeSet::from([ip("10.244.1.0").into()]),
    }
}

/// Neighbour and FDB entries for the VTEPs of node-2 and node-3 (given their IPs).
fn vteps(peers: &[(&str, &str, &str)]) -> (BTreeMap<std::net::IpAddr, Neigh>, BTreeMap<Mac, Fdb>) {
    let mut neighs = BTreeMap::new();
    let mut fdb = BTreeMap::new();
    for (name, node_ip, tunnel_ip) in peers {
        let mac = Mac::for_node(name);
        neighs.insert(
            ip(tunnel_ip).into(),
            Neigh {
                dev: "vxlan.calico".into(),
                ip: ip(tunnel_ip).into(),
                mac,
            },
        );
        fdb.insert(
            mac,
            Fdb {
                dev: "vxlan.calico".into(),
                mac,
                dst: ip(node_ip).into(),
            },
        );
    }
    (neighs, fdb)
}

fn sysctls(devs: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([("net/ipv4/ip_forward".to_string(), "1".to_string())]);
    for dev in devs {
        out.insert(format!("net/ipv4/conf/{dev}/rp_filter"), "2".into());
    }
    out
}

// ---------------------------------------------------------------- steady modes

#[test]
fn ipip() {
    let d = plan_for(&Plan::steady(Mode::Ipip, 1));
    let expected = node1(Desired {
        ipip: Some(tunl0(1480)),
        vxlan: None,
        routes: routes(vec![
            route("10.244.2.0/24", "10.250.0.2", "tunl0", true, Some(1480)),
            route("10.244.3.0/24", "10.250.0.3", "tunl0", true, Some(1480)),
        ]),
        neighs: BTreeMap::new(),
        fdb: BTreeMap::new(),
        sysctls: sysctls(&["eth0", "tunl0"]),
        pod_mtu: Some(1480),
        ..Desired::default()
    });
    assert_eq!(d, expected);
}

#[test]
fn vxlan() {
    let d = plan_for(&Plan::steady(Mode::Vxlan, 1));
    let (neighs, fdb) = vteps(&[
        ("node-2", "10.250.0.2", "10.244.2.0"),
        ("node-3", "10.250.0.3", "10.244.3.0"),
    ]);
    let expected = node1(Desired {
        ipip: None,
        vxlan: Some(vxlan_calico(1450)),
        routes: routes(vec![
            route(
                "10.244.2.0/24",
                "10.244.2.0",
                "vxlan.calico",
                true,
                Some(1450),
            ),
            route(
                "10.244.3.0/24",
                "10.244.3.0",
                "vxlan.calico",
                true,
                Some(1450),
            ),
        ]),
        neighs,
        fdb,
        sysctls: sysctls(&["eth0", "vxlan.calico"]),
        pod_mtu: Some(1450),
        ..Desired::default()
    });
    assert_eq!(d, expected);
}

#[test]
fn vxlan_identity_follows_the_local_node() {
    let nodes = cluster();
    for (i, local) in nodes.iter().enumerate() {
        let up = uplink("ens5", 9001, &format!("{}/24", local.node_ip.unwrap()));
        let config = Config::default();
        let d = desired(Inputs {
            local,
            nodes: &nodes,
            plan: &Plan::steady(Mode::Vxlan, 1),
            config: &config,
            uplink: Some(&up),
            uplink6: None,
        })
        .unwrap();
        let dev = d.vxlan.unwrap();
        assert_eq!(
            dev.identity,
            VxlanIdentity {
                vni: 4096,
                port: 4789,
                local: local.node_ip.unwrap().into(),
                link: "ens5".into(),
                mac: Mac::for_node(&local.name),
                learning: false,
            },
            "local node {i}"
        );
        assert_eq!(dev.mtu, 8951);
        assert_eq!(
            dev.addresses,
            BTreeSet::from([local.tunnel_ip().unwrap().into()])
        );
        assert_eq!(d.neighs.len(), 2);
        assert!(!d.neighs.contains_key(&local.tunnel_ip().unwrap().into()));
        assert!(!d.fdb.contains_key(&Mac::for_node(&local.name)));
    }
}

#[test]
fn native_on_link() {
    let d = plan_for(&Plan::steady(Mode::Native, 1));
    let expected = node1(Desired {
        ipip: None,
        vxlan: None,
        routes: routes(vec![
            route("10.244.2.0/24", "10.250.0.2", "eth0", false, None),
            route("10.244.3.0/24", "10.250.0.3", "eth0", false, None),
        ]),
        neighs: BTreeMap::new(),
        fdb: BTreeMap::new(),
        sysctls: sysctls(&["eth0"]),
        pod_mtu: Some(1500),
        ..Desired::default()
    });
    assert_eq!(d, expected);
}

#[test]
fn native_off_subnet_encap_uses_the_cross_subnet_tunnel() {
    let nodes = split_cluster();
    let plan = Plan::steady(Mode::Native, 1);
    // Default cross-subnet tunnel: vxlan.
    let config = Config::default();
    assert_eq!(config.off_subnet, OffSubnet::Encap);
    let d = run(&nodes, &plan, &config, &eth0()).unwrap();
    assert_eq!(
        peer_routes(&d),
        routes(vec![
            route("10.244.2.0/24", "10.250.0.2", "eth0", false, None),
            route(
                "10.244.3.0/24",
                "10.244.3.0",
                "vxlan.calico",
                true,
                Some(1450)
            ),
        ])
    );
    assert_eq!(d.vxlan, Some(vxlan_calico(1450)));
    assert_eq!(d.ipip, None);
    // Every peer's VTEP is known while the device exists.
    let (neighs, fdb) = vteps(&[
        ("node-2", "10.250.0.2", "10.244.2.0"),
        ("node-3", "10.251.0.3", "10.244.3.0"),
    ]);
    assert_eq!((d.neighs, d.fdb), (neighs, fdb));
    assert_eq!(d.pod_mtu, Some(1450));
    assert_eq!(d.sysctls, sysctls(&["eth0", "vxlan.calico"]));

    // With ipip as the cross-subnet tunnel.
    let config = Config {
        cross_subnet_tunnel: Mode::Ipip,
        ..Config::default()
    };
    let d = run(&nodes, &plan, &config, &eth0()).unwrap();
    assert_eq!(
        peer_routes(&d),
        routes(vec![
            route("10.244.2.0/24", "10.250.0.2", "eth0", false, None),
            route("10.244.3.0/24", "10.251.0.3", "tunl0", true, Some(1480)),
        ])
    );
    assert_eq!(d.ipip, Some(tunl0(1480)));
    assert_eq!(d.vxlan, None);
    assert!(d.neighs.is_empty() && d.fdb.is_empty());
    assert_eq!(d.pod_mtu, Some(1480));
    assert_eq!(d.sysctls, sysctls(&["eth0", "tunl0"]));
}

#[test]
fn a_switch_involving_native_keeps_the_cross_subnet_tunnel_receivable() {
    // ipip -> native, Prepare and Switch: nodes that already route native
    // send vxlan to off-subnet peers that may still route ipip.
    let nodes = split_cluster();
    for plan in [
        transition(Mode::Ipip, &[Mode::Ipip, Mode::Native]),
        transition(Mode::Native, &[Mode::Ipip, Mode::Native]),
    ] {
        let d = run(&nodes, &plan, &Config::default(), &eth0()).unwrap();
        assert_eq!(d.vxlan, Some(vxlan_calico(1450)), "{plan:?}");
        assert_eq!(d.ipip, Some(tunl0(1480)), "{plan:?}");
        assert_eq!(d.pod_mtu, Some(1450));
    }
    // Finalize of native -> ipip: nobody routes native any more.
    let d = run(
        &nodes,
        &transition(Mode::Ipip, &[Mode::Ipip]),
        &Config::default(),
        &eth0(),
    )
    .unwrap();
    assert_eq!(d.vxlan, None);
}

#[test]
fn native_all_on_link_needs_no_tunnel_even_with_encap() {
    // A wider uplink prefix puts 10.251.0.3 on-link.
    let up = uplink("eth0", 1500, "10.250.0.1/15");
    let d = run(
        &split_cluster(),
        &Plan::steady(Mode::Native, 1),
        &Config::default(),
        &up,
    )
    .unwrap();
    assert_eq!(d.vxlan, None);
    assert_eq!(d.ipip, None);
    assert_eq!(d.pod_mtu, Some(1500));
    assert_eq!(
        d.routes[&key("10.244.3.0/24")],
        route("10.244.3.0/24", "10.251.0.3", "eth0", false, None)
    );
}

#[test]
fn native_off_subnet_underlay_installs_nothing_for_that_peer() {
    let config = Config {
        off_subnet: OffSubnet::Underlay,
        ..Config::default()
    };
    let d = run(
        &split_cluster(),
        &Plan::steady(Mode::Native, 1),
        &config,
        &eth0(),
    )
    .unwrap();
    let expected = node1(Desired {
        routes: routes(vec![route(
            "10.244.2.0/24",
            "10.250.0.2",
            "eth0",
            false,
            None,
        )]),
        sysctls: sysctls(&["eth0"]),
        pod_mtu: Some(1500),
        ..Desired::default()
    });
    assert_eq!(d, expected);
}

#[test]
fn off_subnet_setting_only_matters_in_native_mode() {
    for mode in [Mode::Ipip, Mode::Vxlan] {
        for off in [OffSubnet::Encap, OffSubnet::Underlay] {
            let config = Config {
                off_subnet: off,
                ..Config::default()
            };
            let d = run(&split_cluster(), &Plan::steady(mode, 1), &config, &eth0()).unwrap();
            assert_eq!(peer_routes(&d).len(), 2, "{mode} {off:?}");
            assert!(peer_routes(&d)
                .values()
                .all(|r| r.onlink && r.dev != "eth0"));
        }
    }
}

// ----------------------------------------------------------------- transitions

#[test]
fn prepare_ipip_to_vxlan_creates_both_devices() {
    let d = plan_for(&transition(Mode::Ipip, &[Mode::Ipip, Mode::Vxlan]));
    assert_eq!(d.ipip, Some(tunl0(1480)));
    assert_eq!(d.vxlan, Some(vxlan_calico(1450)));
    // Routes still go through ipip.
    assert_eq!(d.routes, plan_for(&Plan::steady(Mode::Ipip, 1)).routes);
    // The VTEPs are ready for peers that switch first.
    assert_eq!(d.neighs.len(), 2);
    assert_eq!(d.fdb.len(), 2);
    // The smallest MTU of the modes in play.
    assert_eq!(d.pod_mtu, Some(1450));
    assert_eq!(d.sysctls, sysctls(&["eth0", "tunl0", "vxlan.calico"]));
}

#[test]
fn switch_ipip_to_vxlan_routes_through_vxlan() {
    let d = plan_for(&transition(Mode::Vxlan, &[Mode::Ipip, Mode::Vxlan]));
    assert_eq!(d.ipip, Some(tunl0(1480)));
    assert_eq!(d.vxlan, Some(vxlan_calico(1450)));
    assert_eq!(d.routes, plan_for(&Plan::steady(Mode::Vxlan, 1)).routes);
    assert_eq!(d.pod_mtu, Some(1450));
}

#[test]
fn decap_without_the_route_mode_still_gets_its_device() {
    // decap {ipip} with route vxlan: both devices, Plan::tunnels includes the route mode.
    let d = plan_for(&transition(Mode::Vxlan, &[Mode::Ipip]));
    assert!(d.ipip.is_some() && d.vxlan.is_some());
    assert_eq!(d.pod_mtu, Some(1450));
}

#[test]
fn native_transitions() {
    // vxlan -> native, prepare: route vxlan, decap {vxlan, native}.
    let d = plan_for(&transition(Mode::Vxlan, &[Mode::Vxlan, Mode::Native]));
    assert_eq!(d, plan_for(&Plan::steady(Mode::Vxlan, 1)));
    // switch: route native, decap {vxlan, native}: native routes, vxlan kept for decap.
    let d = plan_for(&transition(Mode::Native, &[Mode::Vxlan, Mode::Native]));
    assert_eq!(d.routes, plan_for(&Plan::steady(Mode::Native, 1)).routes);
    assert_eq!(d.vxlan, Some(vxlan_calico(1450)));
    assert_eq!(d.ipip, None);
    assert_eq!(d.neighs.len(), 2);
    assert_eq!(d.pod_mtu, Some(1450));
    // ipip -> native, switch.
    let d = plan_for(&transition(Mode::Native, &[Mode::Ipip, Mode::Native]));
    assert_eq!(d.ipip, Some(tunl0(1480)));
    assert_eq!(d.vxlan, None);
    assert_eq!(d.pod_mtu, Some(1480));
    assert!(peer_routes(&d).values().all(|r| r.dev == "eth0"));
}

#[test]
fn all_modes_in_play() {
    let d = plan_for(&transition(
        Mode::Native,
        &[Mode::Native, Mode::Ipip, Mode::Vxlan],
    ));
    assert!(d.ipip.is_some() && d.vxlan.is_some());
    assert_eq!(d.pod_mtu, Some(1450));
}

// ----------------------------------------------------------------------- MTU

#[test]
fn mtu_override_is_respected() {
    let config = Config {
        mtu: Some(1400),
        ..Config::default()
    };
    let all = transition(Mode::Ipip, &[Mode::Ipip, Mode::Vxlan]);
    let d = run(&cluster(), &all, &config, &eth0()).unwrap();
    assert_eq!(d.ipip.as_ref().unwrap().mtu, 1380);
    assert_eq!(d.vxlan.as_ref().unwrap().mtu, 1350);
    assert!(peer_routes(&d).values().all(|r| r.mtu == Some(1380)));
    assert_eq!(d.pod_mtu, Some(1350));

    let d = run(&cluster(), &Plan::steady(Mode::Native, 1), &config, &eth0()).unwrap();
    assert_eq!(d.pod_mtu, Some(1400));
    assert!(peer_routes(&d).values().all(|r| r.mtu.is_none()));

    let d = run(&cluster(), &Plan::steady(Mode::Vxlan, 1), &config, &eth0()).unwrap();
    assert!(peer_routes(&d).values().all(|r| r.mtu == Some(1350)));
}

#[test]
fn jumbo_uplink() {
    let up = uplink("eth0", 9001, "10.250.0.1/24");
    let d = run(
        &cluster(),
        &transition(Mode::Vxlan, &[Mode::Ipip]),
        &Config::default(),
        &up,
    )
    .unwrap();
    assert_eq!(d.ipip.unwrap().mtu, 8981);
    assert_eq!(d.vxlan.unwrap().mtu, 8951);
    assert_eq!(d.pod_mtu, Some(8951));
}

#[test]
fn mtu_over_the_uplink_is_invalid() {
    let config = Config {
        mtu: Some(1501),
        ..Config::default()
    };
    assert_invalid(
        run(&cluster(), &Plan::steady(Mode::Vxlan, 1), &config, &eth0()),
        "mtu",
    );
}

#[test]
fn uplink_without_the_node_ip_is_invalid() {
    let wrong = uplink("eth1", 1500, "10.250.0.2/24");
    for mode in Mode::ALL {
        let reason = assert_invalid(
            run(
                &cluster(),
                &Plan::steady(mode, 1),
                &Config::default(),
                &wrong,
            ),
            "uplink",
        );
        assert!(
            reason.contains("eth1") && reason.contains("10.250.0.1"),
            "{reason}"
        );
    }
}

// ----------------------------------------------------------------- sysctls

#[test]
fn sysctls_loose_and_keep() {
    let plan = transition(Mode::Vxlan, &[Mode::Ipip, Mode::Vxlan]);
    let loose = run(&cluster(), &plan, &Config::default(), &eth0()).unwrap();
    assert_eq!(loose.sysctls, sysctls(&["eth0", "tunl0", "vxlan.calico"]));
    let keep = Config {
        rp_filter: RpFilter::Keep,
        ..Config::default()
    };
    for mode in Mode::ALL {
        let d = run(
            &cluster(),
            &transition(mode, &[Mode::Ipip, Mode::Vxlan]),
            &keep,
            &eth0(),
        )
        .unwrap();
        assert_eq!(d.sysctls, sysctls(&[]), "{mode}");
    }
}

// ----------------------------------------------------------- config knobs

#[test]
fn custom_table_metric_protocol_names_and_vxlan() {
    let config = Config {
        route_protocol: 77,
        route_table: 100,
        route_metric: 5,
        ipip_device: "ipip0".into(),
        vxlan_device: "vx0".into(),
        vxlan_vni: 1,
        vxlan_port: 8472,
        ..Config::default()
    };
    config.validate().unwrap();
    let d = run(
        &cluster(),
        &transition(Mode::Vxlan, &[Mode::Ipip]),
        &config,
        &eth0(),
    )
    .unwrap();
    for r in peer_routes(&d).values() {
        assert_eq!((r.key.table, r.key.metric, r.protocol), (100, 5, 77));
        assert_eq!(r.dev, "vx0");
    }
    assert_eq!(d.ipip.unwrap().name, "ipip0");
    let vx = d.vxlan.unwrap();
    assert_eq!(
        (vx.name.as_str(), vx.identity.vni, vx.identity.port),
        ("vx0", 1, 8472)
    );
    assert!(d.neighs.values().all(|n| n.dev == "vx0"));
    assert!(d.fdb.values().all(|f| f.dev == "vx0"));
    assert_eq!(d.sysctls, sysctls(&["eth0", "ipip0", "vx0"]));
}

// ------------------------------------------------------------- local node

#[test]
fn the_local_node_is_never_a_destination() {
    let nodes = split_cluster();
    let plans = [
        Plan::steady(Mode::Ipip, 1),
        Plan::steady(Mode::Vxlan, 1),
        Plan::steady(Mode::Native, 1),
        transition(Mode::Native, &[Mode::Ipip, Mode::Vxlan]),
    ];
    for local in &nodes {
        let up = uplink("eth0", 1500, &format!("{}/24", local.node_ip.unwrap()));
        for plan in &plans {
            for config in [
                Config::default(),
                Config {
                    cross_subnet_tunnel: Mode::Ipip,
                    ..Config::default()
                },
            ] {
                let d = desired(Inputs {
                    local,
                    nodes: &nodes,
                    plan,
                    config: &config,
                    uplink: Some(&up),
                    uplink6: None,
                })
                .unwrap();
                let ctx = format!("{} {plan:?}", local.name);
                assert!(
                    peer_routes(&d)
                        .keys()
                        .all(|k| k.dst != local.pod_cidr().unwrap().into()),
                    "{ctx}: route to the local pod CIDR"
                );
                assert!(
                    d.routes
                        .values()
                        .all(|r| r.via != Some(local.node_ip.unwrap().into())),
                    "{ctx}: route via the local node"
                );
                assert!(
                    !d.neighs.contains_key(&local.tunnel_ip().unwrap().into()),
                    "{ctx}"
                );
                assert!(
                    d.fdb.values().all(|f| f.dst != local.node_ip.unwrap()),
                    "{ctx}"
                );
                // One route per peer, and the local pod CIDR unreachable.
                assert_eq!(peer_routes(&d).len(), 2, "{ctx}");
                assert_eq!(d.routes.len(), 3, "{ctx}");
            }
        }
    }
}

#[test]
fn single_node_cluster_has_no_routes() {
    let nodes = vec![node("node-1", "10.250.0.1", "10.244.1.0/24")];
    for mode in Mode::ALL {
        let d = run(&nodes, &Plan::steady(mode, 1), &Config::default(), &eth0()).unwrap();
        assert!(peer_routes(&d).is_empty() && d.neighs.is_empty() && d.fdb.is_empty());
        assert_eq!(d.routes.len(), 1, "the local pod CIDR, unreachable");
        // The tunnel device of a tunnel mode still exists (to decap).
        assert_eq!(d.ipip.is_some(), mode == Mode::Ipip);
        assert_eq!(d.vxlan.is_some(), mode == Mode::Vxlan);
    }
}
