//! Three real agents, one per node namespace, on one in-process memory
//! store: the cluster changes under them and the kernel follows.

use std::sync::Arc;
use std::time::Duration;

use podroute::agent::{AgentOptions, Pass};
use podroute::api::{Mode, Plan};
use podroute::lab::node_agent::NodeAgent;
use podroute::store::{ClusterStore, MemoryStore, Network, Snapshot};
use tokio::sync::mpsc;

use crate::support::{have_root, our_routes, wait_until, Lab};

fn spawn(
    lab: &Lab,
    store: &Arc<MemoryStore>,
    node: &str,
) -> (NodeAgent, mpsc::UnboundedReceiver<Pass>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let store: Arc<dyn ClusterStore> = store.clone();
    let agent = NodeAgent::spawn(
        &lab.node(node).netns,
        AgentOptions::new(node),
        store,
        lab.config(node),
        Some(tx),
    )
    .expect("agent");
    (agent, rx)
}

/// Polled every 200 µs: the repair latency is measured with it.
fn wait_for(what: &str, check: impl FnMut() -> bool) -> Duration {
    wait_until(
        what,
        Duration::from_secs(10),
        Duration::from_micros(200),
        check,
    )
}

fn applied(store: &MemoryStore, node: &str) -> Option<String> {
    store
        .snapshot()
        .node(node)?
        .report
        .applied
        .map(|a| a.to_string())
}

#[test]
fn three_agents_on_a_memory_store() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let mut cluster = lab.cluster(&Plan::steady(Mode::Vxlan, 1));
    let joiner = cluster.nodes.pop().expect("node-3");
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(&cluster)));
    let mut agents: Vec<_> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| spawn(&lab, &store, n))
        .collect();

    for node in ["node-1", "node-2"] {
        wait_for("applied", || {
            applied(&store, node).as_deref() == Some("1/vxlan")
        });
        let report = store.snapshot().node(node).expect("node").report.clone();
        assert!(
            matches!(report.network, Some(Network::Available { .. })),
            "{report:?}"
        );
    }
    assert_eq!(our_routes(&lab, "node-1").len(), 1);
    assert!(
        our_routes(&lab, "node-3").is_empty(),
        "a node not in the cluster is left alone"
    );

    // A peer joins.
    store.upsert_node(joiner);
    for node in ["node-1", "node-2", "node-3"] {
        wait_for("three nodes", || our_routes(&lab, node).len() == 2);
    }
    for node in lab.names() {
        lab.topo.set_pod_mtu(&node, 1450).expect("mtu");
    }
    lab.assert_all_pods_talk(1450);

    // Drift repair latency, from the deletion to the route being back.
    let victim = lab.node("node-2").pod_cidr.to_string();
    let mut latencies: Vec<Duration> = (0..100)
        .map(|_| {
            lab.ip("node-1", &["route", "del", &victim]);
            wait_for("repair", || our_routes(&lab, "node-1").len() == 2)
        })
        .collect();
    latencies.sort();
    println!(
        "drift repair over 100 deletions: median {:?}, p99 {:?} (includes `ip route show` polling)",
        latencies[50], latencies[98]
    );
    assert!(
        agents[0].0.metrics().drift_repairs.get() >= 50,
        "repairs were counted"
    );

    // The plan changes mode.
    store.set_plan(Plan::steady(Mode::Native, 2));
    for node in lab.names() {
        wait_for("native", || {
            applied(&store, &node).as_deref() == Some("2/native")
        });
        assert!(our_routes(&lab, &node)
            .iter()
            .all(|r| r.contains("dev eth0")));
    }
    lab.assert_all_pods_talk(1450);

    // A peer leaves.
    store.remove_node("node-3");
    wait_for("node-3 gone", || our_routes(&lab, "node-1").len() == 1);

    // Restart with unchanged state: zero writes, no report write.
    let writes = store.report_writes();
    let (old, _) = agents.remove(0);
    old.stop().expect("stop");
    let (_again, mut passes) = spawn(&lab, &store, "node-1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let first =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), passes.recv()).await });
    match first {
        Ok(Some(Pass::Applied { outcome, .. })) => {
            assert_eq!(outcome.changes, 0, "{:?}", outcome.steps)
        }
        other => panic!("expected an applied pass, got {other:?}"),
    }
    assert_eq!(store.report_writes(), writes, "restart rewrote the report");
}
