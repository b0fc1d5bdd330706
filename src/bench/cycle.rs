//! One run of the engine's phases in a scratch namespace, timed.

use std::time::Instant;

use super::{Sample, Settings};
use crate::dataplane::Dataplane;
use crate::engine;
use crate::lab::netns::Netns;
use crate::model::{Cluster, Config};
use crate::plan::{Desired, Op, Step};
use crate::{Error, Result};

pub(super) const ENGINE_PHASES: [&str; 5] = ["plan", "program", "observe", "resync", "delete"];

/// From an empty namespace back to empty, with a fresh netlink socket as an
/// agent (re)start would have. Broken invariants go to `failures`.
pub(super) fn engine_cycle(
    ns: &Netns,
    cluster: &Cluster,
    config: &Config,
    settings: &Settings,
    failures: &mut Vec<String>,
) -> Result<Vec<Sample>> {
    let n = cluster.nodes.len() - 1;
    let config = config.clone();
    let (samples, broken) = ns.run_async(|| async move {
        // The per-write info lines would time stderr, not netlink.
        let quiet = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let _quiet = (!settings.step_logs).then(|| tracing::dispatcher::set_default(&quiet));
        let mut dp = Dataplane::connect(config)?;
        let local = &cluster.nodes[0];
        let mut samples = Vec::with_capacity(ENGINE_PHASES.len());
        let mut broken = Vec::new();
        let mut record = |what: &str, s: Sample| samples.push(settings.sampled(n, what, s));

        let (start, before) = (Instant::now(), dp.requests());
        let (desired, _) = engine::desired_for(&mut dp, cluster, local).await?;
        record("podroute plan", sample(start, &dp, before, &[], 0));

        let (start, before) = (Instant::now(), dp.requests());
        let outcome = engine::converge(&mut dp, &desired).await?;
        let program = sample(start, &dp, before, &outcome.steps, outcome.changes);
        drop(outcome);
        record("podroute program", program);
        let (expected, routes) = (desired.routes.len(), program.route_writes);
        if routes != expected {
            broken.push(format!(
                "{n} peers: program made {routes} route writes, expected {expected}"
            ));
        }

        let (start, before) = (Instant::now(), dp.requests());
        let diff = engine::dry_run(&mut dp, &desired).await?;
        record("podroute observe", sample(start, &dp, before, &[], 0));
        if !diff.is_empty() {
            broken.push(format!(
                "{n} peers: observe right after program still wants {} writes",
                diff.steps.len()
            ));
        }

        let (start, before) = (Instant::now(), dp.requests());
        let outcome = engine::converge(&mut dp, &desired).await?;
        record(
            "podroute resync",
            sample(start, &dp, before, &outcome.steps, outcome.changes),
        );
        if outcome.changes != 0 {
            let first: Vec<String> = outcome
                .steps
                .iter()
                .take(5)
                .map(|s| s.op.to_string())
                .collect();
            let message = format!(
                "{n} peers: no-op resync made {} writes (first: {})",
                outcome.changes,
                first.join("; ")
            );
            (settings.progress)(&format!("FAIL: {message}"));
            broken.push(message);
        }
        drop(outcome);

        let (start, before) = (Instant::now(), dp.requests());
        let outcome = engine::converge(&mut dp, &Desired::default()).await?;
        record(
            "podroute delete",
            sample(start, &dp, before, &outcome.steps, outcome.changes),
        );
        Ok::<_, Error>((samples, broken))
    })??;
    failures.extend(broken);
    Ok(samples)
}

fn sample(
    start: Instant,
    dp: &Dataplane,
    requests_before: u64,
    steps: &[Step],
    writes: usize,
) -> Sample {
    let time = start.elapsed();
    Sample {
        time,
        writes,
        route_writes: steps
            .iter()
            .filter(|s| matches!(s.op, Op::ReplaceRoute { .. } | Op::DelRoute { .. }))
            .count(),
        netlink: dp.requests() - requests_before,
    }
}
