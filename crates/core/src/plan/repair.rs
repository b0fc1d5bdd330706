//! The write that puts back one object of ours a kernel event names,
//! decided from the last desired state alone: a drift repair without a dump.
//! The full pass (observe, diff) stays the judge of everything else.

use std::net::IpAddr;

use serde::Serialize;

use super::ops::{EntryWrites, Op, FDB_WRITES, NEIGH_WRITES};
use super::state::{Desired, Fdb, Neigh, Route, RouteKey};
use crate::model::Mac;

/// An object of ours that an event says changed, and what the kernel holds
/// of it now (`None`: deleted). Routes are ours by our protocol only (an
/// adopted protocol's route needs the full pass's scope rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Touched {
    Route { key: RouteKey, now: Option<Route> },
    Neigh { ip: IpAddr, now: Option<Neigh> },
    Fdb { mac: Mac, now: Option<Fdb> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The kernel holds what the plan wants (an echo of our own write).
    Nothing,
    /// Put a deleted route back only if its key is still free: a route of
    /// someone else's that took the key meanwhile must not be replaced.
    Restore(Route),
    /// One write of the kinds a diff makes, on an object of ours.
    Write(Op),
}

/// What `touched` asks for against `desired`.
pub fn repair(desired: &Desired, touched: &Touched) -> Repair {
    match touched {
        Touched::Route { key, now } => match (desired.routes.get(key), now) {
            (Some(want), None) => Repair::Restore(want.clone()),
            (Some(want), Some(have)) if have == want => Repair::Nothing,
            (Some(want), Some(_)) => Repair::Write(Op::ReplaceRoute {
                route: want.clone(),
            }),
            (None, Some(have)) => Repair::Write(Op::DelRoute {
                route: have.clone(),
            }),
            (None, None) => Repair::Nothing,
        },
        Touched::Neigh { ip, now } => entry(desired.neighs.get(ip), now.as_ref(), NEIGH_WRITES),
        Touched::Fdb { mac, now } => entry(desired.fdb.get(mac), now.as_ref(), FDB_WRITES),
    }
}

/// A neighbour or FDB entry: on our device every permanent entry is ours,
/// so replace (idempotent) or delete settles it whatever the kernel holds.
fn entry<V: Clone + PartialEq>(
    want: Option<&V>,
    now: Option<&V>,
    (replace, delete): EntryWrites<V>,
) -> Repair {
    match (want, now) {
        (Some(want), Some(have)) if have == want => Repair::Nothing,
        (Some(want), _) => Repair::Write(replace(want.clone())),
        (None, Some(have)) => Repair::Write(delete(have.clone())),
        (None, None) => Repair::Nothing,
    }
}

impl Touched {
    /// The event said the object is gone.
    pub fn deleted(&self) -> bool {
        match self {
            Touched::Route { now, .. } => now.is_none(),
            Touched::Neigh { now, .. } => now.is_none(),
            Touched::Fdb { now, .. } => now.is_none(),
        }
    }
}

impl std::fmt::Display for Touched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            Touched::Route { key, .. } => format!("route {}", key.dst),
            Touched::Neigh { ip, .. } => format!("neigh {ip}"),
            Touched::Fdb { mac, .. } => format!("fdb {mac}"),
        };
        let verb = if self.deleted() {
            "deleted"
        } else {
            "added or changed"
        };
        write!(f, "{what} {verb}")
    }
}
