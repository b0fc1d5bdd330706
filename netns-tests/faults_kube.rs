//! The fault matrix of issue 11 against a real kube-apiserver: agents (with
//! `--netns`, as in agent_kube.rs) on a 3-node lab, and a coordinator where
//! the case needs one.
//!
//! - the API server gone for 30 s in the middle of a switch: pods keep
//!   talking, drift is repaired, and after it returns the reports catch up,
//!   the switch completes and the next one runs;
//! - the ClusterRouting object deleted in the Switch phase and recreated;
//! - a Node deleted and re-created with a new pod CIDR.
//!
//! Each skips cleanly when the control plane binaries are not built (unless
//! PODROUTE_REQUIRE_KUBE_TESTS=1).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::Client;
use podroute::api::{ClusterRouting, ClusterRoutingStatus};
use podroute::api::{Mode, Plan};
use podroute::lab::probe::udp_roundtrip;

use crate::kube_env::ControlPlane;
use crate::kube_support::{
    create_lab_nodes, install_routing, keep_records, kube_node, publish_plan, reported,
    start_agent, start_coordinator, switch, wait_for, PairCount, PodProbes, Process,
};
use crate::support::{have_root, our_routes, wait_until, Lab, PORT};

const POD_MTU: u32 = 1450;
const OUTAGE: Duration = Duration::from_secs(30);

/// A control plane of its own (the tests restart it or delete the one
/// ClusterRouting), a flat 3-node lab whose Nodes it holds, and the
/// ClusterRouting `default` asking for vxlan.
struct KubeLab {
    lab: Lab,
    rt: tokio::runtime::Runtime,
    client: Client,
    kubeconfig: PathBuf,
    logs: tempfile::TempDir,
    cp: ControlPlane,
}

impl KubeLab {
    fn start() -> Option<KubeLab> {
        let cp = ControlPlane::start_or_skip()?;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let client = rt.block_on(cp.client());
        let lab = Lab::flat(3);
        rt.block_on(async {
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some("podroute-system".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .expect("namespace");
            install_routing(&client, Mode::Vxlan).await;
            create_lab_nodes(&client, &lab).await;
        });
        Some(KubeLab {
            lab,
            rt,
            client,
            kubeconfig: cp.admin_kubeconfig().to_path_buf(),
            logs: tempfile::tempdir().expect("log dir"),
            cp,
        })
    }

    fn agents(&self) -> Vec<Process> {
        self.lab
            .names()
            .iter()
            .map(|n| start_agent(&self.lab, n, &self.kubeconfig))
            .collect()
    }

    fn coordinator(&self) -> Process {
        start_coordinator(
            "coordinator-a",
            &self.kubeconfig,
            &self.coordinator_log(),
            "127.0.0.1:0",
        )
    }

    fn coordinator_log(&self) -> PathBuf {
        self.logs.path().join("coordinator.log")
    }

    /// A client on a fresh connection (after the API server restarted).
    fn reconnect(&mut self) {
        self.client = self.rt.block_on(self.cp.client());
    }

    fn routings(&self) -> Api<ClusterRouting> {
        Api::all(self.client.clone())
    }

    /// The ClusterRouting status; empty while the object is gone.
    fn status(&self) -> ClusterRoutingStatus {
        self.rt
            .block_on(self.routings().get_opt("default"))
            .expect("get ClusterRouting")
            .and_then(|r| r.status)
            .unwrap_or_default()
    }

    /// `podroute.io/applied` and NetworkUnavailable (status, reason) of a Node.
    fn report(&self, node: &str) -> (Option<String>, Option<(String, String)>) {
        self.rt.block_on(reported(&self.client, node))
    }

    /// The generation of the plan `node` reports applied (0 for none).
    fn reported_generation(&self, node: &str) -> u64 {
        self.report(node)
            .0
            .and_then(|a| a.split_once('/')?.0.parse().ok())
            .unwrap_or(0)
    }

    /// Steady on `mode` with every node reporting the plan in force; its
    /// generation.
    fn steady_on(&self, mode: Mode) -> Option<u64> {
        let status = self.status();
        let plan = status.plan?;
        let nodes = status.nodes?;
        let want = format!("{}/{mode}", plan.generation);
        let reported = self
            .lab
            .names()
            .iter()
            .all(|n| self.report(n).0.as_deref() == Some(want.as_str()));
        (status.phase.as_deref() == Some("Steady")
            && plan.route_mode == mode
            && (nodes.applied, nodes.total) == (3, 3)
            && nodes.waiting.is_empty()
            && reported)
            .then_some(plan.generation)
    }

    fn wait_steady_on(&self, mode: Mode, timeout: Duration) -> u64 {
        let mut generation = None;
        wait_for(&format!("steady on {mode}"), timeout, || {
            generation = self.steady_on(mode);
            generation.is_some()
        });
        generation.expect("a generation")
    }

    /// The Switch phase of generation 2, every node but node-3 applied.
    fn wait_switch_waiting_for_node_3(&self) {
        wait_for(
            "Switch, waiting for node-3",
            Duration::from_secs(30),
            || {
                let status = self.status();
                status.phase.as_deref() == Some("Switch")
                    && status
                        .nodes
                        .is_some_and(|n| n.applied == 2 && n.waiting == ["node-3"])
            },
        );
    }

    /// Every node routes each peer's pod CIDR once, through the device of `mode`.
    fn routes_follow(&self, mode: Mode) -> bool {
        let dev = match mode {
            Mode::Vxlan => "dev vxlan.calico",
            Mode::Ipip => "dev tunl0",
            Mode::Native => "dev eth0",
        };
        let nodes = self.lab.topo.nodes();
        nodes.iter().all(|node| {
            let routes = our_routes(&self.lab, &node.name);
            nodes.iter().filter(|p| p.name != node.name).all(|peer| {
                let prefix = format!("{} ", peer.pod_cidr);
                let to_peer: Vec<&String> =
                    routes.iter().filter(|r| r.starts_with(&prefix)).collect();
                to_peer.len() == 1 && to_peer[0].contains(dev)
            })
        })
    }

    /// The coordinator publishes Steady vxlan 1 and every node applies it;
    /// the pods get the VXLAN MTU and talk.
    fn wait_first_steady(&self) {
        assert_eq!(self.wait_steady_on(Mode::Vxlan, Duration::from_secs(30)), 1);
        for node in self.lab.names() {
            self.lab.topo.set_pod_mtu(&node, POD_MTU).expect("pod mtu");
        }
        self.lab.assert_all_pods_talk(POD_MTU);
    }

    fn dump_coordinator_log(&self, why: &str) {
        eprintln!(
            "--- coordinator log ({why}):\n{}",
            std::fs::read_to_string(self.coordinator_log()).unwrap_or_default()
        );
    }
}

fn signal(process: &Process, signal: libc::c_int) {
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(process.0.id() as libc::pid_t, signal) },
        0
    );
}

/// [`PodProbes`] between every pair of pods, tallied per named phase.
struct Probes {
    index: Arc<AtomicUsize>,
    labels: Vec<String>,
    probes: PodProbes,
}

impl Probes {
    fn start(lab: &Lab, first: &str) -> Probes {
        let index = Arc::new(AtomicUsize::new(0));
        Probes {
            probes: PodProbes::start(lab, index.clone()),
            index,
            labels: vec![first.to_string()],
        }
    }

    /// Probes sent from now on count under `label`; returns its index.
    fn phase(&mut self, label: &str) -> usize {
        self.labels.push(label.to_string());
        let index = self.labels.len() - 1;
        self.index.store(index, Ordering::SeqCst);
        index
    }

    /// Stops; every pair probed both ways and not one probe was lost, but in
    /// the `excused` phase (whose losses are only printed).
    fn assert_none_lost(self, excused: Option<usize>) {
        let counts = self.probes.stop();
        let mut report = String::from("probes:\n");
        let mut lost = 0;
        for (i, label) in self.labels.iter().enumerate() {
            let (sent, phase_lost) = counts
                .iter()
                .filter_map(|pair| pair.tallies.get(i))
                .flatten()
                .fold((0, 0), |(s, l), t| (s + t.sent, l + t.lost));
            let note = if Some(i) == excused { " (excused)" } else { "" };
            report += &format!("  {label}: {sent} sent, {phase_lost} lost{note}\n");
            if Some(i) != excused {
                lost += phase_lost;
            }
        }
        for pair in &counts {
            let [a, b] = &pair.nodes;
            report += &format!(
                "  {a} <-> {b}: {} sent, {} lost\n",
                pair.sent(),
                pair.lost()
            );
        }
        eprint!("{report}");
        assert!(
            counts
                .iter()
                .all(|p: &PairCount| p.sent() > 0 && p.arrived.iter().all(|&n| n > 0)),
            "a pair did not probe both ways\n{report}"
        );
        assert_eq!(lost, 0, "probes lost\n{report}");
    }
}

// ---------------------------------------------------------------------------
// 4. The API server gone for 30 s under running agents and a coordinator

#[test]
fn api_server_gone_for_30s_mid_switch_loses_nothing() {
    if !have_root() {
        return;
    }
    let Some(mut kl) = KubeLab::start() else {
        return;
    };
    let _coordinator = kl.coordinator();
    let agents = kl.agents();
    kl.wait_first_steady();
    let mut probes = Probes::start(&kl.lab, "steady vxlan");

    // A switch to native, held in its Switch phase by a paused node-3 agent.
    signal(&agents[2], libc::SIGSTOP);
    let (ok, out) = switch(&kl.kubeconfig, &["--to", "native"]);
    assert!(ok, "switch --to native: {out}");
    probes.phase("switch, node-3 paused");
    kl.wait_switch_waiting_for_node_3();

    // The API server goes; node-3 applies the plan its watch already
    // brought, and cannot report it.
    probes.phase("API server gone");
    kl.cp.kill_apiserver();
    let gone = Instant::now();
    signal(&agents[2], libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));

    // A route deleted by hand comes back at once.
    let victim = format!("{} ", kl.lab.node("node-2").pod_cidr);
    let routed = || {
        our_routes(&kl.lab, "node-1")
            .iter()
            .any(|r| r.starts_with(&victim))
    };
    assert!(routed(), "node-1 has no route to {victim}");
    let repairing = probes.phase("a route deleted by hand (API server gone)");
    kl.lab.ip("node-1", &["route", "del", victim.trim()]);
    let latency = wait_until(
        "the deleted route repaired",
        Duration::from_secs(2),
        Duration::from_millis(1),
        routed,
    );
    println!("repair latency of a deleted route (API server gone): {latency:?}");
    probes.phase("API server gone, after the repair");
    std::thread::sleep(OUTAGE.saturating_sub(gone.elapsed()));

    // It returns: the reports catch up, the coordinator finishes the switch.
    probes.phase("API server back");
    kl.cp.start_apiserver().expect("restart kube-apiserver");
    let back = Instant::now();
    println!("API server away for {:?}", back.duration_since(gone));
    kl.reconnect();
    // Generous: the agents' report retries and the watches' reconnects
    // back off through the outage (both measured and printed).
    wait_for(
        "node-3's report of the Switch plan",
        Duration::from_secs(120),
        || kl.reported_generation("node-3") >= 2,
    );
    let caught_up = back.elapsed();
    // vxlan -> native: Switch at 2, Finalize at 3.
    let generation = kl.wait_steady_on(Mode::Native, Duration::from_secs(120));
    println!(
        "after the API server returned: node-3's report in {:?}, Steady native (generation \
         {generation}) in {:?}",
        caught_up,
        back.elapsed()
    );
    assert_eq!(generation, 3);
    assert!(kl.routes_follow(Mode::Native));

    // The coordinator resumed: a switch started now completes.
    probes.phase("switch native -> vxlan after the return");
    let (ok, out) = switch(&kl.kubeconfig, &["--to", "vxlan", "--wait"]);
    if !ok {
        kl.dump_coordinator_log("switch after the return failed");
    }
    assert!(ok, "switch after the return: {out}");
    kl.wait_steady_on(Mode::Vxlan, Duration::from_secs(30));
    assert!(kl.routes_follow(Mode::Vxlan));
    probes.assert_none_lost(Some(repairing));
    kl.lab.assert_all_pods_talk(POD_MTU);
}

// ---------------------------------------------------------------------------
// 5. The ClusterRouting object deleted mid-switch

#[test]
fn cluster_routing_deleted_mid_switch_loses_nothing() {
    if !have_root() {
        return;
    }
    let Some(kl) = KubeLab::start() else {
        return;
    };
    let _coordinator = kl.coordinator();
    let agents = kl.agents();
    kl.wait_first_steady();
    let mut probes = Probes::start(&kl.lab, "steady vxlan");

    signal(&agents[2], libc::SIGSTOP);
    let (ok, out) = switch(&kl.kubeconfig, &["--to", "native"]);
    assert!(ok, "switch --to native: {out}");
    probes.phase("switch, node-3 paused");
    kl.wait_switch_waiting_for_node_3();

    // Deleted in the Switch phase: the agents keep the plan they hold.
    probes.phase("ClusterRouting deleted");
    let spec = kl
        .rt
        .block_on(kl.routings().get("default"))
        .expect("ClusterRouting")
        .spec;
    let held: Vec<Vec<String>> = ["node-1", "node-2"]
        .iter()
        .map(|n| our_routes(&kl.lab, n))
        .collect();
    kl.rt
        .block_on(kl.routings().delete("default", &DeleteParams::default()))
        .expect("delete ClusterRouting");
    wait_for("ClusterRouting gone", Duration::from_secs(10), || {
        kl.rt
            .block_on(kl.routings().get_opt("default"))
            .expect("get ClusterRouting")
            .is_none()
    });
    signal(&agents[2], libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    for (node, routes) in ["node-1", "node-2"].iter().zip(&held) {
        assert_eq!(
            &our_routes(&kl.lab, node),
            routes,
            "{node} changed its routes without a ClusterRouting"
        );
    }

    // Recreated with the same spec: everything converges.
    probes.phase("ClusterRouting recreated");
    let recreated = Instant::now();
    kl.rt
        .block_on(kl.routings().create(
            &PostParams::default(),
            &ClusterRouting::new("default", spec),
        ))
        .expect("recreate ClusterRouting");
    let generation = kl.wait_steady_on(Mode::Native, Duration::from_secs(60));
    println!(
        "recreated: Steady native generation {generation} after {:?}",
        recreated.elapsed()
    );
    wait_for("native routes everywhere", Duration::from_secs(10), || {
        kl.routes_follow(Mode::Native)
    });
    for node in kl.lab.names() {
        assert_eq!(
            kl.report(&node),
            route_created(&format!("{generation}/native")),
            "{node}"
        );
    }
    probes.assert_none_lost(None);
    kl.lab.assert_all_pods_talk(POD_MTU);
}

// ---------------------------------------------------------------------------
// 6. A Node deleted and re-created with a new pod CIDR

/// Node-3's new pod CIDR (the lab gives node N 10.244.N.0/24) and the
/// address its pod moves to.
const NEW_CIDR: &str = "10.244.30.0/24";
const NEW_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 30, 2);

#[test]
fn node_recreated_with_a_new_pod_cidr_is_routed_and_reported() {
    if !have_root() {
        return;
    }
    let Some(kl) = KubeLab::start() else {
        return;
    };
    // No coordinator: the plan is published as it would publish it, and
    // the records are kept as it keeps them (in a cluster the garbage
    // collector also deletes a record with its Node; none runs here).
    kl.rt
        .block_on(publish_plan(&kl.client, &Plan::steady(Mode::Vxlan, 1)));
    let _records = keep_records(&kl.rt, &kl.client);
    let _agents = kl.agents();
    let (lab, rt) = (&kl.lab, &kl.rt);
    let nodes: Api<Node> = Api::all(kl.client.clone());
    for node in lab.names() {
        wait_for("report", Duration::from_secs(20), || {
            kl.report(&node) == route_created("1/vxlan")
        });
        lab.topo.set_pod_mtu(&node, POD_MTU).expect("pod mtu");
    }
    lab.assert_all_pods_talk(POD_MTU);

    let node_3 = lab.node("node-3");
    let old = format!("{} ", node_3.pod_cidr);
    let new = format!("{NEW_CIDR} ");
    let routes_to = |node: &str, prefix: &str| {
        our_routes(lab, node)
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    };

    rt.block_on(nodes.delete("node-3", &DeleteParams::default()))
        .expect("delete node-3");
    for peer in ["node-1", "node-2"] {
        wait_for("the old route gone", Duration::from_secs(20), || {
            routes_to(peer, &old) == 0
        });
    }
    readdress_pod(lab, "node-3", NEW_POD_IP);

    rt.block_on(nodes.create(
        &PostParams::default(),
        &kube_node("node-3", &node_3.ip.to_string(), NEW_CIDR),
    ))
    .expect("re-create node-3");
    let created = Instant::now();
    for peer in ["node-1", "node-2"] {
        wait_for(
            "a route to the new pod CIDR",
            Duration::from_secs(20),
            || routes_to(peer, &new) == 1 && routes_to(peer, &old) == 0,
        );
        let route = our_routes(lab, peer)
            .into_iter()
            .find(|r| r.starts_with(&new))
            .expect("route");
        assert!(route.contains("dev vxlan.calico"), "{peer}: {route}");
    }
    println!(
        "peers route {NEW_CIDR} {:?} after the re-creation",
        created.elapsed()
    );
    let talk = |from: &str, to: Ipv4Addr| {
        udp_roundtrip(
            &lab.node(from).pods[0].netns,
            to,
            PORT,
            64,
            false,
            Duration::from_secs(2),
        )
        .expect("probe")
    };
    for peer in ["node-1", "node-2"] {
        assert!(talk(peer, NEW_POD_IP), "pod {peer} -> {NEW_POD_IP}");
        assert!(talk("node-3", lab.pod_ip(peer)), "pod node-3 -> {peer}");
    }

    // The contract: the re-created Node is reported again within seconds.
    let limit = Duration::from_secs(10);
    while kl.report("node-3") != route_created("1/vxlan") && created.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = kl.report("node-3");
    println!(
        "node-3 {:?} after its re-creation shows {shown:?}",
        created.elapsed()
    );
    assert_eq!(
        shown,
        route_created("1/vxlan"),
        "the re-created node-3 is not reported again within {limit:?}"
    );
}

/// What [`KubeLab::report`] shows for a node that applied `applied`
/// (`<generation>/<mode>`) and routes.
fn route_created(applied: &str) -> (Option<String>, Option<(String, String)>) {
    (
        Some(applied.to_string()),
        Some(("False".to_string(), "RouteCreated".to_string())),
    )
}

/// Moves the first pod of `node` to `ip`, as a CNI would hand out an
/// address of the node's new pod CIDR: the new address first (a device
/// without an address loses its routes), then the node's route to it.
fn readdress_pod(lab: &Lab, node: &str, ip: Ipv4Addr) {
    let pod = &lab.node(node).pods[0];
    let pod_ns = lab.topo.netns(&pod.netns).expect("pod netns");
    let (new, old) = (format!("{ip}/32"), format!("{}/32", pod.ip));
    pod_ns
        .ip(&["addr", "add", &new, "dev", "eth0"])
        .expect("new pod address");
    pod_ns
        .ip(&["addr", "del", &old, "dev", "eth0"])
        .expect("old pod address");
    let veth = pod.host_veth.as_str();
    lab.ip(node, &["route", "add", &new, "dev", veth, "scope", "link"]);
    lab.ip(node, &["route", "del", &old, "dev", veth]);
}
