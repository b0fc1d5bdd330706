//! A whole vxlan -> native switch of N kubelet-shaped Nodes, driven by the
//! real coordinator (a process) on a real kube-apiserver + etcd, with
//! simulated agents: one in-process reporter that answers each plan for
//! every node as an agent would (the annotation and the condition: two
//! writes per node per phase). So thousands of nodes fit on one machine.
//!
//! In every phase the reporter holds one node back for [`HOLD`] and fails
//! if the coordinator advances meanwhile: no phase may advance before every
//! node reported.
//!
//! The benchmark (switch duration, API requests per node per phase, the
//! coordinator's CPU and peak RSS) at 1000 and 5000 Nodes:
//!
//! ```text
//! cargo test --release --test kube_switch -- --ignored --nocapture
//! ```
//! (`PODROUTE_BENCH_NODES=1000,5000` by default.) The small run is a test.

mod kube_env;
mod kube_scale;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::Client;
use podroute::api::{ClusterRouting, Mode, Plan};
use serde_json::json;

use kube_env::ControlPlane;
use kube_scale::{create_nodes, install, metrics, name, wait_for_records, wait_until, Coordinator};

/// How long the reporter holds the last node of each phase back.
const HOLD: Duration = Duration::from_secs(1);
/// Requests in flight at once from the simulated agents.
const PARALLEL: usize = 64;

#[test]
fn no_phase_advances_before_every_simulated_node_reported() {
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let m = rt.block_on(switch(&cp, 30));
    println!("{}\n{}", Measured::HEADER, m.row());
    // Prepare adds no decap on the way to native, so the coordinator skips it.
    assert_eq!(m.phases, 2, "vxlan -> native: Switch and Finalize");
}

#[test]
#[ignore]
fn bench_switch_of_many_nodes() {
    kube_scale::bench(Measured::HEADER, async |cp, n| switch(cp, n).await.row());
}

struct Measured {
    nodes: usize,
    phases: usize,
    /// From `spec.mode: native` to Steady on native, less the holds.
    duration: Duration,
    /// Summed over the phases: from the last node's report to the next
    /// plan (or Steady) in the watch: the coordinator's own part.
    reacting: Duration,
    /// All API requests but WATCH during the switch, by verb and resource.
    requests: BTreeMap<String, u64>,
    node_writes: u64,
    /// The API server's latency for the coordinator's status patches: the
    /// upper bound of the histogram bucket that holds the quantile.
    status_patch_p50: f64,
    status_patch_p99: f64,
    coordinator_cpu: Duration,
    coordinator_peak_rss_kib: u64,
}

impl Measured {
    const HEADER: &str = "| nodes | phases | switch, less holds | coordinator reaction, all phases | Node writes per node per phase | all requests per node per phase | status patch latency p50 / p99 (API server) | coordinator CPU | coordinator peak RSS |\n|---|---|---|---|---|---|---|---|---|";

    fn row(&self) -> String {
        let per = |count: u64| count as f64 / (self.nodes * self.phases.max(1)) as f64;
        let all: u64 = self.requests.values().sum();
        format!(
            "| {} | {} | {:.1} s | {:.2} s | {:.2} | {:.2} | <= {} / <= {} ms | {:.2} s | {:.1} MiB |",
            self.nodes,
            self.phases,
            self.duration.as_secs_f64(),
            self.reacting.as_secs_f64(),
            per(self.node_writes),
            per(all),
            self.status_patch_p50 * 1000.0,
            self.status_patch_p99 * 1000.0,
            self.coordinator_cpu.as_secs_f64(),
            self.coordinator_peak_rss_kib as f64 / 1024.0,
        )
    }
}

async fn switch(cp: &ControlPlane, n: usize) -> Measured {
    let admin = cp.client().await;
    install(&admin).await;
    let routings: Api<ClusterRouting> = Api::all(admin.clone());
    let nodes: Api<Node> = Api::all(admin.clone());
    let names: Vec<String> = (0..n).map(name).collect();
    create_nodes(&nodes, 0..n).await;
    let start = Plan::steady(Mode::Vxlan, 1);
    report_all(&nodes, &names, &start).await;

    let coordinator = Coordinator::start(cp, "switch-bench");
    wait_until(
        "the coordinator steady on vxlan",
        Duration::from_secs(600),
        || async { steady_on(&routings, Mode::Vxlan).await },
    )
    .await;
    // The coordinator first writes every Node's PodrouteNode record (the
    // upgrade path); that is not the switch's cost.
    wait_for_records(&admin, n).await;

    let requests_before = requests(&admin).await;
    let status_latency_before = status_patch_latency(&admin).await;
    let cpu_before = coordinator.cpu();
    let asked = Instant::now();
    let spec = json!({"spec": {"mode": "native"}});
    routings
        .patch("default", &PatchParams::default(), &Patch::Merge(spec))
        .await
        .expect("switch to native");

    // The simulated agents: answer every new plan, the last node late.
    let mut plans = watcher(routings.clone(), watcher::Config::default()).boxed();
    let mut answered = start.generation;
    let mut phases = 0;
    let mut held = Duration::ZERO;
    let mut reacting = Duration::ZERO;
    let mut last_report: Option<Instant> = None;
    while let Some(event) = plans.next().await {
        let Ok(Event::Apply(routing) | Event::InitApply(routing)) = event else {
            continue;
        };
        let Some(status) = routing.status else {
            continue;
        };
        let Some(plan) = status.plan else { continue };
        let done = status.phase.as_deref() == Some("Steady")
            && plan.route_mode == Mode::Native
            && status.nodes.is_some_and(|s| s.applied == n as u32);
        if plan.generation > answered || done {
            reacting += last_report.take().map_or(Duration::ZERO, |t| t.elapsed());
        }
        if plan.generation > answered {
            phases += 1;
            let (last, first) = names.split_last().expect("nodes");
            report_all(&nodes, first, &plan).await;
            let hold_started = Instant::now();
            tokio::time::sleep(HOLD).await;
            let now = routings.get_status("default").await.expect("status");
            let generation = now.status.and_then(|s| s.plan).map(|p| p.generation);
            assert_eq!(
                generation,
                Some(plan.generation),
                "the coordinator advanced while {last} had not reported generation {}",
                plan.generation
            );
            held += hold_started.elapsed();
            report_all(&nodes, std::slice::from_ref(last), &plan).await;
            last_report = Some(Instant::now());
            answered = plan.generation;
        }
        if done {
            break;
        }
    }
    let elapsed = asked.elapsed();
    let requests_after = requests(&admin).await;
    let status_latency = (status_patch_latency(&admin).await.into_iter())
        .zip(status_latency_before)
        .map(|((le, after), (_, before))| (le, after - before))
        .collect::<Vec<_>>();
    let requests: BTreeMap<String, u64> = requests_after
        .iter()
        .map(|(k, v)| (k.clone(), v - requests_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let node_writes = requests
        .iter()
        .filter(|(k, _)| k.starts_with("PATCH nodes"))
        .map(|(_, v)| v)
        .sum();
    eprintln!("requests during the switch: {requests:?}");
    Measured {
        nodes: n,
        phases,
        duration: elapsed.saturating_sub(held),
        reacting,
        requests,
        node_writes,
        status_patch_p50: quantile(&status_latency, 0.5),
        status_patch_p99: quantile(&status_latency, 0.99),
        coordinator_cpu: coordinator.cpu().saturating_sub(cpu_before),
        coordinator_peak_rss_kib: coordinator.peak_rss_kib(),
    }
}

/// What an agent writes once its kernel holds `plan`: the annotation, then
/// the condition (its message names the generation, so it changes too).
async fn report_all(nodes: &Api<Node>, names: &[String], plan: &Plan) {
    let applied = format!("{}/{}", plan.generation, plan.route_mode);
    let message = format!(
        "podroute: {}, plan generation {}",
        plan.route_mode, plan.generation
    );
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    futures::stream::iter(names)
        .map(|n| {
            let annotation = json!({"metadata": {"annotations": {"podroute.io/applied": applied}}});
            let condition = json!({"status": {"conditions": [{
                "type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated",
                "message": message, "lastTransitionTime": now, "lastHeartbeatTime": now,
            }]}});
            async move {
                let params = PatchParams::default();
                nodes
                    .patch(n, &params, &Patch::Merge(annotation))
                    .await
                    .expect("annotation");
                nodes
                    .patch_status(n, &params, &Patch::Strategic(condition))
                    .await
                    .expect("condition");
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
}

async fn steady_on(routings: &Api<ClusterRouting>, mode: Mode) -> bool {
    let Ok(routing) = routings.get_status("default").await else {
        return false;
    };
    let Some(status) = routing.status else {
        return false;
    };
    status.phase.as_deref() == Some("Steady")
        && status.plan.is_some_and(|p| p.route_mode == mode)
        && status
            .nodes
            .is_some_and(|s| s.waiting.is_empty() && s.applied == s.total)
}

/// Requests kube-apiserver served, but WATCH, by "VERB resource".
async fn requests(admin: &Client) -> BTreeMap<String, u64> {
    let metrics = metrics(admin).await;
    let mut counts = BTreeMap::new();
    for line in metrics.lines() {
        let Some(labels) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let label = |key: &str| {
            let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
            labels[start..].split('"').next()
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        if verb == "WATCH" || resource.is_empty() {
            continue;
        }
        let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        *counts.entry(format!("{verb} {resource}")).or_default() += count.unwrap_or(0.0) as u64;
    }
    counts
}

/// The cumulative histogram of kube-apiserver's latency for PATCH on
/// clusterroutings/status (only the coordinator writes it): (le, count).
async fn status_patch_latency(admin: &Client) -> Vec<(f64, u64)> {
    let metrics = metrics(admin).await;
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_duration_seconds_bucket{"))
        .filter(|l| l.contains("resource=\"clusterroutings\"") && l.contains("verb=\"PATCH\""))
        .filter(|l| l.contains("subresource=\"status\""))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((le, count))
        })
        .collect()
}

/// The upper bound of the first bucket whose cumulative count reaches `q`.
fn quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count as f64 >= q * total as f64)
        .map_or(f64::NAN, |b| b.0)
}
