//! Cluster-wide settings: the ones that must agree on every node, so the
//! cluster (ClusterRouting spec or cluster file) sets them and they win over
//! node-local flags.

use serde::Serialize;

use super::{Config, MIN_MTU};
use crate::api::{ClusterRoutingSpec, Mtu, OffSubnet, VxlanSpec};
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
    /// The settings of a cluster file or a ClusterRouting spec, validated.
    pub fn from_wire(
        off_subnet: Option<OffSubnet>,
        mtu: Option<u32>,
        vxlan: Option<&VxlanSpec>,
    ) -> Result<Settings> {
        let settings = Settings {
            off_subnet,
            mtu,
            vxlan_vni: vxlan.and_then(|v| v.vni),
            vxlan_port: vxlan.and_then(|v| v.port),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The settings agents take from the ClusterRouting spec (`mtu: auto`
    /// is the uplink's, as when absent).
    pub fn of_spec(spec: &ClusterRoutingSpec) -> Result<Settings> {
        let mtu = match spec.mtu {
            Some(Mtu::Bytes(n)) => Some(n),
            Some(Mtu::Auto) | None => None,
        };
        let off_subnet = spec.native.as_ref().and_then(|n| n.off_subnet);
        Settings::from_wire(off_subnet, mtu, spec.vxlan.as_ref())
    }

    /// Each value alone; whether the MTU fits the uplink is the node's call.
    fn validate(&self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_gives_settings() {
        let spec: ClusterRoutingSpec = serde_json::from_value(serde_json::json!({
            "mode": "native",
            "native": {"offSubnet": "underlay"},
            "mtu": 1400,
            "vxlan": {"vni": 7, "port": 8472},
            "rollout": {"nodeTimeout": "5m", "notReadyPolicy": "Skip"},
        }))
        .unwrap();
        assert_eq!(
            Settings::of_spec(&spec).unwrap(),
            Settings {
                off_subnet: Some(OffSubnet::Underlay),
                mtu: Some(1400),
                vxlan_vni: Some(7),
                vxlan_port: Some(8472),
            }
        );
        let auto: ClusterRoutingSpec =
            serde_json::from_value(serde_json::json!({"mode": "vxlan", "mtu": "auto"})).unwrap();
        assert_eq!(Settings::of_spec(&auto).unwrap(), Settings::default());
    }
}
