//! The coordinator's [`Port`] to the API server: the Lease, Nodes and ClusterRouting from
//! [`KubeStore`] (one watch each), [`super::signals`], the status and Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::Client;
use tokio::sync::watch;

use super::driver::{self, Port};
use super::events;
use super::lease::LeaseLock;
use super::machine::{Event, RolloutNode, Spec};
use super::metrics::CoordinatorMetrics;
use super::signals::{self, add_signals, SignalsByNode};
use super::status::{self, conditions};
use crate::api::{ClusterRouting, ClusterRoutingStatus, CLUSTER_ROUTING_NAME};
use crate::store::{ClusterStore, KubeStore, Snapshot};
use crate::{Error, Result};

/// Step at least this often (timeouts), even when nothing was heard.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    pub identity: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    /// The Node condition whose status True is the underlay signal; `Some`
    /// enables [`Spec::wait_for_underlay_signal`] (native with
    /// `offSubnet: underlay` only).
    pub underlay_signal_condition: Option<String>,
}

/// Runs until `shutdown` turns true, then releases the Lease.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<CoordinatorMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    if let Some(condition) = &options.underlay_signal_condition {
        signals::watch_underlay_signal(condition)?;
    }
    let store = KubeStore::for_coordinator(client.clone())?;
    let (signals_tx, signals) = watch::channel(SignalsByNode::new());
    let follow_signals = tokio::spawn(signals::follow(Api::all(client.clone()), signals_tx));
    let port = KubePort {
        lease: LeaseLock::new(client.clone(), &options),
        routings: Api::all(client),
        snapshots: store.subscribe(),
        routing_rx: store.routing(),
        store,
        signals,
        routing: None,
        written: None,
        announced: BTreeMap::new(),
        options,
        metrics,
    };
    let mut port = driver::run(port, TICK, shutdown).await;
    follow_signals.abort();
    port.lease.release().await;
    Ok(())
}

struct KubePort {
    options: Options,
    metrics: Arc<CoordinatorMetrics>,
    lease: LeaseLock,
    store: KubeStore,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    signals: watch::Receiver<SignalsByNode>,
    routings: Api<ClusterRouting>,
    routing_rx: watch::Receiver<Option<Arc<ClusterRouting>>>,
    /// As of the last read.
    routing: Option<Arc<ClusterRouting>>,
    /// The status last written, or read back on becoming leader.
    written: Option<ClusterRoutingStatus>,
    /// Nodes left out for bad values, as already told in an Event.
    announced: BTreeMap<String, String>,
}

impl Port for KubePort {
    async fn changed(&mut self) {
        tokio::select! {
            _ = self.snapshots.changed() => {}
            _ = self.routing_rx.changed() => {}
            _ = self.signals.changed() => {}
            _ = tokio::time::sleep_until(self.lease.next_attempt.into()) => {}
        }
    }

    async fn lead(&mut self) -> bool {
        let leading = self.lease.lead(&self.metrics).await;
        if !leading {
            self.written = None;
            self.metrics.status_written(&Default::default());
        }
        leading
    }

    fn read(&mut self) -> Option<(Spec, Vec<RolloutNode>)> {
        let routing = self.routing_rx.borrow_and_update().clone()?;
        let snapshot = self.snapshots.borrow_and_update().clone()?;
        let facts = node_facts(&snapshot, &self.signals.borrow_and_update());
        let signal = self.options.underlay_signal_condition.is_some();
        let spec = Spec::from_crd(&routing.spec, signal);
        self.routing = Some(routing);
        Some((spec, facts))
    }

    /// A GET, a quorum read: the watch may not have brought the last
    /// leader's final status write yet.
    async fn resume(&mut self) -> Result<ClusterRoutingStatus> {
        let fresh = self.routings.get(CLUSTER_ROUTING_NAME).await.map_err(|e| {
            self.metrics.api_errors.inc();
            Error::kube("reading ClusterRouting default", e)
        })?;
        let status = fresh.status.unwrap_or_default();
        tracing::info!(
            phase = status.phase.as_deref().unwrap_or("-"),
            generation = status.plan.as_ref().map(|p| p.generation),
            "resuming from the ClusterRouting status"
        );
        self.written = Some(status.clone());
        Ok(status)
    }

    /// With the Ready condition and the spec's generation, which can change
    /// without the machine's status changing.
    async fn write(&mut self, status: &ClusterRoutingStatus) -> Result<()> {
        let last = self.written.clone().unwrap_or_default();
        let generation = self.routing.as_ref().and_then(|r| r.metadata.generation);
        let mut next = status.clone();
        next.conditions = conditions(status, &last.conditions, generation, Timestamp::now());
        next.observed_generation = generation;
        if next != last {
            if let Err(e) = status::patch(&self.routings, &last, &next).await {
                self.metrics.api_errors.inc();
                return Err(e);
            }
        }
        self.metrics.status_written(&next);
        self.written = Some(next);
        Ok(())
    }

    async fn emit(&mut self, event: &Event) {
        if let Some(routing) = &self.routing {
            let (api, identity) = (self.store.events_api(), &self.options.identity);
            events::emit(api, routing, identity, event, &self.metrics).await;
        }
    }

    async fn announce(&mut self) {
        let (identity, announced) = (&self.options.identity, &mut self.announced);
        events::announce_invalid_nodes(&self.store, identity, &self.metrics, announced).await;
    }
}

/// The machine's view of the nodes in `snapshot`.
fn node_facts(snapshot: &Snapshot, signals: &SignalsByNode) -> Vec<RolloutNode> {
    let mut facts: Vec<RolloutNode> = snapshot
        .nodes
        .iter()
        .map(RolloutNode::from_reported)
        .collect();
    add_signals(&mut facts, signals);
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::api::{ClusterRoutingSpec, InFlight, Mode, Phase, Plan};
    use crate::coordinator::machine::{step, InFlightRules, Inputs};
    use crate::coordinator::signals::UnderlaySignal;
    use crate::model::{Node, NodeIps};
    use crate::store::{Applied, Network, NodeReport, ReportedNode};

    fn converged_on(plan: &Plan, names: &[&str]) -> Snapshot {
        let (generation, mode) = (plan.generation, plan.route_mode);
        let message = "podroute".into();
        let report = NodeReport {
            applied: Some(Applied { generation, mode }),
            network: Some(Network::Available { message }),
        };
        let nodes = names.iter().enumerate().map(|(i, name)| ReportedNode {
            node: Node::parse(
                "node",
                name,
                NodeIps::One(Some(&format!("10.251.0.{}", i + 1))),
                &[format!("10.244.{}.0/24", i + 1)],
            )
            .expect("a node"),
            ready: true,
            report: report.clone(),
        });
        Snapshot {
            nodes: nodes.collect(),
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
                nodes: &node_facts(&snapshot, signals),
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
}
