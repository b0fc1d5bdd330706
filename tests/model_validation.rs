//! Parsing and validation of the model: the cluster file, nodes, config,
//! route protocols and VTEP MACs. Every bad input must be an
//! `Error::Invalid` whose `field` names the culprit.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::{assert_invalid, invalid, ip, net, node, uplink};
use ipnetwork::IpNetwork;
use podroute::api::{Mode, OffSubnet, Plan};
use podroute::model::{
    parse_adopted_protocols, parse_route_protocol, validate_ifname, validate_nodes, Cluster,
    Config, Mac, Node, NodeIps, RpFilter, MIN_MTU,
};
use podroute::plan::Mtus;
use podroute::plan::{route_owner, RouteOwner};

/// A cluster file with the given node entries (YAML list items, indented).
fn cluster(nodes: &str) -> String {
    format!("mode: vxlan\nnodes:\n{nodes}")
}

fn three_nodes() -> String {
    cluster(
        "  - name: node-1
    ip: 10.250.0.1
    podCIDR: 10.244.1.0/24
  - name: node-2
    ip: 10.250.0.2
    podCIDR: 10.244.2.0/24
  - name: node-3
    ip: 10.250.0.3
    podCIDR: 10.244.3.0/24
",
    )
}

// ---------------------------------------------------------------- valid files

#[test]
fn design_example_single_pod_cidr() {
    let text = "\
mode: vxlan                # ipip | vxlan | native
offSubnet: encap           # native only: encap | underlay
nodes:
  - name: node-1
    ip: 10.250.0.1
    podCIDR: 10.244.1.0/24   # or podCIDRs: [..]
";
    let c = Cluster::parse(text).unwrap();
    assert_eq!(c.nodes, vec![node("node-1", "10.250.0.1", "10.244.1.0/24")]);
    assert_eq!(c.plan, Plan::steady(Mode::Vxlan, 1));
    assert_eq!(c.settings.off_subnet, Some(OffSubnet::Encap));
    assert_eq!(
        (c.settings.mtu, c.settings.vxlan_vni, c.settings.vxlan_port),
        (None, None, None)
    );
    let n = c.node("node-1").unwrap();
    assert_eq!(n.pod_cidr().unwrap(), net("10.244.1.0/24"));
    assert_eq!(n.tunnel_ip().unwrap(), ip("10.244.1.0"));
    assert!(c.node("node-2").is_none());
}

#[test]
fn three_node_file_keeps_order_and_values() {
    let c = Cluster::parse(&three_nodes()).unwrap();
    let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    assert_eq!(c.nodes[2].node_ip.unwrap(), ip("10.250.0.3"));
    assert_eq!(c.nodes[2].pod_cidr().unwrap(), net("10.244.3.0/24"));
    assert_eq!(c.settings.off_subnet, None);
}

#[test]
fn dual_stack_pod_cidrs_keep_v4_as_pod_cidr() {
    let text = cluster(
        "  - name: node-1
    ip: 10.250.0.1
    podCIDRs: [10.244.1.0/24, 'fd00:10:244:1::/64']
  - name: node-2
    ip: 10.250.0.2
    podCIDRs:
      - 10.244.2.0/24
      - fd00:10:244:2::/64
",
    );
    let c = Cluster::parse(&text).unwrap();
    for (i, n) in c.nodes.iter().enumerate() {
        let k = i + 1;
        assert_eq!(n.pod_cidrs.len(), 2);
        assert!(n.pod_cidrs[1].is_ipv6());
        assert_eq!(
            n.pod_cidrs[1],
            format!("fd00:10:244:{k}::/64")
                .parse::<IpNetwork>()
                .unwrap()
        );
        assert_eq!(n.pod_cidr().unwrap(), net(&format!("10.244.{k}.0/24")));
        assert_eq!(n.tunnel_ip().unwrap(), ip(&format!("10.244.{k}.0")));
    }
}

#[test]
fn single_entry_pod_cidrs_list_equals_pod_cidr() {
    let a = Cluster::parse(&cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24]}\n",
    ))
    .unwrap();
    let b = Cluster::parse(&cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}\n",
    ))
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn full_file_with_all_settings() {
    let text = "\
mode: native
offSubnet: underlay
mtu: 1400
generation: 7
decap: [vxlan]
vxlan: {vni: 42, port: 8472}
nodes:
  - name: a
    ip: 192.168.1.10
    podCIDR: 10.244.0.0/24
";
    let c = Cluster::parse(text).unwrap();
    assert_eq!(c.plan.generation, 7);
    assert_eq!(c.plan.route_mode, Mode::Native);
    // The route mode is always decapsulated too.
    assert_eq!(c.plan.decap, BTreeSet::from([Mode::Native, Mode::Vxlan]));
    assert_eq!(c.plan.tunnels(), BTreeSet::from([Mode::Vxlan]));
    let mut config = Config::default();
    c.apply_to(&mut config);
    assert_eq!(config.off_subnet, OffSubnet::Underlay);
    assert_eq!(config.mtu, Some(1400));
    assert_eq!(config.vxlan_vni, 42);
    assert_eq!(config.vxlan_port, 8472);
    config.validate().unwrap();
}

#[test]
fn apply_to_leaves_unset_settings_alone() {
    let c = Cluster::parse(&three_nodes()).unwrap();
    let mut config = Config {
        mtu: Some(1300),
        off_subnet: OffSubnet::Underlay,
        vxlan_vni: 7,
        ..Config::default()
    };
    let before = config.clone();
    c.apply_to(&mut config);
    assert_eq!(config, before);
}

#[test]
fn empty_node_list_is_valid() {
    let c = Cluster::parse("mode: ipip\nnodes: []\n").unwrap();
    assert!(c.nodes.is_empty());
    assert_eq!(c.plan, Plan::steady(Mode::Ipip, 1));
}

// ------------------------------------------------------------ bad cluster files

#[test]
fn malformed_cidr_names_the_entry() {
    for bad in [
        "banana",
        "10.244.1.0/33",
        "10.244.1/24",
        "10.244.1.0/",
        "300.1.1.0/24",
    ] {
        let text = cluster(&format!(
            "  - {{name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}}\n  - {{name: n2, ip: 10.250.0.2, podCIDR: '{bad}'}}\n"
        ));
        assert_invalid(Cluster::parse(&text), "nodes[1].podCIDRs[0]");
    }
    // The second entry of a podCIDRs list is named as such.
    let text =
        cluster("  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, 'fd00::zz/64']}\n");
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs[1]");
}

#[test]
fn host_bits_set_is_rejected() {
    let text = cluster("  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.1/24}\n");
    let reason = assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs[0]");
    assert!(reason.contains("10.244.1.0/24"), "{reason}");
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, 'fd00:10:244:1::1/64']}\n",
    );
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs[1]");
}

#[test]
fn tiny_or_bare_pod_cidr_is_rejected() {
    for bad in ["10.244.1.0/31", "10.244.1.0/32", "10.244.1.0"] {
        let text = cluster(&format!(
            "  - {{name: n1, ip: 10.250.0.1, podCIDR: '{bad}'}}\n"
        ));
        assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs[0]");
    }
    let text = cluster("  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/30}\n");
    Cluster::parse(&text).unwrap();
}

#[test]
fn overlapping_pod_cidrs_name_the_later_node() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.0.0/16}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.245.0.0/24}
  - {name: n3, ip: 10.250.0.3, podCIDR: 10.244.7.0/24}
",
    );
    let reason = assert_invalid(Cluster::parse(&text), "nodes[2].podCIDRs");
    assert!(reason.contains("n1"), "{reason}");
    // Identical CIDRs, and a later wider one swallowing an earlier one.
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.244.1.0/24}
",
    );
    assert_invalid(Cluster::parse(&text), "nodes[1].podCIDRs");
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.244.2.0/24}
  - {name: n3, ip: 10.250.0.3, podCIDR: 10.244.0.0/22}
",
    );
    assert_invalid(Cluster::parse(&text), "nodes[2].podCIDRs");
}

#[test]
fn adjacent_pod_cidrs_do_not_overlap() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.0.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.244.1.0/24}
  - {name: n3, ip: 10.250.0.3, podCIDR: 10.244.2.0/23}
",
    );
    Cluster::parse(&text).unwrap();
}

#[test]
fn overlapping_ipv6_pod_cidrs_name_the_later_node() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, 'fd00:10:244::/56']}
  - {name: n2, ip: 10.250.0.2, podCIDRs: [10.244.2.0/24, 'fd00:10:244:1::/64']}
",
    );
    let reason = assert_invalid(Cluster::parse(&text), "nodes[1].podCIDRs");
    assert!(
        reason.contains("fd00:10:244::/56") && reason.contains("n1"),
        "{reason}"
    );
    // Adjacent IPv6 blocks, and one node without an IPv6 CIDR, are fine.
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, 'fd00:10:244:1::/64']}
  - {name: n2, ip: 10.250.0.2, podCIDRs: [10.244.2.0/24, 'fd00:10:244:2::/64']}
  - {name: n3, ip: 10.250.0.3, podCIDR: 10.244.3.0/24}
",
    );
    Cluster::parse(&text).unwrap();
}

#[test]
fn pod_cidr_containing_a_node_ip_names_its_owner() {
    // n2's pod CIDR covers the underlay (and n1's address).
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.250.0.0/24}
",
    );
    let reason = assert_invalid(Cluster::parse(&text), "nodes[1].podCIDRs");
    assert!(reason.contains("10.250.0.1"), "{reason}");
    // The first node's CIDR covers only a later node's address.
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.99.0.0/24}
  - {name: n2, ip: 10.99.0.7, podCIDR: 10.244.2.0/24}
",
    );
    let reason = assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
    assert!(reason.contains("n2"), "{reason}");
    // Its own address counts too.
    let text = cluster("  - {name: n1, ip: 10.244.1.9, podCIDR: 10.244.1.0/24}\n");
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
}

#[test]
fn missing_node_ip() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, podCIDR: 10.244.2.0/24}
",
    );
    assert_invalid(Cluster::parse(&text), "nodes[1].ip");
}

#[test]
fn ipv6_or_unusable_node_ip() {
    // An IPv6 address with only an IPv4 pod CIDR: no family to route.
    let text = cluster("  - {name: n1, ip: 'fd00::1', podCIDR: 10.244.1.0/24}\n");
    let reason = assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
    assert!(reason.contains("no family has both"), "{reason}");
    for bad in [
        "::1",
        "not-an-ip",
        "10.250.0",
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.5",
    ] {
        let text = cluster(&format!(
            "  - {{name: n1, ip: '{bad}', podCIDR: 10.244.1.0/24}}\n"
        ));
        assert_invalid(Cluster::parse(&text), "nodes[0].ip");
    }
}

#[test]
fn duplicate_node_names() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.244.2.0/24}
  - {name: n1, ip: 10.250.0.3, podCIDR: 10.244.3.0/24}
",
    );
    assert_invalid(Cluster::parse(&text), "nodes[2].name");
}

#[test]
fn duplicate_node_ips() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.244.2.0/24}
  - {name: n3, ip: 10.250.0.1, podCIDR: 10.244.3.0/24}
",
    );
    let reason = assert_invalid(Cluster::parse(&text), "nodes[2].ip");
    assert!(reason.contains("\"n1\""), "{reason}");
}

#[test]
fn empty_node_name() {
    let text = cluster("  - {name: '', ip: 10.250.0.1, podCIDR: 10.244.1.0/24}\n");
    assert_invalid(Cluster::parse(&text), "nodes[0].name");
}

#[test]
fn pod_cidrs_take_one_per_family_in_any_order() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: ['fd00:10:244:1::/64', 10.244.1.0/24]}\n",
    );
    let node = &Cluster::parse(&text).unwrap().nodes[0];
    assert_eq!(node.pod_cidr().unwrap().to_string(), "10.244.1.0/24");
    assert_eq!(node.pod_cidr6().unwrap().to_string(), "fd00:10:244:1::/64");
    // An IPv6 pod CIDR with an IPv4 address only: no family to route.
    let text = cluster("  - {name: n1, ip: 10.250.0.1, podCIDR: 'fd00:10:244:1::/64'}\n");
    let reason = assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
    assert!(reason.contains("no family has both"), "{reason}");
    // IPv6 alone, both halves: an IPv6-only node.
    let text = cluster("  - {name: n1, ip: 'fd00:250::1', podCIDR: 'fd00:10:244:1::/64'}\n");
    let node = &Cluster::parse(&text).unwrap().nodes[0];
    assert_eq!((node.node_ip, node.pod_cidr()), (None, None));
    assert!(node.v6().is_some());
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: ['fd00:1::/64', 'fd00:2::/64', 10.244.1.0/24]}\n",
    );
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
}

#[test]
fn node_ips_take_one_per_family() {
    let node = |ips: &str| {
        cluster(&format!(
            "  - {{name: n1, ips: {ips}, podCIDRs: [10.244.1.0/24, 'fd00:244:1::/64']}}\n"
        ))
    };
    let dual = Cluster::parse(&node("['fd00:250::1', 10.250.0.1]")).unwrap();
    assert_eq!(dual.nodes[0].node_ip.unwrap().to_string(), "10.250.0.1");
    assert_eq!(dual.nodes[0].node_ip6.unwrap().to_string(), "fd00:250::1");
    let reason = assert_invalid(
        Cluster::parse(&node("[10.250.0.1, 10.250.0.2]")),
        "nodes[0].ips[1]",
    );
    assert!(reason.contains("one per family"), "{reason}");
    assert_invalid(
        Cluster::parse(&node("[10.250.0.1, 'fe80::1']")),
        "nodes[0].ips[1]",
    );
    assert_invalid(
        Cluster::parse(&node("[10.250.0.1, '::1']")),
        "nodes[0].ips[1]",
    );
    assert_invalid(
        Cluster::parse(&node("[10.250.0.1, 'ff02::1']")),
        "nodes[0].ips[1]",
    );
    // IPv6 only: IPv4's half (a pod CIDR) stays unrouted.
    let v6 = Cluster::parse(&node("['fd00:250::1']")).unwrap();
    assert_eq!(v6.nodes[0].v4(), None);
    assert!(v6.nodes[0].v6().is_some());
    let both =
        cluster("  - {name: n1, ip: 10.250.0.1, ips: [10.250.0.1], podCIDR: 10.244.1.0/24}\n");
    assert_invalid(Cluster::parse(&both), "nodes[0]");
}

#[test]
fn ipv6_node_addresses_and_pod_cidrs_do_not_clash_across_nodes() {
    let line = |name: &str, v4: u8, ip6: &str, cidr6: &str| {
        format!(
            "  - {{name: {name}, ips: [10.250.0.{v4}, '{ip6}'], podCIDRs: [10.244.{v4}.0/24, '{cidr6}']}}\n"
        )
    };
    let good = line("a", 1, "fd00:250::1", "fd00:244:1::/64")
        + &line("b", 2, "fd00:250::2", "fd00:244:2::/64");
    assert_eq!(Cluster::parse(&cluster(&good)).unwrap().nodes.len(), 2);
    let same_ip = line("a", 1, "fd00:250::1", "fd00:244:1::/64")
        + &line("b", 2, "fd00:250::1", "fd00:244:2::/64");
    let reason = assert_invalid(Cluster::parse(&cluster(&same_ip)), "nodes[1].ip");
    assert!(reason.contains("fd00:250::1"), "{reason}");
    let swallows = line("a", 1, "fd00:250::1", "fd00:250::/64")
        + &line("b", 2, "fd00:250::2", "fd00:244:2::/64");
    let reason = assert_invalid(Cluster::parse(&cluster(&swallows)), "nodes[0].podCIDRs");
    assert!(
        reason.contains("contains the node IP fd00:250::"),
        "{reason}"
    );
}

#[test]
fn bad_pod_cidr_lists() {
    // Two IPv4 CIDRs.
    let text =
        cluster("  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, 10.245.1.0/24]}\n");
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
    // More than two.
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, 'fd00::/64', 'fd01::/64']}\n",
    );
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
    // None at all.
    let text = cluster("  - {name: n1, ip: 10.250.0.1}\n");
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
    let text = cluster("  - {name: n1, ip: 10.250.0.1, podCIDRs: []}\n");
    assert_invalid(Cluster::parse(&text), "nodes[0].podCIDRs");
}

#[test]
fn pod_cidr_and_pod_cidrs_both_given() {
    let text = cluster(
        "  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}
  - {name: n2, ip: 10.250.0.2, podCIDR: 10.244.2.0/24, podCIDRs: [10.244.2.0/24]}
",
    );
    let reason = assert_invalid(Cluster::parse(&text), "nodes[1]");
    assert!(reason.contains("podCIDRs"), "{reason}");
}

/// YAML and schema errors name the line of the file and the offending key.
#[track_caller]
fn assert_yaml_error(text: &str, line: usize, needle: &str) {
    let (field, reason) = invalid(Cluster::parse(text));
    assert_eq!(field, format!("cluster file line {line}"), "{reason}");
    assert!(
        reason.contains(needle),
        "{reason:?} does not mention {needle:?}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    assert_yaml_error("mode: vxlan\ncolour: red\nnodes: []\n", 2, "colour");
    // The classic typo: podCidr for podCIDR.
    assert_yaml_error(
        "mode: vxlan\nnodes:\n  - name: n1\n    ip: 10.250.0.1\n    podCidr: 10.244.1.0/24\n",
        5,
        "podCidr",
    );
    assert_yaml_error(
        "mode: vxlan\nvxlan:\n  vni: 1\n  mtu: 1400\nnodes: []\n",
        4,
        "mtu",
    );
    // snake_case is not the schema either.
    assert_yaml_error(
        "mode: native\noff_subnet: encap\nnodes: []\n",
        2,
        "off_subnet",
    );
}

#[test]
fn bad_enum_values_and_types() {
    assert_yaml_error("mode: geneve\nnodes: []\n", 1, "geneve");
    assert_yaml_error("mode: native\noffSubnet: bgp\nnodes: []\n", 2, "bgp");
    assert_yaml_error("mode: ipip\nmtu: auto\nnodes: []\n", 2, "");
    assert_yaml_error("mode: ipip\ndecap: [ipip, gre]\nnodes: []\n", 2, "gre");
    // Missing required keys.
    let (field, reason) = invalid(Cluster::parse("nodes: []\n"));
    assert!(field.starts_with("cluster file"), "{field}");
    assert!(reason.contains("mode"), "{reason}");
    let (_, reason) = invalid(Cluster::parse("mode: ipip\n"));
    assert!(reason.contains("nodes"), "{reason}");
}

#[test]
fn load_prefixes_the_path() {
    let dir = std::env::temp_dir().join(format!("podroute-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, three_nodes()).unwrap();
    assert_eq!(Cluster::load(&good).unwrap().nodes.len(), 3);

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        cluster("  - {name: n1, ip: 10.250.0.1, podCIDR: 10.244.1.1/24}\n"),
    )
    .unwrap();
    let (field, _) = invalid(Cluster::load(&bad));
    assert_eq!(field, format!("{}: nodes[0].podCIDRs[0]", bad.display()));

    let missing = dir.join("missing.yaml");
    match Cluster::load(&missing) {
        Err(podroute::Error::ReadFile { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected ReadFile, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --------------------------------------------------------- Node / validate_nodes

#[test]
fn node_parse_direct() {
    let n = Node::parse(
        "x",
        "n1",
        NodeIps::One(Some("10.0.0.1")),
        &["10.244.1.0/24".into()],
    )
    .unwrap();
    assert_eq!(n, node("n1", "10.0.0.1", "10.244.1.0/24"));
    assert_invalid(
        Node::parse("x", "n1", NodeIps::One(None), &["10.244.1.0/24".into()]),
        "x.ip",
    );
    assert_invalid(
        Node::parse("x", "", NodeIps::One(Some("10.0.0.1")), &[]),
        "x.name",
    );
    assert_invalid(
        Node::parse("x", "n1", NodeIps::One(Some("10.0.0.1")), &[]),
        "x.podCIDRs",
    );
}

#[test]
fn validate_nodes_direct() {
    let good = [
        node("a", "10.250.0.1", "10.244.1.0/24"),
        node("b", "10.250.0.2", "10.244.2.0/24"),
    ];
    validate_nodes(&good).unwrap();
    validate_nodes(&[]).unwrap();
    let dup = [good[0].clone(), node("a", "10.250.0.9", "10.244.9.0/24")];
    assert_invalid(validate_nodes(&dup), "nodes[1].name");
    let dup_ip = [good[0].clone(), node("b", "10.250.0.1", "10.244.9.0/24")];
    assert_invalid(validate_nodes(&dup_ip), "nodes[1].ip");
    let overlap = [good[0].clone(), node("b", "10.250.0.2", "10.244.1.128/25")];
    assert_invalid(validate_nodes(&overlap), "nodes[1].podCIDRs");
}

// ----------------------------------------------------------------------- Config

#[test]
fn default_config_is_valid() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.route_protocol, 91);
    assert_eq!(c.route_table, 254);
    assert_eq!((c.vxlan_vni, c.vxlan_port), (4096, 4789));
    assert_eq!(
        (c.ipip_device.as_str(), c.vxlan_device.as_str()),
        ("tunl0", "vxlan.calico")
    );
    assert_eq!(c.rp_filter, RpFilter::Loose);
    assert_eq!(c.off_subnet, OffSubnet::Encap);
    assert!(c.adopt_route_protocols.is_empty());
}

#[test]
fn config_mtu_floor() {
    let at = |mtu| Config {
        mtu: Some(mtu),
        ..Config::default()
    };
    assert_invalid(at(MIN_MTU - 1).validate(), "mtu");
    assert_invalid(at(0).validate(), "mtu");
    at(MIN_MTU).validate().unwrap();
    at(9000).validate().unwrap();
}

#[test]
fn config_other_fields() {
    let with = |f: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        f(&mut c);
        c.validate()
    };
    for p in 0..=4 {
        assert_invalid(with(&|c| c.route_protocol = p), "route-protocol");
    }
    with(&|c| c.route_protocol = 5).unwrap();
    assert_invalid(
        with(&|c| c.adopt_route_protocols = vec![12, 91]),
        "adopt-route-protocols",
    );
    with(&|c| c.adopt_route_protocols = vec![12, 80]).unwrap();
    // The kernel's, boot and static routes are never adopted, however the
    // config was built (not only through parse_adopted_protocols).
    for p in 0..=4 {
        assert_invalid(
            with(&|c| c.adopt_route_protocols = vec![12, p]),
            "adopt-route-protocols",
        );
    }
    assert_invalid(with(&|c| c.vxlan_vni = 0), "vxlan-vni");
    assert_invalid(with(&|c| c.vxlan_vni = 1 << 24), "vxlan-vni");
    with(&|c| c.vxlan_vni = (1 << 24) - 1).unwrap();
    assert_invalid(with(&|c| c.vxlan_port = 0), "vxlan-port");
    assert_invalid(
        with(&|c| c.cross_subnet_tunnel = Mode::Native),
        "cross-subnet-tunnel",
    );
    with(&|c| c.cross_subnet_tunnel = Mode::Ipip).unwrap();
    for bad in ["", "a-very-long-name", "a/b", "a b", ".", ".."] {
        assert_invalid(with(&|c| c.ipip_device = bad.into()), "ipip-device");
        assert_invalid(with(&|c| c.vxlan_device = bad.into()), "vxlan-device");
    }
    with(&|c| c.vxlan_device = "fifteen-chars-x".into()).unwrap();
    assert_invalid(validate_ifname("uplink", "sixteen-chars-xx"), "uplink");
}

#[test]
fn owned_protocols() {
    let c = Config {
        adopt_route_protocols: vec![12, 80],
        ..Config::default()
    };
    // The one ownership rule (plan::ownership), for a pod route in our table.
    let owned = |p| route_owner(&c, p, c.route_table, 24) != RouteOwner::Foreign;
    assert_eq!(
        (0..=255).filter(|&p| owned(p)).collect::<Vec<u8>>(),
        [12, 80, 91]
    );
    assert!(owned(12) && owned(91));
    assert!(!owned(2) && !owned(4));
}

#[test]
fn mtu_over_the_uplink_is_rejected() {
    let up = uplink("eth0", 1500, "10.250.0.1/24");
    let over = Config {
        mtu: Some(1501),
        ..Config::default()
    };
    let reason = assert_invalid(Mtus::new(&over, &up), "mtu");
    assert!(
        reason.contains("eth0") && reason.contains("1500"),
        "{reason}"
    );
    let equal = Config {
        mtu: Some(1500),
        ..Config::default()
    };
    assert_eq!(Mtus::new(&equal, &up).unwrap().base, 1500);
    let under = Config {
        mtu: Some(1400),
        ..Config::default()
    };
    let m = Mtus::new(&under, &up).unwrap();
    assert_eq!(m.base, 1400);
    assert_eq!(
        (m.of(Mode::Native), m.of(Mode::Ipip), m.of(Mode::Vxlan)),
        (1400, 1380, 1350)
    );
    assert_eq!(m.pod(&BTreeSet::new()), 1400);
    assert_eq!(m.pod(&BTreeSet::from([Mode::Ipip])), 1380);
    assert_eq!(m.pod(&BTreeSet::from([Mode::Ipip, Mode::Vxlan])), 1350);
    // No override: the uplink's MTU; an uplink under the IPv4 minimum is refused.
    assert_eq!(Mtus::new(&Config::default(), &up).unwrap().base, 1500);
    let tiny = uplink("eth0", 500, "10.250.0.1/24");
    assert_invalid(Mtus::new(&Config::default(), &tiny), "mtu");
}

// -------------------------------------------------------------- route protocols

#[test]
fn route_protocol_by_name_or_number() {
    assert_eq!(parse_route_protocol("p", "bird").unwrap(), 12);
    assert_eq!(parse_route_protocol("p", "80").unwrap(), 80);
    assert_eq!(parse_route_protocol("p", " 80 ").unwrap(), 80);
    assert_eq!(parse_route_protocol("p", "kernel").unwrap(), 2);
    assert_eq!(parse_route_protocol("p", "static").unwrap(), 4);
    assert_eq!(parse_route_protocol("p", "bgp").unwrap(), 186);
    assert_eq!(parse_route_protocol("p", "255").unwrap(), 255);
    for bad in ["256", "-1", "", "birdd", "0x0c"] {
        assert_invalid(
            parse_route_protocol("route-protocol", bad),
            "route-protocol",
        );
    }
}

#[test]
fn adopted_protocols() {
    assert_eq!(parse_adopted_protocols("bird,80").unwrap(), [12, 80]);
    assert_eq!(
        parse_adopted_protocols(" bird , 12,80,bird ").unwrap(),
        [12, 80]
    );
    assert_eq!(parse_adopted_protocols("").unwrap(), Vec::<u8>::new());
    assert_eq!(parse_adopted_protocols(",,").unwrap(), Vec::<u8>::new());
    for refused in [
        "kernel",
        "boot",
        "static",
        "redirect",
        "0",
        "2",
        "3",
        "4",
        "bird,static",
        "ra",
        "9",
    ] {
        let reason = assert_invalid(parse_adopted_protocols(refused), "adopt-route-protocols");
        assert!(reason.contains("never adopted"), "{refused}: {reason}");
    }
    for garbage in ["calico", "bird;80", "1000", "bird,x"] {
        assert_invalid(parse_adopted_protocols(garbage), "adopt-route-protocols");
    }
}

#[test]
fn router_advertisement_routes_are_never_ours() {
    // IPv6 routes learned from router advertisements carry proto ra (9).
    let config = Config {
        route_protocol: 9,
        ..Config::default()
    };
    let reason = assert_invalid(config.validate(), "route-protocol");
    assert!(reason.contains("router advertisements"), "{reason}");
}

// ------------------------------------------------------------------ modes

#[test]
fn mode_strings() {
    for m in Mode::ALL {
        assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        assert_eq!(m.to_string(), m.as_str());
    }
    assert_invalid(
        "IPIP".parse::<Mode>().map_err(podroute::Error::from),
        "mode",
    );
    assert_eq!(
        (
            Mode::Ipip.overhead(),
            Mode::Vxlan.overhead(),
            Mode::Native.overhead()
        ),
        (20, 50, 0)
    );
    assert!(Mode::Ipip.is_tunnel() && Mode::Vxlan.is_tunnel() && !Mode::Native.is_tunnel());
    assert_eq!(
        "underlay".parse::<OffSubnet>().unwrap(),
        OffSubnet::Underlay
    );
    assert_invalid(
        "x".parse::<OffSubnet>().map_err(podroute::Error::from),
        "offSubnet",
    );
    assert_eq!("keep".parse::<RpFilter>().unwrap(), RpFilter::Keep);
    assert_invalid("strict".parse::<RpFilter>(), "rp-filter");
}

#[test]
fn plan_tunnels() {
    assert!(Plan::steady(Mode::Native, 1).tunnels().is_empty());
    assert_eq!(
        Plan::steady(Mode::Ipip, 1).tunnels(),
        BTreeSet::from([Mode::Ipip])
    );
    let p = Plan {
        generation: 2,
        route_mode: Mode::Vxlan,
        decap: BTreeSet::from([Mode::Native, Mode::Ipip]),
    };
    assert_eq!(p.tunnels(), BTreeSet::from([Mode::Ipip, Mode::Vxlan]));
}

// ------------------------------------------------------------------ MACs

#[test]
fn vtep_mac_is_pinned() {
    // FNV-1a of the name finished with fmix64, first 6 bytes, locally
    // administered unicast. If this changes, every VTEP MAC in every cluster
    // changes on upgrade (and mixed-version nodes disagree).
    assert_eq!(Mac::for_node("node-1").to_string(), "92:dd:3f:4c:04:e1");
    assert_eq!(Mac::for_node("node-2").to_string(), "32:38:e5:c6:e8:32");
    assert_eq!(Mac::for_node(""), Mac([0xee, 0xd0, 0x1f, 0x60, 0xba, 0x99]));
    assert_eq!(Mac::for_node("node-1"), Mac::for_node("node-1"));
}

fn name_samples() -> impl Iterator<Item = String> {
    let fixed = [
        "a",
        "node-1",
        "ip-10-250-0-1.eu-central-1.compute.internal",
        "gke-prod-default-pool-8f2c1e4a-x9zq",
        "ÜBER-knoten",
    ]
    .into_iter()
    .map(String::from);
    fixed
        .chain((0..2000).map(|i| format!("worker-{i}")))
        .chain((0..=255).map(|b| char::from(b).to_string()))
}

#[test]
fn vtep_mac_is_locally_administered_unicast() {
    for name in name_samples() {
        let m = Mac::for_node(&name);
        assert_eq!(m.0[0] & 0x01, 0, "{name}: {m} is multicast");
        assert_eq!(
            m.0[0] & 0x02,
            0x02,
            "{name}: {m} is not locally administered"
        );
        assert_ne!(m, Mac([0; 6]));
    }
}

#[test]
fn vtep_macs_are_distinct() {
    let mut seen = HashSet::new();
    for i in 1..=5000 {
        let m = Mac::for_node(&format!("node-{i}"));
        assert!(seen.insert(m), "node-{i} collides on {m}");
    }
}

#[test]
fn mac_display_parse_round_trip() {
    let mut macs: Vec<Mac> = name_samples().map(|n| Mac::for_node(&n)).collect();
    macs.extend([Mac([0; 6]), Mac([0xff; 6]), Mac([0x02, 0, 0, 0, 0, 0x0a])]);
    for m in macs {
        let text = m.to_string();
        assert_eq!(text.len(), 17);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Mac>().unwrap(), m);
        assert_eq!(format!("{m:?}"), text);
        // serde goes through the same text.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Mac>(&json).unwrap(), m);
    }
    assert_eq!(
        "AA:BB:CC:DD:EE:0F".parse::<Mac>().unwrap(),
        Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f])
    );
    for bad in [
        "",
        "00:11:22:33:44",
        "00:11:22:33:44:55:66",
        "zz:11:22:33:44:55",
        "00-11-22-33-44-55",
        "00:11:22:33:44:",
    ] {
        assert_invalid(bad.parse::<Mac>(), "mac");
    }
    assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    assert_eq!(
        Mac::from_slice(&[1, 2, 3, 4, 5, 6]),
        Some(Mac([1, 2, 3, 4, 5, 6]))
    );
    assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
}
