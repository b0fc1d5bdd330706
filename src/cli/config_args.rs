//! Node-local flags shared by the commands that touch the kernel.

use std::path::PathBuf;

use crate::api::{Mode, OffSubnet};

use crate::model::{
    parse_adopted_protocols, parse_pod_network, parse_route_protocol, Cluster, Config, RpFilter,
};
use crate::Result;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Route protocol that marks routes and addresses as podroute's (number or name).
    #[arg(long, env = "PODROUTE_ROUTE_PROTOCOL")]
    pub route_protocol: Option<String>,
    /// Route protocols whose routes are taken over as ours, e.g. `bird,80` to remove
    /// what Calico/BIRD left behind. Never kernel, boot or static.
    #[arg(long, env = "PODROUTE_ADOPT_ROUTE_PROTOCOLS")]
    pub adopt_route_protocols: Option<String>,
    /// The cluster's pod network, e.g. Calico's IP pool `10.244.0.0/16`: routes of
    /// an adopted protocol are taken over only inside it, inside a node's pod CIDR,
    /// or through tunl0/vxlan.calico.
    #[arg(long, env = "PODROUTE_POD_NETWORK", value_name = "CIDR,...")]
    pub pod_network: Option<String>,
    /// Routing table for pod routes.
    #[arg(long)]
    pub route_table: Option<u32>,
    /// Metric of pod routes.
    #[arg(long)]
    pub route_metric: Option<u32>,
    /// Name of the ipip device.
    #[arg(long)]
    pub ipip_device: Option<String>,
    /// Name of the VXLAN device.
    #[arg(long)]
    pub vxlan_device: Option<String>,
    /// Name of the IPv6 VXLAN device (default vxlan-v6.calico).
    #[arg(long)]
    pub vxlan6_device: Option<String>,
    /// VXLAN network identifier (default 4096).
    #[arg(long)]
    pub vxlan_vni: Option<u32>,
    /// VXLAN UDP port (default 4789).
    #[arg(long)]
    pub vxlan_port: Option<u16>,
    /// Underlay MTU to use instead of the uplink's.
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Reverse-path filter on the uplink and tunnels: `loose` sets 2, `keep` leaves it.
    #[arg(long, value_parser = ["loose", "keep"])]
    pub rp_filter: Option<String>,
    /// Native mode, peers off the uplink's subnet: `encap` (tunnel) or `underlay` (nothing).
    #[arg(long, value_parser = ["encap", "underlay"])]
    pub off_subnet: Option<String>,
    /// Tunnel for off-subnet peers in native mode with `--off-subnet encap`.
    #[arg(long, value_parser = ["vxlan", "ipip"])]
    pub cross_subnet_tunnel: Option<String>,
    /// Where the pod MTU is written for the CNI plugin.
    #[arg(long, env = "PODROUTE_MTU_FILE")]
    pub mtu_file: Option<PathBuf>,
    /// Sysctl tree to read and write net sysctls under: its `net/` must be this
    /// network namespace's, e.g. the node's /proc/sys/net mounted at /host/proc/sys/net.
    #[arg(long, env = "PODROUTE_PROC_SYS")]
    pub proc_sys: Option<PathBuf>,
}

impl ConfigArgs {
    /// Defaults, then explicit flags, then the cluster's own settings: the
    /// MTU, VXLAN VNI and port and the off-subnet policy must be the same on
    /// every node, so where the cluster sets them, it wins.
    pub fn config(&self, cluster: Option<&Cluster>) -> Result<Config> {
        let mut c = Config::default();
        if let Some(p) = &self.route_protocol {
            c.route_protocol = parse_route_protocol("route-protocol", p)?;
        }
        if let Some(p) = &self.adopt_route_protocols {
            c.adopt_route_protocols = parse_adopted_protocols(p)?;
        }
        if let Some(p) = &self.pod_network {
            c.pod_network = parse_pod_network(p)?;
        }
        set(&mut c.route_table, self.route_table);
        set(&mut c.route_metric, self.route_metric);
        set(&mut c.ipip_device, self.ipip_device.clone());
        set(&mut c.vxlan_device, self.vxlan_device.clone());
        set(&mut c.vxlan6_device, self.vxlan6_device.clone());
        set(&mut c.vxlan_vni, self.vxlan_vni);
        set(&mut c.vxlan_port, self.vxlan_port);
        if let Some(path) = &self.mtu_file {
            crate::dataplane::check_mtu_file(path)?;
            c.mtu_file = path.clone();
        }
        if let Some(dir) = &self.proc_sys {
            // Before anything else reads a file or the network: a wrong tree
            // is a typo the operator must hear about first.
            crate::dataplane::check_proc_sys(dir)?;
            c.proc_sys = dir.clone();
        }
        if self.mtu.is_some() {
            c.mtu = self.mtu;
        }
        if let Some(v) = &self.rp_filter {
            c.rp_filter = v.parse::<RpFilter>()?;
        }
        if let Some(v) = &self.off_subnet {
            c.off_subnet = v.parse::<OffSubnet>()?;
        }
        if let Some(v) = &self.cross_subnet_tunnel {
            c.cross_subnet_tunnel = v.parse::<Mode>()?;
        }
        if let Some(cluster) = cluster {
            cluster.apply_to(&mut c);
        }
        c.validate()?;
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_sys_must_hold_net_sysctls() {
        let args = |dir: &str| ConfigArgs {
            proc_sys: Some(PathBuf::from(dir)),
            ..ConfigArgs::default()
        };
        let config = args("/proc/sys").config(None).expect("/proc/sys is fine");
        assert_eq!(config.proc_sys, PathBuf::from("/proc/sys"));
        let err = args("/nonexistent/proc/sys")
            .config(None)
            .expect_err("a tree without net/ is refused");
        let text = err.to_string();
        assert!(text.contains("proc-sys"), "{text}");
        assert!(text.contains("/nonexistent/proc/sys"), "{text}");
    }
}
