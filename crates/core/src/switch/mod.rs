//! The cluster-wide switch between modes: the phase plans (`phases`) and the
//! coordinator's state machine (`machine::step`; its module doc has the exact
//! plan sequences).

pub mod machine;
pub mod phases;

#[cfg(test)]
mod machine_tests;

pub use machine::{step, Decision, Event, InFlightRules, Inputs, RolloutNode, Spec};
pub use phases::{phases, PhasePlan};
