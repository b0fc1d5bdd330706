//! Drift repair of the one object a kernel event names (`plan::repair`),
//! checked against the full diff: for random plans, one object of ours is
//! deleted, changed, added where the plan has none, or echoed unchanged;
//! the repair the event asks for must leave nothing for a full diff to do,
//! and the echo of that repair must ask for nothing.

mod common;

use std::net::IpAddr;

use common::{net, node, uplink};
use podroute::api::{Mode, Plan};
use podroute::model::{Config, Mac, Node};
use podroute::plan::{
    desired, diff, repair, simulate, Desired, Inputs, Observed, Repair, Route, Touched,
};
use proptest::prelude::*;
use proptest::sample::{select, Index};

fn nodes(n: usize) -> Vec<Node> {
    (1..=n as u8)
        .map(|i| {
            node(
                &format!("node-{i}"),
                &format!("10.250.0.{i}"),
                &format!("10.244.{i}.0/24"),
            )
        })
        .collect()
}

fn want(mode: Mode, n: usize) -> Desired {
    let nodes = nodes(n);
    desired(Inputs {
        local: &nodes[0],
        nodes: &nodes,
        plan: &Plan::steady(mode, 1),
        config: &Config::default(),
        uplink: Some(&uplink("eth0", 1500, "10.250.0.1/24")),
        uplink6: None,
    })
    .expect("valid inputs")
}

/// The kernel after a converge to `want`.
fn converged(want: &Desired) -> Observed {
    let mut observed = Observed::default();
    let ops: Vec<_> = diff(want, &observed)
        .steps
        .into_iter()
        .map(|s| s.op)
        .collect();
    simulate::apply_all(&mut observed, &ops);
    observed
}

/// What the repair leaves the kernel holding. `Restore` is an exclusive
/// add; in these cases the key is free.
fn apply(observed: &mut Observed, repair: &Repair) {
    match repair {
        Repair::Nothing => {}
        Repair::Restore(route) => _ = observed.routes.insert(route.key, route.clone()),
        Repair::Write(op) => simulate::apply(observed, op),
    }
}

/// The event the kernel would send about the object `touched` names, as
/// `observed` holds it now.
fn echo(observed: &Observed, touched: &Touched) -> Touched {
    match touched {
        Touched::Route { key, .. } => Touched::Route {
            key: *key,
            now: observed.routes.get(key).cloned(),
        },
        Touched::Neigh { ip, .. } => Touched::Neigh {
            ip: *ip,
            now: observed.neighs.get(ip).cloned(),
        },
        Touched::Fdb { mac, .. } => Touched::Fdb {
            mac: *mac,
            now: observed.fdb.get(mac).cloned(),
        },
    }
}

#[derive(Debug, Clone, Copy)]
enum Drift {
    Deleted,
    Changed,
    Stale,
    Unchanged,
}

/// Change one object of `observed` as `drift` says; the event it makes.
fn drift(observed: &mut Observed, pick: Index, drift: Drift) -> Option<Touched> {
    let routes: Vec<Route> = observed.routes.values().cloned().collect();
    let neighs: Vec<_> = observed.neighs.values().cloned().collect();
    let fdb: Vec<_> = observed.fdb.values().cloned().collect();
    let total = routes.len() + neighs.len() + fdb.len();
    if total == 0 {
        return None;
    }
    let i = pick.index(total);
    let stale_ip: IpAddr = "198.51.100.9".parse().expect("ip");
    let stale_mac = Mac([0x02, 0, 0, 0, 0, 0x99]);
    let touched = if i < routes.len() {
        let mut route = routes[i].clone();
        let key = match drift {
            Drift::Stale => {
                route.key.dst = net("198.51.100.0/24").into();
                route.key
            }
            _ => route.key,
        };
        if let Drift::Changed = drift {
            route.mtu = Some(1111);
        }
        Touched::Route {
            key,
            now: Some(route),
        }
    } else if i < routes.len() + neighs.len() {
        let mut neigh = neighs[i - routes.len()].clone();
        match drift {
            Drift::Stale => neigh.ip = stale_ip,
            Drift::Changed => neigh.mac = stale_mac,
            _ => {}
        }
        Touched::Neigh {
            ip: neigh.ip,
            now: Some(neigh),
        }
    } else {
        let mut entry = fdb[i - routes.len() - neighs.len()].clone();
        match drift {
            Drift::Stale => entry.mac = stale_mac,
            Drift::Changed => entry.dst = stale_ip,
            _ => {}
        }
        Touched::Fdb {
            mac: entry.mac,
            now: Some(entry),
        }
    };
    // Make the kernel hold what the event says.
    let touched = match (drift, touched) {
        (Drift::Deleted, Touched::Route { key, .. }) => {
            observed.routes.remove(&key);
            Touched::Route { key, now: None }
        }
        (Drift::Deleted, Touched::Neigh { ip, .. }) => {
            observed.neighs.remove(&ip);
            Touched::Neigh { ip, now: None }
        }
        (Drift::Deleted, Touched::Fdb { mac, .. }) => {
            observed.fdb.remove(&mac);
            Touched::Fdb { mac, now: None }
        }
        (_, touched) => {
            match &touched {
                Touched::Route { key, now: Some(r) } => _ = observed.routes.insert(*key, r.clone()),
                Touched::Neigh { ip, now: Some(n) } => _ = observed.neighs.insert(*ip, n.clone()),
                Touched::Fdb { mac, now: Some(f) } => _ = observed.fdb.insert(*mac, f.clone()),
                _ => {}
            }
            touched
        }
    };
    Some(touched)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn one_repair_leaves_nothing_for_the_full_diff(
        mode in select(vec![Mode::Vxlan, Mode::Native, Mode::Ipip]),
        n in 1usize..8,
        pick in any::<Index>(),
        kind in select(vec![Drift::Deleted, Drift::Changed, Drift::Stale, Drift::Unchanged]),
    ) {
        let want = want(mode, n);
        let mut observed = converged(&want);
        let Some(touched) = drift(&mut observed, pick, kind) else {
            return Ok(());
        };
        let fix = repair(&want, &touched);
        if let Drift::Unchanged = kind {
            prop_assert_eq!(&fix, &Repair::Nothing, "an echo of our own write");
        }
        apply(&mut observed, &fix);
        let left = diff(&want, &observed);
        prop_assert!(left.is_empty(), "{touched} -> {fix:?} left {:?}", left.steps);
        prop_assert_eq!(repair(&want, &echo(&observed, &touched)), Repair::Nothing);
    }
}

#[test]
fn a_deleted_route_is_restored_only_where_its_key_is_free() {
    let want = want(Mode::Vxlan, 3);
    let (key, route) = want.routes.iter().next().expect("a route");
    let deleted = Touched::Route {
        key: *key,
        now: None,
    };
    // Restore, not replace: the dataplane adds it exclusively, so a route
    // of someone else's that took the key meanwhile survives.
    assert_eq!(repair(&want, &deleted), Repair::Restore(route.clone()));
}
