//! The coordinator on the Kubernetes API: the twin of [`super::local`].
//!
//! - Leader election on a `coordination.k8s.io/v1` Lease (get, then create
//!   or replace with the resourceVersion read: the API server refuses a
//!   stale write with 409). The holder renews every `renew_every`; a lease
//!   not renewed for `leaseDurationSeconds` may be taken over. Only while
//!   its last successful renewal is younger than the lease duration does a
//!   coordinator step. On SIGTERM it releases the Lease.
//! - The loop: Nodes and their reports from [`KubeStore`], each node's
//!   Ready transition time and underlay signal from [`super::signals`], the
//!   ClusterRouting object (spec and `metadata.generation`) from its own
//!   watch, [`step`], and when the status differs, a JSON merge patch on
//!   the status subresource (fields that went away are written as null),
//!   then one core/v1 Event on the ClusterRouting object per machine event.
//! - The machine's memory is the status it last wrote: a coordinator that
//!   becomes leader (after a restart, or a takeover) reads it back fresh
//!   from the API server and resumes from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::machine::{step, Event, Inputs, RolloutNode, Spec, REASON_BLOCKED, REASON_SKIPPED};
use super::metrics::CoordinatorMetrics;
use super::signals::{self, add_signals, SignalsByNode};
use crate::api::{
    rfc3339, ClusterRouting, ClusterRoutingStatus, Condition, Phase, CLUSTER_ROUTING_NAME,
};
use crate::store::{events as node_events, ClusterStore, KubeStore, Snapshot};
use crate::{Error, Result};

/// The Lease's name, in `Options::lease_namespace`.
pub const LEASE_NAME: &str = "podroute-coordinator";
/// The component named in Events and as the status writer.
pub const COMPONENT: &str = "podroute-coordinator";
/// The condition the coordinator keeps on the ClusterRouting status.
pub const CONDITION_READY: &str = "Ready";

#[derive(Debug, Clone)]
pub struct Options {
    pub identity: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    /// Step at least this often (timeouts), even when nothing was heard.
    pub tick: Duration,
    /// The Node condition whose status True is the underlay signal; `Some`
    /// enables [`Spec::wait_for_underlay_signal`] (native with
    /// `offSubnet: underlay` only).
    pub underlay_signal_condition: Option<String>,
}

impl Options {
    pub fn new(identity: impl Into<String>, lease_namespace: impl Into<String>) -> Options {
        Options {
            identity: identity.into(),
            lease_namespace: lease_namespace.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            underlay_signal_condition: None,
        }
    }
}

/// Runs until `shutdown` turns true.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<CoordinatorMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    if let Some(condition) = &options.underlay_signal_condition {
        signals::watch_underlay_signal(condition)?;
    }
    let store = KubeStore::new(client.clone())?;
    let mut snapshots = store.subscribe();
    let (signals_tx, mut signals_rx) = watch::channel(SignalsByNode::new());
    let follow_signals = tokio::spawn(signals::follow(Api::all(client.clone()), signals_tx));
    let routings: Api<ClusterRouting> = Api::all(client.clone());
    let (routing_tx, mut routing_rx) = watch::channel(None);
    let follow = tokio::spawn(follow_routing(routings.clone(), routing_tx));
    let mut lease = LeaseLock {
        api: Api::namespaced(client.clone(), &options.lease_namespace),
        identity: options.identity.clone(),
        duration: options.lease_duration,
    };
    let events: Api<CoreEvent> = Api::namespaced(client, "default");
    let mut leading_until: Option<Instant> = None;
    let mut next_attempt = Instant::now();
    // The status last written (or read back on becoming leader).
    let mut written: Option<ClusterRoutingStatus> = None;
    // Nodes left out for bad values, as already told in an Event.
    let mut announced = std::collections::BTreeMap::new();
    let reporter = node_events::Reporter {
        component: COMPONENT.into(),
        instance: options.identity.clone(),
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        if Instant::now() >= next_attempt {
            let attempt = Instant::now();
            match lease.acquire_or_renew().await {
                Ok(true) => {
                    metrics.lease_answered(true);
                    if leading_until.is_none_or(|t| t <= attempt) {
                        tracing::info!(identity = %options.identity, "leading: holding Lease {}/{LEASE_NAME}", options.lease_namespace);
                    }
                    leading_until = Some(attempt + options.lease_duration);
                    next_attempt = attempt + options.renew_every;
                }
                Ok(false) => {
                    metrics.lease_answered(false);
                    if leading_until.is_some_and(|t| t > attempt) {
                        tracing::warn!("lost the Lease to another coordinator");
                    }
                    leading_until = None;
                    next_attempt = attempt + options.renew_every.min(Duration::from_secs(2));
                }
                Err(e) => {
                    metrics.lease_failed();
                    tracing::warn!("Lease {}/{LEASE_NAME}: {e}", options.lease_namespace);
                    next_attempt = attempt + Duration::from_secs(1);
                }
            }
        }
        if leading_until.is_some_and(|t| t > Instant::now()) {
            let routing = routing_rx.borrow_and_update().clone();
            let snapshot = snapshots.borrow_and_update().clone();
            if let (Some(routing), Some(snapshot)) = (routing, snapshot) {
                let facts = rollout_nodes(&snapshot, &signals_rx.borrow_and_update());
                match coordinate(
                    &routings,
                    &events,
                    &options,
                    &metrics,
                    &routing,
                    &facts,
                    &mut written,
                )
                .await
                {
                    Ok(()) => {
                        if let Some(status) = &written {
                            metrics.status_written(status);
                        }
                    }
                    Err(e) => {
                        metrics.api_errors.inc();
                        tracing::warn!("coordinating: {e}; retrying");
                    }
                }
            }
            announce_invalid_nodes(&store, &reporter, &metrics, &mut announced).await;
        } else {
            // Not the leader: whoever leads writes the status; read it back
            // when (if) we lead again.
            written = None;
            metrics.status_written(&ClusterRoutingStatus::default());
        }
        let wake = next_attempt.min(Instant::now() + options.tick);
        tokio::select! {
            _ = snapshots.changed() => {}
            _ = routing_rx.changed() => {}
            _ = signals_rx.changed() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = shutdown.changed() => {}
        }
    }
    follow.abort();
    follow_signals.abort();
    if leading_until.is_some() {
        match lease.release().await {
            Ok(()) => tracing::info!("released the Lease"),
            Err(e) => tracing::warn!("releasing the Lease: {e}"),
        }
    }
    Ok(())
}

/// One step: resume if needed, step, write when it differs, emit events.
async fn coordinate(
    routings: &Api<ClusterRouting>,
    events: &Api<CoreEvent>,
    options: &Options,
    metrics: &CoordinatorMetrics,
    routing: &ClusterRouting,
    facts: &[RolloutNode],
    written: &mut Option<ClusterRoutingStatus>,
) -> Result<()> {
    let last = match written {
        Some(last) => last.clone(),
        None => {
            let fresh = routings
                .get(CLUSTER_ROUTING_NAME)
                .await
                .map_err(|e| Error::kube("reading ClusterRouting default", e))?;
            let status = fresh.status.unwrap_or_default();
            tracing::info!(
                phase = status.phase.as_deref().unwrap_or("-"),
                generation = status.plan.as_ref().map(|p| p.generation),
                "resuming from the ClusterRouting status"
            );
            *written = Some(status.clone());
            status
        }
    };
    let spec = Spec::from_crd(&routing.spec, options.underlay_signal_condition.is_some());
    let now = Timestamp::now();
    let decision = step(&Inputs {
        spec: &spec,
        status: &last,
        nodes: facts,
        now: u64::try_from(now.as_second()).unwrap_or(0),
    });
    let generation = routing.metadata.generation;
    let mut next = decision.status;
    next.conditions = conditions(&next, &last.conditions, generation, now);
    next.observed_generation = generation;
    if next != last {
        let patch = merge_patch(&to_json(&last)?, &to_json(&next)?);
        routings
            .patch_status(
                CLUSTER_ROUTING_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": patch })),
            )
            .await
            .map_err(|e| Error::kube("writing the ClusterRouting status", e))?;
        *written = Some(next);
    }
    for event in &decision.events {
        tracing::info!(reason = event.reason, "{}", event.message);
        let emitted = emit(events, routing, &options.identity, event, now).await;
        note_emitted(metrics, event.reason, emitted);
    }
    Ok(())
}

/// One Warning Event per Node the store leaves out for a value podroute
/// refuses, naming the field, each time the reason changes. Only the leader
/// says it, so a cluster hears it once, not once per agent.
async fn announce_invalid_nodes(
    store: &KubeStore,
    reporter: &node_events::Reporter,
    metrics: &CoordinatorMetrics,
    announced: &mut std::collections::BTreeMap<String, String>,
) {
    let invalid = store.invalid_nodes();
    for (node, why) in &invalid {
        if announced.get(node) == Some(why) {
            continue;
        }
        let message = format!("podroute leaves this node out of the cluster: {why}");
        let emitted = node_events::warn_node(
            store.events_api(),
            reporter,
            node,
            node_events::REASON_INVALID_NODE,
            &message,
        )
        .await;
        note_emitted(metrics, node_events::REASON_INVALID_NODE, emitted);
    }
    *announced = invalid;
}

/// A failed Event write does not fail the step: the status already holds
/// what the Event tells, so it is only logged and counted.
fn note_emitted(metrics: &CoordinatorMetrics, reason: &str, emitted: Result<()>) {
    if let Err(e) = emitted {
        metrics.event_failed();
        tracing::warn!("emitting event {reason}: {e}");
    }
}

/// The machine's view of the nodes in `snapshot`.
fn rollout_nodes(snapshot: &Snapshot, signals: &SignalsByNode) -> Vec<RolloutNode> {
    let mut facts: Vec<RolloutNode> = snapshot
        .nodes
        .iter()
        .map(RolloutNode::from_reported)
        .collect();
    add_signals(&mut facts, signals);
    facts
}

fn to_json(status: &ClusterRoutingStatus) -> Result<Value> {
    serde_json::to_value(status)
        .map_err(|e| Error::io("encoding the status", std::io::Error::other(e)))
}

/// A JSON merge patch (RFC 7386) from `old` to `new`: keys of `old` that
/// `new` lacks become null, objects merge recursively, the rest is `new`.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                out.insert(
                    k.clone(),
                    match o.get(k) {
                        Some(ov) => merge_patch(ov, v),
                        None => v.clone(),
                    },
                );
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// The `Ready` condition: True once Steady with every node in scope
/// converged; False while switching (reason `Switching`), waiting
/// (`Waiting`) or blocked (`Blocked`). lastTransitionTime moves only when
/// the condition's status flips.
pub fn conditions(
    status: &ClusterRoutingStatus,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let plan = status.plan.as_ref().map_or("no plan".to_string(), |p| {
        format!("generation {} ({})", p.generation, p.route_mode)
    });
    let nodes = status.nodes.clone().unwrap_or_default();
    let (ok, reason, message) = if !status.blocked.is_empty() {
        (
            false,
            "Blocked",
            format!(
                "{} did not converge on {plan} within nodeTimeout",
                status.blocked.join(", ")
            ),
        )
    } else if status.current_phase() != Phase::Steady {
        (
            false,
            "Switching",
            format!(
                "{}: {plan}, {}/{} nodes applied{}",
                status.current_phase(),
                nodes.applied,
                nodes.total,
                if nodes.waiting.is_empty() {
                    String::new()
                } else {
                    format!(", waiting for {}", some_names(&nodes.waiting))
                }
            ),
        )
    } else if !nodes.waiting.is_empty() {
        let heading = match status.to {
            Some(to) if status.plan.as_ref().is_some_and(|p| p.route_mode != to) => {
                format!(", heading to {to}")
            }
            _ => String::new(),
        };
        (
            false,
            "Waiting",
            format!(
                "waiting for {} on {plan}{heading}",
                some_names(&nodes.waiting)
            ),
        )
    } else {
        (
            true,
            "Steady",
            format!("{}/{} nodes hold {plan}", nodes.applied, nodes.total),
        )
    };
    let value = if ok { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_ == CONDITION_READY);
    let transition = match old {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Some(rfc3339(now)),
    };
    vec![Condition {
        type_: CONDITION_READY.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
        observed_generation: generation,
    }]
}

/// The first few of `names` (a condition message stays short; the status
/// lists them all).
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

/// One core/v1 Event on the ClusterRouting object (cluster-scoped objects'
/// events live in `default`, where `kubectl describe` looks).
async fn emit(
    api: &Api<CoreEvent>,
    routing: &ClusterRouting,
    identity: &str,
    event: &Event,
    now: Timestamp,
) -> Result<()> {
    let warning = matches!(event.reason, REASON_BLOCKED | REASON_SKIPPED);
    let object = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{CLUSTER_ROUTING_NAME}.")),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("podroute.io/v1alpha1".into()),
            kind: Some("ClusterRouting".into()),
            name: Some(CLUSTER_ROUTING_NAME.into()),
            uid: routing.metadata.uid.clone(),
            resource_version: routing.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.into()),
        message: Some(event.message.clone()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(identity.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..CoreEvent::default()
    };
    api.create(&PostParams::default(), &object)
        .await
        .map_err(|e| Error::kube("creating an Event", e))?;
    Ok(())
}

async fn follow_routing(api: Api<ClusterRouting>, tx: watch::Sender<Option<ClusterRouting>>) {
    let config =
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_ROUTING_NAME}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut failing = false;
    let mut listed = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("watching ClusterRouting again");
                }
                match event {
                    watcher::Event::Init => listed = None,
                    watcher::Event::InitApply(object) => listed = Some(object),
                    watcher::Event::InitDone => {
                        if listed.is_none() {
                            tracing::warn!(
                                "no ClusterRouting {CLUSTER_ROUTING_NAME}: waiting for one"
                            );
                        }
                        tx.send_replace(listed.take());
                    }
                    watcher::Event::Apply(object) => {
                        tx.send_replace(Some(object));
                    }
                    watcher::Event::Delete(_) => {
                        tx.send_replace(None);
                    }
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("watching ClusterRouting: {e}; retrying");
                }
            }
        }
    }
}

/// A hand-rolled Lease lock (no client-go leaderelection in Rust).
struct LeaseLock {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// True when we hold the Lease after this call.
    async fn acquire_or_renew(&mut self) -> Result<bool> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| Error::kube("reading the Lease", e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube("creating the Lease", e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(d)) => renewed.0.as_second() + i64::from(d) < now.as_second(),
            _ => true,
        };
        if !(ours || holder.is_empty() || expired) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..spec
        });
        if !ours {
            tracing::info!(previous = %holder, "taking over the Lease");
        }
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("renewing the Lease", e)),
        }
    }

    /// Give the Lease up (when we hold it), so a successor takes over at once.
    async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| Error::kube("reading the Lease", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map_err(|e| Error::kube("releasing the Lease", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterRoutingSpec, InFlight, Mode, NodesStatus, Plan};
    use crate::coordinator::signals::UnderlaySignal;
    use crate::http::Endpoints;
    use crate::model::Node;
    use crate::store::{Applied, Network, NodeReport, ReportedNode};

    fn converged_on(plan: &Plan, names: &[&str]) -> Snapshot {
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| ReportedNode {
                node: Node::parse(
                    "node",
                    name,
                    Some(&format!("10.251.0.{}", i + 1)),
                    &[format!("10.244.{}.0/24", i + 1)],
                )
                .expect("a node"),
                ready: true,
                report: NodeReport {
                    applied: Some(Applied {
                        generation: plan.generation,
                        mode: plan.route_mode,
                    }),
                    network: Some(Network::Available {
                        message: "podroute".into(),
                    }),
                },
            })
            .collect();
        Snapshot {
            nodes,
            plan: Some(plan.clone()),
            ..Snapshot::default()
        }
    }

    fn underlay(ready: bool) -> UnderlaySignal {
        UnderlaySignal {
            ready_since: None,
            underlay: Some(ready),
        }
    }

    #[test]
    fn the_underlay_signal_holds_the_switch_before_native_routing() {
        let crd: ClusterRoutingSpec = serde_json::from_value(json!({
            "mode": "native",
            "native": {"offSubnet": "underlay"},
        }))
        .expect("a spec");
        let spec = Spec::from_crd(&crd, true);
        let steady = Plan::steady(Mode::Vxlan, 1);
        let status = ClusterRoutingStatus {
            plan: Some(steady.clone()),
            to: Some(Mode::Vxlan),
            phase_started_at: Some(0),
            in_flight: Some(InFlight::of(&steady)),
            ..ClusterRoutingStatus::default()
        };
        let snapshot = converged_on(&steady, &["a", "b", "c"]);
        // b says no; c has not been seen by the signals watch yet.
        let mut signals =
            SignalsByNode::from([("a".into(), underlay(true)), ("b".into(), underlay(false))]);
        let step_with = |signals: &SignalsByNode| {
            step(&Inputs {
                spec: &spec,
                status: &status,
                nodes: &rollout_nodes(&snapshot, signals),
                now: 10,
            })
            .status
        };
        let held = step_with(&signals);
        assert_eq!(held.plan, Some(steady.clone()), "no native route yet");
        assert_eq!(
            (held.switch_phase, held.to),
            (Some(Phase::Steady), Some(Mode::Native))
        );
        assert_eq!(held.nodes.clone().unwrap_or_default().waiting, ["b", "c"]);
        let message = conditions(&held, &[], None, Timestamp::now())[0]
            .message
            .clone();
        assert!(message.unwrap_or_default().contains("b, c"));

        signals.insert("b".into(), underlay(true));
        signals.insert("c".into(), underlay(true));
        let moved = step_with(&signals);
        assert_eq!(moved.switch_phase, Some(Phase::Switch));
        assert_eq!(moved.plan.map(|p| p.route_mode), Some(Mode::Native));
    }

    #[test]
    fn a_failed_event_write_counts_as_an_api_error() {
        let metrics = CoordinatorMetrics::default();
        note_emitted(&metrics, REASON_BLOCKED, Ok(()));
        assert_eq!(metrics.api_errors.get(), 0);
        let forbidden = kube::core::Status::failure("events is forbidden", "Forbidden")
            .with_code(403)
            .boxed();
        let refused = Error::kube("creating an Event", kube::Error::Api(forbidden));
        note_emitted(&metrics, REASON_BLOCKED, Err(refused));
        assert_eq!(metrics.api_errors.get(), 1);
        assert!(metrics
            .render()
            .contains("podroute_coordinator_api_errors_total 1"));
    }

    #[test]
    fn merge_patch_nulls_what_went_away() {
        let old =
            json!({"phase": "Switch", "from": "vxlan", "nodes": {"total": 3, "waiting": ["a"]}});
        let new = json!({"phase": "Steady", "nodes": {"total": 3}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"phase": "Steady", "from": null, "nodes": {"total": 3, "waiting": null}})
        );
    }

    #[test]
    fn ready_flips_with_its_transition_time() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2030-01-01T00:01:00Z".parse().unwrap();
        let mut status = ClusterRoutingStatus {
            switch_phase: Some(Phase::Switch),
            plan: Some(Plan::steady(Mode::Native, 3)),
            nodes: Some(NodesStatus {
                total: 3,
                applied: 1,
                waiting: vec!["b".into(), "c".into()],
            }),
            ..ClusterRoutingStatus::default()
        };
        let first = conditions(&status, &[], Some(2), t0);
        assert_eq!(first[0].status, "False");
        assert_eq!(first[0].reason.as_deref(), Some("Switching"));
        let nodes = status.nodes.as_mut().unwrap();
        nodes.applied = 2;
        let second = conditions(&status, &first, Some(2), t1);
        assert_eq!(
            second[0].last_transition_time,
            first[0].last_transition_time
        );
        status.switch_phase = Some(Phase::Steady);
        let nodes = status.nodes.as_mut().unwrap();
        nodes.applied = 3;
        nodes.waiting.clear();
        let done = conditions(&status, &second, Some(2), t1);
        assert_eq!(done[0].status, "True");
        assert_ne!(done[0].last_transition_time, first[0].last_transition_time);
        status.blocked = vec!["c".into()];
        assert_eq!(
            conditions(&status, &done, Some(2), t1)[0].reason.as_deref(),
            Some("Blocked")
        );
    }
}
