//! The cluster-wide switch between modes. For now: the pure phase plan.

mod phases;

pub use phases::{naive, phases, Phase, PhasePlan};
