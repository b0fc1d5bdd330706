//! The coordinator's state machine against a fake cluster whose agents apply
//! whatever plan is published, with lag, joins, leaves and stuck nodes.
//! Every step round-trips the status through JSON (a restart at each step)
//! and checks the safety property on what the nodes really hold.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::machine::*;
use crate::api::{ClusterRoutingStatus, InFlight, Mode, NodesStatus, NotReadyPolicy, Phase, Plan};
use crate::snapshot::Applied;

use Mode::{Ipip, Native, Vxlan};
use Phase::{Finalize, Prepare, Steady, Switch};

#[derive(Clone, Debug)]
struct FakeNode {
    name: String,
    ready: bool,
    since: Option<u64>,
    holds: Option<Plan>,
    available: bool,
    underlay: Option<bool>,
}

struct Cluster {
    spec: Spec,
    status: ClusterRoutingStatus,
    nodes: Vec<FakeNode>,
    now: u64,
    /// Every plan published, in order, with its phase.
    published: Vec<(Phase, Plan)>,
    events: Vec<Event>,
    next_id: usize,
}

impl Cluster {
    /// `n` nodes converged on Steady(mode), generation 1.
    fn steady(mode: Mode, n: usize) -> Cluster {
        let mut c = Cluster {
            spec: Spec::new(mode),
            status: ClusterRoutingStatus::default(),
            nodes: Vec::new(),
            now: 1_000,
            published: Vec::new(),
            events: Vec::new(),
            next_id: 1,
        };
        for _ in 0..n {
            c.join();
        }
        c.step();
        c.apply_all();
        c.step();
        assert_eq!(c.phase(), Steady);
        assert_eq!(c.plan(), Plan::steady(mode, 1));
        assert!(c.nodes().waiting.is_empty());
        c.published.clear();
        c.events.clear();
        c
    }

    fn join(&mut self) -> String {
        let name = format!("node-{}", self.next_id);
        self.next_id += 1;
        self.nodes.push(FakeNode {
            name: name.clone(),
            ready: true,
            since: None,
            holds: None,
            available: false,
            underlay: None,
        });
        name
    }

    fn node(&mut self, name: &str) -> &mut FakeNode {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn phase(&self) -> Phase {
        self.status.switch_phase.expect("a phase")
    }

    fn nodes(&self) -> NodesStatus {
        self.status.nodes.clone().unwrap_or_default()
    }

    fn plan(&self) -> Plan {
        self.status.plan.clone().expect("plan")
    }

    fn facts(&self) -> Vec<RolloutNode> {
        self.nodes
            .iter()
            .map(|n| RolloutNode {
                name: n.name.clone(),
                ready: n.ready,
                since: n.since,
                applied: n.holds.as_ref().map(|p| Applied {
                    generation: p.generation,
                    mode: p.route_mode,
                }),
                available: n.available,
                underlay_ready: n.underlay,
            })
            .collect()
    }

    fn step(&mut self) -> Vec<Event> {
        // A restart at every step: only what the status says survives.
        let json = serde_json::to_string(&self.status).unwrap();
        let status: ClusterRoutingStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(status, self.status, "status survives a round trip");
        let facts = self.facts();
        let decision = step(&Inputs {
            spec: &self.spec,
            status: &status,
            nodes: &facts,
            now: self.now,
        });
        let before = self.status.plan.clone();
        self.status = decision.status;
        let plan = self.plan();
        if before.as_ref() != Some(&plan) {
            if let Some(before) = before {
                assert_eq!(plan.generation, before.generation + 1, "one generation up");
            }
            self.published.push((self.phase(), plan));
        }
        self.assert_safe();
        // Stepping again with nothing changed writes nothing.
        let again = step(&Inputs {
            spec: &self.spec,
            status: &self.status,
            nodes: &facts,
            now: self.now,
        });
        if again.status == self.status {
            assert!(again.events.is_empty(), "{:?}", again.events);
        }
        self.events.extend(decision.events.clone());
        decision.events
    }

    fn apply(&mut self, name: &str) {
        let plan = self.plan();
        let node = self.node(name);
        node.holds = Some(plan);
        node.available = true;
        self.assert_safe();
    }

    fn apply_all(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            self.apply(&name);
        }
    }

    /// Apply to the first half of the nodes only (the rest lag behind).
    fn apply_half(&mut self) {
        let names: Vec<String> = self
            .nodes
            .iter()
            .take(self.nodes.len() / 2)
            .map(|n| n.name.clone())
            .collect();
        for name in names {
            self.apply(&name);
        }
    }

    /// Any node (Ready, or under policy Wait) may route with its plan's mode
    /// or, any moment now, with the published one: every such mode must be
    /// received by every node.
    fn assert_safe(&self) {
        let mut plans: Vec<&Plan> = self
            .nodes
            .iter()
            .filter(|n| n.ready || self.spec.not_ready_policy == NotReadyPolicy::Wait)
            .filter_map(|n| n.holds.as_ref())
            .collect();
        let current = self.status.plan.as_ref();
        plans.extend(current);
        for a in &plans {
            for b in &plans {
                assert!(
                    receivable(b).contains(&a.route_mode),
                    "unsafe: a node routes {} (gen {}) to a node that holds {:?}; status {:?}",
                    a.route_mode,
                    a.generation,
                    b,
                    self.status
                );
            }
        }
    }

    fn converged(&self) -> bool {
        self.phase() == Steady
            && self.status.to == Some(self.spec.mode)
            && self.plan().route_mode == self.spec.mode
            && self
                .nodes
                .iter()
                .all(|n| n.holds.as_ref() == Some(&self.plan()))
    }

    /// Drive to Steady(spec.mode): each plan reaches half the nodes first.
    fn run(&mut self) {
        for _ in 0..20 {
            self.step();
            if self.converged() {
                return;
            }
            let generation = self.plan().generation;
            let to = self.status.to;
            self.apply_half();
            let plan = Some(self.plan());
            let lagging = self.nodes.iter().any(|n| n.holds != plan);
            self.step();
            // A re-target (a settle then the switch on) may publish at once.
            if lagging && self.status.to == to {
                assert_eq!(self.plan().generation, generation, "advanced too early");
                assert!(!self.nodes().waiting.is_empty());
            }
            self.apply_all();
        }
        panic!("no steady state: {:?}", self.status);
    }

    /// The published plans as (phase, route, decap), generations checked.
    fn published_since(&self, generation: u64) -> Vec<(Phase, Mode, Vec<Mode>)> {
        self.published
            .iter()
            .filter(|(_, p)| p.generation > generation)
            .enumerate()
            .map(|(i, (phase, p))| {
                assert_eq!(p.generation, generation + 1 + i as u64);
                (*phase, p.route_mode, p.decap.iter().copied().collect())
            })
            .collect()
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.reason).collect()
    }
}

type Seq = Vec<(Phase, Mode, Vec<Mode>)>;

fn forward(a: Mode, b: Mode) -> Seq {
    match (a, b) {
        (Native, b) => vec![
            (Prepare, Native, sorted([Native, b])),
            (Switch, b, sorted([Native, b])),
        ],
        (a, Native) => vec![
            (Switch, Native, sorted([a, Native])),
            (Finalize, Native, vec![Native]),
        ],
        (a, b) => vec![
            (Prepare, a, sorted([a, b])),
            (Switch, b, sorted([a, b])),
            (Finalize, b, vec![b]),
        ],
    }
}

fn sorted<const N: usize>(modes: [Mode; N]) -> Vec<Mode> {
    BTreeSet::from(modes).into_iter().collect()
}

fn pairs() -> Vec<(Mode, Mode)> {
    Mode::ALL
        .into_iter()
        .flat_map(|a| Mode::ALL.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .collect()
}

#[test]
fn fresh_cluster_publishes_steady_generation_one_once() {
    let mut c = Cluster::steady(Vxlan, 0);
    c.join();
    c.step();
    assert_eq!(c.plan(), Plan::steady(Vxlan, 1));
    assert_eq!(c.nodes().waiting, ["node-1"]);
    c.apply_all();
    c.step();
    assert!(c.published.is_empty());
    assert_eq!(c.nodes().applied, 1);
}

#[test]
fn fresh_status_publishes_above_any_reported_generation() {
    let facts = [RolloutNode {
        name: "n".into(),
        ready: true,
        since: None,
        applied: Some(Applied {
            generation: 7,
            mode: Ipip,
        }),
        available: true,
        underlay_ready: None,
    }];
    let d = step(&Inputs {
        spec: &Spec::new(Native),
        status: &ClusterRoutingStatus::default(),
        nodes: &facts,
        now: 5,
    });
    assert_eq!(d.status.plan, Some(Plan::steady(Native, 8)));
    assert_eq!(d.status.switch_phase, Some(Steady));
    assert_eq!(d.status.phase_started_at, Some(5));
    assert_eq!(d.events.len(), 1);
}

#[test]
fn every_pair_switches_through_the_expected_plans() {
    for (a, b) in pairs() {
        let mut c = Cluster::steady(a, 4);
        c.spec.mode = b;
        c.run();
        assert_eq!(c.published_since(1), forward(a, b), "{a} -> {b}");
        assert_eq!(c.status.from, None);
        assert_eq!(
            c.reasons()
                .iter()
                .filter(|r| **r == REASON_COMPLETED)
                .count(),
            1,
            "{a} -> {b}: {:?}",
            c.events
        );
        assert!(c.reasons().contains(&REASON_STARTED));
    }
}

/// Switch `a -> b` until `phase` is published, let half the nodes apply it,
/// then set the spec back to `a`. Returns the generation aborted at.
fn abort_at(c: &mut Cluster, b: Mode, phase: Phase) -> u64 {
    let a = c.spec.mode;
    c.spec.mode = b;
    for _ in 0..5 {
        c.step();
        if c.phase() == phase {
            c.apply_half();
            c.spec.mode = a;
            return c.plan().generation;
        }
        c.apply_all();
    }
    panic!("{a} -> {b} never reached {phase}");
}

#[test]
fn abort_from_prepare_returns_to_a_at_once() {
    let expected = |a: Mode| vec![(Finalize, a, vec![a])];
    for (a, b) in pairs()
        .into_iter()
        .filter(|(a, b)| forward(*a, *b)[0].0 == Prepare)
    {
        let mut c = Cluster::steady(a, 4);
        let at = abort_at(&mut c, b, Prepare);
        // Published at once, even though half the nodes lag.
        c.step();
        assert_eq!(c.plan().generation, at + 1, "{a} -> {b}");
        assert_eq!((c.status.from, c.status.to), (Some(b), Some(a)));
        assert!(c.reasons().contains(&REASON_ABORTED));
        c.run();
        assert_eq!(c.published_since(at), expected(a), "{a} -> {b}");
    }
}

#[test]
fn abort_from_switch_keeps_both_decaps_until_everyone_routes_a() {
    for (a, b) in pairs() {
        let mut c = Cluster::steady(a, 4);
        let at = abort_at(&mut c, b, Switch);
        c.step();
        assert!(c.reasons().contains(&REASON_ABORTED), "{a} -> {b}");
        c.run();
        let expected = match (a, b) {
            // Switch was the last phase (route b, decap {native, b}): the way
            // back is the whole switch b -> native.
            (Native, b) => forward(b, Native),
            // Route a again with both decaps; drop b once everyone routes a.
            (a, Native) => vec![(Switch, a, sorted([a, Native]))],
            (a, b) => vec![(Switch, a, sorted([a, b])), (Finalize, a, vec![a])],
        };
        assert_eq!(c.published_since(at), expected, "{a} -> {b}");
    }
}

#[test]
fn abort_in_finalize_is_a_new_switch_back() {
    for (a, b) in pairs().into_iter().filter(|(a, _)| *a != Native) {
        let mut c = Cluster::steady(a, 4);
        let at = abort_at(&mut c, b, Finalize);
        c.step();
        assert!(c.reasons().contains(&REASON_STARTED));
        c.run();
        assert_eq!(c.published_since(at), forward(b, a), "{a} -> {b} -> {a}");
    }
}

#[test]
fn a_third_mode_settles_on_the_routed_mode_first() {
    // In Prepare of ipip -> vxlan nobody routes vxlan: back to ipip, then native.
    let mut c = Cluster::steady(Ipip, 4);
    let at = abort_at(&mut c, Vxlan, Prepare);
    c.spec.mode = Native;
    c.run();
    let mut expected = vec![(Finalize, Ipip, vec![Ipip])];
    expected.extend(forward(Ipip, Native));
    assert_eq!(c.published_since(at), expected);

    // In Switch of ipip -> vxlan: finish to vxlan, then native.
    let mut c = Cluster::steady(Ipip, 4);
    let at = abort_at(&mut c, Vxlan, Switch);
    c.spec.mode = Native;
    c.run();
    let mut expected = vec![(Finalize, Vxlan, vec![Vxlan])];
    expected.extend(forward(Vxlan, Native));
    assert_eq!(c.published_since(at), expected);
}

#[test]
fn repeated_aborts_stay_safe_and_end_where_the_spec_says() {
    for (a, b) in pairs() {
        let mut c = Cluster::steady(a, 4);
        c.spec.mode = b;
        for round in 0..6 {
            c.step();
            c.apply_half();
            c.step();
            c.spec.mode = if round % 2 == 0 { a } else { b };
        }
        c.run();
        assert_eq!(c.plan().route_mode, c.spec.mode);
    }
}

#[test]
fn waiting_names_unapplied_and_unavailable_nodes() {
    let mut c = Cluster::steady(Ipip, 3);
    c.spec.mode = Vxlan;
    c.step();
    assert_eq!(c.phase(), Prepare);
    assert_eq!(c.nodes().waiting, ["node-1", "node-2", "node-3"]);
    c.apply_all();
    c.node("node-2").available = false;
    c.step();
    assert_eq!(c.phase(), Prepare, "node-2 is not available");
    assert_eq!(c.nodes().waiting, ["node-2"]);
    assert_eq!((c.nodes().total, c.nodes().applied), (3, 3));
    c.node("node-2").available = true;
    c.step();
    assert_eq!(c.phase(), Switch);
}

#[test]
fn a_ready_node_that_does_not_converge_blocks_then_unblocks_by_itself() {
    let mut c = Cluster::steady(Ipip, 3);
    c.spec.mode = Vxlan;
    c.step();
    let prepare = c.plan();
    c.apply("node-1");
    c.apply("node-2");
    c.now += DEFAULT_NODE_TIMEOUT_SECS - 1;
    c.step();
    assert!(c.status.blocked.is_empty());
    c.now += 1;
    c.step();
    assert_eq!(c.status.blocked, ["node-3"]);
    assert_eq!(c.status.phase_name(), "Blocked");
    assert_eq!(c.plan(), prepare, "nothing moves, nothing rolls back");
    assert_eq!(c.reasons().last(), Some(&REASON_BLOCKED));
    assert!(c.events.last().unwrap().message.contains("node-3"));
    c.apply("node-3");
    c.step();
    assert!(c.status.blocked.is_empty());
    assert!(c.reasons().contains(&REASON_UNBLOCKED));
    assert_eq!(c.phase(), Switch);
}

#[test]
fn not_ready_nodes_wait_by_default() {
    let mut c = Cluster::steady(Ipip, 3);
    c.node("node-3").ready = false;
    c.spec.mode = Vxlan;
    c.step();
    c.apply("node-1");
    c.apply("node-2");
    c.now += 10 * DEFAULT_NODE_TIMEOUT_SECS;
    c.step();
    assert_eq!(c.phase(), Prepare);
    assert_eq!(c.status.blocked, ["node-3"]);
    assert!(c.status.skipped.is_empty());
    c.node("node-3").ready = true;
    c.apply("node-3");
    c.step();
    assert_eq!(c.phase(), Switch);
}

#[test]
fn not_ready_nodes_are_skipped_after_the_timeout_under_skip() {
    let mut c = Cluster::steady(Ipip, 3);
    c.spec.not_ready_policy = NotReadyPolicy::Skip;
    c.spec.node_timeout_secs = 60;
    c.node("node-3").ready = false;
    c.spec.mode = Vxlan;
    c.step();
    c.apply("node-1");
    c.apply("node-2");
    c.now += 59;
    c.step();
    assert_eq!(c.nodes().waiting, ["node-3"]);
    assert_eq!(c.phase(), Prepare);
    // It just went NotReady: its own clock starts then.
    c.node("node-3").since = Some(c.now);
    c.now += 1;
    c.step();
    assert_eq!(c.phase(), Prepare);
    c.now += 60;
    c.step();
    assert_eq!(c.phase(), Switch);
    assert_eq!(c.status.skipped, ["node-3"]);
    assert_eq!(c.nodes().total, 2);
    assert!(c.reasons().contains(&REASON_SKIPPED));
    // Back: its agent applies the current plan, it is in scope again.
    // (Until its agent runs it may still route ipip only: the risk Skip takes.)
    c.apply("node-3");
    c.node("node-3").ready = true;
    c.step();
    assert!(c.status.skipped.is_empty());
    assert_eq!(c.nodes().total, 3);
    c.run();
    assert_eq!(c.plan().route_mode, Vxlan);
}

#[test]
fn new_nodes_join_the_current_plan_and_deleted_nodes_leave() {
    let mut c = Cluster::steady(Vxlan, 2);
    c.spec.mode = Ipip;
    c.step();
    c.apply_all();
    let joined = c.join();
    c.step();
    assert_eq!(c.phase(), Prepare, "the new node is in scope");
    assert_eq!(c.nodes().waiting, std::slice::from_ref(&joined));
    c.apply(&joined);
    c.step();
    assert_eq!(c.phase(), Switch);
    // node-1 never applies Switch; deleting it lets the rest go on.
    c.apply("node-2");
    c.apply(&joined);
    c.step();
    assert_eq!(c.phase(), Switch);
    c.nodes.retain(|n| n.name != "node-1");
    c.step();
    assert_eq!(c.phase(), Finalize);
    assert_eq!(c.nodes().total, 2);
}

#[test]
fn underlay_signal_gates_plans_that_route_native() {
    let mut c = Cluster::steady(Vxlan, 2);
    c.spec.wait_for_underlay_signal = true;
    c.spec.mode = Native;
    c.step();
    assert_eq!(c.phase(), Steady, "no cloud signal yet");
    assert_eq!(c.status.to, Some(Native));
    assert_eq!(c.nodes().waiting, ["node-1", "node-2"]);
    c.node("node-1").underlay = Some(true);
    c.now += 10 * DEFAULT_NODE_TIMEOUT_SECS;
    c.step();
    assert_eq!(c.plan().route_mode, Vxlan);
    assert_eq!(c.nodes().waiting, ["node-2"], "named while held back");
    assert!(c.status.blocked.is_empty(), "not late on a plan it holds");
    c.node("node-2").underlay = Some(true);
    c.step();
    assert_eq!(c.phase(), Switch);
    c.apply_all();
    c.node("node-2").underlay = Some(false);
    c.step();
    assert_eq!(c.phase(), Switch);
    assert_eq!(c.nodes().waiting, ["node-2"]);
    c.node("node-2").underlay = Some(true);
    c.run();
    assert_eq!(c.plan(), Plan::steady(Native, 3));
}

#[test]
fn spec_from_crd_reads_rollout_and_underlay() {
    let crd: crate::api::ClusterRoutingSpec = serde_json::from_value(serde_json::json!({
        "mode": "native",
        "native": {"offSubnet": "underlay"},
        "rollout": {"nodeTimeout": "2m", "notReadyPolicy": "Skip"},
    }))
    .unwrap();
    let spec = Spec::from_crd(&crd, true);
    assert_eq!(spec.node_timeout_secs, 120);
    assert_eq!(spec.not_ready_policy, NotReadyPolicy::Skip);
    assert!(spec.wait_for_underlay_signal);
    let encap: crate::api::ClusterRoutingSpec =
        serde_json::from_value(serde_json::json!({"mode": "native"})).unwrap();
    let spec = Spec::from_crd(&encap, true);
    assert!(!spec.wait_for_underlay_signal);
    assert_eq!(spec.node_timeout_secs, DEFAULT_NODE_TIMEOUT_SECS);
    assert_eq!(spec.not_ready_policy, NotReadyPolicy::Wait);
}

#[test]
fn a_status_without_in_flight_waits_for_every_node_before_re_targeting() {
    let mut c = Cluster::steady(Ipip, 2);
    c.spec.mode = Vxlan;
    c.run();
    c.spec.mode = Ipip;
    c.step();
    c.apply_all();
    c.step();
    c.apply("node-1");
    assert_eq!(c.phase(), Switch);
    // An older coordinator wrote no inFlight.
    c.status.in_flight = Some(InFlight::default());
    c.spec.mode = Vxlan;
    c.step();
    assert_eq!(c.phase(), Prepare, "relabelled, nothing published");
    assert_eq!(c.status.in_flight, Some(InFlight::unknown()));
    let generation = c.plan().generation;
    c.apply_all();
    c.step();
    assert_eq!(c.plan().generation, generation + 1);
    assert_eq!(c.phase(), Switch);
}

#[test]
fn status_json_is_camel_case() {
    let c = Cluster::steady(Vxlan, 1);
    let json = serde_json::to_value(&c.status).unwrap();
    assert_eq!(json["phase"], "Steady");
    assert_eq!(json["plan"]["routeMode"], "vxlan");
    assert_eq!(json["to"], "vxlan");
    assert!(json["phaseStartedAt"].is_u64());
    assert_eq!(json["inFlight"]["routes"], serde_json::json!(["vxlan"]));
    assert_eq!(json["nodes"]["total"], 1);
}

#[derive(Debug, Clone)]
enum Op {
    Spec(Mode),
    Apply(usize),
    Join,
    Leave(usize),
    Tick,
    Step,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => prop::sample::select(Mode::ALL.to_vec()).prop_map(Op::Spec),
        4 => (0usize..8).prop_map(Op::Apply),
        1 => Just(Op::Join),
        1 => (0usize..8).prop_map(Op::Leave),
        1 => Just(Op::Tick),
        4 => Just(Op::Step),
    ]
}

proptest! {
    #[test]
    fn random_switches_joins_leaves_and_lag_stay_safe_and_converge(
        start in prop::sample::select(Mode::ALL.to_vec()),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut c = Cluster::steady(start, 3);
        for op in ops {
            match op {
                Op::Spec(mode) => c.spec.mode = mode,
                Op::Apply(i) if !c.nodes.is_empty() => {
                    let name = c.nodes[i % c.nodes.len()].name.clone();
                    c.apply(&name);
                }
                Op::Join => {
                    c.join();
                }
                Op::Leave(i) if !c.nodes.is_empty() => {
                    c.nodes.remove(i % c.nodes.len());
                }
                Op::Tick => c.now += 100,
                Op::Step => {
                    c.step();
                }
                _ => {}
            }
            c.assert_safe();
        }
        c.run();
        prop_assert!(c.converged());
    }
}

#[test]
fn in_flight_admits_only_plans_everyone_can_live_with() {
    let both = |route| Plan {
        generation: 0,
        route_mode: route,
        decap: BTreeSet::from([Ipip, Vxlan]),
    };
    // Prepare then Switch of ipip -> vxlan in flight: ipip only is unsafe.
    let mut f = InFlight::of(&Plan::steady(Ipip, 1));
    assert!(f.admits(&both(Ipip)));
    f.add(&both(Ipip));
    assert!(f.admits(&Plan::steady(Ipip, 0)), "abort from Prepare");
    assert!(!f.admits(&both(Vxlan)), "someone may hold ipip only");
    // Everyone holds Prepare (a barrier): Switch may go live.
    let mut f = InFlight::of(&both(Ipip));
    assert!(f.admits(&both(Vxlan)));
    f.add(&both(Vxlan));
    assert!(!f.admits(&Plan::steady(Ipip, 0)), "someone may route vxlan");
    assert!(
        !f.admits(&Plan::steady(Vxlan, 0)),
        "someone may hold ipip only"
    );
    assert!(f.admits(&both(Ipip)), "abort from Switch");
    // Native needs no device: always received.
    assert!(f.admits(&Plan {
        generation: 0,
        route_mode: Native,
        decap: BTreeSet::from([Ipip, Vxlan, Native]),
    }));
    assert!(!InFlight::unknown().admits(&both(Vxlan)));
}
