//! (Desired, Observed) -> the ordered writes that make the kernel hold
//! Desired. Nothing outside Observed's owned sets is ever in the result.

use std::collections::{BTreeMap, BTreeSet};

use itertools::merge_join_by;
use itertools::EitherOrBoth::{Both, Left, Right};

use super::ops::{EntryWrites, Op, Stage, Step, FDB_WRITES, NEIGH_WRITES};
use super::state::{Desired, ForeignState, IpipDevice, Observed, Route, RouteKey, VxlanDevice};

/// The result of a diff: the steps, in stage order, the desired routes left
/// out because a route that is not ours holds their key, and what keeps the
/// plan from being applied at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    pub steps: Vec<Step>,
    pub conflicts: Vec<RouteKey>,
    /// Why the plan cannot be reached without touching what is not ours (a
    /// device of another kind under our name, a device to recreate that
    /// carries foreign state). When any, nothing may be written.
    pub blocked: Vec<String>,
    /// Devices no longer in play that stay because they carry foreign state.
    pub kept: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The one rule for our devices: one that carries state that is not ours is
/// never deleted or recreated. `Some(what)` names that state.
pub fn foreign_on<'a>(observed: &'a Observed, dev: &str) -> Option<&'a ForeignState> {
    observed.foreign_state.get(dev).filter(|f| !f.is_empty())
}

pub fn diff(desired: &Desired, observed: &Observed) -> Diff {
    let mut out = Diff::default();
    let mut steps = Vec::new();
    let mut push = |op: Op, why: String| steps.push(Step { op, why });

    for (name, want) in [
        desired.ipip.as_ref().map(|d| (d.name.as_str(), "ipip")),
        desired.vxlan.as_ref().map(|d| (d.name.as_str(), "vxlan")),
        desired.vxlan6.as_ref().map(|d| (d.name.as_str(), "vxlan")),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(kind) = observed.foreign_devices.get(name) {
            out.blocked.push(format!(
                "device {name} exists but is not {want} (kind {kind}); it is not ours, so it is left alone"
            ));
        }
    }

    // Devices deleted here take their routes, neighbours and FDB entries
    // with them: those are neither deleted one by one nor trusted as present.
    let mut doomed: BTreeSet<&str> = BTreeSet::new();

    ipip_device(desired.ipip.as_ref(), observed, &mut push);
    for (want, have) in [
        (&desired.vxlan, &observed.vxlan),
        (&desired.vxlan6, &observed.vxlan6),
    ] {
        match vxlan_device(want.as_ref(), have.as_ref(), observed, &mut push) {
            Ok(Some(name)) => {
                doomed.insert(name);
            }
            Ok(None) => {}
            Err(blocked) => out.blocked.push(blocked),
        }
        if let (None, Some(retired)) = (want, have) {
            if foreign_on(observed, &retired.name).is_none() {
                doomed.insert(retired.name.as_str());
            }
        }
    }
    let alive = |dev: &str| !doomed.contains(dev);

    // accept_ra goes to 2 before IPv6 forwarding goes on: forwarding with
    // accept_ra 1 drops the routes and addresses the uplink learned from
    // router advertisements at once.
    let (accept_ra, others): (Vec<_>, Vec<_>) = desired
        .sysctls
        .iter()
        .partition(|(key, _)| key.ends_with("/accept_ra"));
    for (key, value) in accept_ra.into_iter().chain(others) {
        let current = match sysctl_device(key) {
            Some(dev) if !alive(dev) => None,
            _ => observed.sysctls.get(key).cloned().flatten(),
        };
        if current.as_deref() != Some(value.as_str()) {
            let why = match current {
                Some(old) => format!("is {old}"),
                None => "not set yet".into(),
            };
            push(
                Op::SetSysctl {
                    key: key.clone(),
                    value: value.clone(),
                },
                why,
            );
        }
    }
    match (desired.pod_mtu, observed.pod_mtu) {
        (Some(want), have) if have != Some(want) => push(
            Op::WritePodMtu { mtu: want },
            have.map_or("missing".into(), |h| format!("was {h}")),
        ),
        (None, Some(_)) => push(Op::RemovePodMtu, "no plan in force".into()),
        _ => {}
    }

    // Removals are collected and pushed after every create or replace.
    let (mut stale, mut stale_fdb) = (Vec::new(), Vec::new());
    entries_on_devices(
        (&desired.neighs, &observed.neighs),
        |n| alive(&n.dev),
        NEIGH_WRITES,
        &mut push,
        &mut stale,
    );
    entries_on_devices(
        (&desired.fdb, &observed.fdb),
        |f| alive(&f.dev),
        FDB_WRITES,
        &mut push,
        &mut stale_fdb,
    );

    // Routes of an adopted protocol are ours only where the plan's scope
    // covers them; elsewhere they are someone else's.
    let adopted = |key: &RouteKey| {
        observed
            .adoptable
            .get(key)
            .filter(|r| desired.adopt.covers(r))
    };
    let foreign = |key: &RouteKey| {
        observed.foreign_routes.contains(key)
            || (observed.adoptable.contains_key(key) && adopted(key).is_none())
    };
    // Desired and observed are maps sorted by the same key: one merge walk
    // meets every key once, in O(n) rather than a lookup per entry.
    let mut stale_routes = Vec::new();
    for entry in merge_join_by(&desired.routes, &observed.routes, |a, b| a.0.cmp(b.0)) {
        let (key, route, ours) = match entry {
            Both((key, route), (_, have)) => (key, route, Some(have)),
            Left((key, route)) => (key, route, None),
            Right((_, have)) => {
                if alive(&have.dev) {
                    stale_routes.push(stale_route(have));
                }
                continue;
            }
        };
        match ours.or_else(|| adopted(key)).filter(|r| alive(&r.dev)) {
            Some(have) if have == route => {}
            _ if foreign(key) => out.conflicts.push(*key),
            Some(have) if have.protocol != route.protocol => push(
                Op::ReplaceRoute {
                    route: route.clone(),
                },
                format!("adopting route of protocol {}", have.protocol),
            ),
            have => push(
                Op::ReplaceRoute {
                    route: route.clone(),
                },
                missing_or_differs(have.is_some()),
            ),
        }
    }
    let stale_adopted = observed.adoptable.values().filter(|r| {
        desired.adopt.covers(r) && !desired.routes.contains_key(&r.key) && alive(&r.dev)
    });
    stale_routes.extend(stale_adopted.map(stale_route));
    for step in stale_routes.into_iter().chain(stale).chain(stale_fdb) {
        push(step.op, step.why);
    }

    retire(desired, observed, &mut push, &mut out.kept);

    // Steps are pushed nearly in stage order; a stable sort of a large
    // diff would allocate a scratch copy of it, so sort only when needed.
    if !steps.is_sorted_by_key(|s| s.op.stage()) {
        steps.sort_by_key(|s| s.op.stage());
    }
    out.steps = steps;
    out
}

/// The device a per-device sysctl (`net/ipv{4,6}/conf/<dev>/...`) belongs to.
pub fn sysctl_device(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("net/ipv4/conf/");
    rest.or_else(|| key.strip_prefix("net/ipv6/conf/"))?
        .split('/')
        .next()
}

/// Neighbours or FDB entries, each on a device: the desired ones written
/// (`replace`) where missing or different, the observed ones the plan lacks
/// deleted (`delete`, into `stale`). One merge walk, as for routes.
fn entries_on_devices<K: Ord, V: Clone + PartialEq>(
    (desired, observed): (&BTreeMap<K, V>, &BTreeMap<K, V>),
    alive: impl Fn(&V) -> bool,
    (replace, delete): EntryWrites<V>,
    push: &mut impl FnMut(Op, String),
    stale: &mut Vec<Step>,
) {
    for entry in merge_join_by(desired, observed, |a, b| a.0.cmp(b.0)) {
        match entry {
            Both((_, want), (_, have)) if have == want && alive(have) => {}
            Both((_, want), (_, have)) => {
                push(replace(want.clone()), missing_or_differs(alive(have)))
            }
            Left((_, want)) => push(replace(want.clone()), missing_or_differs(false)),
            Right((_, have)) if alive(have) => stale.push(Step {
                op: delete(have.clone()),
                why: "no longer a peer".into(),
            }),
            Right(_) => {}
        }
    }
}

fn stale_route(route: &Route) -> Step {
    Step {
        op: Op::DelRoute {
            route: route.clone(),
        },
        why: format!("not in the plan (proto {})", route.protocol),
    }
}

fn missing_or_differs(present: bool) -> String {
    if present { "differs" } else { "missing" }.into()
}

fn ipip_device(want: Option<&IpipDevice>, observed: &Observed, push: &mut impl FnMut(Op, String)) {
    let Some(want) = want else { return };
    let have = match &observed.ipip {
        Some(have) => have.clone(),
        None => {
            push(
                Op::CreateIpip {
                    name: want.name.clone(),
                },
                "ipip in play".into(),
            );
            IpipDevice {
                mtu: 0,
                up: false,
                addresses: BTreeSet::new(),
                ..want.clone()
            }
        }
    };
    link_attrs(&want.name, want.mtu, want.up, have.mtu, have.up, push);
    let foreign = foreign_on(observed, &want.name);
    addresses(&want.name, &want.addresses, &have.addresses, foreign, push);
}

/// The name of the device when it is deleted to be created again, or why it
/// cannot be (it carries state that is not ours).
fn vxlan_device<'a>(
    want: Option<&'a VxlanDevice>,
    have: Option<&VxlanDevice>,
    observed: &Observed,
    push: &mut impl FnMut(Op, String),
) -> Result<Option<&'a str>, String> {
    let Some(want) = want else { return Ok(None) };
    let mut doomed = None;
    let have = match have {
        Some(have) if have.identity == want.identity => Some(have),
        Some(have) => {
            let change = identity_change(have, want);
            if let Some(foreign) = foreign_on(observed, &want.name) {
                return Err(format!(
                    "{} would have to be recreated ({change}) but carries state that is not ours \
                     ({foreign}); remove that state or the device by hand",
                    want.name
                ));
            }
            push(
                Op::DeleteLink {
                    name: want.name.clone(),
                    stage: Stage::Links,
                },
                format!("recreate: {change}"),
            );
            doomed = Some(want.name.as_str());
            None
        }
        None => None,
    };
    match have {
        Some(have) => {
            link_attrs(&want.name, want.mtu, want.up, have.mtu, have.up, push);
            let foreign = foreign_on(observed, &want.name);
            addresses(&want.name, &want.addresses, &have.addresses, foreign, push);
        }
        None => {
            push(
                Op::CreateVxlan {
                    device: Box::new(want.clone()),
                },
                "vxlan in play".into(),
            );
            addresses(&want.name, &want.addresses, &BTreeSet::new(), None, push);
        }
    }
    Ok(doomed)
}

fn identity_change(have: &VxlanDevice, want: &VxlanDevice) -> String {
    let (h, w) = (&have.identity, &want.identity);
    let fields = [
        ("vni", h.vni.to_string(), w.vni.to_string()),
        ("port", h.port.to_string(), w.port.to_string()),
        ("local", h.local.to_string(), w.local.to_string()),
        ("link", h.link.clone(), w.link.clone()),
        ("mac", h.mac.to_string(), w.mac.to_string()),
        ("learning", h.learning.to_string(), w.learning.to_string()),
    ];
    let changed = fields.iter().filter(|(_, h, w)| h != w);
    let parts: Vec<String> = changed.map(|(f, h, w)| format!("{f} {h} -> {w}")).collect();
    parts.join(", ")
}

fn link_attrs(
    dev: &str,
    mtu: u32,
    up: bool,
    have_mtu: u32,
    have_up: bool,
    push: &mut impl FnMut(Op, String),
) {
    if mtu != have_mtu {
        push(
            Op::SetMtu {
                dev: dev.into(),
                mtu,
            },
            format!("mtu is {have_mtu}"),
        );
    }
    if up && !have_up {
        push(Op::SetUp { dev: dev.into() }, "down".into());
    }
}

/// Our tunnel addresses on `dev`. One someone else already put there (an
/// address without our protocol, as every address is on kernels before
/// 5.18) serves: it is neither added again nor removed.
fn addresses(
    dev: &str,
    want: &BTreeSet<std::net::IpAddr>,
    have: &BTreeSet<std::net::IpAddr>,
    foreign: Option<&ForeignState>,
    push: &mut impl FnMut(Op, String),
) {
    let served =
        |ip: &std::net::IpAddr| foreign.is_some_and(|f| f.addresses.iter().any(|a| a.ip() == *ip));
    for ip in want.difference(have).filter(|ip| !served(ip)) {
        push(
            Op::AddAddress {
                dev: dev.into(),
                ip: *ip,
            },
            "tunnel address".into(),
        );
    }
    for ip in have.difference(want) {
        push(
            Op::DelAddress {
                dev: dev.into(),
                ip: *ip,
                stage: Stage::Stale,
            },
            "no longer our tunnel address".into(),
        );
    }
}

/// Tunnel devices of modes no longer in play. One rule for both: a device
/// that carries state that is not ours keeps that state and stays up; only
/// our addresses (and, through the stale steps, our routes, neighbours and
/// FDB entries) go. Otherwise the VXLAN device is deleted; the ipip fallback
/// device cannot be, so it loses our addresses and goes down.
fn retire(
    desired: &Desired,
    observed: &Observed,
    push: &mut impl FnMut(Op, String),
    kept: &mut Vec<String>,
) {
    for (want, have) in [
        (&desired.vxlan, &observed.vxlan),
        (&desired.vxlan6, &observed.vxlan6),
    ] {
        let (None, Some(have)) = (want, have) else {
            continue;
        };
        match foreign_on(observed, &have.name) {
            None => push(
                Op::DeleteLink {
                    name: have.name.clone(),
                    stage: Stage::Retire,
                },
                "vxlan no longer in play".into(),
            ),
            Some(foreign) => {
                if may_drop_addresses(foreign) {
                    retire_addresses(&have.name, &have.addresses, "vxlan no longer in play", push);
                }
                kept.push(kept_note(&have.name, foreign));
            }
        }
    }
    if let (None, Some(have)) = (&desired.ipip, &observed.ipip) {
        let foreign = foreign_on(observed, &have.name);
        if foreign.is_none_or(may_drop_addresses) {
            retire_addresses(&have.name, &have.addresses, "ipip no longer in play", push);
        }
        match foreign {
            _ if !have.up => {}
            None => push(
                Op::SetDown {
                    dev: have.name.clone(),
                },
                "ipip no longer in play".into(),
            ),
            Some(foreign) => kept.push(kept_note(&have.name, foreign)),
        }
    }
}

/// Whether our addresses may leave a device that carries foreign state:
/// when the last IPv4 address leaves a device, the kernel flushes every
/// route through it, someone else's too. So they stay unless another
/// address (theirs) remains.
fn may_drop_addresses(foreign: &ForeignState) -> bool {
    foreign.routes.is_empty() || !foreign.addresses.is_empty()
}

fn retire_addresses(
    dev: &str,
    addresses: &BTreeSet<std::net::IpAddr>,
    why: &str,
    push: &mut impl FnMut(Op, String),
) {
    for ip in addresses {
        push(
            Op::DelAddress {
                dev: dev.into(),
                ip: *ip,
                stage: Stage::Retire,
            },
            why.into(),
        );
    }
}

fn kept_note(dev: &str, foreign: &ForeignState) -> String {
    format!(
        "{dev} is no longer in play but stays up: it carries state that is not ours ({foreign})"
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipnetwork::IpNetwork;

    use super::*;
    use crate::api::{Mode, Plan};
    use crate::model::{Config, Node};
    use crate::plan::{desired, simulate, Inputs, Uplink};

    fn node(i: u8) -> Node {
        Node {
            name: format!("node-{i}"),
            node_ip: Some(Ipv4Addr::new(10, 250, 0, i)),
            node_ip6: None,
            pod_cidrs: vec![IpNetwork::V4(
                format!("10.244.{i}.0/24").parse().expect("cidr"),
            )],
        }
    }

    /// What node-1 needs among `nodes` in a steady `mode`.
    fn steady(mode: Mode, nodes: &[Node]) -> Desired {
        desired(Inputs {
            local: &nodes[0],
            nodes,
            plan: &Plan::steady(mode, 1),
            config: &Config::default(),
            uplink: Some(&Uplink {
                name: "eth0".into(),
                mtu: 1500,
                address: "10.250.0.1/24".parse().expect("address"),
                accept_ra: None,
            }),
            uplink6: None,
        })
        .expect("valid inputs")
    }

    /// Writes that make something exist or take a new value.
    fn creates(op: &Op) -> bool {
        matches!(
            op,
            Op::CreateIpip { .. }
                | Op::CreateVxlan { .. }
                | Op::AddAddress { .. }
                | Op::ReplaceNeigh { .. }
                | Op::ReplaceFdb { .. }
                | Op::ReplaceRoute { .. }
        )
    }

    /// Writes that take something away (a recreate's delete, which must come
    /// before its create, is not among them).
    fn removes(op: &Op) -> bool {
        match op {
            Op::DeleteLink { stage, .. } => *stage != Stage::Links,
            Op::DelAddress { .. }
            | Op::DelNeigh { .. }
            | Op::DelFdb { .. }
            | Op::DelRoute { .. }
            | Op::SetDown { .. } => true,
            _ => false,
        }
    }

    #[test]
    fn stages_run_in_the_order_the_issue_fixes() {
        let order = [
            Stage::Links,
            Stage::LinkAttrs,
            Stage::Addresses,
            Stage::Host,
            Stage::Neighbours,
            Stage::Routes,
            Stage::Stale,
            Stage::Retire,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    /// From ipip with three nodes to vxlan with two: one diff that creates,
    /// replaces, deletes stale state and retires a device.
    #[test]
    fn every_removal_comes_after_every_create_or_replace() {
        let nodes = [node(1), node(2), node(3)];
        let ipip = steady(Mode::Ipip, &nodes);
        let mut observed = Observed::default();
        let program = diff(&ipip, &observed);
        simulate::apply_all(&mut observed, program.steps.iter().map(|s| &s.op));
        let d = diff(&steady(Mode::Vxlan, &nodes[..2]), &observed);

        let mut stages: Vec<Stage> = d.steps.iter().map(|s| s.op.stage()).collect();
        stages.dedup();
        assert_eq!(
            stages,
            [
                Stage::Links,
                Stage::Addresses,
                Stage::Host,
                Stage::Neighbours,
                Stage::Routes,
                Stage::Stale,
                Stage::Retire,
            ],
            "{:#?}",
            d.steps
        );
        let last_create = d.steps.iter().rposition(|s| creates(&s.op));
        let first_removal = d.steps.iter().position(|s| removes(&s.op));
        match (last_create, first_removal) {
            (Some(c), Some(r)) => assert!(c < r, "{:#?}", d.steps),
            other => panic!("the switch both creates and removes: {other:?}"),
        }
        for step in d.steps.iter().filter(|s| removes(&s.op)) {
            assert!(
                matches!(step.op.stage(), Stage::Stale | Stage::Retire),
                "{step}"
            );
        }
    }
}
