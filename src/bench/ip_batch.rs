//! The same writes as the engine's with `ip -batch` (and `bridge -batch` for
//! FDB entries): the batch files, and one timed run of them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::scratch::{UPLINK, UPLINK_MTU};
use super::{Sample, Settings};
use crate::api::Mode;
use crate::lab::netns::{run_command, Netns};
use crate::model::{Cluster, Config, Mac};
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
    let timed = |what: &str, run: &dyn Fn() -> Result<usize>| -> Result<Sample> {
        let start = Instant::now();
        let writes = files.writes + run()?;
        let sample = Sample {
            time: start.elapsed(),
            writes,
            route_writes: n,
            netlink: writes as u64,
        };
        Ok(settings.sampled(n, what, sample))
    };
    let batch = |tool: &str, file: &Path| -> Result<()> {
        let file = file
            .to_str()
            .ok_or_else(|| Error::invalid("bench", format!("{} is not UTF-8", file.display())))?;
        run_command(tool, &["-n", ns.name(), "-batch", file]).map(drop)
    };
    let expect_routes = |want: usize| -> Result<()> {
        let out = ns.ip(&["route", "show", "proto", "91"])?;
        let held = out.lines().filter(|l| !l.trim().is_empty()).count();
        match (held, want) {
            (held, want) if held == want => Ok(()),
            (held, 0) => Err(Error::Unconverged(format!("ip -batch left {held} routes"))),
            (held, _) => Err(Error::Unconverged(format!(
                "ip -batch installed {held} routes of {n}"
            ))),
        }
    };

    let program = timed("ip -batch program", &|| {
        let device = if vxlan {
            vxlan_device_up(ns, cluster)?
        } else {
            0
        };
        batch("ip", &files.ip_add)?;
        if vxlan {
            batch("bridge", &files.fdb_add)?;
        }
        Ok(device)
    })?;
    expect_routes(n)?;

    let delete = timed("ip -batch delete", &|| {
        batch("ip", &files.ip_del)?;
        if !vxlan {
            return Ok(0);
        }
        batch("bridge", &files.fdb_del)?;
        ns.ip(&["link", "del", "vxlan.calico"])?;
        Ok(1)
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

pub(super) struct BatchFiles {
    ip_add: PathBuf,
    ip_del: PathBuf,
    fdb_add: PathBuf,
    fdb_del: PathBuf,
    /// Lines of the add batches (= of the delete batches).
    writes: usize,
}

impl BatchFiles {
    pub(super) fn write(cluster: &Cluster, mode: Mode, dir: &Path) -> Result<BatchFiles> {
        let config = Config::default();
        let protocol = config.route_protocol;
        let vxlan = config.vxlan_device.as_str();
        let tunnel_mtu = UPLINK_MTU - Mode::Vxlan.overhead();
        let (mut ip_add, mut ip_del, mut fdb_add, mut fdb_del) =
            (String::new(), String::new(), String::new(), String::new());
        let mut writes = 0;
        let peers = &cluster.nodes[1..];
        if mode == Mode::Vxlan {
            for peer in peers {
                let Some((ip, cidr)) = peer.v4() else {
                    continue;
                };
                let mac = Mac::for_node(&peer.name);
                let vtep = cidr.network();
                let _ = writeln!(
                    ip_add,
                    "neigh replace {vtep} lladdr {mac} dev {vxlan} nud permanent"
                );
                let _ = writeln!(ip_del, "neigh del {vtep} dev {vxlan}");
                let _ = writeln!(
                    fdb_add,
                    "fdb replace {mac} dev {vxlan} dst {ip} self permanent"
                );
                let _ = writeln!(fdb_del, "fdb del {mac} dev {vxlan} dst {ip} self");
                writes += 2;
            }
        }
        for peer in peers {
            let Some((ip, cidr)) = peer.v4() else {
                continue;
            };
            let line = match mode {
                Mode::Vxlan => format!(
                    "{cidr} via {} dev {vxlan} onlink mtu {tunnel_mtu} proto {protocol}",
                    cidr.network()
                ),
                _ => format!("{cidr} via {ip} dev {UPLINK} proto {protocol}"),
            };
            let _ = writeln!(ip_add, "route replace {line}");
            let _ = writeln!(ip_del, "route del {line}");
            writes += 1;
        }
        let files = BatchFiles {
            ip_add: dir.join("ip-add.batch"),
            ip_del: dir.join("ip-del.batch"),
            fdb_add: dir.join("fdb-add.batch"),
            fdb_del: dir.join("fdb-del.batch"),
            writes,
        };
        for (path, text) in [
            (&files.ip_add, ip_add),
            (&files.ip_del, ip_del),
            (&files.fdb_add, fdb_add),
            (&files.fdb_del, fdb_del),
        ] {
            std::fs::write(path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(files)
    }
}
