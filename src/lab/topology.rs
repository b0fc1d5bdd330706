//! A virtual cluster in network namespaces, built with `ip`:
//!
//! ```text
//!  pod ns (eth0 10.244.N.2/32) ==veth== node ns `node-N` (podK, proxy_arp)
//!  node ns eth0 10.250.S.N/24 ==veth== underlay ns S (bridge br0)
//!  optional router ns: one leg per subnet bridge, 10.250.S.254, ip_forward=1
//! ```
//!
//! [`IpFamily::Dual`] adds IPv6 beside it, as Calico's CNI does: pod
//! `fd00:244:N::<k+2>/128` with its default route via `fe80::1`, which the node
//! side of the pod veth holds; uplinks `fd00:250:S::N/64`, router legs
//! `fd00:250:S::254/64`; every IPv6 address `nodad`. [`IpFamily::V6`] has
//! that IPv6 half alone: no IPv4 address, route or neighbour anywhere.
//!
//! Nothing is routed between pod CIDRs and node namespaces keep forwarding
//! off in both families: that is the engine's job. Everything lives in namespaces owned by the
//! [`Topology`] value and disappears when it is dropped; the host's own
//! interfaces, routes and sysctls are never touched.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::netns::{unique_name, Netns};
use crate::{Error, Result};

/// MAC of the node side of every pod veth (as Calico does); pods hold a
/// permanent neighbour entry 169.254.1.1 -> this MAC.
pub const POD_GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' next hop (Calico's link-local gateway).
pub const POD_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 next hop: the node side of every pod veth holds it.
pub const POD_GATEWAY_IP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Name of the node's uplink and of the pod's interface.
pub const UPLINK: &str = "eth0";

/// The IPv4 fields of [`NodeInfo`] and [`PodInfo`] in an IPv6-only lab: no
/// interface holds it (see [`NodeInfo::v4`] and [`PodInfo::ip4`]).
pub const NO_IPV4: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// The address families of the lab's nodes and pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IpFamily {
    #[default]
    V4,
    /// IPv6-only nodes and pods.
    V6,
    Dual,
}

impl IpFamily {
    pub fn has_v4(self) -> bool {
        self != IpFamily::V6
    }
    pub fn has_v6(self) -> bool {
        self != IpFamily::V4
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub netns: String,
    /// `10.244.<n>.<k+2>`; [`NO_IPV4`] in an IPv6-only lab.
    pub ip: Ipv4Addr,
    /// `fd00:244:<n>::<k+2>` in a dual-stack lab.
    pub ip6: Option<Ipv6Addr>,
    /// The node side of the pod veth, in the node namespace (`pod<k>`).
    pub host_veth: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Kubernetes-style node name, `node-<n>`.
    pub name: String,
    pub netns: String,
    /// `10.250.<subnet>.<n>`; [`NO_IPV4`] in an IPv6-only lab.
    pub ip: Ipv4Addr,
    /// `fd00:250:<subnet>::<n>` in a dual-stack or IPv6-only lab.
    pub ip6: Option<Ipv6Addr>,
    pub uplink: String,
    pub uplink_mtu: u32,
    /// e.g. 10.244.<n>.0/24; its .0 is the node's tunnel address, never a pod's.
    /// `NO_IPV4/32` in an IPv6-only lab.
    pub pod_cidr: Ipv4Network,
    /// `fd00:244:<n>::/64` in a dual-stack or IPv6-only lab.
    pub pod_cidr6: Option<Ipv6Network>,
    pub pods: Vec<PodInfo>,
}

impl NodeInfo {
    /// The node's IPv4 address and pod CIDR; None on an IPv6-only node.
    pub fn v4(&self) -> Option<(Ipv4Addr, Ipv4Network)> {
        (self.ip != NO_IPV4).then_some((self.ip, self.pod_cidr))
    }
}

impl PodInfo {
    /// The pod's IPv4 address; None in an IPv6-only lab.
    pub fn ip4(&self) -> Option<Ipv4Addr> {
        (self.ip != NO_IPV4).then_some(self.ip)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub index: u8,
    /// The underlay namespace holding bridge `br0`.
    pub netns: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterInfo {
    pub netns: String,
}

/// Builder for [`Topology`]. Node `n` (1-based, in the order added) gets
/// node IP `10.250.<subnet>.<n>/24` and pod CIDR `10.244.<n>.0/24`.
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    prefix: String,
    uplink_mtu: u32,
    pods_per_node: usize,
    router: bool,
    node_subnets: Vec<u8>,
    family: IpFamily,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            prefix: "pr".to_string(),
            uplink_mtu: 1500,
            pods_per_node: 1,
            router: false,
            node_subnets: Vec::new(),
            family: IpFamily::V4,
        }
    }
}

impl TopologyBuilder {
    /// Prefix of the namespace names (cut to keep names short).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }
    /// MTU of node uplinks, bridges and router legs; also the initial pod veth MTU.
    pub fn uplink_mtu(mut self, mtu: u32) -> Self {
        self.uplink_mtu = mtu;
        self
    }
    pub fn pods_per_node(mut self, pods: usize) -> Self {
        self.pods_per_node = pods;
        self
    }
    /// Adds a router namespace joining every subnet; nodes get a default route via it.
    pub fn router(mut self, router: bool) -> Self {
        self.router = router;
        self
    }
    /// IPv4 only (the default), IPv6 only or dual-stack nodes and pods.
    pub fn ip_family(mut self, family: IpFamily) -> Self {
        self.family = family;
        self
    }
    /// Adds one node on underlay subnet `subnet`.
    pub fn node(mut self, subnet: u8) -> Self {
        self.node_subnets.push(subnet);
        self
    }
    /// Adds `count` nodes on underlay subnet `subnet`.
    pub fn nodes(mut self, subnet: u8, count: usize) -> Self {
        self.node_subnets.extend(std::iter::repeat_n(subnet, count));
        self
    }

    pub fn build(self) -> Result<Topology> {
        self.validate()?;
        let mut topo = Topology {
            id: unique_name(&self.prefix),
            namespaces: Vec::new(),
            subnets: Vec::new(),
            router: None,
            nodes: Vec::new(),
        };
        let subnets: BTreeSet<u8> = self.node_subnets.iter().copied().collect();
        for &s in &subnets {
            self.add_subnet(&mut topo, s)?;
        }
        if self.router {
            self.add_router(&mut topo)?;
        }
        for (i, &s) in self.node_subnets.iter().enumerate() {
            self.add_node(&mut topo, i + 1, s)?;
        }
        Ok(topo)
    }

    fn validate(&self) -> Result<()> {
        if self.node_subnets.len() > 253 {
            return Err(Error::invalid("nodes", "at most 253 nodes"));
        }
        if self.pods_per_node > 253 {
            return Err(Error::invalid("pods_per_node", "at most 253 pods per node"));
        }
        if !(68..=65535).contains(&self.uplink_mtu) {
            return Err(Error::invalid("uplink_mtu", "must be within 68..=65535"));
        }
        if self.family.has_v6() && self.uplink_mtu < 1280 {
            return Err(Error::invalid("uplink_mtu", "IPv6 needs at least 1280"));
        }
        Ok(())
    }

    fn add_subnet(&self, topo: &mut Topology, s: u8) -> Result<()> {
        let name = self.create_ns(topo, &format!("u{s}"))?;
        let ns = topo.netns_by_name(&name)?;
        let mtu = self.uplink_mtu.to_string();
        ns.ip(&["link", "add", "br0", "mtu", &mtu, "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        topo.subnets.push(SubnetInfo {
            index: s,
            netns: name,
        });
        Ok(())
    }

    fn add_router(&self, topo: &mut Topology) -> Result<()> {
        let name = self.create_ns(topo, "rt")?;
        let ns = topo.netns_by_name(&name)?;
        if self.family.has_v4() {
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        if self.family.has_v6() {
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        for subnet in &topo.subnets {
            let leg = format!("s{}", subnet.index);
            let addr = Ipv4Addr::new(10, 250, subnet.index, 254);
            self.veth(ns, &leg, "rt", &subnet.netns)?;
            topo.netns_by_name(&subnet.netns)?
                .ip(&["link", "set", "rt", "master", "br0", "up"])?;
            if self.family.has_v4() {
                ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &leg])?;
            }
            if self.family.has_v6() {
                let addr6 = underlay6(subnet.index, 254);
                ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{addr6}/64"),
                    "dev",
                    &leg,
                    "nodad",
                ])?;
            }
            ns.ip(&["link", "set", &leg, "up"])?;
        }
        topo.router = Some(RouterInfo { netns: name });
        Ok(())
    }

    fn add_node(&self, topo: &mut Topology, n: usize, s: u8) -> Result<()> {
        let host = u8::try_from(n).map_err(|_| Error::invalid("nodes", "too many"))?;
        let node_ns = self.create_ns(topo, &format!("n{n}"))?;
        let ns = topo.netns_by_name(&node_ns)?;
        // A new namespace copies the host's ip_forward; start from a known 0
        // (in an IPv6-only lab too: that the agent leaves it at 0 is tested).
        ns.sysctl("net.ipv4.ip_forward", "0")?;
        if self.family.has_v6() {
            ns.sysctl("net.ipv6.conf.all.forwarding", "0")?;
        }
        ns.ip(&["link", "set", "lo", "up"])?;
        let underlay = topo.subnet_netns(s)?;
        let port = format!("n{n}");
        self.veth(ns, UPLINK, &port, &underlay)?;
        topo.netns_by_name(&underlay)?
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        let ip = match self.family.has_v4() {
            true => Ipv4Addr::new(10, 250, s, host),
            false => NO_IPV4,
        };
        if self.family.has_v4() {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", UPLINK])?;
        }
        let ip6 = self.family.has_v6().then(|| underlay6(s, host.into()));
        if let Some(ip6) = ip6 {
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                UPLINK,
                "nodad",
            ])?;
        }
        ns.ip(&["link", "set", UPLINK, "up"])?;
        if topo.router.is_some() {
            if self.family.has_v4() {
                let gw = Ipv4Addr::new(10, 250, s, 254).to_string();
                ns.ip(&["route", "add", "default", "via", &gw, "dev", UPLINK])?;
            }
            if ip6.is_some() {
                let gw6 = underlay6(s, 254).to_string();
                ns.ip(&["-6", "route", "add", "default", "via", &gw6, "dev", UPLINK])?;
            }
        }
        let pod_cidr = match self.family.has_v4() {
            true => Ipv4Network::new(Ipv4Addr::new(10, 244, host, 0), 24),
            false => Ipv4Network::new(NO_IPV4, 32),
        }
        .map_err(|e| Error::invalid("network", e.to_string()))?;
        let pod_cidr6 = match ip6 {
            Some(_) => Some(
                Ipv6Network::new(pod6(host, 0), 64)
                    .map_err(|e| Error::invalid("network", e.to_string()))?,
            ),
            None => None,
        };
        let mut pods = Vec::new();
        for k in 0..self.pods_per_node {
            let last =
                u8::try_from(k + 2).map_err(|_| Error::invalid("pods_per_node", "too many"))?;
            let ips = (
                self.family
                    .has_v4()
                    .then(|| Ipv4Addr::new(10, 244, host, last)),
                pod_cidr6.map(|_| pod6(host, last.into())),
            );
            pods.push(self.add_pod(topo, &node_ns, n, k, ips)?);
        }
        topo.nodes.push(NodeInfo {
            name: format!("node-{n}"),
            netns: node_ns,
            ip,
            ip6,
            uplink: UPLINK.to_string(),
            uplink_mtu: self.uplink_mtu,
            pod_cidr,
            pod_cidr6,
            pods,
        });
        Ok(())
    }

    fn add_pod(
        &self,
        topo: &mut Topology,
        node_ns: &str,
        n: usize,
        k: usize,
        (ip, ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ) -> Result<PodInfo> {
        let pod_ns = self.create_ns(topo, &format!("n{n}p{k}"))?;
        let pod = topo.netns_by_name(&pod_ns)?;
        let host_veth = format!("pod{k}");
        let mtu = self.uplink_mtu.to_string();
        pod.ip(&["link", "set", "lo", "up"])?;
        pod.ip(&[
            "link",
            "add",
            UPLINK,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            &host_veth,
            "mtu",
            &mtu,
            "address",
            POD_GATEWAY_MAC,
            "netns",
            node_ns,
        ])?;
        let node = topo.netns_by_name(node_ns)?;
        node.ip(&["link", "set", &host_veth, "up"])?;
        pod.ip(&["link", "set", UPLINK, "up"])?;
        if let Some(ip) = ip {
            add_pod_v4(node, pod, &host_veth, ip)?;
        }
        if let Some(ip6) = ip6 {
            add_pod_v6(node, pod, &host_veth, ip6)?;
        }
        Ok(PodInfo {
            netns: pod_ns,
            ip: ip.unwrap_or(NO_IPV4),
            ip6,
            host_veth,
        })
    }

    /// A namespace of the topology. With IPv6, its devices skip duplicate
    /// address detection: addresses are unique by construction, and a
    /// tentative link-local address loses the first packets after the
    /// build (seen as a lost first probe).
    fn create_ns(&self, topo: &mut Topology, role: &str) -> Result<String> {
        let name = topo.create_ns(role)?;
        if self.family.has_v6() {
            let ns = topo.netns_by_name(&name)?;
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        Ok(name)
    }

    /// A veth `local` in `ns` whose peer `peer` is created directly in `peer_ns`.
    fn veth(&self, ns: &Netns, local: &str, peer: &str, peer_ns: &str) -> Result<()> {
        let mtu = self.uplink_mtu.to_string();
        ns.ip(&[
            "link", "add", local, "mtu", &mtu, "type", "veth", "peer", "name", peer, "mtu", &mtu,
            "netns", peer_ns,
        ])?;
        Ok(())
    }
}

/// The IPv4 half of a pod, as Calico's CNI does it: the pod's default route
/// goes via `169.254.1.1`, a permanent neighbour at the node side's MAC,
/// which answers ARP by proxy.
fn add_pod_v4(node: &Netns, pod: &Netns, host_veth: &str, ip: Ipv4Addr) -> Result<()> {
    node.sysctl(&format!("net.ipv4.conf.{host_veth}.proxy_arp"), "1")?;
    pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", UPLINK])?;
    let gw = POD_GATEWAY_IP.to_string();
    pod.ip(&["route", "add", &gw, "dev", UPLINK, "scope", "link"])?;
    pod.ip(&["route", "add", "default", "via", &gw, "dev", UPLINK])?;
    pod.ip(&[
        "neigh",
        "replace",
        &gw,
        "lladdr",
        POD_GATEWAY_MAC,
        "dev",
        UPLINK,
        "nud",
        "permanent",
    ])?;
    // Default protocol (boot): foreign to the engine, like a CNI's route.
    node.ip(&[
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        host_veth,
        "scope",
        "link",
    ])?;
    Ok(())
}

/// The IPv6 half of a pod, as Calico's CNI does it: the node side of the veth
/// answers for `fe80::1`, the pod's default gateway, and holds a route to the
/// pod's /128 (no proxy NDP needed: the gateway is a real address there).
fn add_pod_v6(node: &Netns, pod: &Netns, host_veth: &str, ip6: Ipv6Addr) -> Result<()> {
    let gw = POD_GATEWAY_IP6.to_string();
    node.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{gw}/64"),
        "dev",
        host_veth,
        "nodad",
    ])?;
    pod.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ip6}/128"),
        "dev",
        UPLINK,
        "nodad",
    ])?;
    pod.ip(&["-6", "route", "add", "default", "via", &gw, "dev", UPLINK])?;
    // Default protocol (boot), like the IPv4 one: foreign to the engine.
    node.ip(&[
        "-6",
        "route",
        "add",
        &format!("{ip6}/128"),
        "dev",
        host_veth,
    ])?;
    Ok(())
}

/// `fd00:250:<subnet>::<host>`, a node's (or the router's) underlay address.
fn underlay6(subnet: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x250, subnet.into(), 0, 0, 0, 0, host)
}

/// `fd00:244:<node>::<host>`: node `node`'s IPv6 pod CIDR (host 0) and its pods.
fn pod6(node: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x244, node.into(), 0, 0, 0, 0, host)
}

/// The built cluster. Dropping it deletes all its namespaces (and with them
/// every veth, bridge and route inside).
#[derive(Debug)]
pub struct Topology {
    id: String,
    namespaces: Vec<Netns>,
    subnets: Vec<SubnetInfo>,
    router: Option<RouterInfo>,
    nodes: Vec<NodeInfo>,
}

impl Topology {
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// Common prefix of all namespace names of this topology.
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn router(&self) -> Option<&RouterInfo> {
        self.router.as_ref()
    }
    /// Names of all namespaces this topology owns.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }
    /// The handle of one of this topology's namespaces, by namespace name.
    pub fn netns(&self, netns: &str) -> Option<&Netns> {
        self.namespaces.iter().find(|n| n.name() == netns)
    }
    /// The namespace of node `node` (e.g. `node-1`).
    pub fn node_netns(&self, node: &str) -> Result<&Netns> {
        self.netns_by_name(&self.node_info(node)?.netns)
    }

    /// The nodes as podroute's model sees them.
    pub fn model_nodes(&self) -> Vec<crate::model::Node> {
        self.nodes
            .iter()
            .map(|n| crate::model::Node {
                name: n.name.clone(),
                node_ip: n.v4().map(|(ip, _)| ip),
                node_ip6: n.ip6,
                pod_cidrs: n
                    .v4()
                    .map(|(_, cidr)| cidr.into())
                    .into_iter()
                    .chain(n.pod_cidr6.map(Into::into))
                    .collect(),
            })
            .collect()
    }

    /// Leave every namespace in place (for inspection); returns their names.
    pub fn keep(&mut self) -> Vec<String> {
        let names = self.namespace_names();
        for ns in self.namespaces.drain(..) {
            ns.keep();
        }
        names
    }

    /// Sets the MTU of both ends of every pod veth on `node`.
    pub fn set_pod_mtu(&self, node: &str, mtu: u32) -> Result<()> {
        let info = self.node_info(node)?;
        let node_ns = self.netns_by_name(&info.netns)?;
        let mtu = mtu.to_string();
        for pod in &info.pods {
            node_ns.ip(&["link", "set", &pod.host_veth, "mtu", &mtu])?;
            self.netns_by_name(&pod.netns)?
                .ip(&["link", "set", UPLINK, "mtu", &mtu])?;
        }
        Ok(())
    }

    /// `net.ipv4.ip_forward=1` in `node` (the engine normally does this).
    pub fn enable_ip_forward(&self, node: &str) -> Result<()> {
        self.node_netns(node)?.sysctl("net.ipv4.ip_forward", "1")
    }

    /// Gives the router a route to every pod CIDR via its node, like a cloud
    /// route table (native mode `underlay`): in each family the lab has.
    pub fn add_router_pod_routes(&self) -> Result<()> {
        let router = self
            .router
            .as_ref()
            .ok_or_else(|| Error::invalid("topology", "has no router"))?;
        let ns = self.netns_by_name(&router.netns)?;
        for node in &self.nodes {
            if let Some((ip, cidr)) = node.v4() {
                let (cidr, ip) = (cidr.to_string(), ip.to_string());
                ns.ip(&["route", "replace", &cidr, "via", &ip])?;
            }
            if let (Some(cidr6), Some(ip6)) = (node.pod_cidr6, node.ip6) {
                let (cidr6, ip6) = (cidr6.to_string(), ip6.to_string());
                ns.ip(&["-6", "route", "replace", &cidr6, "via", &ip6])?;
            }
        }
        Ok(())
    }

    /// Creates `<id>-<role>`, owned by the topology; returns its name.
    fn create_ns(&mut self, role: &str) -> Result<String> {
        let ns = Netns::create(&format!("{}-{role}", self.id))?;
        let name = ns.name().to_string();
        self.namespaces.push(ns);
        Ok(name)
    }

    fn netns_by_name(&self, netns: &str) -> Result<&Netns> {
        self.netns(netns).ok_or_else(|| Error::Netns {
            name: netns.to_string(),
            reason: "not part of this topology".to_string(),
        })
    }

    fn node_info(&self, node: &str) -> Result<&NodeInfo> {
        self.node(node)
            .ok_or_else(|| Error::invalid("node", format!("no node named {node}")))
    }

    fn subnet_netns(&self, s: u8) -> Result<String> {
        self.subnets
            .iter()
            .find(|sub| sub.index == s)
            .map(|sub| sub.netns.clone())
            .ok_or_else(|| Error::invalid("subnet", format!("no underlay subnet {s}")))
    }
}
