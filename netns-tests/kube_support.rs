//! What the kube netns tests share: agent processes that program a node
//! namespace while talking to the API server from the host, and the objects
//! a cluster starts with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use podroute::api::{ClusterRouting, ClusterRoutingSpec, PodrouteNode};
use podroute::api::{Mode, Plan};
use podroute::lab::probe::EchoServer;
use podroute::lab::traffic::{FamilyTallies, Pod, Tally, Traffic};
use podroute::store::KubeStore;
use serde_json::json;

pub use crate::kube_env::kube_node;
use crate::kube_env::{self, ControlPlane};
use crate::support::{poll_until, Lab, Log};

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent whose dataplane is `node`'s namespace and whose API
/// connection stays in the host's (`--netns`).
/// How a kube test starts: root and a control plane (else `None`, and the
/// test skips, as root tests do), a runtime, and an admin client. Keep the
/// control plane until the end: dropping it stops the API server.
pub fn kube_test() -> Option<(ControlPlane, tokio::runtime::Runtime, Client)> {
    if !crate::support::have_root() {
        return None;
    }
    let cp = ControlPlane::start_or_skip()?;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(cp.client());
    Some((cp, rt, client))
}

pub fn start_agent(lab: &Lab, node: &str, kubeconfig: &Path) -> Process {
    let child = agent_command(lab, node, kubeconfig, "127.0.0.1:0", "warn")
        .spawn()
        .expect("start agent");
    Process(child)
}

fn agent_command(lab: &Lab, node: &str, kubeconfig: &Path, listen: &str, log: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podroute"));
    command
        .args(["agent", "--node-name", node])
        .args(["--netns", &lab.node(node).netns, "--listen", listen])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--mtu-file")
        .arg(lab.config(node).mtu_file)
        .args(["--log", log])
        .stdout(Stdio::null());
    command
}

/// An agent like [`start_agent`] on a known listener, whose log (info:
/// one line per kernel change) is collected.
pub struct WatchedAgent {
    _process: Process,
    listen: SocketAddr,
    log: Log,
}

impl WatchedAgent {
    pub fn start(lab: &Lab, node: &str, kubeconfig: &Path) -> WatchedAgent {
        let listen = free_port();
        let mut child = agent_command(lab, node, kubeconfig, &listen.to_string(), "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent");
        let log = Log::follow(&mut child);
        WatchedAgent {
            _process: Process(child),
            listen,
            log,
        }
    }

    /// `/readyz` says a plan was applied and verified.
    pub fn ready(&self) -> bool {
        self.get("/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    }

    pub fn get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(self.listen).ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    }

    /// Kernel changes logged so far (each names its why).
    pub fn kernel_writes(&self) -> usize {
        self.log.count(|l| l.contains("why="))
    }

    pub fn log(&self) -> String {
        self.log.text()
    }
}

/// A loopback port nobody listens on (free a moment ago).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A coordinator process leading as `identity`, logging (info) to `log`
/// (appended: a restarted one keeps its predecessor's lines), serving on
/// `listen`.
pub fn start_coordinator(identity: &str, kubeconfig: &Path, log: &Path, listen: &str) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("coordinator log");
    let child = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["coordinator", "--identity", identity, "--log", "info"])
        .args(["--listen", listen])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start coordinator");
    Process(child)
}

/// `podroute switch ARGS --kubeconfig K`: (success, stdout). Both outputs
/// are echoed to the test's stderr.
pub fn switch(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .arg("switch")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--log", "warn"])
        .output()
        .expect("podroute switch");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "podroute switch {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

/// A Node's NetworkUnavailable condition as the API server has it now.
pub async fn network_unavailable(client: &Client, name: &str) -> Option<NodeCondition> {
    let node = Api::<Node>::all(client.clone()).get(name).await.ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "NetworkUnavailable")
}

/// `podroute.io/applied` and NetworkUnavailable (status, reason) of a Node.
pub async fn reported(client: &Client, name: &str) -> (Option<String>, Option<(String, String)>) {
    let node = Api::<Node>::all(client.clone())
        .get(name)
        .await
        .expect("get node");
    let applied = node
        .metadata
        .annotations
        .and_then(|a| a.get("podroute.io/applied").cloned());
    let condition = network_unavailable(client, name)
        .await
        .map(|c| (c.status, c.reason.unwrap_or_default()));
    (applied, condition)
}

/// Polled every 20 ms: checks here are often API calls.
pub fn wait_for(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    crate::support::wait_until(what, timeout, Duration::from_millis(20), check);
}

/// Publish `plan` as the coordinator would (status.plan).
pub async fn publish_plan(client: &Client, plan: &Plan) {
    let api: Api<ClusterRouting> = Api::all(client.clone());
    let status = json!({ "status": { "plan": plan } });
    api.patch_status("default", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("publish plan");
}

/// The CRDs and the `default` ClusterRouting object asking for `mode`.
pub async fn install_routing(client: &Client, mode: Mode) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [ClusterRouting::crd(), PodrouteNode::crd()] {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    let routings: Api<ClusterRouting> = Api::all(client.clone());
    let spec = ClusterRoutingSpec {
        mode,
        native: None,
        mtu: None,
        vxlan: None,
        rollout: None,
    };
    let object = ClusterRouting::new("default", spec);
    // The CRD takes a moment to be served.
    let start = Instant::now();
    while let Err(e) = routings.create(&PostParams::default(), &object).await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ClusterRouting never served: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the coordinator does for Nodes that have no agent (peers a test
/// creates as bare Nodes): keep their PodrouteNode records, for as long as
/// the value lives. Agents find peers through these records.
pub fn keep_records(rt: &tokio::runtime::Runtime, client: &Client) -> KubeStore {
    let _entered = rt.enter();
    KubeStore::for_coordinator(client.clone()).expect("record keeper")
}

/// The lab's nodes as Nodes in the API server, with their PodrouteNode
/// records, as in a running cluster (the coordinator wrote them when the
/// Nodes joined). Without them, an agent started at once could report its
/// plan applied while a peer's record is still being written, before the
/// test's pods can talk.
pub async fn create_lab_nodes(client: &Client, lab: &Lab) {
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = lab
        .topo
        .model_nodes()
        .iter()
        .map(|n| n.name.clone())
        .collect();
    for n in lab.topo.model_nodes() {
        let node = kube_node_of(&n);
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let _keeper = KubeStore::for_coordinator(client.clone()).expect("record keeper");
    let records: Api<PodrouteNode> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let listed = records.list(&Default::default()).await;
        let have: Vec<String> = (listed.map(|l| l.items).unwrap_or_default().into_iter())
            .filter(|r| !r.spec.pod_cidrs.is_empty())
            .filter_map(|r| r.metadata.name)
            .collect();
        if names.iter().all(|n| have.contains(n)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no PodrouteNode records for the lab's nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Node a kubelet and the node IPAM make for a lab node: an InternalIP
/// and a pod CIDR per family it has.
fn kube_node_of(n: &podroute::model::Node) -> Node {
    let mut ips = n.ips().map(|ip| ip.to_string());
    let cidrs: Vec<String> = n.pod_cidrs.iter().map(|c| c.to_string()).collect();
    let mut node = kube_node(&n.name, &ips.next().unwrap_or_default(), &cidrs[0]);
    if let Some(spec) = node.spec.as_mut() {
        spec.pod_cidrs = Some(cidrs.clone());
    }
    let addresses = node.status.as_mut().and_then(|s| s.addresses.as_mut());
    if let Some(addresses) = addresses {
        addresses.extend(ips.map(|address| NodeAddress {
            type_: "InternalIP".into(),
            address,
        }));
    }
    node
}

/// Echo ports of [`PodProbes`], one per pod pair: above the Lab's 7777 and
/// far below the ephemeral ports the probe sockets bind.
const PAIR_PORT_BASE: u16 = 7800;
/// A quarter of the lab runs' default (`podroute lab --interval-ms`): a
/// switch against a quick coordinator lasts well under a second.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// Continuous sequence-numbered UDP probes between the pods of every pair
/// of nodes, both directions, as the lab runs send them. Each pair has its
/// own [`Traffic`] and echo port, so its sent and lost are its own and the
/// echo servers count what arrived in each direction.
pub struct PodProbes {
    pairs: Vec<PairProbes>,
}

struct PairProbes {
    nodes: [String; 2],
    /// In the pods of `nodes[0]` and `nodes[1]`.
    echo: [EchoServer; 2],
    traffic: Traffic,
}

/// What the pods of one pair of nodes exchanged.
#[derive(Debug)]
pub struct PairCount {
    pub nodes: [String; 2],
    /// Both directions, per phase index of [`PodProbes::start`], per family
    /// (IPv4, IPv6).
    pub tallies: Vec<FamilyTallies>,
    /// Probes that arrived in the pod of `nodes[0]` and of `nodes[1]`.
    pub arrived: [u64; 2],
}

impl PairCount {
    pub fn sent(&self) -> u64 {
        self.tallies.iter().flatten().map(|t| t.sent).sum()
    }

    pub fn lost(&self) -> u64 {
        self.tallies.iter().flatten().map(|t| t.lost).sum()
    }

    /// Sent and lost in one family (0 IPv4, 1 IPv6), over all phases.
    pub fn in_family(&self, family: usize) -> Tally {
        let mut total = Tally::default();
        for t in &self.tallies {
            total += t[family];
        }
        total
    }
}

impl PodProbes {
    /// Start probing the first pod of every node; each probe is tallied
    /// under the value `phase` holds when it is sent.
    pub fn start(lab: &Lab, phase: Arc<AtomicUsize>) -> PodProbes {
        let names = lab.names();
        let mut pairs = Vec::new();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                let port = PAIR_PORT_BASE + pairs.len() as u16;
                let nodes = [a.clone(), b.clone()];
                // Each pod once per family: probes stay within a family.
                let pods: Vec<Pod> = lab
                    .families()
                    .into_iter()
                    .flat_map(|family| {
                        nodes.clone().map(|n| Pod {
                            netns: lab.node(&n).pods[0].netns.clone(),
                            ip: lab.pod_addr(&n, family),
                            name: n,
                        })
                    })
                    .collect();
                let echo = nodes.clone().map(|n| {
                    let netns = &lab.node(&n).pods[0].netns;
                    EchoServer::start(netns, port).expect("echo server")
                });
                let traffic =
                    Traffic::start(&pods, port, PROBE_INTERVAL, phase.clone()).expect("probes");
                pairs.push(PairProbes {
                    nodes,
                    echo,
                    traffic,
                });
            }
        }
        PodProbes { pairs }
    }

    /// Stop sending (every pair at once); probes still unanswered after the
    /// late echoes had their time count as lost.
    pub fn stop(self) -> Vec<PairCount> {
        std::thread::scope(|s| {
            let stopping: Vec<_> = self
                .pairs
                .into_iter()
                .map(|pair| s.spawn(|| pair.stop()))
                .collect();
            stopping
                .into_iter()
                .map(|pair| pair.join().expect("stopping a pair's probes"))
                .collect()
        })
    }
}

impl PairProbes {
    fn stop(self) -> PairCount {
        let tallies = self.traffic.stop_per_family().expect("probe threads");
        let arrived = self.echo.map(|e| e.stop().expect("echo server"));
        PairCount {
            nodes: self.nodes,
            tallies,
            arrived,
        }
    }
}

/// Everything but the workloads (no kubelet runs them here), applied with
/// kubectl as an installer would; repeated while the new CRDs are not yet
/// served.
pub fn apply_except_workloads(cp: &ControlPlane, objects: &[serde_yaml::Value], dir: &Path) {
    let workloads = ["DaemonSet", "Deployment", "PodDisruptionBudget"];
    let docs: Vec<String> = objects
        .iter()
        .filter(|o| !workloads.iter().any(|k| o["kind"] == *k))
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect();
    let file = dir.join("install.yaml");
    std::fs::write(&file, docs.join("---\n")).expect("write install.yaml");
    let file = file.to_string_lossy().into_owned();
    let mut last = String::new();
    let applied = poll_until(Duration::from_secs(30), || {
        let out = kubectl_output(cp, &["apply", "-f", &file]);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    assert!(applied, "kubectl apply of the manifests: {last}");
}

pub fn kubectl_output(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    let kubectl = kube_env::find_kubectl().unwrap_or_else(|e| panic!("kubectl: {e}"));
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(args)
        .output()
        .expect("run kubectl")
}

pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = kubectl_output(cp, args);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
