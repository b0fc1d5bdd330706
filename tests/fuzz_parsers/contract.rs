//! What a parsed value must satisfy (/work/contract.md, issue 11): an
//! independent statement of the rules, so that whatever a parser accepts can
//! be checked against them.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use podroute::model::{validate_nodes, Cluster, Node, NodeIps};
use podroute::Error;

/// The IANA special-purpose ranges the contract refuses for node IPs and pod
/// CIDRs (0/8, loopback, link-local, IETF protocol assignments, the three
/// documentation nets, multicast, reserved incl. broadcast).
pub const SPECIAL_RANGES: [&str; 9] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

fn special_ranges() -> impl Iterator<Item = Ipv4Network> {
    SPECIAL_RANGES
        .iter()
        .map(|r| r.parse().expect("a valid range"))
}

/// Why `ip` cannot be a node IP, if it cannot.
pub fn node_ip_problem(ip: Ipv4Addr) -> Option<String> {
    special_ranges()
        .find(|r| r.contains(ip))
        .map(|r| format!("node IP {ip} lies in the special-purpose range {r}"))
}

/// Why `cidr` cannot be a pod CIDR, if it cannot.
pub fn pod_cidr_problem(cidr: &IpNetwork) -> Option<String> {
    if cidr.ip() != cidr.network() {
        return Some(format!("pod CIDR {cidr} has host bits set"));
    }
    let IpNetwork::V4(v4) = cidr else {
        return None;
    };
    if v4.prefix() > 30 {
        return Some(format!("pod CIDR {cidr} is longer than /30"));
    }
    special_ranges()
        .find(|r| r.overlaps(*v4))
        .map(|r| format!("pod CIDR {cidr} overlaps the special-purpose range {r}"))
}

/// Why `ip` cannot be a node's IPv6 address, if it cannot (std's own
/// classification, independent of the model's table).
pub fn node_ip6_problem(ip: Ipv6Addr) -> Option<String> {
    let documentation = ip.segments()[..2] == [0x2001, 0x0db8];
    let special = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unicast_link_local()
        || ip.to_ipv4_mapped().is_some()
        || documentation;
    special.then(|| format!("node IP {ip} is a special-purpose IPv6 address"))
}

/// Every rule a set of nodes that a parser or store hands on must satisfy.
pub fn check_nodes(nodes: &[Node]) -> Result<(), String> {
    for (i, node) in nodes.iter().enumerate() {
        let problem = node.node_ip.and_then(node_ip_problem);
        if let Some(p) = problem.or_else(|| node.node_ip6.and_then(node_ip6_problem)) {
            return Err(format!("nodes[{i}] ({:?}): {p}", node.name));
        }
        if let Some(p) = node.pod_cidrs.iter().find_map(pod_cidr_problem) {
            return Err(format!("nodes[{i}] ({:?}): {p}", node.name));
        }
        let v4 = node.pod_cidrs.iter().filter(|c| c.is_ipv4()).count();
        if v4 > 1 || node.pod_cidrs.len() - v4 > 1 {
            return Err(format!("nodes[{i}] has more than one pod CIDR of a family"));
        }
        if node.v4().is_none() && node.v6().is_none() {
            return Err(format!(
                "nodes[{i}] has no family with an address and a pod CIDR"
            ));
        }
        // What was accepted once is accepted again from its own text.
        let cidrs: Vec<String> = node.pod_cidrs.iter().map(|c| c.to_string()).collect();
        let ips: Vec<String> = node.ips().map(|ip| ip.to_string()).collect();
        let again = Node::parse("again", &node.name, NodeIps::List(&ips), &cidrs)
            .map_err(|e| format!("nodes[{i}] does not validate again: {e}"))?;
        if &again != node {
            return Err(format!("nodes[{i}] re-parses as {again:?}, not {node:?}"));
        }
    }
    validate_nodes(nodes).map_err(|e| format!("cross-node checks fail on what was accepted: {e}"))
}

/// Every rule a parsed cluster file must satisfy.
pub fn check_cluster(c: &Cluster) -> Result<(), String> {
    check_nodes(&c.nodes)?;
    if let Some(mtu) = c.settings.mtu {
        if !(576..=65535).contains(&mtu) {
            return Err(format!("mtu {mtu} accepted (576..=65535)"));
        }
    }
    if let Some(vni) = c.settings.vxlan_vni {
        if !(1..=16_777_215).contains(&vni) {
            return Err(format!("vxlan.vni {vni} accepted (1..=16777215)"));
        }
    }
    if c.settings.vxlan_port == Some(0) {
        return Err("vxlan.port 0 accepted (1..=65535)".into());
    }
    if c.plan.generation == 0 || c.plan.generation > i64::MAX as u64 {
        return Err(format!(
            "generation {} accepted (1..=2^63-1)",
            c.plan.generation
        ));
    }
    for node in &c.nodes {
        let rfc1123 = node.name.len() <= 253
            && node.name.split('.').all(|label| {
                let ok = |ch: Option<char>| {
                    ch.is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                };
                ok(label.chars().next())
                    && ok(label.chars().last())
                    && label
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            });
        if !rfc1123 {
            return Err(format!(
                "node name {:?} accepted (an RFC 1123 subdomain)",
                node.name
            ));
        }
    }
    if !c.plan.decap.contains(&c.plan.route_mode) {
        return Err(format!("decap {:?} lacks the route mode", c.plan.decap));
    }
    Ok(())
}

/// An error from reading a cluster file: exit code 2, and a message that says
/// where (a field, or a line). `prefix` is what the field starts with for
/// `Cluster::load` (the path), empty for `Cluster::parse`.
pub fn check_cluster_error(e: &Error, prefix: &str) -> Result<(), String> {
    if e.exit_code() != 2 {
        return Err(format!("exit code {} for bad input: {e:?}", e.exit_code()));
    }
    let Error::Invalid { field, reason } = e else {
        return Err(format!("not Error::Invalid: {e:?}"));
    };
    // The whole file is the problem (not a regular file, too big, not
    // UTF-8): naming the file is naming the place.
    if !prefix.is_empty() && field == prefix.trim_end_matches(": ") {
        return Ok(());
    }
    let Some(field) = field.strip_prefix(prefix) else {
        return Err(format!("field {field:?} does not start with {prefix:?}"));
    };
    if names_a_place(field) || mentions_a_line(reason) {
        Ok(())
    } else {
        Err(format!(
            "the message names neither a field nor a line: {field:?}: {reason:?}"
        ))
    }
}

fn names_a_place(field: &str) -> bool {
    const TOP: [&str; 9] = [
        "mode",
        "offSubnet",
        "mtu",
        "generation",
        "decap",
        "vxlan",
        "vxlan.vni",
        "vxlan.port",
        "nodes",
    ];
    field.starts_with("nodes[") || TOP.contains(&field) || mentions_a_line(field)
}

fn mentions_a_line(text: &str) -> bool {
    text.split("line ")
        .skip(1)
        .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}
