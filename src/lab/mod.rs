//! lab: network-namespace plumbing for the virtual cluster (tests, benchmark, `podroute lab`).

pub mod html;
pub mod netns;
pub mod node_agent;
pub mod probe;
pub mod report;
pub mod run;
pub mod topology;
pub mod traffic;
