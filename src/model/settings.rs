//! Cluster-wide settings: the ones that must agree on every node, so the
//! cluster (ClusterRouting spec or cluster file) sets them and they win over
//! node-local flags.

use serde::Serialize;

use super::{Config, OffSubnet, MIN_MTU};
use crate::{Error, Result};

/// The largest MTU an interface can have (IPv4's total length field).
pub const MAX_MTU: u32 = 65535;
/// VXLAN network identifiers are 24 bits; 0 is refused by common switches.
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub off_subnet: Option<OffSubnet>,
    /// Underlay MTU instead of the uplink's.
    pub mtu: Option<u32>,
    pub vxlan_vni: Option<u32>,
    pub vxlan_port: Option<u16>,
}

impl Settings {
    /// Each value alone; whether the MTU fits the uplink is the node's call.
    pub fn validate(&self) -> Result<()> {
        if let Some(mtu) = self.mtu {
            check_mtu("mtu", mtu)?;
        }
        if let Some(vni) = self.vxlan_vni {
            check_vni("vxlan.vni", vni)?;
        }
        if self.vxlan_port == Some(0) {
            return Err(Error::invalid("vxlan.port", "must not be 0"));
        }
        Ok(())
    }

    /// Cluster-wide settings win over node-local defaults and flags.
    pub fn apply_to(&self, config: &mut Config) {
        if let Some(v) = self.off_subnet {
            config.off_subnet = v;
        }
        if let Some(v) = self.mtu {
            config.mtu = Some(v);
        }
        if let Some(v) = self.vxlan_vni {
            config.vxlan_vni = v;
        }
        if let Some(v) = self.vxlan_port {
            config.vxlan_port = v;
        }
    }
}

pub fn check_mtu(field: &str, mtu: u32) -> Result<()> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(Error::invalid(
            field,
            format!("{mtu} is not in {MIN_MTU}..={MAX_MTU} (the IPv4 minimum to the largest MTU)"),
        ));
    }
    Ok(())
}

pub fn check_vni(field: &str, vni: u32) -> Result<()> {
    if !(1..=MAX_VNI).contains(&vni) {
        return Err(Error::invalid(
            field,
            format!("{vni} is not in 1..={MAX_VNI}"),
        ));
    }
    Ok(())
}
