use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::api::{Mode, OffSubnet};
use crate::{Error, Result};

pub const DEFAULT_ROUTE_PROTOCOL: u8 = 91;
pub const MAIN_TABLE: u32 = 254;
pub const MIN_MTU: u32 = 576;

/// Reverse-path filter policy for the uplink and tunnel devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    /// Set loose mode (2): strict mode drops the reply leg while nodes disagree on the mode.
    #[default]
    Loose,
    /// Leave whatever the host has.
    Keep,
}

impl FromStr for RpFilter {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "loose" => Ok(RpFilter::Loose),
            "keep" => Ok(RpFilter::Keep),
            other => Err(Error::invalid(
                "rp-filter",
                format!("{other:?} is not one of loose, keep"),
            )),
        }
    }
}

/// Node-local settings: how and where podroute programs the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Protocol number that marks our routes and addresses as ours.
    pub route_protocol: u8,
    /// Route protocols whose routes are treated as ours (legacy cleanup).
    pub adopt_route_protocols: Vec<u8>,
    /// The cluster's pod network (Calico's IP pool, the controller manager's
    /// cluster CIDR): adopted routes are taken over only inside it, inside a
    /// node's pod CIDR, or on our devices.
    pub pod_network: Vec<IpNetwork>,
    pub route_table: u32,
    pub route_metric: u32,
    pub ipip_device: String,
    pub vxlan_device: String,
    /// The IPv6 VXLAN device, as Calico names it.
    pub vxlan6_device: String,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    /// MTU of the underlay path; `None` means the uplink's MTU.
    pub mtu: Option<u32>,
    pub rp_filter: RpFilter,
    pub off_subnet: OffSubnet,
    /// The tunnel native mode uses for off-subnet peers with `off_subnet: encap`.
    pub cross_subnet_tunnel: Mode,
    /// Where the pod MTU is written for the CNI plugin.
    pub mtu_file: PathBuf,
    /// The sysctl tree whose `net/` is this network namespace's: `/proc/sys`,
    /// or where a container mounts the node's /proc/sys/net under (its own
    /// /proc/sys is read-only).
    pub proc_sys: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            route_protocol: DEFAULT_ROUTE_PROTOCOL,
            adopt_route_protocols: Vec::new(),
            pod_network: Vec::new(),
            route_table: MAIN_TABLE,
            route_metric: 0,
            ipip_device: "tunl0".into(),
            vxlan_device: "vxlan.calico".into(),
            vxlan6_device: "vxlan-v6.calico".into(),
            vxlan_vni: 4096,
            vxlan_port: 4789,
            mtu: None,
            rp_filter: RpFilter::Loose,
            off_subnet: OffSubnet::Encap,
            cross_subnet_tunnel: Mode::Vxlan,
            mtu_file: PathBuf::from("/run/podroute/mtu"),
            proc_sys: PathBuf::from("/proc/sys"),
        }
    }
}

/// The kernel's and the admin's protocols (unspec, redirect, kernel, boot,
/// static), and router advertisements' (ra, 9): routes learned from RAs are
/// the host's own.
fn reserved_protocol(protocol: u8) -> bool {
    matches!(protocol, 0..=4 | 9)
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if reserved_protocol(self.route_protocol) {
            return Err(Error::invalid(
                "route-protocol",
                format!(
                    "{} is reserved for the kernel, admins and router advertisements (use 5-8 or 10-255)",
                    self.route_protocol
                ),
            ));
        }
        if self.adopt_route_protocols.contains(&self.route_protocol) {
            return Err(Error::invalid(
                "adopt-route-protocols",
                "lists our own route protocol",
            ));
        }
        if let Some(p) = self
            .adopt_route_protocols
            .iter()
            .find(|p| reserved_protocol(**p))
        {
            return Err(Error::invalid(
                "adopt-route-protocols",
                format!("{p} is the kernel's, the admin's or router advertisements'; it is never adopted"),
            ));
        }
        if matches!(self.route_table, 0 | 253 | 255) {
            return Err(Error::invalid(
                "route-table",
                format!(
                    "{} is reserved (unspec, default or local)",
                    self.route_table
                ),
            ));
        }
        super::settings::check_vni("vxlan-vni", self.vxlan_vni)?;
        if self.vxlan_port == 0 {
            return Err(Error::invalid("vxlan-port", "must not be 0"));
        }
        if self.cross_subnet_tunnel == Mode::Native {
            return Err(Error::invalid(
                "cross-subnet-tunnel",
                "must be ipip or vxlan",
            ));
        }
        for (field, name) in [
            ("ipip-device", &self.ipip_device),
            ("vxlan-device", &self.vxlan_device),
            ("vxlan6-device", &self.vxlan6_device),
        ] {
            validate_ifname(field, name)?;
        }
        for (field, name, other) in [
            ("vxlan-device", &self.vxlan_device, &self.ipip_device),
            ("vxlan6-device", &self.vxlan6_device, &self.ipip_device),
            ("vxlan6-device", &self.vxlan6_device, &self.vxlan_device),
        ] {
            if name == other {
                return Err(Error::invalid(
                    field,
                    format!("{name:?} is also another tunnel's device: each tunnel needs its own"),
                ));
            }
        }
        if let Some(mtu) = self.mtu {
            super::settings::check_mtu("mtu", mtu)?;
        }
        Ok(())
    }
}

pub fn validate_ifname(field: &str, name: &str) -> Result<()> {
    // The kernel's dev_valid_name(): 1..=15 bytes, no '/', ':' or
    // whitespace, not "." or "..".
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ':'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
        || name == "."
        || name == ".."
    {
        return Err(Error::invalid(
            field,
            format!("{name:?} is not a valid interface name"),
        ));
    }
    Ok(())
}

/// Route protocol by number or by its iproute2 name (`bird`, `80`).
pub fn parse_route_protocol(field: &str, text: &str) -> Result<u8> {
    const NAMES: &[(&str, u8)] = &[
        ("redirect", 1),
        ("kernel", 2),
        ("boot", 3),
        ("static", 4),
        ("gated", 8),
        ("ra", 9),
        ("mrt", 10),
        ("zebra", 11),
        ("bird", 12),
        ("dnrouted", 13),
        ("xorp", 14),
        ("ntk", 15),
        ("dhcp", 16),
        ("keepalived", 18),
        ("babel", 42),
        ("bgp", 186),
        ("isis", 187),
        ("ospf", 188),
        ("rip", 189),
        ("eigrp", 192),
    ];
    let text = text.trim();
    let number = match NAMES.iter().find(|(name, _)| *name == text) {
        Some((_, n)) => *n,
        None => text.parse::<u8>().map_err(|_| {
            Error::invalid(
                field,
                format!("{text:?} is neither a protocol number (0-255) nor a known name"),
            )
        })?,
    };
    Ok(number)
}

/// Parse `--adopt-route-protocols bird,80`. Kernel, boot and static routes
/// are never adopted: those are the host's own and the admin's.
pub fn parse_adopted_protocols(text: &str) -> Result<Vec<u8>> {
    let field = "adopt-route-protocols";
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = parse_route_protocol(field, part)?;
        if reserved_protocol(number) {
            return Err(Error::invalid(
                field,
                format!("{part:?} ({number}) is the kernel's, the admin's or router advertisements'; it is never adopted"),
            ));
        }
        if !out.contains(&number) {
            out.push(number);
        }
    }
    Ok(out)
}

/// Parse `--pod-network 10.244.0.0/16,fd00:244::/48`: networks of either
/// family without host bits.
pub fn parse_pod_network(text: &str) -> Result<Vec<IpNetwork>> {
    let field = "pod-network";
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let net: IpNetwork = part
            .parse()
            .map_err(|_| Error::invalid(field, format!("{part:?} is not a CIDR")))?;
        if net.ip() != net.network() {
            return Err(Error::invalid(
                field,
                format!(
                    "{part} has host bits set (network is {}/{})",
                    net.network(),
                    net.prefix()
                ),
            ));
        }
        if net.prefix() == 0 {
            return Err(Error::invalid(
                field,
                format!("{net} is everything, not a pod network"),
            ));
        }
        out.push(net);
    }
    Ok(out)
}
