//! The one validator for node addresses and pod CIDRs. The IANA IPv4 and
//! IPv6 special-purpose registries (RFC 6890 and its successors) and the
//! multicast and reserved blocks say which addresses can never be a node's
//! or a pod's:
//! routing a pod CIDR there hijacks loopback, link-local, multicast or
//! broadcast traffic on every node, and such an address cannot be reached
//! across a network at all.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};

/// Blocks that are never a node or pod address, with why.
const SPECIAL: [([u8; 4], u8, &str); 9] = [
    ([0, 0, 0, 0], 8, "\"this network\" (RFC 791)"),
    ([127, 0, 0, 0], 8, "loopback (RFC 1122)"),
    ([169, 254, 0, 0], 16, "link-local (RFC 3927)"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments (RFC 6890)"),
    ([192, 0, 2, 0], 24, "documentation, TEST-NET-1 (RFC 5737)"),
    (
        [198, 51, 100, 0],
        24,
        "documentation, TEST-NET-2 (RFC 5737)",
    ),
    ([203, 0, 113, 0], 24, "documentation, TEST-NET-3 (RFC 5737)"),
    ([224, 0, 0, 0], 4, "multicast (RFC 5771)"),
    (
        [240, 0, 0, 0],
        4,
        "reserved (RFC 1112), with the limited broadcast 255.255.255.255",
    ),
];

/// The IPv6 blocks that are never a pod's, with why.
const SPECIAL_V6: [(&str, &str); 10] = [
    ("::/128", "the unspecified address (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("::ffff:0:0/96", "IPv4-mapped (RFC 4291)"),
    ("64:ff9b::/96", "IPv4/IPv6 translation (RFC 6052)"),
    (
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// IPv4 pod CIDRs need room for the tunnel address and pods.
pub const MAX_IPV4_POD_PREFIX: u8 = 30;
/// The same room in IPv6: the network address stays unused, as in IPv4.
pub const MAX_IPV6_POD_PREFIX: u8 = 126;

fn special() -> impl Iterator<Item = (Ipv4Network, &'static str)> {
    SPECIAL.iter().map(|(octets, prefix, why)| {
        let block = Ipv4Network::new(Ipv4Addr::from(*octets), *prefix)
            .expect("the special-purpose table holds valid prefixes");
        (block, *why)
    })
}

fn special_v6() -> impl Iterator<Item = (IpNetwork, &'static str)> {
    SPECIAL_V6
        .iter()
        .filter_map(|(b, why)| Some((b.parse().ok()?, *why)))
}

/// `ipv4` or `ipv6`, as podroute's output names the families.
pub fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// Why `ip` cannot be a node's address, if it cannot.
pub fn node_ip_problem(ip: IpAddr) -> Option<String> {
    let v4 = special().map(|(block, why)| (IpNetwork::V4(block), why));
    v4.chain(special_v6())
        .find(|(block, _)| block.contains(ip))
        .map(|(block, why)| format!("{ip} is in {block}, {why}; it cannot be a node address"))
}

/// Why `cidr` cannot be a pod CIDR, if it cannot: host bits set, too small,
/// or overlapping a special-purpose block of its family.
pub fn pod_cidr_problem(cidr: IpNetwork) -> Option<String> {
    if cidr.ip() != cidr.network() {
        return Some(format!(
            "{cidr} has host bits set (network is {}/{})",
            cidr.network(),
            cidr.prefix()
        ));
    }
    let max = match cidr {
        IpNetwork::V4(_) => MAX_IPV4_POD_PREFIX,
        IpNetwork::V6(_) => MAX_IPV6_POD_PREFIX,
    };
    if cidr.prefix() > max {
        return Some(format!("{cidr} leaves no room for pods (/{max} at most)"));
    }
    let v6 = special_v6().filter(|_| cidr.is_ipv6());
    special()
        .map(|(block, why)| (IpNetwork::V4(block), why))
        .chain(v6)
        // Two prefixes that overlap nest: one holds the other.
        .find(|(block, _)| block.contains(cidr.network()) || cidr.contains(block.network()))
        .map(|(block, why)| {
            let relation = if block.prefix() <= cidr.prefix() {
                "is in"
            } else {
                "holds"
            };
            format!("{cidr} {relation} {block}, {why}; pods cannot live there")
        })
}

/// Why `cidr` cannot be routed by a node whose underlay subnet is `underlay`
/// (the uplink's address and prefix): its hosts would be taken from the
/// underlay, or the underlay from its pods.
pub fn underlay_problem(cidr: IpNetwork, underlay: IpNetwork) -> Option<String> {
    let subnet = IpNetwork::new(underlay.network(), underlay.prefix()).ok()?;
    // Two prefixes of one family that overlap nest: one holds the other.
    let overlaps = subnet.contains(cidr.network()) || cidr.contains(subnet.network());
    overlaps.then(|| {
        format!("{cidr} overlaps the underlay subnet {subnet} of this node; routing it would cut off underlay hosts")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> IpNetwork {
        text.parse().expect("cidr")
    }

    #[test]
    fn special_purpose_node_addresses_are_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "169.254.1.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            let ip: Ipv4Addr = ip.parse().expect("ip");
            assert!(node_ip_problem(ip.into()).is_some(), "{ip} accepted");
        }
        for ip in [
            "10.250.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "198.18.0.1",
            "8.8.8.8",
            "192.0.3.1",
            "223.255.255.254",
        ] {
            let ip: Ipv4Addr = ip.parse().expect("ip");
            assert_eq!(node_ip_problem(ip.into()), None, "{ip} refused");
        }
    }

    #[test]
    fn pod_cidrs_must_not_touch_special_blocks() {
        for bad in [
            "127.0.0.0/8",
            "0.0.0.0/8",
            "0.0.0.0/0",
            "96.0.0.0/3",
            "224.0.0.0/4",
            "239.1.2.0/24",
            "169.254.0.0/16",
            "240.0.0.0/24",
            "255.255.255.0/24",
            "192.0.0.0/16",
            "10.244.1.1/24",
            "10.244.1.0/31",
        ] {
            assert!(pod_cidr_problem(cidr(bad)).is_some(), "{bad} accepted");
        }
        for good in [
            "10.244.0.0/16",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "198.18.0.0/15",
            "10.244.1.0/30",
        ] {
            assert_eq!(pod_cidr_problem(cidr(good)), None, "{good} refused");
        }
    }

    #[test]
    fn ipv6_pod_cidrs_must_not_touch_special_blocks() {
        for (bad, why) in [
            ("::/0", "holds ::/128"),
            ("::/64", "holds ::/128"),
            ("::1/128", "no room"),
            ("::/127", "no room"),
            ("::ffff:10.244.0.0/120", "IPv4-mapped"),
            ("64:ff9b::/96", "translation"),
            ("100::/64", "discard-only"),
            ("2001:db8:1::/64", "documentation"),
            ("3fff:1::/64", "documentation"),
            ("fe80::/64", "link-local"),
            ("ff02::/16", "multicast"),
            ("fd00:10:244:1::1/64", "host bits"),
            ("fd00:10:244:1::/127", "no room"),
        ] {
            let problem = pod_cidr_problem(bad.parse().expect("cidr")).unwrap_or_default();
            assert!(problem.contains(why), "{bad}: {problem:?}");
        }
        for good in [
            "fd00:10:244:1::/64",
            "2a01:4f8::/48",
            "fd00::/8",
            "fd00::/126",
        ] {
            let cidr: IpNetwork = good.parse().expect("cidr");
            assert_eq!(pod_cidr_problem(cidr), None, "{good} refused");
        }
    }

    #[test]
    fn a_pod_cidr_in_the_underlay_subnet_is_refused() {
        let uplink = cidr("10.250.0.1/24");
        let problem = underlay_problem(cidr("10.250.0.128/25"), uplink).expect("overlap");
        assert!(problem.contains("10.250.0.0/24"), "{problem}");
        assert!(underlay_problem(cidr("10.250.0.0/16"), uplink).is_some());
        assert_eq!(underlay_problem(cidr("10.244.1.0/24"), uplink), None);
        let uplink6 = cidr("fd00:250::1/64");
        assert!(underlay_problem(cidr("fd00:250::/112"), uplink6).is_some());
        assert!(underlay_problem(cidr("fd00::/16"), uplink6).is_some());
        assert_eq!(underlay_problem(cidr("fd00:244:1::/64"), uplink6), None);
        assert_eq!(underlay_problem(cidr("10.250.0.0/24"), uplink6), None);
    }
}
