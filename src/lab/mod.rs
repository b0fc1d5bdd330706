//! lab: network-namespace plumbing for the virtual cluster (tests, benchmark, `podroute lab`).

pub mod netns;
pub mod probe;
pub mod topology;
