//! PodrouteNode records against a real kube-apiserver + etcd (issue 14):
//! agents hear about a node only when its routing changes, not on every
//! kubelet status write; the coordinator keeps the records; nobody re-lists.
//!
//! Bytes are counted on each store's own connection, through a TCP proxy
//! between its client and the API server. The same numbers at 1000 and 5000
//! Nodes come from the ignored benchmark:
//!
//! ```text
//! cargo test --release --test kube_records -- --ignored --nocapture
//! ```
//! (`PODROUTE_BENCH_NODES=1000,5000` by default).
//!
//! Without built kube binaries these tests print "skipping: ..." and pass,
//! unless PODROUTE_REQUIRE_KUBE_TESTS=1.

mod kube_env;
mod kube_scale;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt};
use podroute::api::{ClusterRouting, PodrouteNode};
use podroute::store::{ClusterStore, KubeStore, Snapshot};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use kube_env::ControlPlane;
use kube_scale::{
    create_nodes, install, install_crds, install_routing, metrics, name, pod_cidr,
    wait_for_records, Coordinator,
};

const OWN: &str = "node-0";

#[test]
fn records_keep_agents_quiet_under_kubelet_churn_and_nobody_relists() {
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let m = rt.block_on(run(&cp, 40, true));
    println!("{}", m.table_row());
}

/// An agent on a cluster without the PodrouteNode CRD waits (no snapshot,
/// so no routes are taken away) and does not fall back to watching Nodes;
/// once the CRD is there, it goes on.
#[test]
fn an_agent_waits_for_the_record_crd() {
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let admin = cp.client().await;
        install_crds(&admin, &[ClusterRouting::crd()]).await;
        install_routing(&admin).await;
        create_nodes(&Api::all(admin.clone()), 0..1).await;
        let agent = KubeStore::for_agent(cp.client().await, OWN).expect("agent store");
        let mut rx = agent.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(3), rx.wait_for(Option::is_some));
        assert!(waited.await.is_err(), "a snapshot without the record CRD");
        install_crds(&admin, &[PodrouteNode::crd()]).await;
        snapshot_where(&mut rx, "its own node, once the CRD is there", |s| {
            s.node(OWN).is_some()
        })
        .await;
    });
}

/// The benchmark: the same run at the sizes in `PODROUTE_BENCH_NODES`.
#[test]
#[ignore]
fn bench_records_against_node_watches() {
    kube_scale::bench(&Measured::table_header(), async |cp, n| {
        run(cp, n, false).await.table_row()
    });
}

/// What one agent's connection received, by watch path.
#[derive(Debug, Default)]
struct Received {
    /// During one status write to every peer Node.
    churn_bytes: u64,
    /// While one kubelet-shaped Node joined.
    join_bytes: u64,
    /// From the joiner's creation to its place in this store's snapshot.
    join_seen: Duration,
}

#[derive(Debug)]
struct Measured {
    nodes_count: usize,
    /// Status writes during the churn (one per peer).
    writes: usize,
    /// Today's path: every Node.
    nodes: Received,
    /// PodrouteNode records and the agent's own Node.
    records: Received,
}

impl Measured {
    fn table_header() -> String {
        "| nodes | per status write, Node watch | per status write, records | kB/s per agent at one write per node per 5 min (Node watch / records) | per join (Node watch / records) | join seen (Node watch / records) |\n|---|---|---|---|---|---|".into()
    }

    fn table_row(&self) -> String {
        let per_write = |r: &Received| r.churn_bytes as f64 / self.writes as f64;
        let rate = |r: &Received| per_write(r) * self.nodes_count as f64 / 300.0 / 1000.0;
        format!(
            "| {} | {:.0} B | {:.1} B | {:.2} / {:.4} | {} B / {} B | {:?} / {:?} |",
            self.nodes_count,
            per_write(&self.nodes),
            per_write(&self.records),
            rate(&self.nodes),
            rate(&self.records),
            self.nodes.join_bytes,
            self.records.join_bytes,
            self.nodes.join_seen,
            self.records.join_seen,
        )
    }
}

/// `n` kubelet-shaped Nodes, the real coordinator keeping their records,
/// two agent stores (records; every Node) on counting connections. With
/// `hostile`, also: a changed node IP, a deleted Node, and a node joining
/// while the coordinator is down.
async fn run(cp: &ControlPlane, n: usize, hostile: bool) -> Measured {
    let admin = cp.client().await;
    install(&admin).await;
    let nodes: Api<Node> = Api::all(admin.clone());
    let records: Api<PodrouteNode> = Api::all(admin.clone());
    create_nodes(&nodes, 0..n).await;
    let mut coordinator = Coordinator::start(cp, "records-test");
    wait_for_records(&admin, n).await;

    let via_records = Proxy::start(cp).await;
    let via_nodes = Proxy::start(cp).await;
    let agent = KubeStore::for_agent(via_records.client(cp).await, OWN).expect("agent store");
    let watcher = KubeStore::new(via_nodes.client(cp).await).expect("node store");
    let mut agent_rx = agent.subscribe();
    let mut watcher_rx = watcher.subscribe();
    for rx in [&mut agent_rx, &mut watcher_rx] {
        snapshot_where(rx, "all nodes listed", |s| s.nodes.len() == n).await;
    }
    let lists_before = lists(&admin).await;

    // Kubelet churn: one status write to every peer, nothing routing uses.
    via_records.reset();
    via_nodes.reset();
    agent_rx.mark_unchanged();
    let peers: Vec<String> = (1..n).map(name).collect();
    heartbeat(&nodes, &peers).await;
    via_nodes.settle().await;
    via_records.settle().await;
    assert!(
        !agent_rx.has_changed().expect("agent store alive"),
        "kubelet status writes woke the agent"
    );
    // The proof that no agent wakes: its connection carries (almost) nothing.
    assert!(
        via_records.received() * 100 < via_nodes.received(),
        "under kubelet churn the records agent received {} B, the Node-watching one {} B: not under 1%",
        via_records.received(),
        via_nodes.received()
    );
    let mut m = Measured {
        nodes_count: n,
        writes: peers.len(),
        nodes: Received {
            churn_bytes: via_nodes.received(),
            ..Received::default()
        },
        records: Received {
            churn_bytes: via_records.received(),
            ..Received::default()
        },
    };

    // A node joins: time until each store routes it, and the bytes it cost.
    via_records.reset();
    via_nodes.reset();
    let joiner = name(n);
    let created = Instant::now();
    create_nodes(&nodes, n..n + 1).await;
    let has_joiner = |s: &Snapshot| s.node(&joiner).is_some();
    snapshot_where(&mut agent_rx, "the joiner (records)", has_joiner).await;
    m.records.join_seen = created.elapsed();
    snapshot_where(&mut watcher_rx, "the joiner (Nodes)", has_joiner).await;
    m.nodes.join_seen = created.elapsed();
    via_nodes.settle().await;
    via_records.settle().await;
    m.nodes.join_bytes = via_nodes.received();
    m.records.join_bytes = via_records.received();

    if hostile {
        // A node's IP changes: its record follows, and so does the agent.
        let moved = name(1);
        let addresses =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.250.99.1"}]}});
        nodes
            .patch_status(&moved, &PatchParams::default(), &Patch::Merge(addresses))
            .await
            .expect("move node-1");
        snapshot_where(&mut agent_rx, "node-1's new IP", |s| {
            s.node(&moved)
                .is_some_and(|r| r.node.ips().any(|ip| ip.to_string() == "10.250.99.1"))
        })
        .await;
        // A Node is deleted (no garbage collector runs here): the
        // coordinator deletes its record, and the agent forgets it.
        nodes
            .delete(&joiner, &DeleteParams::default())
            .await
            .expect("delete the joiner");
        snapshot_where(&mut agent_rx, "the joiner gone", |s| {
            s.node(&joiner).is_none()
        })
        .await;
    }

    // Nobody re-listed: not the agent stores, not the coordinator.
    via_nodes.settle().await;
    let lists_after = lists(&admin).await;
    assert_eq!(
        lists_before, lists_after,
        "LIST requests grew in steady state and under churn"
    );

    if hostile {
        // The coordinator is down: a new node's agent writes its own record.
        coordinator.stop();
        let late = name(n + 1);
        create_nodes(&nodes, n + 1..n + 2).await;
        let late_agent = KubeStore::for_agent(cp.client().await, &late).expect("late agent");
        snapshot_where(&mut agent_rx, "the late node, without coordinator", |s| {
            s.node(&late).is_some()
        })
        .await;
        drop(late_agent);
        let record = records.get(&late).await.expect("its record");
        assert_eq!(record.spec.pod_cidrs, [pod_cidr(n + 1)]);
    }
    m
}

async fn heartbeat(nodes: &Api<Node>, names: &[String]) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    futures::stream::iter(names)
        .map(|n| {
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status", "lastHeartbeatTime": now},
            ]}});
            async move {
                nodes
                    .patch_status(n, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                    .expect("status write")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// LIST requests kube-apiserver served, by resource, from its /metrics.
async fn lists(admin: &Client) -> BTreeMap<String, u64> {
    let metrics = metrics(admin).await;
    let mut counts = BTreeMap::new();
    for line in metrics.lines() {
        if !line.starts_with("apiserver_request_total{") || !line.contains("verb=\"LIST\"") {
            continue;
        }
        for resource in ["nodes", "podroutenodes", "clusterroutings"] {
            if line.contains(&format!("resource=\"{resource}\"")) {
                let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                *counts.entry(resource.to_string()).or_default() += count.unwrap_or(0.0) as u64;
            }
        }
    }
    counts
}

async fn snapshot_where(
    rx: &mut watch::Receiver<Option<Arc<Snapshot>>>,
    what: &str,
    want: impl Fn(&Snapshot) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if rx.borrow_and_update().as_deref().is_some_and(&want) {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("never saw {what}"),
        }
    }
}

/// A TCP proxy to the API server that counts the bytes it sends back.
struct Proxy {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(cp: &ControlPlane) -> Proxy {
        let upstream: SocketAddr = cp
            .server_url()
            .trim_start_matches("https://")
            .parse()
            .expect("API server address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    relay(client, server, counter).await;
                });
            }
        });
        Proxy {
            addr,
            received,
            task,
        }
    }

    /// An admin client whose every byte goes through this proxy.
    async fn client(&self, cp: &ControlPlane) -> Client {
        let kubeconfig = Kubeconfig::read_from(cp.admin_kubeconfig()).expect("kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
        config.cluster_url = format!("https://{}", self.addr).parse().expect("url");
        Client::try_from(config).expect("client")
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
    }

    /// Waits until nothing has arrived for a second.
    async fn settle(&self) {
        let mut last = self.received();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.received();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, received: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    received.fetch_add(k as u64, Ordering::Relaxed);
                    if client_write.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
