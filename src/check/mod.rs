//! `podroute check`: packets, not just routes. Every agent answers probes
//! ([`responder`]); `podroute check` and the agent's periodic check
//! ([`periodic`]) send them over the path the pods' packets take, as
//! [`crate::plan::check`] reads it off the plan, and say where it breaks.

pub mod metrics;
pub mod periodic;
pub mod probe;
pub mod responder;
pub mod socket;
pub mod verdict;
pub mod wire;

use std::time::Duration;

use futures::stream::{self, StreamExt};

pub use periodic::CheckOptions;
pub use probe::Probed;
pub use responder::Responder;
pub use verdict::{verdict, PeerCheck};

use crate::plan::check::ProbeTarget;

/// The responders' UDP port unless configured otherwise (9469 is the
/// agent's HTTP listener, 9470 the coordinator's).
pub const DEFAULT_PORT: u16 = 9471;

/// How long a probe waits for its answer, all attempts together.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Peers probed at once by `podroute check`.
pub const PARALLEL: usize = 256;

/// Probe every target, [`PARALLEL`] at a time; results in target order.
pub async fn probe_all(targets: &[ProbeTarget], port: u16, timeout: Duration) -> Vec<Probed> {
    stream::iter(targets)
        .map(|t| probe::probe(t, port, timeout))
        .buffered(PARALLEL)
        .collect()
        .await
}
