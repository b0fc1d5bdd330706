//! An IPv6-only cluster (issue 13): nodes and pods without any IPv4
//! address. Each mode is proven by reading the kernel back (IPv6 routes of
//! ours, and no IPv4 state of ours at all: no route, no tunnel device or
//! address, ip_forward still 0) and by moving IPv6 packets pod to pod, a DF
//! packet of exactly the pod MTU passing and one a byte over it refused.
//! Then the lab's seamless switch on such a cluster, and its CLI.

use podroute::api::Mode;
use podroute::model::Mac;
use serde_json::Value;

use crate::lab_runs::{assert_nothing_left, one_lab, run_lab};
use crate::support::{have_ipip, have_root, steady, Family, Lab};

/// Lines of `ip -6 route show proto 91` in `node` (ip leaves the protocol
/// out: the filter proves it).
fn routes6(lab: &Lab, node: &str) -> Vec<String> {
    lab.ip(node, &["-6", "route", "show", "proto", "91"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// The route `<peer's cidr6> via <via> dev <dev> ...` in `node`, as the
/// kernel shows it.
fn route6_to(lab: &Lab, node: &str, peer: &str, via: &str, dev: &str) -> Option<String> {
    let cidr = lab.node(peer).pod_cidr6.expect("an IPv6 pod CIDR");
    let head = format!("{cidr} via {via} dev {dev} ");
    routes6(lab, node)
        .into_iter()
        .find(|r| r.starts_with(&head))
}

fn sysctl(lab: &Lab, node: &str, key: &str) -> String {
    lab.topo
        .node_netns(node)
        .and_then(|ns| ns.read_sysctl(key))
        .unwrap_or_else(|e| panic!("{node}: {key}: {e}"))
}

/// The lab itself: IPv6 alone, in the model and in the kernel.
fn assert_ipv6_only_lab(lab: &Lab) {
    assert_eq!(lab.families(), vec![Family::V6]);
    for node in &lab.nodes {
        assert_eq!(node.node_ip, None, "{node:?}");
        assert!(node.v6().is_some(), "{node:?}");
        assert!(node.pod_cidrs.iter().all(|c| c.is_ipv6()), "{node:?}");
    }
    for info in lab.topo.nodes() {
        assert!(info.v4().is_none() && info.pods.iter().all(|p| p.ip4().is_none()));
        for pod in &info.pods {
            let ns = lab.topo.netns(&pod.netns).expect("pod netns");
            let v4 = ns.ip(&["-4", "addr", "show", "dev", "eth0"]).expect("ip");
            assert!(v4.trim().is_empty(), "{}: IPv4 on a pod: {v4}", pod.netns);
            let routes = ns.ip(&["-4", "route", "show"]).expect("ip");
            assert!(routes.trim().is_empty(), "{}: {routes}", pod.netns);
        }
    }
}

/// Not one piece of IPv4 state of ours in `node`: no IPv4 route of protocol
/// 91, no vxlan.calico, no IPv4 address but loopback's (so none on tunl0,
/// which the ipip module puts in every namespace), ip_forward still 0.
fn assert_no_ipv4_of_ours(lab: &Lab, node: &str) {
    let routes = lab.ip(node, &["-4", "route", "show", "proto", "91"]);
    assert!(routes.trim().is_empty(), "{node}: IPv4 routes: {routes}");
    let all = lab.ip(node, &["-4", "route", "show", "table", "all"]);
    assert!(!all.contains("proto 91"), "{node}: {all}");
    let links = lab.ip(node, &["link", "show"]);
    assert!(!links.contains("vxlan.calico:"), "{node}:\n{links}");
    let addrs = lab.ip(node, &["-4", "-o", "addr", "show"]);
    let foreign: Vec<&str> = addrs
        .lines()
        .filter(|l| !l.contains(" inet 127.0.0.1/8 "))
        .collect();
    assert!(foreign.is_empty(), "{node}: IPv4 addresses: {foreign:?}");
    assert_eq!(sysctl(lab, node, "net.ipv4.ip_forward"), "0", "{node}");
}

/// Pods talk in IPv6 at exactly the pod MTU; a DF packet one byte over it
/// does not get through, between every pair.
fn assert_pods_talk_at_the_mtu_and_not_over(lab: &Lab, pod_mtu: u32) {
    lab.assert_all_pods_talk(pod_mtu);
    let over = lab.payload_at(Family::V6, pod_mtu) + 1;
    for from in lab.names() {
        for to in lab.names().into_iter().filter(|t| *t != from) {
            assert!(
                !lab.udp6(&from, &to, over, true),
                "{from} -> {to}: a DF packet one byte over the pod MTU {pod_mtu} passed"
            );
        }
    }
}

#[test]
fn native_mode_routes_an_ipv6_only_cluster() {
    if !have_root() {
        return;
    }
    let lab = Lab::v6_only(3);
    assert_ipv6_only_lab(&lab);
    assert!(
        !lab.udp6("node-1", "node-2", 64, false),
        "no IPv6 path between pods before podroute routes them"
    );
    let out = lab.converge_all(&steady(Mode::Native));
    let mtu = out["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(mtu, 1500);

    for node in lab.names() {
        let routes = routes6(&lab, &node);
        for peer in lab.names().into_iter().filter(|p| *p != node) {
            let via = lab.node(&peer).ip6.expect("IPv6 node IP").to_string();
            let route = route6_to(&lab, &node, &peer, &via, "eth0")
                .unwrap_or_else(|| panic!("{node}: no native route to {peer}: {routes:?}"));
            assert!(route.contains(" metric 1024"), "{route}");
        }
        let own = format!(
            "unreachable {} ",
            lab.node(&node).pod_cidr6.expect("IPv6 pod CIDR")
        );
        assert!(
            routes
                .iter()
                .any(|r| r.starts_with(&own) && r.contains(" metric 4294967295")),
            "{node}: {routes:?}"
        );
        assert_eq!(routes.len(), 3, "{node}: two peers and our own: {routes:?}");
        assert_eq!(sysctl(&lab, &node, "net.ipv6.conf.all.forwarding"), "1");
        assert_no_ipv4_of_ours(&lab, &node);
    }
    assert_pods_talk_at_the_mtu_and_not_over(&lab, mtu);
}

#[test]
fn vxlan_mode_carries_an_ipv6_only_cluster_over_vxlan_v6() {
    if !have_root() {
        return;
    }
    let lab = Lab::v6_only(3);
    assert_ipv6_only_lab(&lab);
    let out = lab.converge_all(&steady(Mode::Vxlan));
    let pod_mtu = out["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1430, "1500 - 70 of VXLAN over IPv6");

    for node in lab.names() {
        let info = lab.node(&node);
        let link = lab.ip(&node, &["-d", "link", "show", "vxlan-v6.calico"]);
        for want in [
            "vxlan id 4096".to_string(),
            format!("local {}", info.ip6.expect("IPv6 node IP")),
            "dstport 4789".into(),
            "mtu 1430".into(),
            Mac::for_node_v6(&node).to_string(),
        ] {
            assert!(link.contains(&want), "{node}: no {want:?}:\n{link}");
        }
        let routes = routes6(&lab, &node);
        for peer in lab.names().into_iter().filter(|p| *p != node) {
            let gateway = Mac::for_node_v6(&peer).link_local().to_string();
            let route = route6_to(&lab, &node, &peer, &gateway, "vxlan-v6.calico")
                .unwrap_or_else(|| panic!("{node}: no tunnel route to {peer}: {routes:?}"));
            assert!(
                route.contains("metric 1024") && route.contains("mtu 1430"),
                "{route}"
            );
        }
        assert_eq!(routes.len(), 3, "{node}: two peers and our own: {routes:?}");
        assert_no_ipv4_of_ours(&lab, &node);
    }

    let before = lab.tx_packets("node-1", "vxlan-v6.calico");
    assert_pods_talk_at_the_mtu_and_not_over(&lab, pod_mtu);
    assert!(
        lab.tx_packets("node-1", "vxlan-v6.calico") > before,
        "IPv6 pods did not use vxlan-v6.calico"
    );
}

/// ipip has no IPv6: an IPv6-only node in ipip mode has nothing on tunl0
/// and its pods ride vxlan-v6.calico.
#[test]
fn ipip_mode_on_an_ipv6_only_cluster_uses_vxlan_v6_alone() {
    if !have_root() || !have_ipip() {
        return;
    }
    let lab = Lab::v6_only(2);
    let out = lab.converge_all(&steady(Mode::Ipip));
    let pod_mtu = out["node-1"].pod_mtu.expect("pod mtu");
    assert_eq!(pod_mtu, 1430);
    let gateway = Mac::for_node_v6("node-2").link_local().to_string();
    let routes = routes6(&lab, "node-1");
    assert!(
        route6_to(&lab, "node-1", "node-2", &gateway, "vxlan-v6.calico").is_some(),
        "{routes:?}"
    );
    for node in lab.names() {
        // tunl0 itself may be there (the module's fallback device), never
        // an address of ours on it: no IPv4 address but loopback's.
        assert_no_ipv4_of_ours(&lab, &node);
    }
    let (tunl, vx6) = (
        lab.tx_packets("node-1", "tunl0"),
        lab.tx_packets("node-1", "vxlan-v6.calico"),
    );
    assert_pods_talk_at_the_mtu_and_not_over(&lab, pod_mtu);
    assert!(lab.tx_packets("node-1", "vxlan-v6.calico") > vx6);
    assert_eq!(
        lab.tx_packets("node-1", "tunl0"),
        tunl,
        "tunl0 carried packets"
    );
}

/// `podroute lab --ip-family ipv6 -o json ARGS...` to a successful end.
fn lab_json(args: &[&str]) -> Value {
    let _turn = one_lab();
    let mut all = vec![
        "--ip-family",
        "ipv6",
        "-o",
        "json",
        "--settle-ms",
        "500",
        "--step-ms",
        "200",
    ];
    all.extend_from_slice(args);
    let (out, pid) = run_lab(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab {all:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(pid);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// IPv6 alone in `part` (the run or a phase): no IPv4 family, and the
/// totals are the IPv6 numbers.
fn ipv6_alone(part: &Value) -> &Value {
    let families = part["families"].as_object().expect("families");
    assert_eq!(
        families.keys().collect::<Vec<_>>(),
        vec!["ipv6"],
        "{part:#}"
    );
    let v6 = &part["families"]["ipv6"];
    assert_eq!(part["sent"], v6["sent"], "{part:#}");
    assert_eq!(part["lost"], v6["lost"], "{part:#}");
    if part.get("mtuCheck").is_some() {
        assert_eq!(part["mtuCheck"], v6["mtuCheck"], "{part:#}");
    }
    v6
}

/// Issue 13: the seamless switch, both ways, on an IPv6-only cluster: not
/// one probe lost, and every DF packet of the pod MTU through in each phase.
#[test]
fn an_ipv6_only_lab_switches_vxlan_native_vxlan_without_loss() {
    if !have_root() {
        return;
    }
    for (from, to) in [("vxlan", "native"), ("native", "vxlan")] {
        let report = lab_json(&["--from", from, "--to", to, "--nodes", "3"]);
        assert_eq!(report["ipFamily"], "ipv6", "{report:#}");
        let v6 = ipv6_alone(&report);
        println!(
            "ipv6 {from} -> {to}: sent {}, lost {}",
            v6["sent"], v6["lost"]
        );
        assert!(v6["sent"].as_u64() > Some(0), "{report:#}");
        assert_eq!(v6["lost"], 0, "{from} -> {to}: {report:#}");
        let phases = report["phases"].as_array().expect("phases");
        // Start, at least one transition, target. The runner records the
        // phases it sees; on a slow machine (the TCG VM) the coordinator may
        // move on before it looks, so two transitions can show as one.
        assert!(phases.len() >= 3, "{report:#}");
        for phase in phases {
            let v6 = ipv6_alone(phase);
            assert!(v6["sent"].as_u64() > Some(0), "{phase:#}");
            assert_eq!(v6["lost"], 0, "{phase:#}");
            let df = &v6["mtuCheck"];
            assert!(df["total"].as_u64() > Some(0), "{phase:#}");
            assert_eq!(df["ok"], df["total"], "DF at the pod MTU: {phase:#}");
        }
    }
}

/// The table of an IPv6-only lab: one family, named in its title and
/// columns; the progress lines say v6.
#[test]
fn the_ipv6_only_table_names_its_family() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    let (out, pid) = run_lab(&[
        "--ip-family",
        "ipv6",
        "--from",
        "vxlan",
        "--nodes",
        "2",
        "--settle-ms",
        "300",
        "--step-ms",
        "100",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert_nothing_left(pid);
    assert!(stdout.contains("(1 subnet, ipv6):"), "{stdout}");
    let header = "PHASE          GEN  TIME  SENT v6  LOST v6  DF AT POD MTU v6";
    assert!(stdout.lines().any(|l| l == header), "{stdout}");
    assert!(!stdout.contains("v4"), "{stdout}");
    assert!(
        stdout.contains("total: ") && stdout.contains(", 0 lost"),
        "{stdout}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" | phase ") && l.ends_with(" (v6)")),
        "{stderr}"
    );
}
