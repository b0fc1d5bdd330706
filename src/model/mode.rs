use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

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
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ipip" => Ok(Mode::Ipip),
            "vxlan" => Ok(Mode::Vxlan),
            "native" => Ok(Mode::Native),
            other => Err(Error::invalid(
                "mode",
                format!("{other:?} is not one of ipip, vxlan, native"),
            )),
        }
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
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "encap" => Ok(OffSubnet::Encap),
            "underlay" => Ok(OffSubnet::Underlay),
            other => Err(Error::invalid(
                "offSubnet",
                format!("{other:?} is not one of encap, underlay"),
            )),
        }
    }
}

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
