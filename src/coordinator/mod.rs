//! The cluster-wide switch between modes: the pure phase plan (`phases`)
//! and the coordinator's pure state machine (`machine::step`; see its
//! module doc for the exact plan sequences).

pub mod kube;
pub mod local;
pub mod machine;
pub mod metrics;
mod phases;
pub mod signals;

#[cfg(test)]
mod machine_tests;

pub use machine::{step, Decision, Event, Inputs, RolloutNode, Spec};
pub use phases::{phases, PhasePlan};
