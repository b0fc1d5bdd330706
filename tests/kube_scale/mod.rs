//! What the scale tests share (tests/kube_records.rs, tests/kube_switch.rs):
//! kubelet-shaped Nodes by number, podroute's objects installed, the real
//! coordinator as a process, and waiting.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use podroute::api::{ClusterRouting, ClusterRoutingSpec, Mode, Plan, PodrouteNode};
use serde_json::json;

use crate::kube_env::{self, kube_node, kubelet_shaped, ControlPlane};

pub fn name(i: usize) -> String {
    format!("node-{i}")
}

pub fn pod_cidr(i: usize) -> String {
    format!("10.{}.{}.0/24", 100 + i / 256, i % 256)
}

pub fn node_ip(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, 1 + i % 250)
}

pub async fn install(admin: &Client) {
    install_crds(admin, &[ClusterRouting::crd(), PodrouteNode::crd()]).await;
    install_routing(admin).await;
    let records: Api<PodrouteNode> = Api::all(admin.clone());
    wait_until("PodrouteNode served", Duration::from_secs(30), || async {
        records.list(&ListParams::default()).await.is_ok()
    })
    .await;
}

pub async fn install_crds(admin: &Client, crds: &[CustomResourceDefinition]) {
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in crds {
        api.create(&PostParams::default(), crd)
            .await
            .expect("create CRD");
    }
}

/// The `default` ClusterRouting, vxlan, with its plan published.
pub async fn install_routing(admin: &Client) {
    kube_env::ensure_namespace(admin, "podroute-system").await; // the coordinator's Lease
    let routings: Api<ClusterRouting> = Api::all(admin.clone());
    let spec = ClusterRoutingSpec {
        mode: Mode::Vxlan,
        native: None,
        mtu: None,
        vxlan: None,
        rollout: None,
    };
    let object = ClusterRouting::new("default", spec);
    wait_until("ClusterRouting served", Duration::from_secs(30), || async {
        routings
            .create(&PostParams::default(), &object)
            .await
            .is_ok()
    })
    .await;
    let status = json!({"status": {"plan": Plan::steady(Mode::Vxlan, 1)}});
    routings
        .patch_status("default", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("publish plan");
}

pub async fn create_nodes(nodes: &Api<Node>, range: std::ops::Range<usize>) {
    futures::stream::iter(range)
        .map(|i| {
            let node = kubelet_shaped(kube_node(&name(i), &node_ip(i), &pod_cidr(i)), i);
            async move {
                nodes
                    .create(&PostParams::default(), &node)
                    .await
                    .expect("create node")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// What a kubelet writes at each status update: the conditions' heartbeat.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The benchmark: `run` on a control plane of its own for each size in
/// `PODROUTE_BENCH_NODES` (default 1000,5000), its table row printed as it
/// comes and the whole table at the end.
pub fn bench(header: &str, mut run: impl AsyncFnMut(&ControlPlane, usize) -> String) {
    let sizes = std::env::var("PODROUTE_BENCH_NODES").unwrap_or_else(|_| "1000,5000".into());
    let mut rows = Vec::new();
    for n in sizes
        .split(',')
        .map(|n| n.trim().parse::<usize>().expect("a node count"))
    {
        let Some(cp) = ControlPlane::start_or_skip() else {
            return;
        };
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let row = rt.block_on(run(&cp, n));
        println!("{header}\n{row}");
        rows.push(row);
    }
    println!("\n{header}");
    for row in rows {
        println!("{row}");
    }
}

/// Waits until the coordinator has written a record for each of `n` Nodes.
pub async fn wait_for_records(admin: &Client, n: usize) {
    let records: Api<PodrouteNode> = Api::all(admin.clone());
    let listed = || async {
        let list = records.list(&ListParams::default()).await;
        list.map(|l| l.items.len()).unwrap_or(0) == n
    };
    wait_until("a record for every Node", Duration::from_secs(600), listed).await;
}

/// GET /metrics of the API server.
pub async fn metrics(admin: &Client) -> String {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    admin.request_text(request).await.expect("GET /metrics")
}

/// The real coordinator, as a process: its store keeps the records, and its
/// CPU and memory are its own.
pub struct Coordinator(Option<Child>);

impl Coordinator {
    pub fn start(cp: &ControlPlane, identity: &str) -> Coordinator {
        let log = std::fs::File::create(cp.dir().join("coordinator.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_podroute"))
            .args(["coordinator", "--identity", identity, "--log", "info"])
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(cp.admin_kubeconfig())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start podroute coordinator");
        Coordinator(Some(child))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().expect("a running coordinator").id()
    }

    /// User and system time so far (/proc/PID/stat, in clock ticks of 10 ms).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after_name = stat.rsplit(')').next().expect("stat fields");
        let fields: Vec<u64> = after_name
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15; 12 and 13 after "pid (comm)".
        Duration::from_millis((fields[11] + fields[12]) * 10)
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop();
    }
}
