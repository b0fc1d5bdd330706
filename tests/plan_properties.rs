//! Properties of the planner: for random clusters, plans and configs, and
//! random (but realistic) kernel states, applying the diff through the
//! kernel model (`plan::simulate`) reaches the desired state, never touches
//! what is not ours, and a second diff is empty.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{ip, net, node, uplink};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use podroute::api::{Mode, OffSubnet, Plan};
use podroute::model::{Config, Mac, Node, RpFilter};
use podroute::plan::{
    desired, diff, nothing, simulate, Desired, Diff, ForeignState, Inputs, Observed, Op, Route,
    RouteKey, RouteKind, Stage, Step, Uplink, LOCAL_UNREACHABLE_METRIC,
};
use podroute::plan::{route_owner, RouteOwner};
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};

const CASES: u32 = 256;
/// The route protocol of the routes Calico/BIRD left behind.
const BIRD: u8 = 12;

// ==================================================================== inputs

/// Everything `desired()` needs, owned.
#[derive(Debug, Clone)]
struct Scenario {
    nodes: Vec<Node>,
    local: usize,
    uplink: Uplink,
    /// Present when the local node is dual-stack.
    uplink6: Option<Uplink>,
    plan: Plan,
    config: Config,
}

impl Scenario {
    fn desired(&self) -> Desired {
        desired(Inputs {
            local: &self.nodes[self.local],
            nodes: &self.nodes,
            plan: &self.plan,
            config: &self.config,
            uplink: Some(&self.uplink),
            uplink6: self.uplink6.as_ref(),
        })
        .expect("generated scenarios are valid")
    }
}

/// The underlay subnets nodes live on (a couple of /24s, one outside 10/8).
const UNDERLAY: [[u8; 3]; 3] = [[10, 250, 0], [10, 251, 0], [192, 168, 7]];

/// 1..12 nodes: distinct names, distinct IPs on the underlay /24s, and
/// non-overlapping /24 pod CIDRs from 10.244.0.0/16. Some are dual-stack:
/// fd00:250:<subnet>::<host> and fd00:244:<octet>::/64 besides.
fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    (1usize..=12)
        .prop_flat_map(|n| {
            (
                prop::collection::btree_set("[a-z][a-z0-9-]{0,12}", n)
                    .prop_map(Vec::from_iter)
                    .prop_shuffle(),
                prop::collection::btree_set((0..UNDERLAY.len(), 1u8..=254), n)
                    .prop_map(Vec::from_iter)
                    .prop_shuffle(),
                prop::collection::btree_set(any::<u8>(), n)
                    .prop_map(Vec::from_iter)
                    .prop_shuffle(),
                prop::collection::vec(any::<bool>(), n),
            )
        })
        .prop_map(|(names, ips, octets, dual)| {
            let nodes: Vec<Node> = names
                .into_iter()
                .zip(ips)
                .zip(octets)
                .zip(dual)
                .map(|(((name, (subnet, host)), octet), dual)| {
                    let [a, b, c] = UNDERLAY[subnet];
                    let mut pod_cidrs = vec![IpNetwork::V4(
                        Ipv4Network::new(Ipv4Addr::new(10, 244, octet, 0), 24).unwrap(),
                    )];
                    let seg = |x: u8| u16::from(x);
                    let ip6 =
                        Ipv6Addr::new(0xfd00, 0x250, seg(subnet as u8), 0, 0, 0, 0, seg(host));
                    if dual {
                        let net6 = Ipv6Addr::new(0xfd00, 0x244, seg(octet), 0, 0, 0, 0, 0);
                        pod_cidrs.push(IpNetwork::V6(Ipv6Network::new(net6, 64).unwrap()));
                    }
                    Node {
                        name,
                        node_ip: Some(Ipv4Addr::new(a, b, c, host)),
                        node_ip6: dual.then_some(ip6),
                        pod_cidrs,
                    }
                })
                .collect();
            podroute::model::validate_nodes(&nodes).expect("generated nodes are valid");
            nodes
        })
}

fn arb_plan() -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        select(Mode::ALL.to_vec()),
        subsequence(Mode::ALL.to_vec(), 0..=3),
        any::<bool>(),
    )
        .prop_map(|(generation, route_mode, decap, with_route)| {
            let mut decap: BTreeSet<Mode> = decap.into_iter().collect();
            if with_route {
                decap.insert(route_mode);
            }
            Plan {
                generation,
                route_mode,
                decap,
            }
        })
}

/// A scenario with a random config; the MTU override stays within the uplink.
fn arb_scenario() -> impl Strategy<Value = Scenario> {
    let uplink_shape = (
        select(vec!["eth0", "ens5"]),
        select(vec![1500u32, 1460, 9001, 1280]),
        // /24: only the local underlay subnet is on-link; /15 and /13 widen
        // it (never over the pod CIDRs in 10.244/16: that node is refused).
        select(vec![24u8, 24, 15, 13]),
        // IPv6: the local /64, or a /48 holding every underlay subnet.
        select(vec![64u8, 64, 48]),
        select(vec![None, Some(0u8), Some(1), Some(2)]),
    );
    let config = (
        select(vec![OffSubnet::Encap, OffSubnet::Underlay]),
        select(vec![RpFilter::Loose, RpFilter::Keep]),
        prop::option::of(any::<Index>()),
        select(vec![Mode::Vxlan, Mode::Ipip]),
        select(vec![4096u32, 4097]),
        select(vec![4789u16, 8472]),
    );
    (
        arb_nodes(),
        any::<Index>(),
        uplink_shape,
        arb_plan(),
        config,
    )
        .prop_map(
            |(mut nodes, local, (name, mtu, prefix, prefix6, accept_ra), plan, config)| {
                let local = local.index(nodes.len());
                let (off_subnet, rp_filter, mtu_override, cross_subnet_tunnel, vni, port) = config;
                let uplink = Uplink {
                    name: name.into(),
                    mtu,
                    address: Ipv4Network::new(nodes[local].node_ip.unwrap(), prefix)
                        .unwrap()
                        .into(),
                    accept_ra: None,
                };
                let config = Config {
                    adopt_route_protocols: vec![BIRD],
                    vxlan_vni: vni,
                    vxlan_port: port,
                    mtu: mtu_override.map(|i| 576 + i.index((mtu - 576 + 1) as usize) as u32),
                    rp_filter,
                    off_subnet,
                    cross_subnet_tunnel,
                    ..Config::default()
                };
                config.validate().expect("generated config is valid");
                // IPv6 needs 1280 in pods, vxlan-v6 70 bytes on top.
                if config.mtu.unwrap_or(mtu) < 1350 {
                    for n in &mut nodes {
                        n.node_ip6 = None;
                        n.pod_cidrs.retain(IpNetwork::is_ipv4);
                    }
                }
                let uplink6 = nodes[local].node_ip6.map(|ip6| Uplink {
                    name: uplink.name.clone(),
                    mtu,
                    address: Ipv6Network::new(ip6, prefix6).unwrap().into(),
                    accept_ra,
                });
                Scenario {
                    nodes,
                    local,
                    uplink,
                    uplink6,
                    plan,
                    config,
                }
            },
        )
}

/// Random drift applied to a realistic kernel state. Each byte picks an
/// action; most actions are "leave it".
#[derive(Debug, Clone)]
struct Noise {
    routes: Vec<(u8, u8)>,
    neighs: Vec<(u8, u8)>,
    fdb: Vec<(u8, u8)>,
    /// (identity change, mtu change, down)
    vxlan: (u8, u8, u8),
    /// (mtu change, down, address change)
    ipip: (u8, u8, u8),
    sysctls: Vec<u8>,
    pod_mtu: u8,
    stray_peer: Option<u8>,
    adopted: Vec<(u8, u8)>,
    foreign_routes: Vec<(u8, u8)>,
    foreign_addresses: Vec<(u8, u8)>,
    /// Routes that are not ours through one of our devices.
    foreign_on_devices: Vec<(u8, u8)>,
}

fn arb_noise() -> impl Strategy<Value = Noise> {
    let pairs = |max| prop::collection::vec((any::<u8>(), any::<u8>()), 0..max);
    (
        pairs(16),
        pairs(16),
        pairs(16),
        any::<(u8, u8, u8)>(),
        any::<(u8, u8, u8)>(),
        prop::collection::vec(any::<u8>(), 0..8),
        any::<u8>(),
        prop::option::weighted(0.2, any::<u8>()),
        pairs(5),
        pairs(5),
        (pairs(4), pairs(3)),
    )
        .prop_map(
            |(
                routes,
                neighs,
                fdb,
                vxlan,
                ipip,
                sysctls,
                pod_mtu,
                stray_peer,
                adopted,
                foreign_routes,
                (foreign_addresses, foreign_on_devices),
            )| Noise {
                routes,
                neighs,
                fdb,
                vxlan,
                ipip,
                sysctls,
                pod_mtu,
                stray_peer,
                adopted,
                foreign_routes,
                foreign_addresses,
                foreign_on_devices,
            },
        )
}

/// What the kernel holds after a clean apply of `desired` on an empty node,
/// read back as `config` reads it: routes of another protocol are someone
/// else's, or adoptable when `config` adopts that protocol.
fn realistic_for(desired: &Desired, config: &Config) -> Observed {
    let mut observed = Observed::default();
    apply(&mut observed, &diff(desired, &Observed::default()));
    let (ours, others): (BTreeMap<RouteKey, Route>, BTreeMap<RouteKey, Route>) =
        std::mem::take(&mut observed.routes)
            .into_iter()
            .partition(|(_, r)| r.protocol == config.route_protocol);
    observed.routes = ours;
    for (key, route) in others {
        let owner = route_owner(config, route.protocol, key.table, key.dst.prefix());
        if owner != RouteOwner::Foreign {
            observed.adoptable.insert(key, route);
        } else {
            observed.foreign_routes.insert(key);
        }
    }
    observed
}

fn realistic(desired: &Desired) -> Observed {
    realistic_for(desired, &Config::default())
}

fn apply(observed: &mut Observed, diff: &Diff) {
    simulate::apply_all(observed, diff.steps.iter().map(|s| &s.op));
}

/// Devices that exist in `observed` (and are up, when `up_only`).
fn devices(observed: &Observed, uplink: &str, up_only: bool) -> Vec<String> {
    let mut out = vec![uplink.to_string()];
    if let Some(d) = observed.ipip.as_ref().filter(|d| d.up || !up_only) {
        out.push(d.name.clone());
    }
    if let Some(d) = observed.vxlan.as_ref().filter(|d| d.up || !up_only) {
        out.push(d.name.clone());
    }
    out
}

fn pick<T: Clone>(items: &[T], x: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[x as usize % items.len()].clone())
}

/// Drift `observed` the way a kernel can: entries lost or edited by hand,
/// devices changed, routes of other protocols, foreign state. `want` is the
/// state the diff will aim at (for key collisions).
fn perturb(mut o: Observed, want: &Desired, uplink: &str, n: &Noise) -> Observed {
    // Owned routes edited or lost.
    let keys: Vec<RouteKey> = o.routes.keys().copied().collect();
    let devs = devices(&o, uplink, false);
    for (key, &(action, x)) in keys.iter().zip(&n.routes) {
        let r = o.routes.get_mut(key).unwrap();
        match action % 8 {
            3 => {
                o.routes.remove(key);
            }
            4 => r.via = (x % 4 != 0).then(|| Ipv4Addr::new(10, 250, 0, x).into()),
            5 => r.mtu = (x % 3 != 0).then(|| 1000 + u32::from(x)),
            6 => r.dev = pick(&devs, x).unwrap(),
            7 => r.onlink = !r.onlink,
            _ => {}
        }
    }

    // Routes of an adopted protocol (BIRD's, left behind by Calico): some at
    // the keys we want, some elsewhere.
    let want_keys: Vec<RouteKey> = want.routes.keys().copied().collect();
    for &(kind, x) in &n.adopted {
        let route = match (kind % 3, pick(&want_keys, x)) {
            // Exactly ours but for the protocol.
            (0, Some(k)) => Route {
                protocol: BIRD,
                ..want.routes[&k].clone()
            },
            // Calico style: via the peer, through tunl0 or the uplink.
            (1, Some(k)) => Route {
                key: k,
                kind: RouteKind::Unicast,
                via: Some(Ipv4Addr::new(10, 250, 0, x).into()),
                dev: pick(&devs, kind).unwrap(),
                onlink: true,
                mtu: None,
                protocol: BIRD,
            },
            // BIRD's blackhole for a Calico block.
            (2, _) if x % 2 == 0 => Route {
                key: RouteKey {
                    table: 254,
                    dst: Ipv4Network::new(Ipv4Addr::new(10, 244, x, 64), 26)
                        .unwrap()
                        .into(),
                    metric: 0,
                },
                kind: RouteKind::Blackhole,
                via: None,
                dev: "lo".into(),
                onlink: false,
                mtu: None,
                protocol: BIRD,
            },
            // Somewhere we do not route (a node that left, or a network
            // that has nothing to do with pods).
            _ => Route {
                key: RouteKey {
                    table: 254,
                    dst: Ipv4Network::new(Ipv4Addr::new(172, 16, x, 0), 24)
                        .unwrap()
                        .into(),
                    metric: 0,
                },
                kind: RouteKind::Unicast,
                via: Some(Ipv4Addr::new(10, 250, 0, x).into()),
                dev: uplink.into(),
                onlink: false,
                mtu: None,
                protocol: BIRD,
            },
        };
        // One route per key: BIRD's took the place of ours.
        o.routes.remove(&route.key);
        o.adoptable.insert(route.key, route);
    }

    // The VXLAN device: identity, MTU, state.
    if let Some(v) = o.vxlan.as_mut() {
        let (identity, mtu, down) = n.vxlan;
        let id = &mut v.identity;
        match identity % 12 {
            5 => id.vni += 1,
            6 => id.port = 4790,
            7 => id.mac = Mac::for_node("someone-else"),
            8 => id.local = Ipv4Addr::new(10, 9, 9, 9).into(),
            9 => id.learning = true,
            10 => id.link = "eth9".into(),
            _ => {}
        }
        if mtu % 4 == 3 {
            v.mtu = 1000 + u32::from(mtu);
        }
        if down % 4 == 3 {
            v.up = false;
            // The kernel flushes routes and neighbours of a device that goes down.
            let name = v.name.clone();
            o.routes.retain(|_, r| r.dev != name);
            o.adoptable.retain(|_, r| r.dev != name);
            o.neighs.retain(|_, nb| nb.dev != name);
        }
    }
    // The ipip device: MTU, state, addresses.
    if let Some(t) = o.ipip.as_mut() {
        let (mtu, down, addr) = n.ipip;
        if mtu % 4 == 3 {
            t.mtu = 1000 + u32::from(mtu);
        }
        match addr % 6 {
            4 => t.addresses.clear(),
            5 => {
                t.addresses.insert(Ipv4Addr::new(10, 244, mtu, 0).into());
            }
            _ => {}
        }
        if down % 4 == 3 {
            t.up = false;
            let name = t.name.clone();
            o.routes.retain(|_, r| r.dev != name);
            o.adoptable.retain(|_, r| r.dev != name);
        }
    }

    // Neighbours and FDB entries lost or edited.
    let ips: Vec<IpAddr> = o.neighs.keys().copied().collect();
    for (ip, &(action, x)) in ips.iter().zip(&n.neighs) {
        match action % 6 {
            4 => {
                o.neighs.remove(ip);
            }
            5 => o.neighs.get_mut(ip).unwrap().mac = Mac([2, 0, 0, 0, 0, x]),
            _ => {}
        }
    }
    let macs: Vec<Mac> = o.fdb.keys().copied().collect();
    for (mac, &(action, x)) in macs.iter().zip(&n.fdb) {
        match action % 6 {
            3 => {
                o.fdb.remove(mac);
            }
            4 => o.fdb.get_mut(mac).unwrap().dst = Ipv4Addr::new(10, 250, 0, x).into(),
            5 => {
                // The same peer under another MAC (its name changed).
                let mut f = o.fdb.remove(mac).unwrap();
                f.mac = Mac([2, 0, 0, 0, 1, x]);
                o.fdb.insert(f.mac, f);
            }
            _ => {}
        }
    }
    // A peer that left the cluster.
    if let (Some(x), Some(v)) = (n.stray_peer, o.vxlan.as_ref()) {
        let mac = Mac::for_node(&format!("gone-{x}"));
        let tunnel_ip = Ipv4Addr::new(10, 245, x, 0);
        if v.up {
            o.neighs.insert(
                tunnel_ip.into(),
                podroute::plan::Neigh {
                    dev: v.name.clone(),
                    ip: tunnel_ip.into(),
                    mac,
                },
            );
        }
        o.fdb.insert(
            mac,
            podroute::plan::Fdb {
                dev: v.name.clone(),
                mac,
                dst: Ipv4Addr::new(10, 252, 0, x).into(),
            },
        );
    }

    // sysctls changed by someone.
    let sysctl_keys: Vec<String> = o.sysctls.keys().cloned().collect();
    for (key, &action) in sysctl_keys.iter().zip(&n.sysctls) {
        match action % 4 {
            2 => {
                o.sysctls.insert(key.clone(), Some("0".into()));
            }
            3 => {
                o.sysctls.insert(key.clone(), Some("1".into()));
            }
            _ => {}
        }
    }
    match n.pod_mtu % 4 {
        2 => o.pod_mtu = None,
        3 => o.pod_mtu = Some(1000 + u32::from(n.pod_mtu)),
        _ => {}
    }

    // Foreign routes: some at keys we want (conflicts), some elsewhere; never
    // at the key of one of our stale routes (the kernel holds one route per
    // key unless someone appends; that case has its own test below).
    for &(kind, x) in &n.foreign_routes {
        match (kind % 3, pick(&want_keys, x)) {
            (0, Some(k)) => {
                o.foreign_routes.insert(k);
            }
            (1, Some(k)) => {
                // The foreign route won the key: nothing of ours is there.
                o.routes.remove(&k);
                o.adoptable.remove(&k);
                o.foreign_routes.insert(k);
            }
            _ => {
                let key = RouteKey {
                    table: 254,
                    dst: Ipv4Network::new(Ipv4Addr::new(10, 244, x, 0), 24)
                        .unwrap()
                        .into(),
                    metric: u32::from(kind % 2) * 100,
                };
                if !(o.routes.contains_key(&key) || o.adoptable.contains_key(&key))
                    || want.routes.contains_key(&key)
                {
                    o.foreign_routes.insert(key);
                }
            }
        }
    }
    // Foreign addresses and routes on our devices.
    let ours: Vec<String> = devices(&o, uplink, false).into_iter().skip(1).collect();
    for &(dev, x) in &n.foreign_addresses {
        let Some(dev) = pick(&ours, dev) else { break };
        let prefix = if x % 2 == 0 { 32 } else { 24 };
        let addr = Ipv4Network::new(Ipv4Addr::new(192, 168, 99, x), prefix).unwrap();
        o.foreign_state
            .entry(dev)
            .or_default()
            .addresses
            .insert(addr.into());
    }
    for &(dev, x) in &n.foreign_on_devices {
        let Some(dev) = pick(&ours, dev) else { break };
        let key = RouteKey {
            table: 254,
            dst: Ipv4Network::new(Ipv4Addr::new(192, 168, 98, x), 32)
                .unwrap()
                .into(),
            metric: 0,
        };
        o.foreign_routes.insert(key);
        o.foreign_state
            .entry(dev)
            .or_default()
            .routes
            .insert(key.dst);
    }
    o
}

/// Whether `dev` carries state that is not ours in `o`.
fn shared(o: &Observed, dev: &str) -> bool {
    o.foreign_state.get(dev).is_some_and(|f| !f.is_empty())
}

#[derive(Debug, Clone)]
struct Case {
    now: Scenario,
    before: Scenario,
    noise: Noise,
}

impl Case {
    fn desired(&self) -> Desired {
        self.now.desired()
    }

    /// The kernel state the agent finds: another plan's (maybe another
    /// cluster's) clean state, drifted.
    fn observed(&self) -> Observed {
        let want = self.desired();
        perturb(
            realistic_for(&self.before.desired(), &self.now.config),
            &want,
            &self.now.uplink.name,
            &self.noise,
        )
    }
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        arb_scenario(),
        arb_scenario(),
        any::<bool>(),
        select(vec![91u8, 91, BIRD]),
        arb_noise(),
    )
        .prop_map(|(now, mut before, same_cluster, before_protocol, noise)| {
            if same_cluster {
                before.nodes = now.nodes.clone();
                before.local = now.local;
                before.uplink = now.uplink.clone();
                before.uplink6 = now.uplink6.clone();
                if let Some(mtu) = before.config.mtu.as_mut() {
                    *mtu = (*mtu).min(before.uplink.mtu);
                }
                if before.uplink6.is_some() && before.config.mtu.is_some_and(|m| m < 1350) {
                    before.config.mtu = None;
                }
            }
            // The previous owner may have been BIRD (routes we adopt).
            before.config.route_protocol = before_protocol;
            before.config.adopt_route_protocols.clear();
            Case { now, before, noise }
        })
}

// ================================================================ checks

fn stages_sorted(steps: &[Step]) -> bool {
    steps.windows(2).all(|w| w[0].op.stage() <= w[1].op.stage())
}

fn deleted_links(steps: &[Step]) -> BTreeSet<String> {
    steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::DeleteLink { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Nothing that is not ours changes: foreign routes, foreign state on our
/// devices (a device carrying some is never deleted), adoptable routes the
/// plan does not cover, devices of another kind under our names.
fn check_foreign_untouched(
    want: &Desired,
    before: &Observed,
    after: &Observed,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(&after.foreign_routes, &before.foreign_routes);
    prop_assert_eq!(&after.foreign_devices, &before.foreign_devices);
    let deleted = deleted_links(steps);
    for (dev, foreign) in &before.foreign_state {
        if !foreign.is_empty() {
            prop_assert!(
                !deleted.contains(dev),
                "deletes {} with {:?} on it",
                dev,
                foreign
            );
            prop_assert_eq!(after.foreign_state.get(dev), Some(foreign), "{}", dev);
        }
    }
    for (key, route) in &before.adoptable {
        if !want.adopt.covers(route) {
            prop_assert_eq!(
                after.adoptable.get(key),
                Some(route),
                "adopted out of scope"
            );
        }
    }
    Ok(())
}

/// A device carrying foreign routes but no foreign address keeps our
/// address: the kernel would flush those routes with its last address.
fn keeps_our_address(before: &Observed, dev: &str) -> bool {
    before
        .foreign_state
        .get(dev)
        .is_some_and(|f| !f.routes.is_empty() && f.addresses.is_empty())
}

fn ipip_retired_ok(before: &Observed, after: &Observed) -> Result<(), TestCaseError> {
    if let Some(have) = &after.ipip {
        prop_assert!(
            have.addresses.is_empty() || keeps_our_address(before, &have.name),
            "retired ipip keeps our addresses: {:?}",
            have
        );
        prop_assert!(
            !have.up || shared(before, &have.name),
            "retired ipip is still up: {:?}",
            have
        );
    }
    Ok(())
}

/// The VXLAN device after a diff that retires it: gone, or, when it carries
/// state that is not ours, still there without anything of ours on it.
fn vxlan_retired_ok(
    before: Option<&podroute::plan::VxlanDevice>,
    after: Option<&podroute::plan::VxlanDevice>,
    before_state: &Observed,
) -> Result<(), TestCaseError> {
    match (before, after) {
        (_, None) => {}
        (Some(b), Some(a)) if shared(before_state, &b.name) => {
            prop_assert!(
                a.addresses.is_empty() || keeps_our_address(before_state, &b.name),
                "kept vxlan keeps our addresses"
            );
        }
        (_, Some(a)) => prop_assert!(false, "retired vxlan is still there: {:?}", a),
    }
    Ok(())
}

/// Why a plan cannot be applied at all, as the diff must say: a device under
/// our name of another kind, or a VXLAN device to recreate that carries
/// foreign state.
fn expected_blocked(want: &Desired, before: &Observed) -> bool {
    let foreign_kind = [
        want.ipip.as_ref().map(|d| &d.name),
        want.vxlan.as_ref().map(|d| &d.name),
        want.vxlan6.as_ref().map(|d| &d.name),
    ]
    .into_iter()
    .flatten()
    .any(|name| before.foreign_devices.contains_key(name));
    let recreate_shared = [(&want.vxlan, &before.vxlan), (&want.vxlan6, &before.vxlan6)]
        .into_iter()
        .any(|pair| match pair {
            (Some(w), Some(h)) => w.identity != h.identity && shared(before, &h.name),
            _ => false,
        });
    foreign_kind || recreate_shared
}

/// The desired keys the diff must leave alone: held by a foreign route (or
/// an adoptable one the plan does not cover) and not already ours as wanted
/// (on a device that survives the diff).
fn expected_conflicts(want: &Desired, before: &Observed) -> Vec<RouteKey> {
    let recreated: Vec<&str> = [(&want.vxlan, &before.vxlan), (&want.vxlan6, &before.vxlan6)]
        .into_iter()
        .filter_map(|pair| match pair {
            (Some(w), Some(h)) => (w.identity != h.identity).then_some(h.name.as_str()),
            _ => None,
        })
        .collect();
    want.routes
        .iter()
        .filter(|(key, route)| {
            let in_place =
                before.routes.get(key) == Some(route) && !recreated.contains(&route.dev.as_str());
            let theirs = before.foreign_routes.contains(key)
                || before
                    .adoptable
                    .get(key)
                    .is_some_and(|r| !want.adopt.covers(r));
            theirs && !in_place
        })
        .map(|(key, _)| *key)
        .collect()
}

fn check_converges(want: &Desired, before: &Observed) -> Result<Observed, TestCaseError> {
    let d = diff(want, before);
    prop_assert!(
        stages_sorted(&d.steps),
        "steps out of stage order: {:#?}",
        d.steps
    );
    prop_assert_eq!(
        !d.blocked.is_empty(),
        expected_blocked(want, before),
        "{:?}",
        d.blocked
    );
    if !d.blocked.is_empty() {
        // The engine refuses the whole diff: nothing to converge.
        return Ok(before.clone());
    }
    let theirs = |key: &RouteKey| {
        before.foreign_routes.contains(key)
            || before
                .adoptable
                .get(key)
                .is_some_and(|r| !want.adopt.covers(r))
    };
    for step in &d.steps {
        match &step.op {
            Op::ReplaceRoute { route } => {
                prop_assert!(!theirs(&route.key), "replaces a route not ours: {}", step);
                prop_assert_eq!(want.routes.get(&route.key), Some(route));
            }
            Op::DelRoute { route } => {
                prop_assert!(!theirs(&route.key), "deletes at a key not ours: {}", step);
                let known = before.routes.get(&route.key) == Some(route)
                    || before.adoptable.get(&route.key) == Some(route);
                prop_assert!(known, "deletes a route that is not there: {}", step);
            }
            _ => {}
        }
    }
    let conflicts = expected_conflicts(want, before);
    prop_assert_eq!(&d.conflicts, &conflicts);

    let mut after = before.clone();
    apply(&mut after, &d);

    let outside = |m: &BTreeMap<RouteKey, Route>| -> BTreeMap<RouteKey, Route> {
        m.iter()
            .filter(|(k, _)| !conflicts.contains(k))
            .map(|(k, r)| (*k, r.clone()))
            .collect()
    };
    prop_assert_eq!(outside(&after.routes), outside(&want.routes));
    prop_assert!(
        after
            .adoptable
            .values()
            .all(|r| !want.adopt.covers(r) || conflicts.contains(&r.key)),
        "an adoptable route in scope is left: {:?}",
        after.adoptable
    );
    prop_assert_eq!(&after.neighs, &want.neighs);
    prop_assert_eq!(&after.fdb, &want.fdb);
    for (key, value) in &want.sysctls {
        prop_assert_eq!(
            after.sysctls.get(key),
            Some(&Some(value.clone())),
            "{}",
            key
        );
    }
    prop_assert_eq!(after.pod_mtu, want.pod_mtu);
    for (want_dev, before_dev, after_dev) in [
        (&want.vxlan, &before.vxlan, &after.vxlan),
        (&want.vxlan6, &before.vxlan6, &after.vxlan6),
    ] {
        match want_dev {
            Some(w) => prop_assert_eq!(after_dev.as_ref(), Some(w)),
            None => vxlan_retired_ok(before_dev.as_ref(), after_dev.as_ref(), before)?,
        }
    }
    match &want.ipip {
        Some(w) => prop_assert_eq!(after.ipip.as_ref(), Some(w)),
        None => ipip_retired_ok(before, &after)?,
    }
    check_foreign_untouched(want, before, &after, &d.steps)?;

    let again = diff(want, &after);
    prop_assert!(
        again.is_empty(),
        "second diff is not empty: {:#?}",
        again.steps
    );
    prop_assert_eq!(&again.conflicts, &d.conflicts);
    Ok(after)
}

/// Applies steps stage by stage, each stage's ops in reverse order, except
/// `Stage::Links`: the dataplane runs that one in order, one write at a time
/// (a recreate is a delete then a create of the same device).
fn apply_reversed_within_stages(observed: &mut Observed, steps: &[Step]) {
    for group in steps.chunk_by(|a, b| a.op.stage() == b.op.stage()) {
        if group[0].op.stage() == Stage::Links {
            simulate::apply_all(observed, group.iter().map(|s| &s.op));
        } else {
            simulate::apply_all(observed, group.iter().rev().map(|s| &s.op));
        }
    }
}

// ============================================================== properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// apply(diff(desired, observed)) reaches desired, touches nothing
    /// foreign, and a second diff is empty.
    #[test]
    fn diff_converges(case in arb_case()) {
        let want = case.desired();
        let before = case.observed();
        check_converges(&want, &before)?;
    }

    /// A restart with nothing changed converges with zero writes.
    #[test]
    fn clean_state_needs_no_writes(s in arb_scenario()) {
        let want = s.desired();
        let observed = realistic(&want);
        let d = diff(&want, &observed);
        prop_assert!(d.is_empty(), "{:#?}", d.steps);
        prop_assert!(d.conflicts.is_empty());
        // And the clean state is the desired one.
        prop_assert_eq!(&observed.routes, &want.routes);
        prop_assert_eq!(&observed.ipip, &want.ipip);
        prop_assert_eq!(&observed.vxlan, &want.vxlan);
    }

    /// Moving from one clean plan to another (the coordinator's phases),
    /// with no drift: converges, and every step is needed.
    #[test]
    fn plan_to_plan_converges(case in arb_case()) {
        let want = case.desired();
        let before = realistic_for(&case.before.desired(), &case.now.config);
        check_converges(&want, &before)?;
    }

    /// "Ops within one stage do not depend on each other and may run
    /// concurrently" (but for `Links`, run in order): any order inside a
    /// stage gives the same kernel state.
    #[test]
    fn order_within_a_stage_does_not_matter(case in arb_case()) {
        let want = case.desired();
        let before = case.observed();
        let d = diff(&want, &before);
        let mut forward = before.clone();
        apply(&mut forward, &d);
        let mut reversed = before.clone();
        apply_reversed_within_stages(&mut reversed, &d.steps);
        prop_assert_eq!(forward, reversed, "steps: {:#?}", d.steps);
    }

    /// Cleanup (`plan::nothing`) removes everything of ours and nothing else.
    #[test]
    fn cleanup_removes_everything_owned(case in arb_case()) {
        let before = case.observed();
        let none = nothing(&case.now.config);
        let d = diff(&none, &before);
        prop_assert!(stages_sorted(&d.steps));
        prop_assert!(d.conflicts.is_empty());
        prop_assert!(d.blocked.is_empty(), "{:?}", d.blocked);
        for step in &d.steps {
            match &step.op {
                Op::DelRoute { route } => prop_assert!(
                    before.routes.get(&route.key) == Some(route)
                        || (before.adoptable.get(&route.key) == Some(route)
                            && none.adopt.covers(route)),
                    "deletes a route that is not ours: {}",
                    step
                ),
                Op::DelNeigh { .. }
                | Op::DelFdb { .. }
                | Op::DelAddress { .. }
                | Op::DeleteLink { .. }
                | Op::SetDown { .. }
                | Op::RemovePodMtu => {}
                other => prop_assert!(false, "cleanup writes {}", other),
            }
        }
        let mut after = before.clone();
        apply(&mut after, &d);
        prop_assert!(after.routes.is_empty(), "{:?}", after.routes);
        prop_assert!(after.neighs.is_empty());
        prop_assert!(after.fdb.is_empty());
        vxlan_retired_ok(before.vxlan.as_ref(), after.vxlan.as_ref(), &before)?;
        vxlan_retired_ok(before.vxlan6.as_ref(), after.vxlan6.as_ref(), &before)?;
        prop_assert_eq!(after.pod_mtu, None);
        ipip_retired_ok(&before, &after)?;
        check_foreign_untouched(&none, &before, &after, &d.steps)?;
        let again = diff(&none, &after);
        prop_assert!(again.is_empty(), "{:#?}", again.steps);
    }

    /// desired() itself: one route per peer unless underlay skips it, never
    /// to the local node, and its devices are exactly the tunnels in play.
    #[test]
    fn desired_shape(s in arb_scenario()) {
        let want = s.desired();
        let local = &s.nodes[s.local];
        let peers: Vec<&Node> = s.nodes.iter().filter(|n| n.name != local.name).collect();
        let on_link = |p: &Node| s.uplink.address.contains(p.node_ip.unwrap().into());
        let off_link = peers.iter().filter(|p| !on_link(p)).count();
        let underlay = s.plan.route_mode == Mode::Native && s.config.off_subnet == OffSubnet::Underlay;
        let expected_routes = if underlay { peers.len() - off_link } else { peers.len() };
        // One per peer, and the local pod CIDR, unreachable, last in line.
        let v4_routes = want.routes.keys().filter(|k| k.dst.is_ipv4()).count();
        prop_assert_eq!(v4_routes, expected_routes + 1);
        let own: Vec<&Route> = want.routes.values().filter(|r| r.key.dst == local.pod_cidr().unwrap().into()).collect();
        prop_assert_eq!(own.len(), 1);
        prop_assert_eq!(own[0].kind, RouteKind::Unreachable);
        prop_assert_eq!(own[0].key.metric, LOCAL_UNREACHABLE_METRIC);
        prop_assert!(want.excluded.is_empty());

        let mut tunnels = s.plan.tunnels();
        if (s.plan.route_mode == Mode::Native || s.plan.decap.contains(&Mode::Native))
            && s.config.off_subnet == OffSubnet::Encap && off_link > 0 {
            tunnels.insert(s.config.cross_subnet_tunnel);
        }
        prop_assert_eq!(want.ipip.is_some(), tunnels.contains(&Mode::Ipip));
        prop_assert_eq!(want.vxlan.is_some(), tunnels.contains(&Mode::Vxlan));
        let base = s.config.mtu.unwrap_or(s.uplink.mtu);
        let pod = tunnels.iter().map(|m| base - m.overhead()).min().unwrap_or(base);

        // IPv6: the same rules over the IPv6 uplink, one tunnel for all modes.
        let v6_routes = want.routes.keys().filter(|k| k.dst.is_ipv6()).count();
        let peers6: Vec<&&Node> = peers.iter().filter(|p| p.v6().is_some()).collect();
        let (pod, vteps6) = match (local.v6(), &s.uplink6) {
            (Some(_), Some(up6)) => {
                let off6 = peers6
                    .iter()
                    .filter(|p| !up6.address.contains(p.node_ip6.unwrap().into()))
                    .count();
                let expected6 = if underlay { peers6.len() - off6 } else { peers6.len() };
                prop_assert_eq!(v6_routes, expected6 + 1);
                let tunnel6 = !s.plan.tunnels().is_empty()
                    || ((s.plan.route_mode == Mode::Native || s.plan.decap.contains(&Mode::Native))
                        && s.config.off_subnet == OffSubnet::Encap
                        && off6 > 0);
                prop_assert_eq!(want.vxlan6.is_some(), tunnel6);
                let base6 = s.config.mtu.unwrap_or(up6.mtu);
                let pod6 = if tunnel6 { base6 - 70 } else { base6 };
                (pod.min(pod6), if tunnel6 { peers6.len() } else { 0 })
            }
            _ => {
                prop_assert_eq!(v6_routes, 0);
                prop_assert!(want.vxlan6.is_none());
                (pod, 0)
            }
        };
        prop_assert_eq!(want.pod_mtu, Some(pod));
        // Every route goes through a device that exists (or the uplink),
        // with the MTU of that device.
        for r in want.routes.values().filter(|r| r.kind == RouteKind::Unicast) {
            match r.dev.as_str() {
                d if d == s.uplink.name => prop_assert_eq!(r.mtu, None),
                d if Some(d) == want.ipip.as_ref().map(|i| i.name.as_str()) => {
                    prop_assert_eq!(r.mtu, Some(want.ipip.as_ref().unwrap().mtu))
                }
                d if Some(d) == want.vxlan.as_ref().map(|v| v.name.as_str()) => {
                    prop_assert_eq!(r.mtu, Some(want.vxlan.as_ref().unwrap().mtu));
                    prop_assert!(r.via.is_some_and(|via| want.neighs.contains_key(&via)));
                }
                d if Some(d) == want.vxlan6.as_ref().map(|v| v.name.as_str()) => {
                    prop_assert_eq!(r.mtu, Some(want.vxlan6.as_ref().unwrap().mtu));
                    prop_assert!(r.via.is_some_and(|via| want.neighs.contains_key(&via)));
                }
                other => prop_assert!(false, "route through unknown device {}", other),
            }
        }
        // VTEPs: one per peer while the VXLAN device exists, none otherwise.
        let vteps = if want.vxlan.is_some() { peers.len() } else { 0 } + vteps6;
        prop_assert_eq!(want.neighs.len(), vteps);
        prop_assert_eq!(want.fdb.len(), vteps);
    }
}

// ================================================== deterministic scenarios

fn three_nodes() -> Vec<Node> {
    vec![
        node("node-1", "10.250.0.1", "10.244.1.0/24"),
        node("node-2", "10.250.0.2", "10.244.2.0/24"),
        node("node-3", "10.250.0.3", "10.244.3.0/24"),
    ]
}

fn want(mode: Mode, config: &Config) -> Desired {
    let nodes = three_nodes();
    desired(Inputs {
        local: &nodes[0],
        nodes: &nodes,
        plan: &Plan::steady(mode, 1),
        config,
        uplink: Some(&uplink("eth0", 1500, "10.250.0.1/24")),
        uplink6: None,
    })
    .unwrap()
}

fn key(dst: &str) -> RouteKey {
    RouteKey {
        table: 254,
        dst: net(dst).into(),
        metric: 0,
    }
}

fn ops(d: &Diff) -> Vec<&Op> {
    d.steps.iter().map(|s| &s.op).collect()
}

fn bird(dst: &str, kind: RouteKind, dev: &str) -> Route {
    Route {
        key: key(dst),
        kind,
        via: (kind == RouteKind::Unicast).then(|| ip("10.250.0.2").into()),
        dev: dev.into(),
        onlink: kind == RouteKind::Unicast,
        mtu: None,
        protocol: BIRD,
    }
}

#[test]
fn adopting_bird_routes_stays_inside_the_pod_network_and_our_devices() {
    let config = Config {
        adopt_route_protocols: vec![BIRD],
        ..Config::default()
    };
    let native = want(Mode::Native, &config);
    let mut observed = realistic(&native);
    // BIRD holds node-2's route (Calico's ipip route), the local block's
    // blackhole, a route through tunl0 for a block of a node that left, a
    // block of a node that left via the uplink, and an unrelated network.
    let k2 = key("10.244.2.0/24");
    observed.routes.remove(&k2);
    let routes = [
        bird("10.244.2.0/24", RouteKind::Unicast, "tunl0"),
        bird("10.244.1.64/26", RouteKind::Blackhole, ""),
        bird("10.244.40.0/26", RouteKind::Unicast, "tunl0"),
        bird("10.244.50.0/26", RouteKind::Unicast, "eth0"),
        bird("10.99.0.0/16", RouteKind::Unicast, "eth0"),
    ];
    for r in &routes {
        observed.adoptable.insert(r.key, r.clone());
    }
    let d = diff(&native, &observed);
    assert_eq!(
        ops(&d),
        [
            &Op::ReplaceRoute {
                route: native.routes[&k2].clone()
            },
            &Op::DelRoute {
                route: routes[1].clone()
            },
            &Op::DelRoute {
                route: routes[2].clone()
            },
        ]
    );
    assert!(d.steps[0].why.contains("adopting"), "{}", d.steps[0].why);
    assert!(d.steps[1].why.contains("proto 12"), "{}", d.steps[1].why);

    // The operator names the pod network: the block of the node that left
    // goes too; the unrelated network never does.
    let config = Config {
        pod_network: vec![net("10.244.0.0/16").into()],
        ..config
    };
    let d = diff(&want(Mode::Native, &config), &observed);
    let deleted: Vec<&str> = d
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::DelRoute { route } => Some(route.key.dst.to_string()),
            _ => None,
        })
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    assert_eq!(
        deleted,
        ["10.244.1.64/26", "10.244.40.0/26", "10.244.50.0/26"]
    );
    // Cleanup without a cluster: only what goes through our devices.
    let d = diff(
        &nothing(&Config {
            pod_network: Vec::new(),
            ..config
        }),
        &observed,
    );
    assert!(
        d.steps
            .iter()
            .all(|s| !matches!(&s.op, Op::DelRoute { route } if route.protocol == BIRD && route.dev == "eth0")),
        "{:#?}",
        d.steps
    );
}

#[test]
fn the_local_pod_cidr_is_unreachable_and_kept_like_our_routes() {
    let w = want(Mode::Vxlan, &Config::default());
    let own = &w.routes[&RouteKey {
        table: 254,
        dst: net("10.244.1.0/24").into(),
        metric: LOCAL_UNREACHABLE_METRIC,
    }];
    assert_eq!(own.kind, RouteKind::Unreachable);
    assert_eq!((own.dev.as_str(), own.via), ("", None));
    // A bridge CNI's connected route for the same CIDR (metric 0) is a
    // different key: no conflict, nothing of theirs in the diff.
    let mut observed = realistic(&w);
    observed.foreign_routes.insert(key("10.244.1.0/24"));
    let d = diff(&w, &observed);
    assert!(d.is_empty() && d.conflicts.is_empty(), "{d:#?}");
    // Cleanup takes it away.
    let d = diff(&nothing(&Config::default()), &observed);
    assert!(d
        .steps
        .iter()
        .any(|s| s.op == Op::DelRoute { route: own.clone() }));
}

#[test]
fn a_peer_inside_the_underlay_subnet_is_left_out() {
    let mut nodes = three_nodes();
    nodes.push(node("intruder", "10.250.0.9", "10.250.0.128/25"));
    let up = uplink("eth0", 1500, "10.250.0.1/24");
    let w = desired(Inputs {
        local: &nodes[0],
        nodes: &nodes,
        plan: &Plan::steady(Mode::Native, 1),
        config: &Config::default(),
        uplink: Some(&up),
        uplink6: None,
    })
    .unwrap();
    assert_eq!(w.excluded.len(), 1);
    assert_eq!(w.excluded[0].node, "intruder");
    assert!(w
        .routes
        .keys()
        .all(|k| k.dst != net("10.250.0.128/25").into()));
    // The node's own pod CIDR there: nothing can be planned.
    let e = desired(Inputs {
        local: &nodes[3],
        nodes: &nodes,
        plan: &Plan::steady(Mode::Native, 1),
        config: &Config::default(),
        uplink: Some(&uplink("eth0", 1500, "10.250.0.9/24")),
        uplink6: None,
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("underlay subnet 10.250.0.0/24"),
        "{e}"
    );
}

#[test]
fn foreign_route_at_a_desired_key_is_a_conflict() {
    let w = want(Mode::Vxlan, &Config::default());
    let mut observed = realistic(&w);
    let k2 = key("10.244.2.0/24");
    observed.routes.remove(&k2);
    observed.foreign_routes.insert(k2);
    let d = diff(&w, &observed);
    assert!(d.is_empty(), "{:#?}", d.steps);
    assert_eq!(d.conflicts, [k2]);
    // Once the foreign route is gone, ours goes in.
    observed.foreign_routes.clear();
    let d = diff(&w, &observed);
    assert_eq!(
        ops(&d),
        [&Op::ReplaceRoute {
            route: w.routes[&k2].clone()
        }]
    );
}

/// Our stale route and a foreign one at the same key (someone used
/// `ip route append`): the diff deletes ours, identified by its protocol;
/// the dataplane must delete with the protocol set so the kernel cannot
/// pick the foreign one.
#[test]
fn stale_route_sharing_a_key_with_a_foreign_one() {
    let vx = want(Mode::Vxlan, &Config::default());
    let mut observed = realistic(&vx);
    let k3 = key("10.244.3.0/24");
    observed.foreign_routes.insert(k3);
    let two_nodes = Desired {
        routes: vx
            .routes
            .iter()
            .filter(|(k, _)| **k != k3)
            .map(|(k, r)| (*k, r.clone()))
            .collect(),
        ..vx.clone()
    };
    let d = diff(&two_nodes, &observed);
    assert_eq!(
        ops(&d),
        [&Op::DelRoute {
            route: observed.routes[&k3].clone()
        }]
    );
    let mut after = observed.clone();
    apply(&mut after, &d);
    assert_eq!(after.foreign_routes, observed.foreign_routes);
}

#[test]
fn vxlan_recreate_deletes_before_it_creates() {
    let w = want(Mode::Vxlan, &Config::default());
    let mut observed = realistic(&w);
    observed.vxlan.as_mut().unwrap().identity.vni = 1;
    let d = diff(&w, &observed);
    let del = d
        .steps
        .iter()
        .position(|s| matches!(s.op, Op::DeleteLink { .. }))
        .expect("recreate deletes the device");
    let create = d
        .steps
        .iter()
        .position(|s| matches!(s.op, Op::CreateVxlan { .. }))
        .expect("and creates it again");
    // They depend on each other: the delete comes first, and both are in
    // the one stage the dataplane runs in order.
    assert!(del < create);
    assert_eq!(d.steps[del].op.stage(), Stage::Links);
    assert_eq!(d.steps[create].op.stage(), Stage::Links);
    assert!(
        d.steps[del].why.contains("vni 1 -> 4096"),
        "{}",
        d.steps[del].why
    );
    // Everything on the old device is written again after the recreate.
    let mut after = observed.clone();
    apply(&mut after, &d);
    assert_eq!(after.vxlan, w.vxlan);
    assert_eq!(after.routes, w.routes);
    assert_eq!(after.neighs, w.neighs);
    assert_eq!(after.fdb, w.fdb);
    assert!(diff(&w, &after).is_empty());
}

fn foreign(addresses: &[&str], routes: &[&str]) -> ForeignState {
    ForeignState {
        addresses: addresses.iter().map(|a| net(a).into()).collect(),
        routes: routes.iter().map(|r| net(r).into()).collect(),
    }
}

#[test]
fn retiring_a_shared_ipip_device_keeps_it_up() {
    let ipip = want(Mode::Ipip, &Config::default());
    let native = want(Mode::Native, &Config::default());
    let mut observed = realistic(&ipip);
    // With someone's address on it, ours goes; with only someone's route
    // through it, ours stays: the kernel flushes every route through a device
    // when its last address goes.
    for (shared, drops_ours) in [
        (foreign(&["192.168.99.1/32"], &[]), true),
        (foreign(&[], &["192.168.98.0/24"]), false),
    ] {
        observed.foreign_state.insert("tunl0".into(), shared);
        let d = diff(&native, &observed);
        assert!(d.steps.iter().all(|s| !matches!(s.op, Op::SetDown { .. })));
        let dropped = d.steps.iter().any(|s| {
            matches!(
                &s.op,
                Op::DelAddress { dev, stage: Stage::Retire, .. } if dev == "tunl0"
            )
        });
        assert_eq!(dropped, drops_ours);
        assert_eq!(d.kept.len(), 1, "{:?}", d.kept);
    }
    // Unshared, it goes down.
    observed.foreign_state.clear();
    let d = diff(&native, &observed);
    assert!(d.steps.iter().any(|s| s.op
        == Op::SetDown {
            dev: "tunl0".into()
        }));
}

#[test]
fn a_vxlan_device_with_foreign_state_is_never_deleted_or_recreated() {
    let vxlan = want(Mode::Vxlan, &Config::default());
    let native = want(Mode::Native, &Config::default());
    let mut observed = realistic(&vxlan);
    observed.foreign_state.insert(
        "vxlan.calico".into(),
        foreign(&["192.168.77.1/24"], &["192.168.78.0/24"]),
    );
    // Retired (a switch to native, cleanup): ours goes, the device stays.
    for next in [&native, &nothing(&Config::default())] {
        let d = diff(next, &observed);
        assert!(d.blocked.is_empty());
        assert!(
            d.steps
                .iter()
                .all(|s| !matches!(s.op, Op::DeleteLink { .. })),
            "{:#?}",
            d.steps
        );
        let mut after = observed.clone();
        apply(&mut after, &d);
        let kept = after.vxlan.as_ref().expect("the device stays");
        assert!(kept.addresses.is_empty());
        assert!(after.neighs.is_empty() && after.fdb.is_empty());
        assert!(after.routes.values().all(|r| r.dev != "vxlan.calico"));
        assert_eq!(after.foreign_state, observed.foreign_state);
        assert!(d.kept[0].contains("192.168.77.1/24"), "{:?}", d.kept);
    }
    // A new VNI would need a recreate: refused whole, naming what is in the way.
    let other_vni = want(
        Mode::Vxlan,
        &Config {
            vxlan_vni: 5000,
            ..Config::default()
        },
    );
    let d = diff(&other_vni, &observed);
    assert_eq!(d.blocked.len(), 1);
    assert!(
        d.blocked[0].contains("vni 4096 -> 5000"),
        "{}",
        d.blocked[0]
    );
    assert!(
        d.blocked[0].contains("route 192.168.78.0/24"),
        "{}",
        d.blocked[0]
    );
}

/// The tunnel address already on the device without our protocol (put there
/// by someone else, or by a kernel before 5.18, which keeps no protocol):
/// it serves, so it is not added again, and a second pass writes nothing.
#[test]
fn a_tunnel_address_held_without_our_protocol_serves() {
    let w = want(Mode::Vxlan, &Config::default());
    let mut observed = realistic(&w);
    observed.vxlan.as_mut().unwrap().addresses.clear();
    observed
        .foreign_state
        .insert("vxlan.calico".into(), foreign(&["10.244.1.0/32"], &[]));
    let d = diff(&w, &observed);
    assert!(d.is_empty(), "{:#?}", d.steps);
}

#[test]
fn a_device_of_another_kind_under_our_name_blocks_the_plan() {
    let vxlan = want(Mode::Vxlan, &Config::default());
    let observed = Observed {
        foreign_devices: BTreeMap::from([("vxlan.calico".to_string(), "bridge".to_string())]),
        ..Observed::default()
    };
    let d = diff(&vxlan, &observed);
    assert_eq!(d.blocked.len(), 1);
    assert!(
        d.blocked[0].contains("exists but is not vxlan (kind bridge)"),
        "{}",
        d.blocked[0]
    );
    // Not wanted: it is simply not ours, nothing to say.
    let d = diff(&want(Mode::Native, &Config::default()), &observed);
    assert!(d.blocked.is_empty());
}

#[test]
fn switch_phases_keep_old_routes_until_new_ones_are_in() {
    // ipip -> vxlan, Switch phase: the new routes are replaced in place (same
    // keys) before anything stale goes, and tunl0 stays.
    let nodes = three_nodes();
    let up = uplink("eth0", 1500, "10.250.0.1/24");
    let config = Config::default();
    let phase = |route_mode, decap: &[Mode]| {
        desired(Inputs {
            local: &nodes[0],
            nodes: &nodes,
            plan: &Plan {
                generation: 1,
                route_mode,
                decap: decap.iter().copied().collect(),
            },
            config: &config,
            uplink: Some(&up),
            uplink6: None,
        })
        .unwrap()
    };
    let prepare = phase(Mode::Ipip, &[Mode::Ipip, Mode::Vxlan]);
    let switch = phase(Mode::Vxlan, &[Mode::Ipip, Mode::Vxlan]);
    let finalize = phase(Mode::Vxlan, &[Mode::Vxlan]);
    let mut kernel = realistic(&phase(Mode::Ipip, &[Mode::Ipip]));
    for (name, next) in [
        ("prepare", &prepare),
        ("switch", &switch),
        ("finalize", &finalize),
    ] {
        let d = diff(next, &kernel);
        assert!(
            d.steps.iter().all(|s| !matches!(s.op, Op::DelRoute { .. })),
            "{name}: a route is deleted rather than replaced: {:#?}",
            d.steps
        );
        apply(&mut kernel, &d);
        assert!(diff(next, &kernel).is_empty(), "{name}");
    }
    let tunl0 = kernel.ipip.unwrap();
    assert!(!tunl0.up && tunl0.addresses.is_empty());
}
