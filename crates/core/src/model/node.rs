use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::Serialize;

use super::address;
use crate::{Error, Result};

/// A Kubernetes node as podroute sees it: a name, the IPv4 address peers
/// reach it on, and its pod CIDR(s). IPv6 pod CIDRs are accepted and kept,
/// but only the IPv4 one is routed for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidrs: Vec<IpNetwork>,
}

impl Node {
    /// Build a node from untrusted strings; `field` names the node in errors
    /// (e.g. `nodes[2]`; empty: the fields are named alone, `ip`, `podCIDRs[0]`).
    pub fn parse(field: &str, name: &str, ip: Option<&str>, pod_cidrs: &[String]) -> Result<Node> {
        if let Some(problem) = name_problem(name) {
            return Err(Error::invalid(at(field, "name"), problem));
        }
        let ip_field = at(field, "ip");
        let ip = ip.ok_or_else(|| Error::invalid(&ip_field, "missing node IP"))?;
        let node_ip = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4,
            Ok(IpAddr::V6(_)) => {
                return Err(Error::invalid(
                    ip_field,
                    format!("{ip} is IPv6; an IPv4 node address is expected"),
                ))
            }
            Err(_) => {
                return Err(Error::invalid(
                    ip_field,
                    format!("{ip:?} is not an IP address"),
                ))
            }
        };
        if let Some(problem) = address::node_ip_problem(node_ip) {
            return Err(Error::invalid(ip_field, problem));
        }
        let pod_cidrs = parse_pod_cidrs(field, pod_cidrs)?;
        Ok(Node {
            name: name.to_string(),
            node_ip,
            pod_cidrs,
        })
    }

    /// The IPv4 pod CIDR. Validated nodes always have exactly one.
    pub fn pod_cidr(&self) -> Ipv4Network {
        self.pod_cidrs
            .iter()
            .find_map(|c| match c {
                IpNetwork::V4(v4) => Some(*v4),
                IpNetwork::V6(_) => None,
            })
            .unwrap_or_else(|| Ipv4Network::from(Ipv4Addr::UNSPECIFIED))
    }

    /// The node's tunnel address: the network address of its pod CIDR, as
    /// flannel does. It sits as a /32 on the tunnel device and is the VTEP IP.
    pub fn tunnel_ip(&self) -> Ipv4Addr {
        self.pod_cidr().network()
    }
}

impl AsRef<Node> for Node {
    fn as_ref(&self) -> &Node {
        self
    }
}

/// Why `name` cannot be a node's name: Kubernetes names nodes with an
/// RFC 1123 subdomain (lowercase letters, digits, `-` and `.`, starting and
/// ending with a letter or digit, at most 253 characters), and podroute puts
/// it in MACs, log lines and Events.
fn name_problem(name: &str) -> Option<String> {
    const MAX: usize = 253;
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX {
        return Some(format!("is {} characters long, over {MAX}", name.len()));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let labels_ok = name
        .split('.')
        .all(|l| !l.is_empty() && ends_ok(l.chars().next()) && ends_ok(l.chars().last()));
    (!name.chars().all(allowed) || !labels_ok).then(|| {
        format!(
            "{:?} is not a node name (an RFC 1123 subdomain: lowercase letters, digits, '-' and '.')",
            name.chars().take(64).collect::<String>()
        )
    })
}

/// `sub` of the node named by `field` (`nodes[2].ip`, or `ip` alone).
fn at(field: &str, sub: &str) -> String {
    if field.is_empty() {
        sub.to_string()
    } else {
        format!("{field}.{sub}")
    }
}

fn parse_pod_cidrs(field: &str, raw: &[String]) -> Result<Vec<IpNetwork>> {
    let list = at(field, "podCIDRs");
    if raw.is_empty() {
        return Err(Error::invalid(list, "missing pod CIDR"));
    }
    if raw.len() > 2 {
        return Err(Error::invalid(
            list,
            "at most two pod CIDRs (one IPv4, one IPv6)",
        ));
    }
    let mut cidrs = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let f = format!("{list}[{i}]");
        let cidr: IpNetwork = text
            .parse()
            .map_err(|_| Error::invalid(&f, format!("{text:?} is not a CIDR")))?;
        if let Some(problem) = address::pod_cidr_problem(cidr) {
            return Err(Error::invalid(&f, problem));
        }
        cidrs.push(cidr);
    }
    match (cidrs.first(), cidrs.iter().filter(|c| c.is_ipv4()).count()) {
        (Some(IpNetwork::V6(first)), _) => Err(Error::invalid(
            format!("{list}[0]"),
            format!("{first} is IPv6; an IPv4 pod CIDR is expected first"),
        )),
        (_, n) if n > 1 => Err(Error::invalid(list, "more than one IPv4 pod CIDR")),
        _ => Ok(cidrs),
    }
}

/// A node that clashes with an earlier one: which of its fields, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Position of the node in the list checked.
    pub index: usize,
    /// `name`, `ip` or `podCIDRs`.
    pub field: &'static str,
    pub reason: String,
}

/// Cross-node checks, in list order: a node clashes when its name or IP is
/// already taken by a node kept before it, its pod CIDR (of either family)
/// overlaps one kept before it, or its pod CIDR holds any node's IP (routing it would cut that
/// node off). Clashing nodes are not kept, so one bad node never takes a good
/// one down with it. O(n log n): a cluster of 100 000 nodes checks in
/// milliseconds.
pub fn cross_node_conflicts<N: AsRef<Node>>(nodes: &[N]) -> Vec<Conflict> {
    let ips: BTreeMap<u32, &str> = nodes
        .iter()
        .map(|n| (u32::from(n.as_ref().node_ip), n.as_ref().name.as_str()))
        .collect();
    let mut names: HashSet<&str> = HashSet::with_capacity(nodes.len());
    let mut taken_ips: HashMap<Ipv4Addr, &str> = HashMap::with_capacity(nodes.len());
    // Kept pod CIDRs, disjoint: first address -> (last address, node name).
    let mut cidrs: BTreeMap<u32, (u32, &str)> = BTreeMap::new();
    let mut cidrs6: BTreeMap<u128, (Ipv6Network, &str)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (index, node) in nodes.iter().map(AsRef::as_ref).enumerate() {
        let cidr = node.pod_cidr();
        let (start, end) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
        let overlapping = cidrs
            .range(..=end)
            .next_back()
            .filter(|(_, (other_end, _))| *other_end >= start);
        let swallowed = ips.range(start..=end).next();
        let cidr6 = node.pod_cidrs.iter().find_map(|c| match c {
            IpNetwork::V6(v6) => Some(*v6),
            IpNetwork::V4(_) => None,
        });
        let overlapping6 = cidr6.and_then(|c6| {
            let (_, (other, name)) = cidrs6.range(..=last_of(c6)).next_back()?;
            let overlaps = last_of(*other) >= u128::from(c6.network());
            overlaps.then(|| format!("{c6} overlaps {other} of node {name:?}"))
        });
        let clash = if names.contains(node.name.as_str()) {
            Some(("name", format!("duplicate node name {:?}", node.name)))
        } else if let Some(other) = taken_ips.get(&node.node_ip) {
            Some((
                "ip",
                format!("{} is also the address of node {other:?}", node.node_ip),
            ))
        } else if let Some((other_start, (other_end, other))) = overlapping {
            let other_cidr = Ipv4Network::new(
                Ipv4Addr::from(*other_start),
                prefix_of(*other_start, *other_end),
            )
            .map_or_else(|_| "its pod CIDR".to_string(), |c| c.to_string());
            Some((
                "podCIDRs",
                format!("{cidr} overlaps {other_cidr} of node {other:?}"),
            ))
        } else if let Some(reason) = overlapping6 {
            Some(("podCIDRs", reason))
        } else {
            swallowed.map(|(ip, victim)| {
                (
                    "podCIDRs",
                    format!(
                        "{cidr} contains the node IP {} of {victim:?}; routing it would cut that node off",
                        Ipv4Addr::from(*ip)
                    ),
                )
            })
        };
        match clash {
            Some((field, reason)) => conflicts.push(Conflict {
                index,
                field,
                reason,
            }),
            None => {
                names.insert(&node.name);
                taken_ips.insert(node.node_ip, &node.name);
                cidrs.insert(start, (end, &node.name));
                if let Some(c6) = cidr6 {
                    cidrs6.insert(u128::from(c6.network()), (c6, &node.name));
                }
            }
        }
    }
    conflicts
}

/// The last address of `net`, as a number.
fn last_of(net: Ipv6Network) -> u128 {
    u128::from(net.network()) | u128::MAX.checked_shr(u32::from(net.prefix())).unwrap_or(0)
}

/// The prefix length of the block `start..=end` (a CIDR's range).
fn prefix_of(start: u32, end: u32) -> u8 {
    (32 - (end - start)
        .checked_add(1)
        .map_or(32, |size| size.trailing_zeros())) as u8
}

/// [`cross_node_conflicts`] as one error: the first clash, naming the field
/// of the node in a cluster file (`nodes[3].podCIDRs`).
pub fn validate_nodes(nodes: &[Node]) -> Result<()> {
    match cross_node_conflicts(nodes).into_iter().next() {
        None => Ok(()),
        Some(c) => Err(Error::invalid(
            format!("nodes[{}].{}", c.index, c.field),
            c.reason,
        )),
    }
}
