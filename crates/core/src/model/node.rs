use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::Serialize;

use super::address;
use crate::{Error, Result};

/// A Kubernetes node as podroute sees it: a name, the addresses peers
/// reach it on, and its pod CIDRs, at most one of each per family. It routes
/// each family it has both an address and a pod CIDR of ([`Node::v4`],
/// [`Node::v6`]), one at least; half a family is kept, unrouted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ip6: Option<Ipv6Addr>,
    pub pod_cidrs: Vec<IpNetwork>,
}

/// Where a node's addresses came from, so errors name the field the user
/// wrote: a single `ip`, or the list `ips`.
#[derive(Debug, Clone, Copy)]
pub enum NodeIps<'a> {
    One(Option<&'a str>),
    List(&'a [String]),
}

impl Node {
    /// Build a node from untrusted strings; `field` names the node in errors
    /// (e.g. `nodes[2]`; empty: the fields are named alone, `ip`, `podCIDRs[0]`).
    pub fn parse(field: &str, name: &str, ips: NodeIps<'_>, pod_cidrs: &[String]) -> Result<Node> {
        if let Some(problem) = name_problem(name) {
            return Err(Error::invalid(at(field, "name"), problem));
        }
        let (node_ip, node_ip6) = parse_ips(field, ips)?;
        let pod_cidrs = parse_pod_cidrs(field, pod_cidrs)?;
        let node = Node {
            name: name.to_string(),
            node_ip,
            node_ip6,
            pod_cidrs,
        };
        if node.v4().is_none() && node.v6().is_none() {
            let families = |v4: bool, v6: bool| match (v4, v6) {
                (true, true) => "IPv4 and IPv6",
                (true, false) => "IPv4",
                (false, true) => "IPv6",
                (false, false) => "no family",
            };
            let ips = families(node.node_ip.is_some(), node.node_ip6.is_some());
            let cidrs = families(node.pod_cidr().is_some(), node.pod_cidr6().is_some());
            return Err(Error::invalid(
                at(field, "podCIDRs"),
                format!(
                    "pod CIDRs of {cidrs} but addresses of {ips}: no family has both, nothing to route"
                ),
            ));
        }
        Ok(node)
    }

    /// Its node addresses, IPv4 first.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + Clone {
        [
            self.node_ip.map(IpAddr::from),
            self.node_ip6.map(IpAddr::from),
        ]
        .into_iter()
        .flatten()
    }

    pub fn pod_cidr(&self) -> Option<Ipv4Network> {
        self.pod_cidrs.iter().find_map(|c| match c {
            IpNetwork::V4(v4) => Some(*v4),
            IpNetwork::V6(_) => None,
        })
    }

    /// The IPv4 address and pod CIDR, when the node routes IPv4.
    pub fn v4(&self) -> Option<(Ipv4Addr, Ipv4Network)> {
        Some((self.node_ip?, self.pod_cidr()?))
    }

    pub fn pod_cidr6(&self) -> Option<Ipv6Network> {
        self.pod_cidrs.iter().find_map(|c| match c {
            IpNetwork::V6(v6) => Some(*v6),
            IpNetwork::V4(_) => None,
        })
    }

    /// The IPv6 address and pod CIDR, when the node routes IPv6.
    pub fn v6(&self) -> Option<(Ipv6Addr, Ipv6Network)> {
        Some((self.node_ip6?, self.pod_cidr6()?))
    }

    /// The node's IPv4 tunnel address: the network address of its pod CIDR,
    /// as flannel does. It sits as a /32 on the tunnel device and is the VTEP IP.
    pub fn tunnel_ip(&self) -> Option<Ipv4Addr> {
        Some(self.pod_cidr()?.network())
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

fn parse_ips(field: &str, ips: NodeIps<'_>) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let named = |i: usize| match ips {
        NodeIps::One(_) => at(field, "ip"),
        NodeIps::List(_) => format!("{}[{i}]", at(field, "ips")),
    };
    let list: Vec<&str> = match ips {
        NodeIps::One(ip) => ip.into_iter().collect(),
        NodeIps::List(list) => list.iter().map(String::as_str).collect(),
    };
    let (mut v4, mut v6) = (None, None);
    for (i, text) in list.iter().enumerate() {
        let ip = text
            .parse::<IpAddr>()
            .map_err(|_| Error::invalid(named(i), format!("{text:?} is not an IP address")))?;
        if let Some(problem) = address::node_ip_problem(ip) {
            return Err(Error::invalid(named(i), problem));
        }
        let taken = match ip {
            IpAddr::V4(ip) => v4.replace(ip).is_some(),
            IpAddr::V6(ip) => v6.replace(ip).is_some(),
        };
        if taken {
            return Err(Error::invalid(
                named(i),
                format!("{ip} is a second address of its family; give one per family"),
            ));
        }
    }
    if list.is_empty() {
        return Err(Error::invalid(named(0), "missing node IP"));
    }
    Ok((v4, v6))
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
    match (cidrs.iter().filter(|c| c.is_ipv4()).count(), cidrs.len()) {
        (n, _) if n > 1 => Err(Error::invalid(list, "more than one IPv4 pod CIDR")),
        (0, 2) => Err(Error::invalid(list, "more than one IPv6 pod CIDR")),
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
    let nodes: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
    let ips: BTreeMap<u32, &str> = nodes
        .iter()
        .filter_map(|n| Some((u32::from(n.node_ip?), n.name.as_str())))
        .collect();
    let ips6: BTreeMap<u128, &str> = nodes
        .iter()
        .filter_map(|n| Some((u128::from(n.node_ip6?), n.name.as_str())))
        .collect();
    let mut names: HashSet<&str> = HashSet::with_capacity(nodes.len());
    let mut taken_ips: HashMap<IpAddr, &str> = HashMap::with_capacity(nodes.len());
    // Kept pod CIDRs, disjoint: first address -> (CIDR, node name).
    let mut cidrs: BTreeMap<u32, (Ipv4Network, &str)> = BTreeMap::new();
    let mut cidrs6: BTreeMap<u128, (Ipv6Network, &str)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let cidr = node.pod_cidr();
        let cidr6 = node.pod_cidr6();
        let range = cidr.map(|c| (u32::from(c.network()), u32::from(c.broadcast())));
        let overlapping = cidr.zip(range).and_then(|(c, (start, end))| {
            let (_, (other, name)) = cidrs.range(..=end).next_back()?;
            let overlaps = u32::from(other.broadcast()) >= start;
            overlaps.then(|| format!("{c} overlaps {other} of node {name:?}"))
        });
        let overlapping6 = cidr6.and_then(|c6| {
            let (_, (other, name)) = cidrs6.range(..=last_of(c6)).next_back()?;
            let overlaps = last_of(*other) >= u128::from(c6.network());
            overlaps.then(|| format!("{c6} overlaps {other} of node {name:?}"))
        });
        let swallowed = cidr.zip(range).and_then(|(c, (start, end))| {
            let (ip, victim) = ips.range(start..=end).next()?;
            Some((c.to_string(), IpAddr::from(Ipv4Addr::from(*ip)), *victim))
        });
        let swallowed6 = cidr6.and_then(|c6| {
            let (ip, victim) = ips6.range(u128::from(c6.network())..=last_of(c6)).next()?;
            Some((c6.to_string(), IpAddr::from(Ipv6Addr::from(*ip)), *victim))
        });
        let own_ips = node.ips();
        let clash = if names.contains(node.name.as_str()) {
            Some(("name", format!("duplicate node name {:?}", node.name)))
        } else if let Some((ip, other)) = own_ips
            .clone()
            .find_map(|ip| Some((ip, taken_ips.get(&ip)?)))
        {
            Some(("ip", format!("{ip} is also the address of node {other:?}")))
        } else if let Some(reason) = overlapping.or(overlapping6) {
            Some(("podCIDRs", reason))
        } else {
            swallowed.or(swallowed6).map(|(cidr, ip, victim)| {
                (
                    "podCIDRs",
                    format!(
                        "{cidr} contains the node IP {ip} of {victim:?}; routing it would cut that node off"
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
                taken_ips.extend(own_ips.map(|ip| (ip, node.name.as_str())));
                if let Some((c, (start, _))) = cidr.zip(range) {
                    cidrs.insert(start, (c, &node.name));
                }
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
