use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The VTEP MAC of a node, derived from its name so every peer computes
    /// the same one and it survives restarts without an annotation. FNV-1a
    /// because it is fixed forever (std's hasher is not). Locally
    /// administered, unicast.
    pub fn for_node(name: &str) -> Mac {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // FNV alone barely moves the high bytes for names that differ in
        // their last character (node-2, node-3); finish with murmur3's fmix64.
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^= hash >> 33;
        let b = hash.to_be_bytes();
        Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }

    /// The MAC of a node's IPv6 VTEP: another than its IPv4 one, as the two
    /// devices share a VNI ('/' never occurs in a node name).
    pub fn for_node_v6(name: &str) -> Mac {
        Mac::for_node(&format!("{name}/ipv6"))
    }

    /// The link-local address the kernel gives a device with this MAC:
    /// `fe80::` and the modified EUI-64 (RFC 4291 appendix A).
    pub fn link_local(self) -> Ipv6Addr {
        let b = self.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            b[0] ^ 0x02,
            b[1],
            b[2],
            0xff,
            0xfe,
            b[3],
            b[4],
            b[5],
        ])
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::invalid("mac", format!("{s:?} is not a MAC address"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_the_kernels_eui64_address() {
        // Measured: a device with this MAC gets fe80::64bb:ff:fe00:2/64.
        let mac: Mac = "66:bb:00:00:00:02".parse().expect("mac");
        assert_eq!(mac.link_local().to_string(), "fe80::64bb:ff:fe00:2");
    }

    #[test]
    fn the_ipv6_vtep_has_its_own_mac() {
        assert_ne!(Mac::for_node_v6("node-1"), Mac::for_node("node-1"));
        assert_ne!(Mac::for_node_v6("node-1"), Mac::for_node_v6("node-2"));
        assert_eq!(Mac::for_node_v6("node-1").0[0] & 0x03, 0x02);
    }
}
