//! The three-phase switch from mode A to mode B (docs/design.md):
//!
//!   Prepare   route A, decap {A, B}   every node can now receive B
//!   Switch    route B, decap {A, B}   nodes move one by one; mixed traffic works
//!   Finalize  route B, decap {B}      tunnels of A retired, stale routes removed
//!
//! A phase that would not change what any node holds is skipped.

use std::collections::BTreeSet;

use crate::api::{Mode, Phase, Plan};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhasePlan {
    pub phase: Phase,
    pub plan: Plan,
}

/// What a plan makes a node hold: its routes' mode and its tunnel devices.
/// Native in `decap` needs no device, so it does not count.
pub(super) fn effect(plan: &Plan) -> (Mode, BTreeSet<Mode>) {
    (plan.route_mode, plan.tunnels())
}

/// The plans that move a cluster from `from` (in force at `generation`) to
/// `to`, generations counting up from there. Empty when `from == to`.
pub fn phases(from: Mode, to: Mode, generation: u64) -> Vec<PhasePlan> {
    if from == to {
        return Vec::new();
    }
    let both = BTreeSet::from([from, to]);
    let candidates = [
        (Phase::Prepare, to_plan(from, both.clone())),
        (Phase::Switch, to_plan(to, both)),
        (Phase::Finalize, to_plan(to, BTreeSet::from([to]))),
    ];
    let mut out: Vec<PhasePlan> = Vec::new();
    let mut previous = effect(&Plan::steady(from, generation));
    for (phase, mut plan) in candidates {
        if effect(&plan) == previous {
            continue;
        }
        previous = effect(&plan);
        plan.generation = generation + out.len() as u64 + 1;
        out.push(PhasePlan { phase, plan });
    }
    out
}

fn to_plan(route_mode: Mode, decap: BTreeSet<Mode>) -> Plan {
    Plan {
        generation: 0,
        route_mode,
        decap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(from: Mode, to: Mode) -> Vec<Phase> {
        phases(from, to, 1).into_iter().map(|p| p.phase).collect()
    }

    #[test]
    fn overlay_to_overlay_takes_all_three_phases() {
        for (a, b) in [(Mode::Ipip, Mode::Vxlan), (Mode::Vxlan, Mode::Ipip)] {
            assert_eq!(
                names(a, b),
                [Phase::Prepare, Phase::Switch, Phase::Finalize]
            );
        }
    }

    #[test]
    fn overlay_to_native_needs_no_prepare() {
        for a in [Mode::Ipip, Mode::Vxlan] {
            assert_eq!(names(a, Mode::Native), [Phase::Switch, Phase::Finalize]);
        }
    }

    #[test]
    fn native_to_overlay_needs_no_finalize() {
        for b in [Mode::Ipip, Mode::Vxlan] {
            assert_eq!(names(Mode::Native, b), [Phase::Prepare, Phase::Switch]);
        }
    }

    #[test]
    fn every_pair_ends_in_the_steady_state_of_the_target() {
        for a in Mode::ALL {
            for b in Mode::ALL.into_iter().filter(|b| *b != a) {
                let all = phases(a, b, 7);
                let last = &all.last().expect("phases").plan;
                assert_eq!(effect(last), effect(&Plan::steady(b, 0)), "{a} -> {b}");
                let generations: Vec<u64> = all.iter().map(|p| p.plan.generation).collect();
                let expected: Vec<u64> = (8..8 + all.len() as u64).collect();
                assert_eq!(generations, expected, "{a} -> {b}");
                // Every phase can still receive what any node may still send.
                for pair in all.windows(2) {
                    let (before, after) = (&pair[0].plan, &pair[1].plan);
                    assert!(
                        after.tunnels().contains(&before.route_mode)
                            || !before.route_mode.is_tunnel()
                    );
                }
            }
        }
    }

    #[test]
    fn no_switch_no_phases() {
        assert!(phases(Mode::Vxlan, Mode::Vxlan, 1).is_empty());
    }
}
