//! Netlink: read what the kernel holds of ours (`Observed`) and run the ops
//! of a diff. Everything here acts on the network namespace of the thread
//! that called [`Dataplane::connect`].

mod addresses;
mod dump;
mod host;
mod links;
pub mod monitor;
mod neighbours;
mod netlink;
mod repair;
pub(crate) mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{FuturesUnordered, StreamExt};
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use crate::model::Config;
use crate::plan::health::accept_ra_key;
use crate::plan::{
    is_our_device, route_owner, Diff, Fdb, IpipDevice, Neigh, Observed, Op, Route, RouteOwner,
    Stage, Step, Uplink, VxlanDevice, VxlanIdentity,
};
use crate::{Error, Result};

pub use host::{check_mtu_file, check_proc_sys, read_sysctl};
pub use links::Link;

/// Writes in flight at once within one stage: enough to keep the kernel
/// busy, few enough that acks never overrun the socket buffer.
const CONCURRENCY: usize = 64;

/// What the kernel held of ours at the last observe: the source of the
/// agent's gauges, whatever the pass that read it did next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub routes: usize,
    pub neighbours: usize,
    pub fdb_entries: usize,
}

impl Held {
    fn of(observed: &Observed) -> Held {
        Held {
            routes: observed.routes.len(),
            neighbours: observed.neighs.len(),
            fdb_entries: observed.fdb.len(),
        }
    }
}

pub struct Dataplane {
    handle: Handle,
    /// For the dumps of routes, neighbours and FDB entries.
    dumps: dump::DumpSocket,
    config: Config,
    links: Vec<Link>,
    held: Option<Held>,
    /// The uplink found by the last `uplink()` lookup.
    pub last_uplink: Option<String>,
    /// The plan the last converge made the kernel hold: what a drift
    /// repair of one object puts back.
    pub last_desired: Option<crate::plan::Desired>,
    /// The probes of the peers the last converge's plan routes.
    pub last_probe_targets: Vec<crate::plan::check::ProbeTarget>,
    recent_repairs: repair::Recent,
    requests: AtomicU64,
}

impl Dataplane {
    /// Open a netlink socket (strict-check dumps) in the calling thread's
    /// network namespace. Must be called inside a tokio runtime.
    pub fn connect(config: Config) -> Result<Dataplane> {
        host::check_proc_sys(&config.proc_sys)?;
        let (connection, handle, _) = rtnetlink::new_connection_with_strict_check()
            .map_err(|e| Error::io("opening a netlink socket", e))?;
        tokio::spawn(connection);
        Ok(Dataplane {
            handle,
            dumps: dump::DumpSocket::open()?,
            config,
            links: Vec::new(),
            held: None,
            last_uplink: None,
            last_desired: None,
            last_probe_targets: Vec::new(),
            recent_repairs: repair::Recent::default(),
            requests: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Netlink requests sent so far (dumps and writes).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Links as of the last observe.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    async fn refresh_links(&mut self) -> Result<()> {
        self.count(1);
        self.links = links::dump(&self.handle).await?;
        Ok(())
    }

    fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// What the kernel held of ours at the last observe.
    pub fn held(&self) -> Option<Held> {
        self.held
    }

    fn index(&self, name: &str) -> Result<u32> {
        self.link(name)
            .map(|l| l.index)
            .ok_or_else(|| Error::Device {
                name: name.into(),
                reason: "it does not exist (gone since the last read)".into(),
            })
    }

    /// Addresses on this host's interfaces, or on the one with `index`.
    pub async fn local_addresses(&self, index: Option<u32>) -> Result<Vec<IpNetwork>> {
        self.count(1);
        let all = addresses::dump(&self.handle).await?;
        Ok(all
            .iter()
            .filter(|a| index.is_none_or(|i| a.index == i))
            .map(|a| a.network)
            .collect())
    }

    /// How far ARP or NDP got for `ip`: (device, state) of each entry the
    /// kernel has for it, e.g. `("eth0", "failed")`.
    pub async fn neighbour_states(&mut self, ip: IpAddr) -> Result<Vec<(String, String)>> {
        self.count(1);
        self.refresh_links().await?;
        let states = neighbours::states_of(&self.handle, ip).await?;
        Ok(states
            .into_iter()
            .map(|(index, state)| {
                let dev = self.links.iter().find(|l| l.index == index);
                let name = dev.map_or_else(|| format!("if{index}"), |l| l.name.clone());
                (name, format!("{state:?}").to_lowercase())
            })
            .collect())
    }

    /// The interface that holds each of `node_ips`, from one read of the
    /// links and addresses.
    pub async fn uplinks(&mut self, node_ips: &[IpAddr]) -> Result<Vec<Uplink>> {
        self.refresh_links().await?;
        self.count(1);
        let addresses = addresses::dump(&self.handle).await?;
        let mut out = Vec::with_capacity(node_ips.len());
        for &node_ip in node_ips {
            let found = addresses.iter().find(|a| a.network.ip() == node_ip);
            let address = found.ok_or_else(|| {
                Error::invalid(
                    "node ip",
                    format!("{node_ip} is not an address of any interface here"),
                )
            })?;
            let link = self.links.iter().find(|l| l.index == address.index);
            let link = link.ok_or_else(|| Error::Device {
                name: format!("#{}", address.index),
                reason: format!("it held {node_ip}, then vanished"),
            })?;
            let accept_ra = match node_ip {
                IpAddr::V4(_) => None,
                IpAddr::V6(_) => {
                    let key = accept_ra_key(&link.name);
                    host::read_sysctl(&self.config.proc_sys, &key)?.and_then(|v| v.parse().ok())
                }
            };
            out.push(Uplink {
                name: link.name.clone(),
                mtu: link.mtu,
                address: address.network,
                accept_ra,
            });
        }
        Ok(out)
    }

    /// What the kernel holds of ours, plus the sysctls named in `sysctl_keys`.
    pub async fn observe<'a>(
        &mut self,
        sysctl_keys: impl IntoIterator<Item = &'a String>,
    ) -> Result<Observed> {
        self.refresh_links().await?;
        let names: BTreeMap<u32, String> = self
            .links
            .iter()
            .map(|l| (l.index, l.name.clone()))
            .collect();
        self.count(2);
        let addrs = addresses::by_index(&addresses::dump(&self.handle).await?);
        let mut observed = Observed::default();
        routes::dump(&self.dumps, self.config.route_table, |dumped| {
            self.record_route(&mut observed, dumped.named(&names));
        })
        .await?;

        let protocol = self.config.route_protocol;
        for (dev, want) in [
            (&self.config.ipip_device, InfoKind::IpIp),
            (&self.config.vxlan_device, InfoKind::Vxlan),
            (&self.config.vxlan6_device, InfoKind::Vxlan),
        ] {
            let Some(link) = self.link(dev) else { continue };
            if link.kind.as_ref() != Some(&want) {
                let kind = link
                    .kind
                    .as_ref()
                    .map_or("unknown".into(), |k| format!("{k:?}").to_lowercase());
                observed.foreign_devices.insert(dev.clone(), kind);
                continue;
            }
            // The kernel's IPv6 link-local address is neither ours nor foreign.
            let (ours, theirs): (Vec<&addresses::Address>, Vec<_>) = addrs
                .get(&link.index)
                .into_iter()
                .flatten()
                .filter(|a| !is_link_local(a.network.ip()))
                .partition(|a| {
                    a.protocol == protocol && a.network == IpNetwork::from(a.network.ip())
                });
            let ours: BTreeSet<IpAddr> = ours.iter().map(|a| a.network.ip()).collect();
            if !theirs.is_empty() {
                observed
                    .foreign_state
                    .entry(dev.clone())
                    .or_default()
                    .addresses = theirs.iter().map(|a| a.network).collect();
            }
            if want == InfoKind::IpIp {
                observed.ipip = Some(IpipDevice {
                    name: link.name.clone(),
                    mtu: link.mtu,
                    up: link.up,
                    addresses: ours,
                });
            } else if *dev == self.config.vxlan_device {
                observed.vxlan = Some(vxlan_device(link, ours, &names));
            } else {
                observed.vxlan6 = Some(vxlan_device(link, ours, &names));
            }
        }

        let vxlans = [
            (observed.vxlan.as_ref(), AddressFamily::Inet),
            (observed.vxlan6.as_ref(), AddressFamily::Inet6),
        ];
        let vxlans: Vec<(Link, AddressFamily)> = vxlans
            .into_iter()
            .filter_map(|(v, family)| Some((self.link(&v?.name)?.clone(), family)))
            .collect();
        for (vxlan, family) in vxlans {
            self.count(2);
            let dev = &vxlan.name;
            neighbours::dump_neighbours(&self.dumps, vxlan.index, family, |ip, mac| {
                let dev = dev.clone();
                observed.neighs.insert(ip, Neigh { dev, ip, mac });
            })
            .await?;
            neighbours::dump_fdb(&self.dumps, vxlan.index, |mac, dst| {
                let dev = dev.clone();
                observed.fdb.insert(mac, Fdb { dev, mac, dst });
            })
            .await?;
        }

        for key in sysctl_keys {
            observed
                .sysctls
                .insert(key.clone(), host::read_sysctl(&self.config.proc_sys, key)?);
        }
        observed.pod_mtu = host::read_pod_mtu(&self.config.mtu_file)?;
        self.held = Some(Held::of(&observed));
        Ok(observed)
    }

    /// Ours (our protocol), adoptable (an adopted protocol; the plan decides),
    /// or the key of someone else's, noted on our device when it goes through one.
    fn record_route(&self, observed: &mut Observed, route: Route) {
        let (protocol, key) = (route.protocol, route.key);
        match route_owner(&self.config, protocol, key.table, key.dst.prefix()) {
            RouteOwner::Ours => _ = observed.routes.entry(key).or_insert(route),
            RouteOwner::Adoptable => _ = observed.adoptable.entry(key).or_insert(route),
            RouteOwner::Foreign => {
                // The kernel's fe80::/64 comes with the link-local address.
                if is_our_device(&self.config, &route.dev) && !is_link_local(key.dst.network()) {
                    let state = observed.foreign_state.entry(route.dev).or_default();
                    state.routes.insert(key.dst);
                }
                observed.foreign_routes.insert(key);
            }
        }
    }

    /// Run the steps stage by stage. Within a stage the writes are
    /// independent and run concurrently; a stage with a failure stops the
    /// run before the next stage (later stages build on earlier ones).
    /// Returns the number of writes performed.
    pub async fn apply(&mut self, diff: &Diff) -> Result<usize> {
        let mut done = 0;
        for stage in stages(&diff.steps) {
            if stage[0].op.stage() == Stage::Links {
                for step in stage {
                    self.run(step).await?;
                    done += 1;
                    self.refresh_links().await?;
                }
                continue;
            }
            let errors = self.run_concurrently(stage).await;
            let failed = errors.len();
            done += stage.len() - failed;
            if let Some(first) = errors.into_iter().next() {
                return Err(Error::Apply {
                    failed,
                    done,
                    first: Box::new(first),
                });
            }
        }
        Ok(done)
    }

    /// Up to CONCURRENCY writes in flight; returns the errors. (A plain loop
    /// rather than a stream combinator with a closure: that keeps the future
    /// `Send`.)
    async fn run_concurrently(&self, steps: &[Step]) -> Vec<Error> {
        let mut waiting = steps.iter();
        let mut running = FuturesUnordered::new();
        for step in waiting.by_ref().take(CONCURRENCY) {
            running.push(self.run(step));
        }
        let mut errors = Vec::new();
        while let Some(result) = running.next().await {
            if let Err(e) = result {
                errors.push(e);
            }
            if let Some(step) = waiting.next() {
                running.push(self.run(step));
            }
        }
        errors
    }

    async fn run(&self, step: &Step) -> Result<()> {
        self.count(1);
        let h = &self.handle;
        let cfg = &self.config;
        match &step.op {
            Op::CreateIpip { name } => links::create_ipip(h, name).await?,
            Op::CreateVxlan { device } => {
                links::create_vxlan(h, device, self.index(&device.identity.link)?).await?
            }
            Op::DeleteLink { name, .. } => links::delete(h, self.index(name)?, name).await?,
            Op::SetMtu { dev, mtu } => links::set_mtu(h, self.index(dev)?, dev, *mtu).await?,
            Op::SetUp { dev } => links::set_up(h, self.index(dev)?, dev, true).await?,
            Op::SetDown { dev } => links::set_up(h, self.index(dev)?, dev, false).await?,
            Op::AddAddress { dev, ip } => {
                addresses::add(h, self.index(dev)?, dev, *ip, cfg.route_protocol).await?
            }
            Op::DelAddress { dev, ip, .. } => addresses::del(h, self.index(dev)?, dev, *ip).await?,
            Op::SetSysctl { key, value } => host::write_sysctl(&cfg.proc_sys, key, value)?,
            Op::WritePodMtu { mtu } => host::write_pod_mtu(&cfg.mtu_file, *mtu)?,
            Op::RemovePodMtu => host::remove_pod_mtu(&cfg.mtu_file)?,
            Op::ReplaceNeigh { neigh } => {
                neighbours::replace_arp(h, self.index(&neigh.dev)?, neigh).await?
            }
            Op::DelNeigh { neigh } => {
                neighbours::del_arp(h, self.index(&neigh.dev)?, neigh).await?
            }
            Op::ReplaceFdb { fdb } => {
                neighbours::replace_fdb(h, self.index(&fdb.dev)?, fdb).await?
            }
            Op::DelFdb { fdb } => neighbours::del_fdb(h, self.index(&fdb.dev)?, fdb).await?,
            Op::ReplaceRoute { route } => {
                let oif = match route.dev.as_str() {
                    "" => None, // unreachable, blackhole: no device
                    dev => Some(self.index(dev)?),
                };
                routes::replace(h, route, oif).await?
            }
            Op::DelRoute { route } => routes::del(h, route).await?,
        }
        tracing::info!(why = %step.why, "{}", step.op);
        Ok(())
    }
}

/// Consecutive steps of the same stage.
fn stages(steps: &[Step]) -> impl Iterator<Item = &[Step]> {
    steps.chunk_by(|a, b| a.op.stage() == b.op.stage())
}

fn vxlan_device(
    link: &Link,
    addresses: BTreeSet<IpAddr>,
    names: &BTreeMap<u32, String>,
) -> VxlanDevice {
    let attrs = link.vxlan.clone().unwrap_or_default();
    VxlanDevice {
        name: link.name.clone(),
        identity: VxlanIdentity {
            vni: attrs.vni,
            port: attrs.port,
            local: attrs.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            link: attrs
                .link
                .and_then(|i| names.get(&i).cloned())
                .unwrap_or_default(),
            mac: link.mac.unwrap_or(crate::model::Mac([0; 6])),
            learning: attrs.learning,
        },
        mtu: link.mtu,
        up: link.up,
        addresses,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
}
