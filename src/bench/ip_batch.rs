//! The same writes as the engine's with `ip -batch` / `ip -6 -batch` (and
//! `bridge -batch` for FDB entries): the batch files, and one timed run of them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::scratch::{UPLINK, UPLINK_MTU};
use super::{Family, Sample, Settings};
use crate::api::Mode;
use crate::lab::netns::{run_command, Netns};
use crate::model::{Cluster, Config, Mac};
use crate::plan::{IPV6_DEFAULT_METRIC, VXLAN6_OVERHEAD};
use crate::{Error, Result};

/// `[program, delete]`, from an empty namespace back to empty. One netlink
/// request per batch line or `ip` call.
pub(super) fn ip_batch_cycle(
    ns: &Netns,
    cluster: &Cluster,
    files: &BatchFiles,
    settings: &Settings,
) -> Result<Vec<Sample>> {
    let n = cluster.nodes.len() - 1;
    let vxlan = settings.mode == Mode::Vxlan;
    let (v4, v6) = (settings.family.has_v4(), settings.family.has_v6());
    let config = Config::default();
    let route_writes = n * (usize::from(v4) + usize::from(v6));
    let timed = |what: &str, run: &dyn Fn() -> Result<usize>| -> Result<Sample> {
        let start = Instant::now();
        let writes = files.writes + run()?;
        let sample = Sample {
            time: start.elapsed(),
            writes,
            route_writes,
            netlink: writes as u64,
        };
        Ok(settings.sampled(n, what, sample))
    };
    let batch = |tool: &str, six: bool, file: &Path| -> Result<()> {
        let file = file
            .to_str()
            .ok_or_else(|| Error::invalid("bench", format!("{} is not UTF-8", file.display())))?;
        let family: &[&str] = if six { &["-6"] } else { &[] };
        let args = [&["-n", ns.name()], family, &["-batch", file]].concat();
        run_command(tool, &args).map(drop)
    };
    let expect_routes = |want: usize| -> Result<()> {
        for (family, on) in [("-4", v4), ("-6", v6)] {
            let out = ns.ip(&[family, "route", "show", "proto", "91"])?;
            let held = out.lines().filter(|l| !l.trim().is_empty()).count();
            let want = if on { want } else { 0 };
            match (held, want) {
                (held, want) if held == want => {}
                (held, 0) => {
                    return Err(Error::Unconverged(format!(
                        "ip {family} -batch left {held} routes"
                    )))
                }
                (held, _) => {
                    return Err(Error::Unconverged(format!(
                        "ip {family} -batch installed {held} routes of {n}"
                    )))
                }
            }
        }
        Ok(())
    };

    let program = timed("ip -batch program", &|| {
        let mut devices = 0;
        if vxlan && v4 {
            devices += vxlan_device_up(ns, cluster)?;
        }
        if vxlan && v6 {
            devices += vxlan6_device_up(ns, cluster)?;
        }
        if v4 {
            batch("ip", false, &files.ip_add)?;
        }
        if v6 {
            batch("ip", true, &files.ip6_add)?;
        }
        if vxlan {
            batch("bridge", false, &files.fdb_add)?;
        }
        Ok(devices)
    })?;
    expect_routes(n)?;

    let delete = timed("ip -batch delete", &|| {
        if v4 {
            batch("ip", false, &files.ip_del)?;
        }
        if v6 {
            batch("ip", true, &files.ip6_del)?;
        }
        if !vxlan {
            return Ok(0);
        }
        batch("bridge", false, &files.fdb_del)?;
        let mut devices = 0;
        for (on, dev) in [(v4, &config.vxlan_device), (v6, &config.vxlan6_device)] {
            if on {
                ns.ip(&["link", "del", dev])?;
                devices += 1;
            }
        }
        Ok(devices)
    })?;
    expect_routes(0)?;
    Ok(vec![program, delete])
}

/// What the engine creates for VXLAN, with `ip`: the device (MTU, MAC,
/// VNI, port, local, link, learning off), its tunnel address, up.
/// Returns the number of writes.
fn vxlan_device_up(ns: &Netns, cluster: &Cluster) -> Result<usize> {
    let local = &cluster.nodes[0];
    let Some((local_ip, local_cidr)) = local.v4() else {
        return Err(crate::Error::invalid("bench", "the local node has no IPv4"));
    };
    let config = Config::default();
    let mac = Mac::for_node(&local.name);
    let mtu = UPLINK_MTU - Mode::Vxlan.overhead();
    let dev = config.vxlan_device.as_str();
    let add = format!(
        "link add {dev} address {mac} mtu {mtu} type vxlan id {} dstport {} local {} dev {UPLINK} nolearning",
        config.vxlan_vni, config.vxlan_port, local_ip
    );
    ns.ip(&add.split(' ').collect::<Vec<_>>())?;
    let address = format!("{}/32", local_cidr.network());
    ns.ip(&["addr", "add", &address, "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(3)
}

/// The same for `vxlan-v6.calico`: IPv6 underlay, MTU uplink - 70, the
/// node's IPv6 tunnel address as a /128 without DAD (iproute2 6.1 cannot
/// set the address protocol the engine sets; that is no extra write).
fn vxlan6_device_up(ns: &Netns, cluster: &Cluster) -> Result<usize> {
    let local = &cluster.nodes[0];
    let (ip6, cidr6) = local
        .v6()
        .ok_or_else(|| Error::invalid("bench", "the local node has no IPv6 half"))?;
    let config = Config::default();
    let mac = Mac::for_node_v6(&local.name);
    let mtu = UPLINK_MTU - VXLAN6_OVERHEAD;
    let dev = config.vxlan6_device.as_str();
    let add = format!(
        "link add {dev} address {mac} mtu {mtu} type vxlan id {} dstport {} local {ip6} dev {UPLINK} nolearning",
        config.vxlan_vni, config.vxlan_port
    );
    ns.ip(&add.split(' ').collect::<Vec<_>>())?;
    let address = format!("{}/128", cidr6.network());
    ns.ip(&["-6", "addr", "add", &address, "dev", dev, "nodad"])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(3)
}

pub(super) struct BatchFiles {
    ip_add: PathBuf,
    ip_del: PathBuf,
    ip6_add: PathBuf,
    ip6_del: PathBuf,
    /// FDB entries of both families (`bridge` takes either destination).
    fdb_add: PathBuf,
    fdb_del: PathBuf,
    /// Lines of the add batches (= of the delete batches).
    writes: usize,
}

/// One batch pair (add, delete) being written.
#[derive(Default)]
struct Lines {
    add: String,
    del: String,
}

impl Lines {
    fn push(&mut self, add: std::fmt::Arguments<'_>, del: std::fmt::Arguments<'_>) {
        let _ = writeln!(self.add, "{add}");
        let _ = writeln!(self.del, "{del}");
    }
}

impl BatchFiles {
    pub(super) fn write(
        cluster: &Cluster,
        mode: Mode,
        family: Family,
        dir: &Path,
    ) -> Result<BatchFiles> {
        let config = Config::default();
        let protocol = config.route_protocol;
        let vxlan = config.vxlan_device.as_str();
        let vxlan6 = config.vxlan6_device.as_str();
        let tunnel_mtu = UPLINK_MTU - Mode::Vxlan.overhead();
        let tunnel6_mtu = UPLINK_MTU - VXLAN6_OVERHEAD;
        let metric6 = IPV6_DEFAULT_METRIC;
        let (mut ip, mut ip6, mut fdb) = (Lines::default(), Lines::default(), Lines::default());
        let mut writes = 0;
        let peers = &cluster.nodes[1..];
        let v4 = family.has_v4();
        let v6: Vec<_> = if family.has_v6() {
            peers.iter().filter_map(|p| Some((p, p.v6()?))).collect()
        } else {
            Vec::new()
        };
        if mode == Mode::Vxlan {
            for peer in peers.iter().filter(|_| v4) {
                let Some((ip4, cidr)) = peer.v4() else {
                    continue;
                };
                let mac = Mac::for_node(&peer.name);
                let vtep = cidr.network();
                ip.push(
                    format_args!("neigh replace {vtep} lladdr {mac} dev {vxlan} nud permanent"),
                    format_args!("neigh del {vtep} dev {vxlan}"),
                );
                fdb.push(
                    format_args!("fdb replace {mac} dev {vxlan} dst {ip4} self permanent"),
                    format_args!("fdb del {mac} dev {vxlan} dst {ip4} self"),
                );
                writes += 2;
            }
            for (peer, (ip6_node, _)) in &v6 {
                let mac = Mac::for_node_v6(&peer.name);
                let gateway = mac.link_local();
                ip6.push(
                    format_args!("neigh replace {gateway} lladdr {mac} dev {vxlan6} nud permanent"),
                    format_args!("neigh del {gateway} dev {vxlan6}"),
                );
                fdb.push(
                    format_args!("fdb replace {mac} dev {vxlan6} dst {ip6_node} self permanent"),
                    format_args!("fdb del {mac} dev {vxlan6} dst {ip6_node} self"),
                );
                writes += 2;
            }
        }
        for peer in peers.iter().filter(|_| v4) {
            let Some((ip4, cidr)) = peer.v4() else {
                continue;
            };
            let line = match mode {
                Mode::Vxlan => format!(
                    "{cidr} via {} dev {vxlan} onlink mtu {tunnel_mtu} proto {protocol}",
                    cidr.network()
                ),
                _ => format!("{cidr} via {ip4} dev {UPLINK} proto {protocol}"),
            };
            ip.push(
                format_args!("route replace {line}"),
                format_args!("route del {line}"),
            );
            writes += 1;
        }
        for (peer, (ip6_node, cidr6)) in &v6 {
            let line = match mode {
                Mode::Vxlan => format!(
                    "{cidr6} via {} dev {vxlan6} mtu {tunnel6_mtu} proto {protocol} metric {metric6}",
                    Mac::for_node_v6(&peer.name).link_local()
                ),
                _ => format!("{cidr6} via {ip6_node} dev {UPLINK} proto {protocol} metric {metric6}"),
            };
            ip6.push(
                format_args!("route replace {line}"),
                format_args!("route del {line}"),
            );
            writes += 1;
        }
        let files = BatchFiles {
            ip_add: dir.join("ip-add.batch"),
            ip_del: dir.join("ip-del.batch"),
            ip6_add: dir.join("ip6-add.batch"),
            ip6_del: dir.join("ip6-del.batch"),
            fdb_add: dir.join("fdb-add.batch"),
            fdb_del: dir.join("fdb-del.batch"),
            writes,
        };
        for (path, text) in [
            (&files.ip_add, ip.add),
            (&files.ip_del, ip.del),
            (&files.ip6_add, ip6.add),
            (&files.ip6_del, ip6.del),
            (&files.fdb_add, fdb.add),
            (&files.fdb_del, fdb.del),
        ] {
            std::fs::write(path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::super::scratch::cluster;
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn ipv4_batches_are_unchanged_and_hold_no_ipv6() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(2, Mode::Vxlan, Family::Ipv4);
        let files = BatchFiles::write(&c, Mode::Vxlan, Family::Ipv4, dir.path()).unwrap();
        assert_eq!(files.writes, 6);
        let add = lines(&files.ip_add);
        assert_eq!(add.len(), 4);
        assert!(add[2].starts_with("route replace 100.64.1.0/24 via 100.64.1.0 dev vxlan.calico onlink mtu 1450 proto 91"), "{add:?}");
        assert!(lines(&files.ip6_add).is_empty());
        assert_eq!(lines(&files.fdb_add).len(), 2);
    }

    #[test]
    fn ipv6_batches_route_via_the_peer_link_local_on_vxlan_v6() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(2, Mode::Vxlan, Family::Ipv6);
        let files = BatchFiles::write(&c, Mode::Vxlan, Family::Ipv6, dir.path()).unwrap();
        assert_eq!(files.writes, 6);
        assert!(lines(&files.ip_add).is_empty());
        let gateway = Mac::for_node_v6("node-1").link_local();
        let mac = Mac::for_node_v6("node-1");
        let add = lines(&files.ip6_add);
        assert_eq!(
            add,
            [
                format!("neigh replace {gateway} lladdr {mac} dev vxlan-v6.calico nud permanent"),
                format!(
                    "neigh replace {} lladdr {} dev vxlan-v6.calico nud permanent",
                    Mac::for_node_v6("node-2").link_local(),
                    Mac::for_node_v6("node-2")
                ),
                format!("route replace fd00:244:1::/64 via {gateway} dev vxlan-v6.calico mtu 1430 proto 91 metric 1024"),
                format!(
                    "route replace fd00:244:2::/64 via {} dev vxlan-v6.calico mtu 1430 proto 91 metric 1024",
                    Mac::for_node_v6("node-2").link_local()
                ),
            ]
        );
        let fdb = lines(&files.fdb_add);
        assert_eq!(
            fdb[0],
            format!("fdb replace {mac} dev vxlan-v6.calico dst fd00:250::2 self permanent")
        );
        assert_eq!(
            lines(&files.ip6_del)[0],
            format!("neigh del {gateway} dev vxlan-v6.calico")
        );
    }

    #[test]
    fn dual_batches_hold_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(3, Mode::Native, Family::Dual);
        let files = BatchFiles::write(&c, Mode::Native, Family::Dual, dir.path()).unwrap();
        assert_eq!(files.writes, 6);
        assert_eq!(
            lines(&files.ip_add)[0],
            "route replace 100.64.1.0/24 via 10.250.0.2 dev eth0 proto 91"
        );
        assert_eq!(
            lines(&files.ip6_add),
            [
                "route replace fd00:244:1::/64 via fd00:250::2 dev eth0 proto 91 metric 1024",
                "route replace fd00:244:2::/64 via fd00:250::3 dev eth0 proto 91 metric 1024",
                "route replace fd00:244:3::/64 via fd00:250::4 dev eth0 proto 91 metric 1024",
            ]
        );
        assert!(lines(&files.fdb_add).is_empty());
    }
}
