use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;

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
    /// (e.g. `nodes[2]`).
    pub fn parse(field: &str, name: &str, ip: Option<&str>, pod_cidrs: &[String]) -> Result<Node> {
        if name.is_empty() {
            return Err(Error::invalid(format!("{field}.name"), "must not be empty"));
        }
        let ip = ip.ok_or_else(|| Error::invalid(format!("{field}.ip"), "missing node IP"))?;
        let node_ip = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4,
            Ok(IpAddr::V6(_)) => {
                return Err(Error::invalid(
                    format!("{field}.ip"),
                    format!("{ip} is IPv6; an IPv4 node address is expected"),
                ))
            }
            Err(_) => {
                return Err(Error::invalid(
                    format!("{field}.ip"),
                    format!("{ip:?} is not an IP address"),
                ))
            }
        };
        if node_ip.is_unspecified() || node_ip.is_loopback() || node_ip.is_multicast() {
            return Err(Error::invalid(
                format!("{field}.ip"),
                format!("{node_ip} cannot be a node address"),
            ));
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

fn parse_pod_cidrs(field: &str, raw: &[String]) -> Result<Vec<IpNetwork>> {
    if raw.is_empty() {
        return Err(Error::invalid(
            format!("{field}.podCIDRs"),
            "missing pod CIDR",
        ));
    }
    if raw.len() > 2 {
        return Err(Error::invalid(
            format!("{field}.podCIDRs"),
            "at most two pod CIDRs (one IPv4, one IPv6)",
        ));
    }
    let mut cidrs = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let f = format!("{field}.podCIDRs[{i}]");
        let cidr: IpNetwork = text
            .parse()
            .map_err(|_| Error::invalid(&f, format!("{text:?} is not a CIDR")))?;
        if cidr.ip() != cidr.network() {
            return Err(Error::invalid(
                &f,
                format!(
                    "{text} has host bits set (network is {}/{})",
                    cidr.network(),
                    cidr.prefix()
                ),
            ));
        }
        if let IpNetwork::V4(v4) = cidr {
            if v4.prefix() > 30 {
                return Err(Error::invalid(
                    &f,
                    format!("{text} leaves no room for pods (/30 at most)"),
                ));
            }
        }
        cidrs.push(cidr);
    }
    match (cidrs.first(), cidrs.iter().filter(|c| c.is_ipv4()).count()) {
        (Some(IpNetwork::V6(first)), _) => Err(Error::invalid(
            format!("{field}.podCIDRs[0]"),
            format!("{first} is IPv6; an IPv4 pod CIDR is expected first"),
        )),
        (_, n) if n > 1 => Err(Error::invalid(
            format!("{field}.podCIDRs"),
            "more than one IPv4 pod CIDR",
        )),
        _ => Ok(cidrs),
    }
}

/// Cross-node checks: unique names and IPs, no overlapping pod CIDRs, no pod
/// CIDR that swallows a node address (it would hijack the underlay).
pub fn validate_nodes(nodes: &[Node]) -> Result<()> {
    let mut names = HashSet::new();
    let mut ips: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if !names.insert(node.name.as_str()) {
            return Err(Error::invalid(
                format!("nodes[{i}].name"),
                format!("duplicate node name {:?}", node.name),
            ));
        }
        if let Some(first) = ips.insert(node.node_ip, i) {
            return Err(Error::invalid(
                format!("nodes[{i}].ip"),
                format!("{} is also the address of nodes[{first}]", node.node_ip),
            ));
        }
    }
    for (i, a) in nodes.iter().enumerate() {
        let cidr = a.pod_cidr();
        for (j, b) in nodes.iter().enumerate().skip(i + 1) {
            if cidr.overlaps(b.pod_cidr()) {
                return Err(Error::invalid(
                    format!("nodes[{j}].podCIDRs"),
                    format!("{} overlaps {} of node {:?}", b.pod_cidr(), cidr, a.name),
                ));
            }
        }
        if let Some(victim) = nodes.iter().find(|n| cidr.contains(n.node_ip)) {
            return Err(Error::invalid(
                format!("nodes[{i}].podCIDRs"),
                format!(
                    "{cidr} contains the node IP {} of {:?}; routing it would cut that node off",
                    victim.node_ip, victim.name
                ),
            ));
        }
    }
    Ok(())
}
