//! The loop against the memory store and a model of the kernel
//! (`plan::simulate`), so every trigger and report rule is checked without root.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ipnetwork::Ipv4Network;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::model::{Cluster, Config, Mode, Node, Plan};
use crate::plan::{self, simulate, Inputs, Observed, Uplink};
use crate::store::{MemoryStore, Network};

#[derive(Clone, Default)]
struct FakeKernel {
    observed: Arc<Mutex<Observed>>,
    fail_next: Arc<AtomicU32>,
}

impl Kernel for FakeKernel {
    fn converge<'a>(
        &'a mut self,
        cluster: &'a Cluster,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            if self.fail_next.load(Ordering::SeqCst) > 0 {
                self.fail_next.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::Foreign("injected failure".into()));
            }
            let uplink = Uplink {
                name: "eth0".into(),
                mtu: 1500,
                address: Ipv4Network::new(node.node_ip, 24).expect("prefix"),
            };
            let config = Config::default();
            let desired = plan::desired(Inputs {
                local: node,
                nodes: &cluster.nodes,
                plan: &cluster.plan,
                config: &config,
                uplink: &uplink,
            })?;
            let mut observed = self.observed.lock().expect("lock");
            let diff = plan::diff(&desired, &observed);
            simulate::apply_all(&mut observed, diff.steps.iter().map(|s| &s.op));
            Ok(Outcome {
                changes: diff.steps.len(),
                steps: diff.steps,
                routes: desired.routes.len() - diff.conflicts.len(),
                conflicts: diff.conflicts,
                pod_mtu: desired.pod_mtu,
            })
        })
    }
}

fn cluster(mode: Mode, generation: u64) -> Cluster {
    let node = |i: u8| Node {
        name: format!("node-{i}"),
        node_ip: std::net::Ipv4Addr::new(10, 250, 0, i),
        pod_cidrs: vec![format!("10.244.{i}.0/24").parse().expect("cidr")],
    };
    Cluster {
        nodes: vec![node(1), node(2), node(3)],
        plan: Plan::steady(mode, generation),
        off_subnet: None,
        mtu: None,
        vxlan_vni: None,
        vxlan_port: None,
    }
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

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let result = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "agent did not stop cleanly: {result:?}"
        );
    }
}

fn start(store: Arc<MemoryStore>, kernel: FakeKernel) -> Running {
    let mut options = AgentOptions::new("node-1");
    options.backoff = Duration::from_millis(10);
    let mut agent = Agent::new(options, store, kernel);
    let (tx, passes) = mpsc::unbounded_channel();
    agent.observe_passes(tx);
    let (events, rx) = mpsc::channel(16);
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(agent.run(rx, stop));
    Running {
        events,
        passes,
        shutdown,
        task,
    }
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
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(&cluster(
        Mode::Vxlan,
        1,
    ))));
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
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(&cluster(
        Mode::Vxlan,
        1,
    ))));
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
    assert_eq!(kernel.observed.lock().expect("lock").routes.len(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_kernel_event_repairs_drift_at_once() {
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(&cluster(
        Mode::Vxlan,
        1,
    ))));
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    agent.next_applied().await;

    let gone = {
        let mut observed = kernel.observed.lock().expect("lock");
        let key = *observed.routes.keys().next().expect("a route");
        observed.routes.remove(&key);
        key
    };
    agent
        .events
        .send(KernelEvent::Changed(format!("route {} deleted", gone.dst)))
        .await
        .expect("send");
    let outcome = agent.next_applied().await;
    assert_eq!(outcome.changes, 1);
    assert!(kernel
        .observed
        .lock()
        .expect("lock")
        .routes
        .contains_key(&gone));
    assert_eq!(
        store.report_writes(),
        1,
        "a repair is not news to the cluster"
    );
    agent.stop().await;
}

#[tokio::test]
async fn persistent_failures_turn_the_condition_true_then_recovery_false() {
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(&cluster(
        Mode::Vxlan,
        1,
    ))));
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
    let mut c = cluster(Mode::Vxlan, 1);
    c.nodes.retain(|n| n.name != "node-1");
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(&c)));
    let kernel = FakeKernel::default();
    let mut agent = start(store.clone(), kernel.clone());
    assert!(matches!(agent.next_pass().await, Pass::Waiting(_)));
    assert_eq!(*kernel.observed.lock().expect("lock"), Observed::default());
    agent.stop().await;
}
