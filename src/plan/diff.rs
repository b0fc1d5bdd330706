//! (Desired, Observed) -> the ordered writes that make the kernel hold
//! Desired. Nothing outside Observed's owned sets is ever in the result.

use std::collections::BTreeSet;

use super::ops::{Op, Stage, Step};
use super::state::{Desired, IpipDevice, Observed, RouteKey, VxlanDevice};

/// The result of a diff: the steps, in stage order, and the desired routes
/// left out because a route that is not ours holds their key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    pub steps: Vec<Step>,
    pub conflicts: Vec<RouteKey>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

pub fn diff(desired: &Desired, observed: &Observed) -> Diff {
    let mut steps = Vec::new();
    let mut push = |op: Op, why: String| steps.push(Step { op, why });

    // Devices deleted here take their routes, neighbours and FDB entries
    // with them: those are neither deleted one by one nor trusted as present.
    let mut doomed: BTreeSet<&str> = BTreeSet::new();

    ipip_device(desired.ipip.as_ref(), observed.ipip.as_ref(), &mut push);
    if let Some(name) = vxlan_device(desired.vxlan.as_ref(), observed.vxlan.as_ref(), &mut push) {
        doomed.insert(name);
    }
    if let (None, Some(retired)) = (&desired.vxlan, &observed.vxlan) {
        doomed.insert(retired.name.as_str());
    }
    let alive = |dev: &str| !doomed.contains(dev);

    for (key, value) in &desired.sysctls {
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

    for (ip, neigh) in &desired.neighs {
        match observed.neighs.get(ip).filter(|n| alive(&n.dev)) {
            Some(have) if have == neigh => {}
            have => push(
                Op::ReplaceNeigh {
                    neigh: neigh.clone(),
                },
                missing_or_differs(have.is_some()),
            ),
        }
    }
    for (mac, fdb) in &desired.fdb {
        match observed.fdb.get(mac).filter(|f| alive(&f.dev)) {
            Some(have) if have == fdb => {}
            have => push(
                Op::ReplaceFdb { fdb: fdb.clone() },
                missing_or_differs(have.is_some()),
            ),
        }
    }

    let mut conflicts = Vec::new();
    for (key, route) in &desired.routes {
        match observed.routes.get(key).filter(|r| alive(&r.dev)) {
            Some(have) if have == route => {}
            _ if observed.foreign_routes.contains(key) => conflicts.push(*key),
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

    for (key, route) in &observed.routes {
        if !desired.routes.contains_key(key) && alive(&route.dev) {
            push(
                Op::DelRoute {
                    route: route.clone(),
                },
                format!("not in the plan (proto {})", route.protocol),
            );
        }
    }
    for (ip, neigh) in &observed.neighs {
        if !desired.neighs.contains_key(ip) && alive(&neigh.dev) {
            push(
                Op::DelNeigh {
                    neigh: neigh.clone(),
                },
                "no longer a peer".into(),
            );
        }
    }
    for (mac, fdb) in &observed.fdb {
        if !desired.fdb.contains_key(mac) && alive(&fdb.dev) {
            push(Op::DelFdb { fdb: fdb.clone() }, "no longer a peer".into());
        }
    }

    retire(desired, observed, &mut push);

    // Steps are pushed nearly in stage order; a stable sort of a large
    // diff would allocate a scratch copy of it, so sort only when needed.
    if !steps.is_sorted_by_key(|s| s.op.stage()) {
        steps.sort_by_key(|s| s.op.stage());
    }
    Diff { steps, conflicts }
}

/// The device a per-device sysctl (`net/ipv4/conf/<dev>/...`) belongs to.
pub fn sysctl_device(key: &str) -> Option<&str> {
    key.strip_prefix("net/ipv4/conf/")?.split('/').next()
}

fn missing_or_differs(present: bool) -> String {
    if present { "differs" } else { "missing" }.into()
}

fn ipip_device(
    want: Option<&IpipDevice>,
    have: Option<&IpipDevice>,
    push: &mut impl FnMut(Op, String),
) {
    let Some(want) = want else { return };
    let have = match have {
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
    addresses(&want.name, &want.addresses, &have.addresses, push);
}

/// Returns the name of the device when it is deleted to be created again.
fn vxlan_device<'a>(
    want: Option<&'a VxlanDevice>,
    have: Option<&VxlanDevice>,
    push: &mut impl FnMut(Op, String),
) -> Option<&'a str> {
    let want = want?;
    let mut doomed = None;
    let have = match have {
        Some(have) if have.identity == want.identity => Some(have),
        Some(have) => {
            push(
                Op::DeleteLink {
                    name: want.name.clone(),
                    stage: Stage::Links,
                },
                format!("recreate: {}", identity_change(have, want)),
            );
            doomed = Some(want.name.as_str());
            None
        }
        None => None,
    };
    match have {
        Some(have) => {
            link_attrs(&want.name, want.mtu, want.up, have.mtu, have.up, push);
            addresses(&want.name, &want.addresses, &have.addresses, push);
        }
        None => {
            push(
                Op::CreateVxlan {
                    device: Box::new(want.clone()),
                },
                "vxlan in play".into(),
            );
            addresses(&want.name, &want.addresses, &BTreeSet::new(), push);
        }
    }
    doomed
}

fn identity_change(have: &VxlanDevice, want: &VxlanDevice) -> String {
    let (h, w) = (&have.identity, &want.identity);
    let mut parts = Vec::new();
    if h.vni != w.vni {
        parts.push(format!("vni {} -> {}", h.vni, w.vni));
    }
    if h.port != w.port {
        parts.push(format!("port {} -> {}", h.port, w.port));
    }
    if h.local != w.local {
        parts.push(format!("local {} -> {}", h.local, w.local));
    }
    if h.link != w.link {
        parts.push(format!("link {} -> {}", h.link, w.link));
    }
    if h.mac != w.mac {
        parts.push(format!("mac {} -> {}", h.mac, w.mac));
    }
    if h.learning != w.learning {
        parts.push(format!("learning {} -> {}", h.learning, w.learning));
    }
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

fn addresses(
    dev: &str,
    want: &BTreeSet<std::net::Ipv4Addr>,
    have: &BTreeSet<std::net::Ipv4Addr>,
    push: &mut impl FnMut(Op, String),
) {
    for ip in want.difference(have) {
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

/// Tunnel devices of modes no longer in play: the VXLAN device is deleted;
/// the ipip fallback device cannot be, so it loses our addresses and goes
/// down (unless someone else still has an address on it).
fn retire(desired: &Desired, observed: &Observed, push: &mut impl FnMut(Op, String)) {
    if let (None, Some(have)) = (&desired.vxlan, &observed.vxlan) {
        push(
            Op::DeleteLink {
                name: have.name.clone(),
                stage: Stage::Retire,
            },
            "vxlan no longer in play".into(),
        );
    }
    if let (None, Some(have)) = (&desired.ipip, &observed.ipip) {
        for ip in &have.addresses {
            push(
                Op::DelAddress {
                    dev: have.name.clone(),
                    ip: *ip,
                    stage: Stage::Retire,
                },
                "ipip no longer in play".into(),
            );
        }
        let shared = observed
            .foreign_addresses
            .get(&have.name)
            .is_some_and(|a| !a.is_empty());
        if have.up && !shared {
            push(
                Op::SetDown {
                    dev: have.name.clone(),
                },
                "ipip no longer in play".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipnetwork::IpNetwork;

    use super::*;
    use crate::model::{Config, Mode, Node, Plan};
    use crate::plan::{desired, simulate, Inputs, Uplink};

    fn node(i: u8) -> Node {
        Node {
            name: format!("node-{i}"),
            node_ip: Ipv4Addr::new(10, 250, 0, i),
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
            uplink: &Uplink {
                name: "eth0".into(),
                mtu: 1500,
                address: "10.250.0.1/24".parse().expect("address"),
            },
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
