//! The cluster-wide switch between modes: the pure phase plan (`phases`), the
//! coordinator's pure state machine (`machine::step`; see its module doc for
//! the exact plan sequences) and the one loop that steps it (`driver`) over
//! Kubernetes (`kube`) or memory (`memory`).

mod driver;
mod events;
pub mod kube;
mod lease;
pub mod machine;
pub mod memory;
pub mod metrics;
mod phases;
pub mod signals;
mod status;

#[cfg(test)]
mod machine_tests;

pub use machine::{step, Decision, Event, Inputs, RolloutNode, Spec};
pub use phases::{phases, PhasePlan};
