//! The agent's periodic check: every peer the plan routes, probed once per
//! interval, at a bounded rate. At 5000 peers and the defaults (60 s, at
//! most 100 peers a second) a round takes 60 s: 83 pairs of probes
//! a second, each answered, so about 330 packets a second in and out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::metrics::{labels, PeerMetrics};
use super::probe::{probe, Probed};
use crate::plan::check::ProbeTarget;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// UDP port of every agent's responder.
    pub port: u16,
    /// A round over every peer takes this long, unless `max_rate` makes it longer.
    pub interval: Duration,
    /// Peers probed per second, at most.
    pub max_rate: u32,
    /// How long a probe waits for its answer, all attempts together.
    pub timeout: Duration,
}

/// The gap between two peers' probes in a round over `peers`.
pub fn spacing(peers: usize, interval: Duration, max_rate: u32) -> Duration {
    let even = interval / u32::try_from(peers.max(1)).unwrap_or(u32::MAX);
    even.max(Duration::from_secs(1) / max_rate.max(1))
}

/// The latest result per peer address: the gauges' source.
#[derive(Default)]
struct Latest(HashMap<(String, &'static str), (bool, bool)>);

impl Latest {
    fn record(&mut self, m: &PeerMetrics, target: &ProbeTarget, probed: &Probed) {
        let reachable = probed.small.is_ok();
        let mtu_ok = probed.full.is_ok();
        m.reachable
            .get_or_create(&labels(&target.peer, target.family))
            .set(i64::from(reachable));
        if let Ok(rtt) = probed.small {
            m.rtt_seconds.observe(rtt.as_secs_f64());
        }
        let result = match (reachable, mtu_ok) {
            (true, true) => "ok",
            (true, false) => "mtu",
            (false, _) => "unreachable",
        };
        m.results
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        if !reachable || !mtu_ok {
            tracing::debug!(peer = %target.peer, family = target.family, result, ?probed, "peer check");
        }
        let key = (target.peer.clone(), target.family);
        let before = self.0.insert(key, (reachable, mtu_ok));
        if before.is_some_and(|(r, _)| r) && !reachable {
            tracing::warn!(peer = %target.peer, dst = %target.dst, "peer no longer answers probes");
        }
        self.publish(m);
    }

    /// Forget peers no longer routed.
    fn retain(&mut self, m: &PeerMetrics, targets: &[ProbeTarget]) {
        self.0.retain(|(peer, family), _| {
            let keep = targets
                .iter()
                .any(|t| &t.peer == peer && t.family == *family);
            if !keep {
                m.reachable.remove(&labels(peer, family));
            }
            keep
        });
        self.publish(m);
    }

    fn publish(&self, m: &PeerMetrics) {
        let count = |f: fn(&(bool, bool)) -> bool| {
            i64::try_from(self.0.values().filter(|v| f(v)).count()).unwrap_or(i64::MAX)
        };
        m.unreachable.set(count(|(r, _)| !r));
        m.mtu_failing.set(count(|(r, mtu)| *r && !mtu));
    }
}

/// Probe the latest targets round after round until `shutdown`.
pub async fn run(
    options: CheckOptions,
    mut targets: watch::Receiver<Arc<Vec<ProbeTarget>>>,
    metrics: PeerMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<(ProbeTarget, Probed)>();
    let mut latest = Latest::default();
    let mut round: Arc<Vec<ProbeTarget>> = Arc::new(Vec::new());
    let mut next = 0usize;
    let mut gap = options.interval;
    let mut tick = tokio::time::interval(gap);
    // One ticker across rounds: the first probe of a round waits its gap
    // after the last of the previous one, as every other probe does.
    let mut last_sent: Option<Instant> = None;
    loop {
        if next >= round.len() {
            round = targets.borrow_and_update().clone();
            latest.retain(&metrics, &round);
            next = 0;
            let wanted = spacing(round.len(), options.interval, options.max_rate);
            if wanted != gap {
                gap = wanted;
                let start = last_sent.map_or_else(Instant::now, |at| at + gap);
                tick = tokio::time::interval_at(start, gap);
            }
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            Some((target, probed)) = done.recv() => latest.record(&metrics, &target, &probed),
            changed = targets.changed(), if round.is_empty() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick(), if !round.is_empty() => {
                last_sent = Some(Instant::now());
                let target = round[next].clone();
                next += 1;
                let done_tx = done_tx.clone();
                let (port, timeout) = (options.port, options.timeout);
                tokio::spawn(async move {
                    let probed = probe(&target, port, timeout).await;
                    let _ = done_tx.send((target, probed));
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_spreads_over_the_interval_unless_the_rate_caps_it() {
        let minute = Duration::from_secs(60);
        assert_eq!(spacing(60, minute, 100), Duration::from_secs(1));
        assert_eq!(spacing(5000, minute, 100), Duration::from_millis(12));
        assert_eq!(spacing(12_000, minute, 100), Duration::from_millis(10));
        assert_eq!(spacing(0, minute, 0), minute);
    }
}
