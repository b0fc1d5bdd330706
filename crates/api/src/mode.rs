use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// A dataplane: how packets reach a peer's pod CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ipip,
    Vxlan,
    Native,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Ipip, Mode::Vxlan, Mode::Native];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Vxlan => "vxlan",
            Mode::Native => "native",
        }
    }

    /// Bytes the encapsulation adds to each IPv4 packet (0 for native).
    pub fn overhead(self) -> u32 {
        match self {
            Mode::Ipip => 20,
            Mode::Vxlan => 50,
            Mode::Native => 0,
        }
    }

    pub fn is_tunnel(self) -> bool {
        self != Mode::Native
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        let known = Mode::ALL.into_iter().find(|m| m.as_str() == s);
        known
            .ok_or_else(|| Invalid::new("mode", format!("{s:?} is not one of ipip, vxlan, native")))
    }
}

/// In native mode, what to do for a peer that is not on the uplink's subnet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffSubnet {
    /// Reach it through a tunnel, like Calico's CrossSubnet.
    #[default]
    Encap,
    /// Install nothing: the cloud's route table carries the pod CIDR.
    Underlay,
}

impl FromStr for OffSubnet {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "encap" => Ok(OffSubnet::Encap),
            "underlay" => Ok(OffSubnet::Underlay),
            other => Err(Invalid::new(
                "offSubnet",
                format!("{other:?} is not one of encap, underlay"),
            )),
        }
    }
}
