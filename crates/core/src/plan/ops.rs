//! The writes a diff asks for. Each op is one kernel (or file) write.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::state::{Fdb, Neigh, Route, RouteKind, VxlanDevice};

/// Ops run stage by stage in this order. Within a stage ops do not depend on
/// each other and may run concurrently, except in `Links`: a recreated device
/// is deleted and created there, so that stage runs one op at a time, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Create, recreate devices.
    Links,
    /// MTU and up on existing devices.
    LinkAttrs,
    Addresses,
    /// sysctls and the pod MTU file.
    Host,
    Neighbours,
    Routes,
    /// Stale routes, neighbours, FDB entries and addresses.
    Stale,
    /// Devices of modes no longer in play.
    Retire,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Create the ipip fallback device, or find it when the kernel made it.
    CreateIpip {
        name: String,
    },
    /// Create the VXLAN device with its MTU, up. Boxed: it is the largest
    /// op by far, and a diff holds one op per peer route and neighbour.
    CreateVxlan {
        device: Box<VxlanDevice>,
    },
    DeleteLink {
        name: String,
        stage: Stage,
    },
    SetMtu {
        dev: String,
        mtu: u32,
    },
    SetUp {
        dev: String,
    },
    SetDown {
        dev: String,
    },
    AddAddress {
        dev: String,
        ip: IpAddr,
    },
    DelAddress {
        dev: String,
        ip: IpAddr,
        stage: Stage,
    },
    SetSysctl {
        key: String,
        value: String,
    },
    WritePodMtu {
        mtu: u32,
    },
    RemovePodMtu,
    ReplaceNeigh {
        neigh: Neigh,
    },
    DelNeigh {
        neigh: Neigh,
    },
    ReplaceFdb {
        fdb: Fdb,
    },
    DelFdb {
        fdb: Fdb,
    },
    ReplaceRoute {
        route: Route,
    },
    DelRoute {
        route: Route,
    },
}

/// How an entry kind (neighbours, FDB entries) is written: replace, delete.
pub(super) type EntryWrites<V> = (fn(V) -> Op, fn(V) -> Op);

pub(super) const NEIGH_WRITES: EntryWrites<Neigh> = (
    |neigh| Op::ReplaceNeigh { neigh },
    |neigh| Op::DelNeigh { neigh },
);

pub(super) const FDB_WRITES: EntryWrites<Fdb> =
    (|fdb| Op::ReplaceFdb { fdb }, |fdb| Op::DelFdb { fdb });

impl Op {
    pub fn stage(&self) -> Stage {
        match self {
            Op::CreateIpip { .. } | Op::CreateVxlan { .. } => Stage::Links,
            Op::DeleteLink { stage, .. } | Op::DelAddress { stage, .. } => *stage,
            Op::SetMtu { .. } | Op::SetUp { .. } => Stage::LinkAttrs,
            // Before the device's addresses: an IPv6 address cannot go on a
            // device where IPv6 is disabled.
            Op::SetSysctl { key, .. } if key.ends_with("/disable_ipv6") => Stage::LinkAttrs,
            Op::AddAddress { .. } => Stage::Addresses,
            Op::SetSysctl { .. } | Op::WritePodMtu { .. } | Op::RemovePodMtu => Stage::Host,
            Op::ReplaceNeigh { .. } | Op::ReplaceFdb { .. } => Stage::Neighbours,
            Op::ReplaceRoute { .. } => Stage::Routes,
            Op::DelNeigh { .. } | Op::DelFdb { .. } | Op::DelRoute { .. } => Stage::Stale,
            Op::SetDown { .. } => Stage::Retire,
        }
    }
}

/// One op and why the planner wants it: what gets logged and printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub op: Op,
    pub why: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.op, self.why)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Other(n) => write!(f, "type {n} ")?,
            other => write!(f, "{} ", format!("{other:?}").to_lowercase())?,
        }
        write!(f, "{}", self.key.dst)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if !self.dev.is_empty() {
            write!(f, " dev {}", self.dev)?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        write!(f, " proto {}", self.protocol)?;
        if self.key.metric != 0 {
            write!(f, " metric {}", self.key.metric)?;
        }
        if self.key.table != crate::model::MAIN_TABLE {
            write!(f, " table {}", self.key.table)?;
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateIpip { name } => write!(f, "link add {name} type ipip"),
            Op::CreateVxlan { device: d } => {
                let i = &d.identity;
                write!(
                    f,
                    "link add {} type vxlan id {} dstport {} local {} dev {} address {} nolearning mtu {} up",
                    d.name, i.vni, i.port, i.local, i.link, i.mac, d.mtu
                )
            }
            Op::DeleteLink { name, .. } => write!(f, "link del {name}"),
            Op::SetMtu { dev, mtu } => write!(f, "link set {dev} mtu {mtu}"),
            Op::SetUp { dev } => write!(f, "link set {dev} up"),
            Op::SetDown { dev } => write!(f, "link set {dev} down"),
            Op::AddAddress { dev, ip } => write!(f, "addr add {ip}/32 dev {dev}"),
            Op::DelAddress { dev, ip, .. } => write!(f, "addr del {ip}/32 dev {dev}"),
            Op::SetSysctl { key, value } => write!(f, "sysctl {}={value}", sysctl_name(key)),
            Op::WritePodMtu { mtu } => write!(f, "write pod MTU {mtu}"),
            Op::RemovePodMtu => write!(f, "remove pod MTU file"),
            Op::ReplaceNeigh { neigh: n } => {
                write!(
                    f,
                    "neigh replace {} lladdr {} dev {} permanent",
                    n.ip, n.mac, n.dev
                )
            }
            Op::DelNeigh { neigh: n } => write!(f, "neigh del {} dev {}", n.ip, n.dev),
            Op::ReplaceFdb { fdb } => write!(
                f,
                "fdb replace {} dev {} dst {} self permanent",
                fdb.mac, fdb.dev, fdb.dst
            ),
            Op::DelFdb { fdb } => write!(
                f,
                "fdb del {} dev {} dst {} self",
                fdb.mac, fdb.dev, fdb.dst
            ),
            Op::ReplaceRoute { route } => write!(f, "route replace {route}"),
            Op::DelRoute { route } => write!(f, "route del {route}"),
        }
    }
}

/// `net/ipv4/conf/vxlan.calico/rp_filter` -> `net.ipv4.conf.vxlan/calico.rp_filter`,
/// the way sysctl(8) spells a key whose device name has dots.
pub fn sysctl_name(path: &str) -> String {
    path.split('/')
        .map(|c| c.replace('.', "/"))
        .collect::<Vec<_>>()
        .join(".")
}
