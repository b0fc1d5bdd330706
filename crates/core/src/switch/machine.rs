//! The coordinator's state machine: pure, no I/O, no clock, no memory.
//!
//! [`step`] takes the spec, the status the coordinator last wrote, what the
//! nodes report and the time, and returns the status to write (write it when
//! it differs) plus events. Everything the machine needs lives in that
//! status, so a restarted (or newly elected) coordinator resumes from it.
//!
//! # Plans and phases
//!
//! The machine works on plan *content*: the next plan follows from the plan
//! in force and the mode the spec asks for, the phase is only its label.
//!
//! - Steady-like plan of mode M (route M, tunnels of M only), target T != M:
//!   the plans of [`phases`]`(M, T)` (Prepare, Switch, Finalize; a phase
//!   equal to the previous plan is skipped).
//! - Mid-switch plan "route r, decap {r, o}":
//!   - target o: continue `phases(r, o)` after the phase equal to it
//!     (it is that switch's Prepare);
//!   - target r: continue `phases(o, r)` after the phase equal to it
//!     (it is that switch's Switch): this is the **abort**;
//!   - a third mode C: settle on r first (the mode everyone may already
//!     route with, so the shortest safe way to a steady state), then switch
//!     r -> C. In a Prepare of A -> B that means back to A (nobody routes B
//!     yet); in a Switch of A -> B it means finishing to B.
//!
//! Resulting sequences (A, B overlays; `g` the generation in force):
//!
//! ```text
//! A -> B                  g+1 Prepare rA {A,B}, g+2 Switch rB {A,B}, g+3 Finalize rB {B}, Steady
//! A -> native             g+1 Switch r-native {A,native}, g+2 Finalize r-native {native}
//! native -> B             g+1 Prepare r-native {native,B}, g+2 Switch rB {native,B}, Steady
//! abort from Prepare      g+1 Finalize rA {A}                     (labelled B -> A)
//! abort from Switch       g+1 Switch rA {A,B}, g+2 Finalize rA {A} (labelled B -> A)
//! abort in Finalize       a new switch B -> A: phases(B, A)
//! A -> native, abort from Switch   g+1 Switch rA {A,native} (steady-like), Steady
//! native -> B, abort from Prepare  g+1 Finalize r-native {native}
//! native -> B, abort from Switch   Switch was its last plan: phases(B, native)
//! ```
//!
//! # When a plan is published
//!
//! - **Advance** (same target as last step): only when every node in scope
//!   has reported the current generation applied, NetworkUnavailable=False
//!   and, when configured, the cloud's underlay signal.
//! - **Re-target** (spec.mode changed: start, abort, third mode): the next
//!   plan is published at once when it is safe against every plan a node in
//!   scope may still hold, otherwise it waits like an advance. This is what
//!   lets an operator abort a switch that is stuck on one node.
//!
//! "Safe" is tracked in `status.inFlight`: the route modes any node may still
//! use and the modes every node can receive (tunnels plus native, which needs
//! no device), over all plans published since the last time every node in
//! scope held the current one. A plan is admitted when every node can receive
//! its route mode and it can receive every route mode in flight.
//!
//! # Nodes
//!
//! In scope: every node the caller lists, except NotReady nodes under policy
//! `Skip` that have not converged and have been NotReady for `nodeTimeout`
//! (since `RolloutNode::since`, or since the plan's publication when unknown).
//! Skipped nodes are named in `status.skipped` and stay skipped through the
//! next phases until they are Ready again; they get the current plan like
//! everyone once they return (what they route meanwhile is the risk Skip
//! accepts). New nodes are in scope at once; deleted nodes simply are not
//! listed. A node in scope that has not converged by the same deadline is
//! named in `status.blocked` once `nodeTimeout` has passed after the later
//! of the plan's publication and `RolloutNode::since` (Ready nodes, and
//! NotReady ones under `Wait`):
//! the plan stays as it is and the block clears once the node converges;
//! nothing is rolled back by itself.
//!
//! A status without a plan (fresh cluster) publishes Steady(spec.mode) at
//! one generation above any a node reports (1 on a fresh cluster). A status
//! without `inFlight` (written by an older coordinator) is treated as
//! "anything may be in flight": re-targets then wait for every node.

use std::collections::BTreeSet;

use serde::Serialize;

use super::phases::{effect, phases, PhasePlan};
use crate::api::{
    ClusterRoutingSpec, ClusterRoutingStatus, InFlight, Mode, NodesStatus, NotReadyPolicy,
    OffSubnet, Phase, Plan,
};
use crate::snapshot::{Applied, ReportedNode};

/// `rollout.nodeTimeout` when the spec leaves it out.
pub const DEFAULT_NODE_TIMEOUT_SECS: u64 = 300;

/// What the coordinator is asked for: the spec, reduced to what the machine
/// uses, plus the coordinator's own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub mode: Mode,
    pub node_timeout_secs: u64,
    pub not_ready_policy: NotReadyPolicy,
    /// Native with `offSubnet: underlay` only: also wait for the underlay
    /// signal (`RolloutNode::underlay_ready`) on every node before publishing a
    /// plan that routes native, and count a node as converged on such a plan
    /// only with it. Nodes lacking it are named in `status.nodes.waiting`.
    pub wait_for_underlay_signal: bool,
}

impl Spec {
    pub fn new(mode: Mode) -> Spec {
        Spec {
            mode,
            node_timeout_secs: DEFAULT_NODE_TIMEOUT_SECS,
            not_ready_policy: NotReadyPolicy::Wait,
            wait_for_underlay_signal: false,
        }
    }

    /// From the ClusterRouting spec; `wait_for_underlay_signal` is the
    /// coordinator's option and only holds with `native.offSubnet: underlay`.
    pub fn from_crd(spec: &ClusterRoutingSpec, wait_for_underlay_signal: bool) -> Spec {
        let rollout = spec.rollout.clone().unwrap_or_default();
        let underlay = spec.native.as_ref().and_then(|n| n.off_subnet) == Some(OffSubnet::Underlay);
        Spec {
            mode: spec.mode,
            node_timeout_secs: rollout
                .node_timeout
                .map_or(DEFAULT_NODE_TIMEOUT_SECS, |t| t.0.as_secs()),
            not_ready_policy: rollout.not_ready_policy.unwrap_or_default(),
            wait_for_underlay_signal: wait_for_underlay_signal && underlay,
        }
    }
}

/// One node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutNode {
    pub name: String,
    /// The kubelet's Ready condition.
    pub ready: bool,
    /// Unix seconds of the node's last Ready transition (its Ready
    /// condition's lastTransitionTime), which restarts its clock. `None`:
    /// unknown (the plan's publication time counts alone).
    pub since: Option<u64>,
    /// `podroute.io/applied`.
    pub applied: Option<Applied>,
    /// NetworkUnavailable=False as podroute writes it.
    pub available: bool,
    /// The underlay signal (a Node condition a cloud-specific controller
    /// sets True once the node's routes are in the underlay), when the
    /// caller watches one. Not NetworkUnavailable: podroute writes that
    /// itself, and the cloud route controller never rewrites it once False.
    pub underlay_ready: Option<bool>,
}

impl RolloutNode {
    pub fn from_reported(state: &ReportedNode) -> RolloutNode {
        RolloutNode {
            name: state.node.name.clone(),
            ready: state.ready,
            since: None,
            applied: state.report.applied,
            available: state.report.is_available(),
            underlay_ready: None,
        }
    }
}

/// Modes a node holding `plan` can receive: its tunnels, and native (plain
/// forwarding needs no device).
pub fn receivable(plan: &Plan) -> BTreeSet<Mode> {
    let mut out = plan.tunnels();
    out.insert(Mode::Native);
    out
}

/// The rules of `status.inFlight` (the field is wire data, in `api`).
pub trait InFlightRules {
    fn of(plan: &Plan) -> Self;
    /// Nothing known: anything may route, only native is surely received.
    fn unknown() -> Self;
    /// Whether `plan` can go live next to everything in flight.
    fn admits(&self, plan: &Plan) -> bool;
    fn add(&mut self, plan: &Plan);
}

impl InFlightRules for InFlight {
    fn of(plan: &Plan) -> InFlight {
        InFlight {
            routes: BTreeSet::from([plan.route_mode]),
            receive: receivable(plan),
        }
    }

    fn unknown() -> InFlight {
        InFlight {
            routes: Mode::ALL.into_iter().collect(),
            receive: BTreeSet::from([Mode::Native]),
        }
    }

    fn admits(&self, plan: &Plan) -> bool {
        self.receive.contains(&plan.route_mode) && self.routes.is_subset(&receivable(plan))
    }

    fn add(&mut self, plan: &Plan) {
        self.routes.insert(plan.route_mode);
        let receive = receivable(plan);
        self.receive.retain(|m| receive.contains(m));
    }
}

/// An event for the ClusterRouting object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub reason: &'static str,
    pub message: String,
}

pub const REASON_PUBLISHED: &str = "PlanPublished";
pub const REASON_STARTED: &str = "SwitchStarted";
pub const REASON_ABORTED: &str = "SwitchAborted";
pub const REASON_COMPLETED: &str = "SwitchCompleted";
pub const REASON_BLOCKED: &str = "Blocked";
pub const REASON_UNBLOCKED: &str = "Unblocked";
pub const REASON_SKIPPED: &str = "NodeSkipped";

fn event(reason: &'static str, message: String) -> Event {
    Event { reason, message }
}

#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub spec: &'a Spec,
    pub status: &'a ClusterRoutingStatus,
    pub nodes: &'a [RolloutNode],
    /// Unix seconds.
    pub now: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: ClusterRoutingStatus,
    pub events: Vec<Event>,
}

/// The way from the plan in force to the target.
struct Way {
    from: Option<Mode>,
    to: Mode,
    /// The current plan's phase on this way.
    label: Phase,
    remaining: Vec<PhasePlan>,
}

fn is_steady_like(plan: &Plan) -> bool {
    effect(plan) == effect(&Plan::steady(plan.route_mode, 0))
}

fn way_to(current: &Plan, target: Mode) -> Way {
    let r = current.route_mode;
    if is_steady_like(current) {
        return Way {
            from: (target != r).then_some(r),
            to: target,
            label: Phase::Steady,
            remaining: phases(r, target, current.generation),
        };
    }
    let others: Vec<Mode> = current
        .decap
        .iter()
        .chain(&current.tunnels())
        .copied()
        .filter(|m| *m != r)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let settle = |from| Way {
        from,
        to: r,
        label: Phase::Switch,
        remaining: vec![PhasePlan {
            phase: Phase::Finalize,
            plan: Plan::steady(r, current.generation + 1),
        }],
    };
    let [o] = others[..] else {
        // Not a plan this machine writes: settle on what it routes.
        return settle(others.first().copied());
    };
    let (from, to) = if target == o { (r, o) } else { (o, r) };
    let all = phases(from, to, current.generation);
    match all.iter().position(|p| effect(&p.plan) == effect(current)) {
        Some(i) => Way {
            from: Some(from),
            to,
            label: all[i].phase,
            remaining: all[i + 1..]
                .iter()
                .enumerate()
                .map(|(k, p)| PhasePlan {
                    phase: p.phase,
                    plan: Plan {
                        generation: current.generation + 1 + k as u64,
                        ..p.plan.clone()
                    },
                })
                .collect(),
        },
        None => settle(Some(o)),
    }
}

/// Where the nodes stand on one plan.
#[derive(Debug, Default)]
struct Survey {
    total: u32,
    applied: u32,
    /// Every node in scope holds the plan (converged or not).
    all_applied: bool,
    waiting: Vec<String>,
    skipped: Vec<String>,
    blocked: Vec<String>,
    /// Every node in scope has the underlay signal.
    all_underlay: bool,
}

/// Whether a node needs the underlay signal to converge on `plan`.
fn needs_underlay(spec: &Spec, plan: &Plan) -> bool {
    spec.wait_for_underlay_signal && plan.route_mode == Mode::Native
}

/// Where the nodes stand on `plan`. A converged node that lacks the underlay
/// signal the `next` plan needs is waiting too (but not late: that clock
/// starts when a plan that needs it is published).
fn survey(
    spec: &Spec,
    plan: &Plan,
    next: Option<&Plan>,
    published_at: u64,
    nodes: &[RolloutNode],
    now: u64,
    skipped_before: &[String],
) -> Survey {
    let mut sorted: Vec<&RolloutNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let plan_needs_underlay = needs_underlay(spec, plan);
    let next_needs_underlay = next.is_some_and(|next| needs_underlay(spec, next));
    let mut out = Survey {
        all_applied: true,
        all_underlay: true,
        ..Survey::default()
    };
    for n in sorted {
        let holds = n
            .applied
            .is_some_and(|a| a.generation == plan.generation && a.mode == plan.route_mode);
        let underlay = n.underlay_ready == Some(true);
        let converged = holds && n.available && (underlay || !plan_needs_underlay);
        // Saturating: times and timeouts come from the API server as parsed.
        let deadline = published_at
            .max(n.since.unwrap_or(0))
            .saturating_add(spec.node_timeout_secs);
        let late = now >= deadline;
        // NotReady for nodeTimeout (counted from the plan when unknown);
        // once skipped, skipped until Ready again or converged.
        let down_too_long = skipped_before.contains(&n.name)
            || now
                >= n.since
                    .unwrap_or(published_at)
                    .saturating_add(spec.node_timeout_secs);
        if !converged && !n.ready && spec.not_ready_policy == NotReadyPolicy::Skip && down_too_long
        {
            out.skipped.push(n.name.clone());
            continue;
        }
        out.total += 1;
        out.all_underlay &= underlay;
        if holds {
            out.applied += 1;
        } else {
            out.all_applied = false;
        }
        if !converged {
            out.waiting.push(n.name.clone());
            if late {
                out.blocked.push(n.name.clone());
            }
        } else if next_needs_underlay && !underlay {
            out.waiting.push(n.name.clone());
        }
    }
    out
}

fn describe(plan: &Plan) -> String {
    let decap: Vec<&str> = plan.decap.iter().map(|m| m.as_str()).collect();
    format!(
        "generation {}: route {}, decap {{{}}}",
        plan.generation,
        plan.route_mode,
        decap.join(", ")
    )
}

fn direction(from: Option<Mode>, to: Option<Mode>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => format!("{a} -> {b}"),
        (None, Some(b)) => b.to_string(),
        _ => "-".into(),
    }
}

/// One step of the coordinator. See the module doc.
pub fn step(inputs: &Inputs) -> Decision {
    let Inputs {
        spec,
        status: old,
        nodes,
        now,
    } = *inputs;
    let mut events = Vec::new();
    let mut status = old.clone();
    let mut phase = old.current_phase();
    let mut in_flight = old.in_flight.clone().unwrap_or_default();
    let mut skipped_before = Vec::new();

    match old.plan.clone() {
        None => {
            let generation = nodes
                .iter()
                .filter_map(|n| n.applied.map(|a| a.generation))
                .max()
                .unwrap_or(0)
                + 1;
            let plan = Plan::steady(spec.mode, generation);
            events.push(event(
                REASON_PUBLISHED,
                format!("Steady {}: {}", spec.mode, describe(&plan)),
            ));
            phase = Phase::Steady;
            in_flight = InFlight::of(&plan);
            status = ClusterRoutingStatus {
                plan: Some(plan),
                to: Some(spec.mode),
                phase_started_at: Some(now),
                ..ClusterRoutingStatus::default()
            };
        }
        Some(current) => {
            let published_at = old.phase_started_at.unwrap_or(now);
            let way = way_to(&current, spec.mode);
            let next = way.remaining.first();
            let here = survey(
                spec,
                &current,
                next.map(|n| &n.plan),
                published_at,
                nodes,
                now,
                &old.skipped,
            );
            skipped_before = here.skipped.clone();
            if here.all_applied {
                in_flight = InFlight::of(&current);
            } else if in_flight.routes.is_empty() {
                in_flight = InFlight::unknown();
            }
            let underlay_ok = |plan: &Plan| !needs_underlay(spec, plan) || here.all_underlay;
            let mut publish = None;
            if old.to != Some(way.to) {
                let aborted =
                    matches!(phase, Phase::Prepare | Phase::Switch) && old.from == Some(way.to);
                events.push(event(
                    if aborted {
                        REASON_ABORTED
                    } else {
                        REASON_STARTED
                    },
                    format!(
                        "{} at {} ({}): now heading {}",
                        direction(old.from, old.to),
                        phase,
                        describe(&current),
                        direction(way.from, Some(way.to)),
                    ),
                ));
                phase = way.label;
                status.from = way.from;
                status.to = Some(way.to);
                if let Some(next) = next {
                    if in_flight.admits(&next.plan) && underlay_ok(&next.plan) {
                        publish = Some(next.clone());
                    }
                }
            } else if here.waiting.is_empty() {
                match next {
                    Some(next) if in_flight.admits(&next.plan) && underlay_ok(&next.plan) => {
                        publish = Some(next.clone());
                    }
                    Some(_) => {}
                    None if phase != Phase::Steady => {
                        events.push(event(
                            REASON_COMPLETED,
                            format!(
                                "{}: every node holds {}",
                                direction(status.from, status.to),
                                describe(&current)
                            ),
                        ));
                        phase = Phase::Steady;
                        status.from = None;
                    }
                    None => {}
                }
            }
            if let Some(next) = publish {
                phase = next.phase;
                status.from = way.from;
                status.to = Some(way.to);
                status.phase_started_at = Some(now);
                in_flight.add(&next.plan);
                events.push(event(
                    REASON_PUBLISHED,
                    format!(
                        "{} {}: {}",
                        phase,
                        direction(way.from, Some(way.to)),
                        describe(&next.plan)
                    ),
                ));
                status.plan = Some(next.plan);
            }
        }
    }

    let plan = status.plan.clone().expect("a plan is in force");
    let next = way_to(&plan, spec.mode).remaining.into_iter().next();
    let there = survey(
        spec,
        &plan,
        next.as_ref().map(|n| &n.plan),
        status.phase_started_at.unwrap_or(now),
        nodes,
        now,
        &skipped_before,
    );
    if there.all_applied {
        in_flight = InFlight::of(&plan);
    }
    for name in &there.skipped {
        if !old.skipped.contains(name) {
            events.push(event(
                REASON_SKIPPED,
                format!(
                    "{name} is NotReady and did not apply generation {} within {}s: left out",
                    plan.generation, spec.node_timeout_secs
                ),
            ));
        }
    }
    if there.blocked != old.blocked {
        if there.blocked.is_empty() {
            events.push(event(
                REASON_UNBLOCKED,
                format!(
                    "every late node converged on generation {}",
                    plan.generation
                ),
            ));
        } else {
            events.push(event(
                REASON_BLOCKED,
                format!(
                    "{} at {}: {} did not converge on generation {} within {}s",
                    direction(status.from, status.to),
                    phase,
                    there.blocked.join(", "),
                    plan.generation,
                    spec.node_timeout_secs
                ),
            ));
        }
    }
    status.nodes = Some(NodesStatus {
        total: there.total,
        applied: there.applied,
        waiting: there.waiting,
    });
    status.skipped = there.skipped;
    status.blocked = there.blocked;
    status.switch_phase = Some(phase);
    status.in_flight = Some(in_flight);
    status.phase = Some(status.phase_name());
    Decision { status, events }
}
