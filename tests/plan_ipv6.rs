//! The IPv6 half of a dual-stack plan: native routes, `vxlan-v6.calico`
//! for the tunnel modes, host settings and MTUs. Pure: no root needed.

mod common;

use std::net::IpAddr;

use common::{assert_invalid, uplink};
use ipnetwork::IpNetwork;
use podroute::api::{Mode, OffSubnet, Plan};
use podroute::model::{Config, Mac, Node, NodeIps};
use podroute::plan::simulate::apply_all;
use podroute::plan::{
    desired, diff, Desired, Inputs, Observed, Op, Route, RouteKind, Uplink, IPV6_DEFAULT_METRIC,
};

/// `node-N`: 10.250.0.N and fd00:250::N (or fd00:251::N on subnet 1), pod
/// CIDRs 10.244.N.0/24 and fd00:244:N::/64.
fn dual(n: u8, subnet6: u8) -> Node {
    let ips = [format!("10.250.0.{n}"), format!("fd00:25{subnet6}::{n}")];
    let cidrs = [format!("10.244.{n}.0/24"), format!("fd00:244:{n}::/64")];
    Node::parse("", &format!("node-{n}"), NodeIps::List(&ips), &cidrs).expect("a valid node")
}

fn cluster() -> Vec<Node> {
    vec![dual(1, 0), dual(2, 0), dual(3, 0)]
}

fn eth0_v6() -> Uplink {
    uplink("eth0", 1500, "10.250.0.1/24")
        .with_address("fd00:250::1/64")
        .with_accept_ra(Some(0))
}

trait UplinkExt {
    fn with_address(self, address: &str) -> Self;
    fn with_accept_ra(self, value: Option<u8>) -> Self;
}

impl UplinkExt for Uplink {
    fn with_address(mut self, address: &str) -> Self {
        self.address = address.parse().expect("address");
        self
    }
    fn with_accept_ra(mut self, value: Option<u8>) -> Self {
        self.accept_ra = value;
        self
    }
}

fn plan(route_mode: Mode, decap: &[Mode]) -> Plan {
    Plan {
        generation: 2,
        route_mode,
        decap: decap.iter().copied().collect(),
    }
}

fn run_with(
    nodes: &[Node],
    plan: &Plan,
    config: &Config,
    uplink6: &Uplink,
) -> podroute::Result<Desired> {
    desired(Inputs {
        local: &nodes[0],
        nodes,
        plan,
        config,
        uplink: Some(&uplink("eth0", uplink6.mtu, "10.250.0.1/24")),
        uplink6: Some(uplink6),
    })
}

fn run(route_mode: Mode, decap: &[Mode]) -> Desired {
    run_with(
        &cluster(),
        &plan(route_mode, decap),
        &Config::default(),
        &eth0_v6(),
    )
    .expect("plan")
}

fn v6_route<'a>(d: &'a Desired, dst: &str) -> Option<&'a Route> {
    let dst: IpNetwork = dst.parse().expect("dst");
    d.routes.values().find(|r| r.key.dst == dst)
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[test]
fn native_routes_each_on_link_peer_via_its_ipv6_address() {
    let d = run(Mode::Native, &[]);
    for n in [2, 3] {
        let r = v6_route(&d, &format!("fd00:244:{n}::/64")).expect("route");
        assert_eq!(r.via, Some(ip(&format!("fd00:250::{n}"))));
        assert_eq!((r.dev.as_str(), r.onlink, r.mtu), ("eth0", false, None));
        // IPv6 stores metric 0 as 1024: the key must match the read-back.
        assert_eq!(r.key.metric, IPV6_DEFAULT_METRIC);
        assert_eq!(r.protocol, 91);
    }
    let own = v6_route(&d, "fd00:244:1::/64").expect("own unreachable");
    assert_eq!(own.kind, RouteKind::Unreachable);
    assert_eq!(d.vxlan6, None);
    assert_eq!(
        d.sysctls
            .get("net/ipv6/conf/all/forwarding")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(d.pod_mtu, Some(1500));
    assert!(d.notes.is_empty(), "{:?}", d.notes);
}

#[test]
fn vxlan_mode_routes_ipv6_over_vxlan_v6_via_link_local_gateways() {
    let d = run(Mode::Vxlan, &[]);
    let dev = d.vxlan6.as_ref().expect("vxlan-v6.calico");
    assert_eq!(dev.name, "vxlan-v6.calico");
    assert_eq!(dev.mtu, 1430);
    assert_eq!(dev.identity.local, ip("fd00:250::1"));
    assert_eq!(dev.identity.link, "eth0");
    assert_eq!((dev.identity.vni, dev.identity.port), (4096, 4789));
    assert_eq!(dev.identity.mac, Mac::for_node_v6("node-1"));
    assert_ne!(
        dev.identity.mac,
        d.vxlan.as_ref().expect("vxlan.calico").identity.mac
    );
    assert_eq!(dev.addresses, [ip("fd00:244:1::")].into());
    for n in [2, 3] {
        let mac = Mac::for_node_v6(&format!("node-{n}"));
        let gateway = IpAddr::V6(mac.link_local());
        let r = v6_route(&d, &format!("fd00:244:{n}::/64")).expect("route");
        assert_eq!((r.via, r.dev.as_str()), (Some(gateway), "vxlan-v6.calico"));
        assert_eq!((r.onlink, r.mtu), (false, Some(1430)));
        assert_eq!(d.neighs[&gateway].mac, mac);
        assert_eq!(d.neighs[&gateway].dev, "vxlan-v6.calico");
        assert_eq!(d.fdb[&mac].dst, ip(&format!("fd00:250::{n}")));
    }
    // The pod MTU is the smallest over both families.
    assert_eq!(d.pod_mtu, Some(1430));
}

#[test]
fn ipip_mode_carries_ipv6_over_vxlan_v6_and_says_so() {
    let d = run(Mode::Ipip, &[]);
    assert!(d.ipip.is_some() && d.vxlan.is_none());
    assert!(d.vxlan6.is_some());
    let r = v6_route(&d, "fd00:244:2::/64").expect("route");
    assert_eq!(r.dev, "vxlan-v6.calico");
    assert_eq!(d.pod_mtu, Some(1430));
    assert!(
        d.notes
            .iter()
            .any(|n| n.starts_with("ipv6: ipip mode carries IPv6 over vxlan-v6.calico")),
        "{:?}",
        d.notes
    );
}

#[test]
fn a_switch_to_native_keeps_vxlan_v6_while_it_decapsulates() {
    let d = run(Mode::Native, &[Mode::Vxlan]);
    assert!(d.vxlan6.is_some(), "peers may still send through it");
    assert_eq!(v6_route(&d, "fd00:244:2::/64").expect("route").dev, "eth0");
}

#[test]
fn off_subnet_ipv6_peers_follow_off_subnet() {
    let nodes = vec![dual(1, 0), dual(2, 0), dual(3, 1)];
    let encap = run_with(
        &nodes,
        &plan(Mode::Native, &[]),
        &Config::default(),
        &eth0_v6(),
    )
    .expect("plan");
    assert_eq!(
        v6_route(&encap, "fd00:244:2::/64").expect("on-link").dev,
        "eth0"
    );
    let far = v6_route(&encap, "fd00:244:3::/64").expect("off-subnet");
    assert_eq!(far.dev, "vxlan-v6.calico");
    assert!(encap.vxlan6.is_some());
    let config = Config {
        off_subnet: OffSubnet::Underlay,
        ..Config::default()
    };
    let underlay = run_with(&nodes, &plan(Mode::Native, &[]), &config, &eth0_v6()).expect("plan");
    assert!(v6_route(&underlay, "fd00:244:3::/64").is_none());
    assert!(underlay.vxlan6.is_none());
}

#[test]
fn accept_ra_goes_from_1_to_2_before_forwarding_and_0_is_left_alone() {
    let nodes = cluster();
    let native = plan(Mode::Native, &[]);
    let with_ra = |value| {
        let up = eth0_v6().with_accept_ra(value);
        run_with(&nodes, &native, &Config::default(), &up).expect("plan")
    };
    let key = "net/ipv6/conf/eth0/accept_ra";
    assert_eq!(
        with_ra(Some(1)).sysctls.get(key).map(String::as_str),
        Some("2")
    );
    for value in [Some(0), Some(2), None] {
        assert!(!with_ra(value).sysctls.contains_key(key), "{value:?}");
    }
    // The write order: accept_ra first, then forwarding (which would drop
    // the routes learned from router advertisements with accept_ra 1).
    let d = with_ra(Some(1));
    let keys: Vec<String> = diff(&d, &Observed::default())
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::SetSysctl { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let at = |k: &str| keys.iter().position(|x| x == k).expect(k);
    assert!(at(key) < at("net/ipv6/conf/all/forwarding"), "{keys:?}");
}

#[test]
fn a_pod_mtu_under_1280_with_ipv6_is_refused_naming_mtu() {
    let small = eth0_v6();
    let small = Uplink { mtu: 1340, ..small };
    let reason = assert_invalid(
        run_with(
            &cluster(),
            &plan(Mode::Vxlan, &[]),
            &Config::default(),
            &small,
        ),
        "mtu",
    );
    assert!(reason.contains("1280"), "{reason}");
    // Native needs no IPv6 tunnel: 1340 is fine there.
    run_with(
        &cluster(),
        &plan(Mode::Native, &[]),
        &Config::default(),
        &small,
    )
    .expect("plan");
}

#[test]
fn half_an_ipv6_family_stays_unrouted() {
    let ips = ["10.250.0.2".to_string()];
    let cidrs = ["10.244.2.0/24".to_string(), "fd00:244:2::/64".to_string()];
    let no_ip6 = Node::parse("", "node-2", NodeIps::List(&ips), &cidrs).expect("node");
    let d = run_with(
        &[dual(1, 0), no_ip6],
        &plan(Mode::Native, &[]),
        &Config::default(),
        &eth0_v6(),
    )
    .expect("plan");
    assert!(v6_route(&d, "fd00:244:2::/64").is_none());
    assert!(v6_route(&d, "10.244.2.0/24").is_some());
}

#[test]
fn an_ipv6_pod_cidr_in_the_underlay_subnet_is_left_out_with_why() {
    // Its address lies outside its own pod CIDR, which lies in the underlay.
    let ips = ["10.250.0.2".to_string(), "fd00:250::1:2".to_string()];
    let cidrs = ["10.244.2.0/24".to_string(), "fd00:250::/112".to_string()];
    let bad = Node::parse("", "node-2", NodeIps::List(&ips), &cidrs).expect("node");
    let d = run_with(
        &[dual(1, 0), bad],
        &plan(Mode::Native, &[]),
        &Config::default(),
        &eth0_v6(),
    )
    .expect("plan");
    assert!(v6_route(&d, "fd00:250::/112").is_none());
    let why = d
        .excluded
        .iter()
        .find(|e| e.node == "node-2")
        .expect("excluded");
    assert!(why.reason.starts_with("ipv6: "), "{}", why.reason);
    // Its IPv4 half is routed.
    assert!(v6_route(&d, "10.244.2.0/24").is_some());
}

#[test]
fn a_chosen_metric_is_kept_in_ipv6() {
    let config = Config {
        route_metric: 100,
        ..Config::default()
    };
    let d = run_with(&cluster(), &plan(Mode::Native, &[]), &config, &eth0_v6()).expect("plan");
    assert_eq!(
        v6_route(&d, "fd00:244:2::/64").expect("route").key.metric,
        100
    );
}

/// Every pair of modes, both families: one diff reaches the target, and a
/// second diff is empty.
#[test]
fn every_switch_reaches_its_target_in_one_diff() {
    let modes = [Mode::Ipip, Mode::Vxlan, Mode::Native];
    let mut plans = vec![];
    for from in modes {
        for to in modes {
            plans.push((from, to));
        }
    }
    for (from, to) in plans {
        let mut observed = Observed::default();
        for target in [run(from, &[]), run(to, &[from]), run(to, &[])] {
            let d = diff(&target, &observed);
            assert!(
                d.blocked.is_empty() && d.conflicts.is_empty(),
                "{from}->{to}: {d:?}"
            );
            apply_all(&mut observed, d.steps.iter().map(|s| &s.op));
            let again = diff(&target, &observed);
            assert!(again.is_empty(), "{from}->{to}: left {:?}", again.steps);
        }
        assert_eq!(
            observed.vxlan6.is_some(),
            to != Mode::Native,
            "{from}->{to}"
        );
        let ours6 = observed.routes.keys().filter(|k| k.dst.is_ipv6()).count();
        assert_eq!(ours6, 3, "{from}->{to}: two peers and the own unreachable");
    }
}

/// `node-N` with IPv6 only: fd00:250::N and fd00:244:N::/64.
fn v6_only(n: u8) -> Node {
    let ips = [format!("fd00:250::{n}")];
    let cidrs = [format!("fd00:244:{n}::/64")];
    Node::parse("", &format!("node-{n}"), NodeIps::List(&ips), &cidrs).expect("a valid node")
}

fn run_v6_only(nodes: &[Node], route_mode: Mode) -> Desired {
    desired(Inputs {
        local: &nodes[0],
        nodes,
        plan: &plan(route_mode, &[]),
        config: &Config::default(),
        uplink: None,
        uplink6: Some(&eth0_v6()),
    })
    .expect("plan")
}

#[test]
fn an_ipv6_only_node_has_no_ipv4_state_in_any_mode() {
    let nodes = vec![v6_only(1), v6_only(2), v6_only(3)];
    for mode in [Mode::Native, Mode::Vxlan, Mode::Ipip] {
        let d = run_v6_only(&nodes, mode);
        assert!(d.ipip.is_none() && d.vxlan.is_none(), "{mode}");
        assert!(
            d.routes.keys().all(|k| k.dst.is_ipv6()),
            "{mode}: {:?}",
            d.routes.keys()
        );
        assert_eq!(
            d.routes.len(),
            3,
            "{mode}: two peers and the own unreachable"
        );
        assert!(
            d.sysctls.keys().all(|k| k.starts_with("net/ipv6/")),
            "{mode}: {:?}",
            d.sysctls
        );
        assert_eq!(d.vxlan6.is_some(), mode != Mode::Native, "{mode}");
        let mtu = if mode == Mode::Native { 1500 } else { 1430 };
        assert_eq!(d.pod_mtu, Some(mtu), "{mode}");
    }
}

#[test]
fn mixed_clusters_route_each_family_to_the_peers_that_have_it() {
    let v4_only = {
        let ips = ["10.250.0.4".to_string()];
        let cidrs = ["10.244.4.0/24".to_string()];
        Node::parse("", "node-4", NodeIps::List(&ips), &cidrs).expect("node")
    };
    let nodes = vec![dual(1, 0), v6_only(2), dual(3, 0), v4_only];
    let d = run_with(
        &nodes,
        &plan(Mode::Vxlan, &[]),
        &Config::default(),
        &eth0_v6(),
    )
    .expect("plan");
    assert!(
        v6_route(&d, "fd00:244:2::/64").is_some(),
        "the IPv6-only peer"
    );
    assert!(v6_route(&d, "fd00:244:3::/64").is_some());
    assert!(v6_route(&d, "10.244.3.0/24").is_some());
    assert!(
        v6_route(&d, "10.244.4.0/24").is_some(),
        "the IPv4-only peer"
    );
    // VTEPs: per family, only the peers of that family.
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) =
        d.fdb.values().map(|f| f.dst).partition(IpAddr::is_ipv4);
    assert_eq!((v4.len(), v6.len()), (2, 2), "{:?}", d.fdb);

    // An IPv6-only node among them needs no IPv4 uplink.
    let mut from_v6_only = nodes.clone();
    from_v6_only.swap(0, 1);
    let d = desired(Inputs {
        local: &from_v6_only[0],
        nodes: &from_v6_only,
        plan: &plan(Mode::Vxlan, &[]),
        config: &Config::default(),
        uplink: None,
        uplink6: Some(&eth0_v6().with_address("fd00:250::2/64")),
    })
    .expect("plan");
    assert!(d.vxlan.is_none() && d.vxlan6.is_some());
    assert_eq!(
        d.routes.len(),
        3,
        "node-1 and node-3 in IPv6, and the own unreachable"
    );
}

#[test]
fn a_dual_stack_node_without_its_ipv4_uplink_is_refused_naming_uplink() {
    let nodes = cluster();
    let reason = assert_invalid(
        desired(Inputs {
            local: &nodes[0],
            nodes: &nodes,
            plan: &plan(Mode::Native, &[]),
            config: &Config::default(),
            uplink: None,
            uplink6: Some(&eth0_v6()),
        }),
        "uplink",
    );
    assert!(reason.contains("10.250.0.1"), "{reason}");
}

#[test]
fn vxlan_v6_gets_ipv6_enabled_before_its_address() {
    let d = run(Mode::Vxlan, &[]);
    let key = "net/ipv6/conf/vxlan-v6.calico/disable_ipv6";
    assert_eq!(d.sysctls.get(key).map(String::as_str), Some("0"));
    let steps = diff(&d, &Observed::default()).steps;
    let at = |pred: &dyn Fn(&Op) -> bool| steps.iter().position(|s| pred(&s.op)).expect("step");
    let enable = at(&|op| matches!(op, Op::SetSysctl { key: k, .. } if k == key));
    let create =
        at(&|op| matches!(op, Op::CreateVxlan { device } if device.name == "vxlan-v6.calico"));
    let address = at(&|op| matches!(op, Op::AddAddress { ip, .. } if ip.is_ipv6()));
    assert!(create < enable && enable < address, "{steps:?}");
    assert!(!run(Mode::Native, &[]).sysctls.contains_key(key));
}
