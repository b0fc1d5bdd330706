//! The coordinator: the one loop (`driver`) that steps the pure switch state
//! machine (`podroute_core::switch`) over Kubernetes (`kube`) or the lab's
//! memory store (`memory`).

mod driver;
mod events;
pub mod kube;
mod lease;
pub mod memory;
pub mod metrics;
pub mod signals;
mod status;

pub use podroute_core::switch::{
    machine, phases, step, Decision, Event, InFlightRules, Inputs, RolloutNode, Spec,
};
