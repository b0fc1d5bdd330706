//! The loop against the memory store and a model of the kernel
//! (`plan::simulate`), so every trigger and report rule is checked without root.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ipnetwork::Ipv4Network;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::api::{Mode, Plan};
use crate::model::{Cluster, Config, Node, Settings};
use crate::plan::{self, simulate, Inputs, Observed, Uplink};
use crate::store::{MemoryStore, Network};

#[derive(Clone, Default)]
struct FakeKernel {
    observed: Arc<Mutex<Observed>>,
    fail_next: Arc<AtomicU32>,
    /// Converges started, and whether two ever ran at once.
    converges: Arc<AtomicU32>,
    running: Arc<AtomicU32>,
    overlapped: Arc<AtomicBool>,
    /// The plan of the last converge that succeeded, and repairs made alone.
    last_desired: Arc<Mutex<Option<plan::Desired>>>,
    repairs: Arc<AtomicU32>,
}

impl FakeKernel {
    fn converges(&self) -> u32 {
        self.converges.load(Ordering::SeqCst)
    }

    /// Delete one route behind the agent's back; returns its key.
    fn lose_a_route(&self) -> plan::RouteKey {
        let mut observed = self.observed.lock().expect("lock");
        let key = *observed.routes.keys().next().expect("a route");
        observed.routes.remove(&key);
        key
    }

    fn holds_route(&self, key: &plan::RouteKey) -> bool {
        self.observed.lock().expect("lock").routes.contains_key(key)
    }
}

/// Marks a converge as running for as long as it lives.
struct Running1(Arc<AtomicU32>);

impl Drop for Running1 {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Kernel for FakeKernel {
    fn converge<'a>(
        &'a mut self,
        cluster: &'a Cluster,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            self.converges.fetch_add(1, Ordering::SeqCst);
            if self.running.fetch_add(1, Ordering::SeqCst) > 0 {
                self.overlapped.store(true, Ordering::SeqCst);
            }
            let _running = Running1(self.running.clone());
            // A window in which a second pass, if the loop allowed one, would start.
            tokio::task::yield_now().await;
            if self.fail_next.load(Ordering::SeqCst) > 0 {
                self.fail_next.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::Foreign("injected failure".into()));
            }
            let uplink = Uplink {
                name: "eth0".into(),
                mtu: 1500,
                address: Ipv4Network::new(node.node_ip.expect("IPv4"), 24)
                    .expect("prefix")
                    .into(),
                accept_ra: None,
            };
            let config = Config::default();
            let desired = plan::desired(Inputs {
                local: node,
                nodes: &cluster.nodes,
                plan: &cluster.plan,
                config: &config,
                uplink: Some(&uplink),
                uplink6: None,
            })?;
            let mut observed = self.observed.lock().expect("lock");
            let diff = plan::diff(&desired, &observed);
            simulate::apply_all(&mut observed, diff.steps.iter().map(|s| &s.op));
            let changes = diff.steps.len();
            let outcome = Outcome::of(&desired, diff, changes);
            *self.last_desired.lock().expect("lock") = Some(desired);
            Ok(outcome)
        })
    }

    fn repair<'a>(
        &'a mut self,
        touched: &'a plan::Touched,
    ) -> BoxFuture<'a, Result<Option<usize>>> {
        Box::pin(async move {
            let Some(desired) = self.last_desired.lock().expect("lock").clone() else {
                return Ok(None);
            };
            let mut observed = self.observed.lock().expect("lock");
            match plan::repair(&desired, touched) {
                plan::Repair::Nothing => return Ok(Some(0)),
                plan::Repair::Restore(route) => _ = observed.routes.insert(route.key, route),
                plan::Repair::Write(op) => simulate::apply(&mut observed, &op),
            }
            self.repairs.fetch_add(1, Ordering::SeqCst);
            Ok(Some(1))
        })
    }
}

/// Three nodes on steady vxlan, generation 1.
fn cluster() -> Cluster {
    let node = |i: u8| Node {
        name: format!("node-{i}"),
        node_ip: Some(std::net::Ipv4Addr::new(10, 250, 0, i)),
        node_ip6: None,
        pod_cidrs: vec![format!("10.244.{i}.0/24").parse().expect("cidr")],
    };
    Cluster {
        nodes: vec![node(1), node(2), node(3)],
        plan: Plan::steady(Mode::Vxlan, 1),
        settings: Settings::default(),
    }
}

fn store_of(cluster: &Cluster) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(Snapshot::from_cluster(cluster)))
}

struct Running {
    events: mpsc::Sender<KernelEvent>,
    passes: mpsc::UnboundedReceiver<Pass>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    async fn next_pass(&mut self) -> Pass {
        tokio::time::timeout(Duration::from_secs(5), self.passes.recv())
            .await
            .expect("a pass within 5 s")
            .expect("agent alive")
    }

    async fn next_applied(&mut self) -> Outcome {
        loop {
            if let Pass::Applied { outcome, .. } = self.next_pass().await {
                return outcome;
            }
        }
    }

    /// Stops the loop; returns the passes not yet taken.
    async fn stop(mut self) -> Vec<Pass> {
        let _ = self.shutdown.send(true);
        let result = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "agent did not stop cleanly: {result:?}"
        );
        std::iter::from_fn(|| self.passes.try_recv().ok()).collect()
    }
}

fn options() -> AgentOptions {
    let mut options = AgentOptions::new("node-1");
    options.backoff = Duration::from_millis(10);
    options.unavailable_after = Duration::ZERO;
    options
}

fn start(store: Arc<MemoryStore>, kernel: FakeKernel) -> Running {
    start_with(options(), store, kernel)
}

fn start_with(options: AgentOptions, store: Arc<dyn ClusterStore>, kernel: FakeKernel) -> Running {
    let mut agent = Agent::new(options, store, kernel);
    let (tx, passes) = mpsc::unbounded_channel();
    agent.observe_passes(tx);
    // As deep as the production pump's, so a burst fits in it.
    let (events, rx) = mpsc::channel(1024);
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(agent.run(rx, stop));
    Running {
        events,
        passes,
        shutdown,
        task,
    }
}

/// Waits until `check` holds; panics after 5 s.
async fn eventually(check: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition within 5 s");
}

fn report_of(store: &MemoryStore) -> NodeReport {
    store
        .snapshot()
        .node("node-1")
        .expect("node")
        .report
        .clone()
}

#[tokio::test]
async fn converges_reports_and_a_restart_writes_nothing() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    assert!(agent.next_applied().await.changes > 0);
    let report = report_of(&store);
    assert_eq!(
        report.applied.map(|a| a.to_string()),
        Some("1/vxlan".into())
    );
    assert!(matches!(report.network, Some(Network::Available { .. })));
    assert_eq!(store.report_writes(), 1);
    agent.stop().await;

    // Same kernel, same store: zero kernel writes, no report write.
    let mut again = start(store.clone(), kernel.clone());
    assert_eq!(again.next_applied().await.changes, 0);
    assert_eq!(store.report_writes(), 1);
    again.stop().await;
    assert!(
        !kernel.observed.lock().expect("lock").routes.is_empty(),
        "shutdown left the dataplane"
    );
}

#[tokio::test]
async fn plan_and_peer_changes_are_applied_and_reported() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    agent.next_applied().await;

    store.set_plan(Plan::steady(Mode::Native, 2));
    let outcome = agent.next_applied().await;
    assert!(outcome.changes > 0);
    assert_eq!(
        report_of(&store).applied.map(|a| a.to_string()),
        Some("2/native".into())
    );

    store.remove_node("node-3");
    let outcome = agent.next_applied().await;
    assert_eq!(outcome.changes, 1, "one route less: {:?}", outcome.steps);
    assert_eq!(
        kernel.observed.lock().expect("lock").routes.len(),
        2,
        "node-2's route and node-1's own pod CIDR, unreachable"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_kernel_event_repairs_drift_at_once() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    agent.next_applied().await;

    let gone = kernel.lose_a_route();
    agent
        .events
        .send(KernelEvent::Changed(format!("route {} deleted", gone.dst)))
        .await
        .expect("send");
    let outcome = agent.next_applied().await;
    assert_eq!(outcome.changes, 1);
    assert!(kernel.holds_route(&gone));
    assert_eq!(
        store.report_writes(),
        1,
        "a repair is not news to the cluster"
    );
    agent.stop().await;
}

/// An event that names the route it deleted.
fn route_deleted(key: plan::RouteKey) -> KernelEvent {
    KernelEvent::Object {
        what: format!("route {} deleted", key.dst),
        touched: plan::Touched::Route { key, now: None },
    }
}

#[tokio::test]
async fn an_event_naming_one_object_is_repaired_alone_without_a_pass() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    agent.next_applied().await;
    // The report changes the snapshot, which wakes one more pass: wait
    // until the loop is quiet.
    let quiet = Duration::from_millis(100);
    while tokio::time::timeout(quiet, agent.passes.recv())
        .await
        .is_ok()
    {}
    let converges = kernel.converges();

    let gone = kernel.lose_a_route();
    agent.events.send(route_deleted(gone)).await.expect("send");
    eventually(|| kernel.holds_route(&gone)).await;
    assert_eq!(kernel.repairs.load(Ordering::SeqCst), 1);
    assert_eq!(kernel.converges(), converges, "no full pass");
    let remaining = agent.stop().await;
    assert!(remaining.is_empty(), "no pass was reported: {remaining:?}");
}

#[tokio::test]
async fn a_node_left_out_of_the_cluster_gets_no_repair_alone() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    agent.next_applied().await;
    store.remove_node("node-1");
    assert!(matches!(agent.next_pass().await, Pass::Waiting(_)));

    // The kernel is left alone while the node is not in the cluster, also
    // when someone deletes a route the last plan had.
    let gone = kernel.lose_a_route();
    agent.events.send(route_deleted(gone)).await.expect("send");
    assert!(matches!(agent.next_pass().await, Pass::Waiting(_)));
    assert!(!kernel.holds_route(&gone));
    assert_eq!(kernel.repairs.load(Ordering::SeqCst), 0);
    agent.stop().await;
}

#[tokio::test]
async fn persistent_failures_turn_the_condition_true_then_recovery_false() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    kernel
        .fail_next
        .store(readiness::FAILURES_BEFORE_UNAVAILABLE, Ordering::SeqCst);
    let mut agent = start(store.clone(), kernel.clone());
    for n in 1..=readiness::FAILURES_BEFORE_UNAVAILABLE {
        match agent.next_pass().await {
            Pass::Failed { failures, .. } => assert_eq!(failures, n),
            other => panic!("expected failure {n}, got {other:?}"),
        }
        let unavailable = matches!(report_of(&store).network, Some(Network::Unavailable { .. }));
        assert_eq!(
            unavailable,
            n == readiness::FAILURES_BEFORE_UNAVAILABLE,
            "after failure {n}"
        );
    }
    // The retry (backoff) succeeds.
    agent.next_applied().await;
    assert!(matches!(
        report_of(&store).network,
        Some(Network::Available { .. })
    ));
    agent.stop().await;
}

#[tokio::test]
async fn a_node_missing_from_the_cluster_is_left_alone() {
    let mut c = cluster();
    c.nodes.retain(|n| n.name != "node-1");
    let store = store_of(&c);
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    assert!(matches!(agent.next_pass().await, Pass::Waiting(_)));
    assert_eq!(*kernel.observed.lock().expect("lock"), Observed::default());
    agent.stop().await;
}

#[tokio::test]
async fn an_overrun_resyncs_and_repairs() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store, kernel.clone());
    agent.next_applied().await;

    // Lost notifications say nothing about what changed: only a full pass finds it.
    let gone = kernel.lose_a_route();
    agent.events.send(KernelEvent::Overrun).await.expect("send");
    assert_eq!(agent.next_applied().await.changes, 1);
    assert!(kernel.holds_route(&gone));
    agent.stop().await;
}

#[tokio::test]
async fn the_periodic_resync_repairs_drift_nobody_announced() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut options = options();
    options.resync = Duration::from_millis(50);
    let mut agent = start_with(options, store, kernel.clone());
    agent.next_applied().await;

    // No event at all: the resync timer is the only trigger left.
    let gone = kernel.lose_a_route();
    loop {
        if agent.next_applied().await.changes > 0 {
            break;
        }
    }
    assert!(kernel.holds_route(&gone));
    agent.stop().await;
}

#[tokio::test]
async fn a_burst_of_events_is_one_pass_and_passes_never_overlap() {
    let store = store_of(&cluster());
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    agent.next_applied().await;
    let before = kernel.converges();

    let gone = kernel.lose_a_route();
    for i in 0..50 {
        agent
            .events
            .try_send(KernelEvent::Changed(format!("event {i}")))
            .expect("room for the burst");
    }
    // Once the loop has taken every event, stopping it lets the pass in
    // hand finish and starts no other: what it sent is all the burst caused.
    let events = agent.events.clone();
    eventually(|| events.capacity() == events.max_capacity()).await;
    let passes = agent.stop().await;
    let burst_passes = passes.len() as u32;
    assert!(kernel.holds_route(&gone));
    assert_eq!(kernel.converges() - before, burst_passes);
    assert!(
        (1..=2).contains(&burst_passes),
        "50 events gave {burst_passes} passes: not coalesced"
    );
    assert!(
        !kernel.overlapped.load(Ordering::SeqCst),
        "two reconciles ran at once"
    );
}

/// A memory store that refuses the next `refuse` reports and records
/// every report it is offered.
struct RefusingStore {
    inner: Arc<MemoryStore>,
    refuse: AtomicU32,
    offered: Mutex<Vec<NodeReport>>,
}

impl RefusingStore {
    fn new(inner: Arc<MemoryStore>, refuse: u32) -> Arc<RefusingStore> {
        Arc::new(RefusingStore {
            inner,
            refuse: AtomicU32::new(refuse),
            offered: Mutex::new(Vec::new()),
        })
    }

    fn offered(&self) -> Vec<NodeReport> {
        self.offered.lock().expect("lock").clone()
    }
}

impl ClusterStore for RefusingStore {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.inner.subscribe()
    }

    fn report<'a>(&'a self, node: &'a str, report: &'a NodeReport) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.offered.lock().expect("lock").push(report.clone());
            let refused = self
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            match refused {
                true => Err(Error::Foreign("API server away".into())),
                false => self.inner.report(node, report).await,
            }
        })
    }
}

#[test]
fn retry_delays_double_up_to_the_cap() {
    let first = Duration::from_millis(200);
    let cap = Duration::from_secs(60);
    let delays: Vec<u64> = (1..=12)
        .map(|n| retry_delay(first, cap, n).as_millis() as u64)
        .collect();
    assert_eq!(
        delays,
        [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000, 60000]
    );
    assert_eq!(retry_delay(first, cap, u32::MAX), cap);
}

#[tokio::test]
async fn refused_reports_back_off_without_touching_the_kernel_and_reset_on_success() {
    let memory = store_of(&cluster());
    let store = RefusingStore::new(memory.clone(), 4);
    let kernel = FakeKernel::default();
    let mut agent = Agent::new(options(), store.clone(), kernel.clone());
    let delay = |n| retry_delay(options().backoff, options().resync, n);

    // Driven by hand: the schedule is what the loop would sleep.
    let snapshot = memory.snapshot();
    assert!(matches!(
        agent.reconcile(Some(&snapshot)).await,
        Pass::Applied { .. }
    ));
    let mut schedule = vec![agent.next_retry()];
    for _ in 0..4 {
        agent.retry_report(Some(&memory.snapshot())).await;
        schedule.push(agent.next_retry());
    }
    assert_eq!(
        schedule,
        [
            Some(delay(1)),
            Some(delay(2)),
            Some(delay(3)),
            Some(delay(4)),
            None
        ],
        "four refusals, then accepted"
    );
    assert!(delay(4) >= delay(1) * 8);
    assert_eq!(
        kernel.converges(),
        1,
        "report retries reconciled the kernel"
    );
    assert_eq!(memory.report_writes(), 1);

    // Accepted: the next refusal starts from the first delay again.
    store.refuse.store(1, Ordering::SeqCst);
    memory.set_plan(Plan::steady(Mode::Native, 2));
    agent.reconcile(Some(&memory.snapshot())).await;
    assert_eq!(agent.next_retry(), Some(delay(1)));
    agent.retry_report(Some(&memory.snapshot())).await;
    assert_eq!(agent.next_retry(), None);
    assert_eq!(memory.report_writes(), 2);
}

#[tokio::test]
async fn the_loop_retries_a_refused_report_until_the_store_takes_it() {
    let memory = store_of(&cluster());
    let store = RefusingStore::new(memory.clone(), 3);
    let kernel = FakeKernel::default();
    let mut agent = start_with(options(), store.clone(), kernel.clone());
    agent.next_applied().await;
    eventually(|| memory.report_writes() == 1).await;
    assert_eq!(
        store.offered().len(),
        4,
        "three refusals and the accepted one"
    );
    assert_eq!(
        kernel.converges(),
        1,
        "report retries reconciled the kernel"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_planned_switch_never_reports_the_network_unavailable() {
    let memory = store_of(&cluster());
    let store = RefusingStore::new(memory.clone(), 0);
    let kernel = FakeKernel::default();
    let mut agent = start_with(options(), store.clone(), kernel.clone());
    agent.next_applied().await;

    let phases = crate::coordinator::phases(Mode::Vxlan, Mode::Ipip, 1);
    assert!(phases.len() > 1, "a switch in several steps: {phases:?}");
    for (i, phase) in phases.iter().enumerate() {
        if i == 1 {
            // A pass that fails once mid-switch (a device moved under us)
            // is a race, not an outage.
            kernel.fail_next.store(1, Ordering::SeqCst);
        }
        memory.set_plan(phase.plan.clone());
        let applied = Some(format!(
            "{}/{}",
            phase.plan.generation, phase.plan.route_mode
        ));
        loop {
            if let Pass::Applied { .. } = agent.next_pass().await {
                if report_of(&memory).applied.map(|a| a.to_string()) == applied {
                    break;
                }
            }
        }
    }
    let offered = store.offered();
    assert_eq!(offered.len(), phases.len() + 1, "one report per plan");
    for report in &offered {
        assert!(
            matches!(report.network, Some(Network::Available { .. })),
            "NetworkUnavailable went True during a planned switch: {report:?}"
        );
    }
    agent.stop().await;
}

fn unavailable(reason: &str) -> Option<Network> {
    Some(Network::Unavailable {
        reason: reason.into(),
        message: "another writer".into(),
    })
}

#[tokio::test]
async fn an_overwritten_condition_is_restored_until_a_writer_keeps_at_it() {
    let store = store_of(&cluster());
    let mut agent = start(store.clone(), FakeKernel::default());
    agent.next_applied().await;
    let ours = report_of(&store);
    let is_ours = || report_of(&store).network == ours.network;
    eventually(is_ours).await;

    // Someone else's False/RouteCreated: a different message, no fight.
    for _ in 0..3 {
        store.overwrite_report(
            "node-1",
            NodeReport {
                applied: ours.applied,
                network: Some(Network::Available {
                    message: "RouteController created a route".into(),
                }),
            },
        );
        eventually(is_ours).await;
    }
    // Flipping the status is: restored twice, then left to the other writer.
    for _ in 0..2 {
        store.overwrite_report(
            "node-1",
            NodeReport {
                applied: ours.applied,
                network: unavailable("NoRouteCreated"),
            },
        );
        eventually(is_ours).await;
    }
    store.overwrite_report(
        "node-1",
        NodeReport {
            applied: ours.applied,
            network: unavailable("NoRouteCreated"),
        },
    );
    eventually(|| store.events().len() == 1).await;
    let event = &store.events()[0];
    assert_eq!(event.reason, REASON_CONDITION_CONTESTED);
    assert_eq!(event.node, "node-1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(report_of(&store).network, unavailable("NoRouteCreated"));
    // The annotation is still ours to keep.
    store.overwrite_report(
        "node-1",
        NodeReport {
            applied: None,
            network: unavailable("NoRouteCreated"),
        },
    );
    eventually(|| report_of(&store).applied == ours.applied).await;
    agent.stop().await;
}
