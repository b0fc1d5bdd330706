//! The coordinator against a real kube-apiserver: 3 agents (processes with
//! `--netns`, as in agent_kube.rs) and `podroute coordinator` processes.
//!
//! - `podroute switch --to native --wait` moves the cluster vxlan -> native
//!   while the pods of every node pair keep probing each other (sequenced
//!   UDP, both directions, the whole switch long: not one probe lost);
//!   every Node ends on the final generation;
//! - the coordinator is killed in the middle of the switch back to vxlan and
//!   restarted: the switch completes from the status it wrote;
//! - a second coordinator waits on the Lease and takes over when the first
//!   one is killed; it drives the next switch;
//! - each replica's /readyz and /metrics say whether it leads and how far
//!   the rollout is.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use podroute::api::Mode;
use podroute::api::{ClusterRouting, ClusterRoutingStatus};
use tokio::runtime::Handle;

use crate::kube_support::{
    create_lab_nodes, install_routing, kube_test, start_agent, start_coordinator, switch, wait_for,
    PairCount, PodProbes, Process,
};
use crate::support::{http_get, Family, Lab};

/// The smallest MTU of vxlan over both families: IPv6 costs 70 bytes, IPv4 50.
const POD_MTU: u32 = 1430;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Waits until the replica is ready and its /metrics holds every `line`.
fn wait_for_metrics(port: u16, lines: &[&str]) {
    let mut last = String::new();
    let ok = (0..200).any(|_| {
        let ready = http_get(port, "/readyz").is_some_and(|(code, _)| code == 200);
        last = http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let found = ready && lines.iter().all(|l| last.lines().any(|m| m == *l));
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(
        ok,
        "port {port}: not ready or without {lines:?}; /metrics:\n{last}"
    );
}

async fn install(client: &Client, lab: &Lab) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("podroute-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    install_routing(client, Mode::Vxlan).await;
    create_lab_nodes(client, lab).await;
}

struct Cluster<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: Client,
    lab: &'a Lab,
}

impl Cluster<'_> {
    fn status(&self) -> ClusterRoutingStatus {
        let api: Api<ClusterRouting> = Api::all(self.client.clone());
        self.rt
            .block_on(api.get("default"))
            .expect("get ClusterRouting")
            .status
            .unwrap_or_default()
    }

    fn applied(&self) -> Vec<Option<String>> {
        let api: Api<Node> = Api::all(self.client.clone());
        self.lab
            .names()
            .iter()
            .map(|n| {
                self.rt
                    .block_on(api.get(n))
                    .expect("node")
                    .metadata
                    .annotations
                    .and_then(|a| a.get("podroute.io/applied").cloned())
            })
            .collect()
    }

    fn lease_holder(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "podroute-system");
        self.rt
            .block_on(api.get_opt("podroute-coordinator"))
            .expect("lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    /// Steady on `mode` with every node holding the plan in force: the
    /// annotations end at the final generation.
    fn assert_steady_on(&self, mode: Mode) -> u64 {
        let status = self.status();
        assert_eq!(status.phase.as_deref(), Some("Steady"), "{status:?}");
        let plan = status.plan.expect("plan");
        assert_eq!(plan.route_mode, mode);
        let want = Some(format!("{}/{mode}", plan.generation));
        assert_eq!(self.applied(), vec![want; 3]);
        let nodes = status.nodes.expect("nodes");
        assert_eq!((nodes.applied, nodes.total), (3, 3));
        assert!(nodes.waiting.is_empty(), "{nodes:?}");
        plan.generation
    }

    /// Run `body` (a switch, up to Steady) while the pods of every pair of
    /// nodes keep probing each other, then assert not one probe was lost.
    fn under_probes<T>(&self, what: &str, body: impl FnOnce() -> T) -> T {
        let watch = PhaseWatch::start(self.rt.handle().clone(), self.client.clone());
        let probes = PodProbes::start(self.lab, watch.index.clone());
        let result = body();
        let counts = probes.stop();
        let families: Vec<usize> = self
            .lab
            .families()
            .into_iter()
            .map(|f| if f == Family::V4 { 0 } else { 1 })
            .collect();
        assert_no_probe_lost(what, &counts, &watch.stop(), &families);
        result
    }
}

/// The coordinator's generation and phase, polled while probes run: each
/// change is a new phase index, so a loss can be placed in the switch.
struct PhaseWatch {
    index: Arc<AtomicUsize>,
    labels: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PhaseWatch {
    fn start(rt: Handle, client: Client) -> PhaseWatch {
        let api: Api<ClusterRouting> = Api::all(client);
        let first = read_phase(&rt, &api).unwrap_or_else(|| "unknown".into());
        let index = Arc::new(AtomicUsize::new(0));
        let labels = Arc::new(Mutex::new(vec![first]));
        let stop = Arc::new(AtomicBool::new(false));
        let (i, l, s) = (index.clone(), labels.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if let Some(label) = read_phase(&rt, &api) {
                    let mut labels = l.lock().expect("labels");
                    if labels.last() != Some(&label) {
                        labels.push(label);
                        i.store(labels.len() - 1, Ordering::SeqCst);
                    }
                }
            }
        });
        PhaseWatch {
            index,
            labels,
            stop,
            thread: Some(thread),
        }
    }

    /// The label of each phase index.
    fn stop(mut self) -> Vec<String> {
        self.halt();
        self.labels.lock().expect("labels").clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// "<phase> generation <g> <mode>"; `None` when the read failed.
fn read_phase(rt: &Handle, api: &Api<ClusterRouting>) -> Option<String> {
    let status = rt.block_on(api.get("default")).ok()?.status?;
    let phase = status.phase.unwrap_or_else(|| "-".into());
    Some(match status.plan {
        Some(plan) => format!("{phase} generation {} {}", plan.generation, plan.route_mode),
        None => phase,
    })
}

/// Every pair sent both ways and lost nothing; prints the counts.
fn assert_no_probe_lost(what: &str, counts: &[PairCount], phases: &[String], families: &[usize]) {
    let mut report = format!("probes during {what}:\n");
    for pair in counts {
        let [a, b] = &pair.nodes;
        let (v4, v6) = (pair.in_family(0), pair.in_family(1));
        report += &format!(
            "  {a} <-> {b}: {} sent, {} lost (IPv4 {}/{}, IPv6 {}/{}); arrived at {a} {}, at {b} {}\n",
            pair.sent(),
            pair.lost(),
            v4.sent,
            v4.lost,
            v6.sent,
            v6.lost,
            pair.arrived[0],
            pair.arrived[1]
        );
    }
    for (i, label) in phases.iter().enumerate() {
        let (sent, lost) = counts
            .iter()
            .filter_map(|pair| pair.tallies.get(i))
            .flatten()
            .fold((0, 0), |(s, l), t| (s + t.sent, l + t.lost));
        report += &format!("  {label}: {sent} sent, {lost} lost\n");
    }
    eprint!("{report}");
    for pair in counts {
        assert!(
            pair.sent() > 0 && pair.arrived.iter().all(|&n| n > 0),
            "{:?} did not probe both ways\n{report}",
            pair.nodes
        );
        for &family in families {
            assert!(
                pair.in_family(family).sent > 0,
                "{:?} sent nothing in family {family}\n{report}",
                pair.nodes
            );
        }
    }
    let lost: u64 = counts.iter().map(PairCount::lost).sum();
    assert_eq!(lost, 0, "probes lost\n{report}");
}

#[test]
fn coordinator_on_a_real_api_server() {
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    // Dual-stack: the switch must hold for both families at once.
    let lab = Lab::dual(3);
    rt.block_on(install(&client, &lab));
    let kubeconfig: PathBuf = cp.admin_kubeconfig().to_path_buf();
    let logs = tempfile::tempdir().expect("log dir");
    let log_a = logs.path().join("coordinator-a.log");
    let log_b = logs.path().join("coordinator-b.log");
    let cluster = Cluster {
        rt: &rt,
        client: client.clone(),
        lab: &lab,
    };
    let dump = |what: &str| {
        for log in [&log_a, &log_b] {
            eprintln!(
                "--- {} ({what}):\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    };

    let (port_a, port_b) = (free_port(), free_port());
    let mut coordinator_a = start_coordinator(
        "coordinator-a",
        &kubeconfig,
        &log_a,
        &format!("127.0.0.1:{port_a}"),
    );
    let agents: Vec<Process> = lab
        .names()
        .iter()
        .map(|n| start_agent(&lab, n, &kubeconfig))
        .collect();

    // A fresh cluster: the coordinator publishes Steady vxlan, generation 1.
    // An agent's annotation and its condition are two writes, so a status
    // can count a node applied while it still waits for its condition.
    wait_for("steady vxlan", Duration::from_secs(30), || {
        cluster.applied() == vec![Some("1/vxlan".to_string()); 3]
            && cluster
                .status()
                .nodes
                .is_some_and(|n| n.applied == 3 && n.waiting.is_empty())
    });
    assert_eq!(cluster.assert_steady_on(Mode::Vxlan), 1);
    assert_eq!(cluster.lease_holder().as_deref(), Some("coordinator-a"));
    wait_for_metrics(
        port_a,
        &[
            "podroute_coordinator_leader 1",
            "podroute_coordinator_plan_generation 1",
            "podroute_coordinator_nodes_in_scope 3",
            "podroute_coordinator_nodes_applied 3",
            "podroute_coordinator_blocked 0",
        ],
    );
    for node in lab.names() {
        lab.topo.set_pod_mtu(&node, POD_MTU).expect("pod mtu");
    }
    lab.assert_all_pods_talk(POD_MTU);

    // 1. vxlan -> native with --wait, under traffic. node-3's agent is held
    // until the others hold the Switch plan, so the progress must show the
    // applied count move within the phase.
    let held = agents[2].0.id() as libc::pid_t;
    let (ok, out) = cluster.under_probes("vxlan -> native", || {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(held, libc::SIGSTOP) }, 0);
        std::thread::scope(|s| {
            let release = s.spawn(|| {
                let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    wait_for(
                        "Switch, waiting for node-3",
                        Duration::from_secs(30),
                        || {
                            let status = cluster.status();
                            status.phase.as_deref() == Some("Switch")
                                && status
                                    .nodes
                                    .is_some_and(|n| n.applied == 2 && n.waiting == ["node-3"])
                        },
                    )
                }));
                // SAFETY: as above; released whatever happened.
                assert_eq!(unsafe { libc::kill(held, libc::SIGCONT) }, 0);
                if let Err(panic) = seen {
                    std::panic::resume_unwind(panic);
                }
            });
            let result = switch(&kubeconfig, &["--to", "native", "--wait"]);
            release.join().expect("node-3 held, then released");
            result
        })
    });
    if !ok {
        dump("switch to native failed");
    }
    assert!(ok, "switch --to native --wait failed:\n{out}");
    assert!(out.contains("Finalize"), "{out}");
    // A progress line is "<elapsed>s  <phase>  generation <g>  <a>/<t> nodes applied ...".
    let switch_lines: Vec<&str> = out
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some("Switch"))
        .collect();
    assert!(
        switch_lines.iter().any(|l| l.contains("0/3 nodes applied"))
            && switch_lines
                .iter()
                .any(|l| l.contains("2/3 nodes applied  waiting: node-3")),
        "the Switch progress did not follow the applied count:\n{out}"
    );
    // vxlan -> native: Switch at 2, Finalize at 3.
    assert_eq!(cluster.assert_steady_on(Mode::Native), 3);
    lab.assert_all_pods_talk(POD_MTU);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let reasons: Vec<String> = rt
        .block_on(events.list(&ListParams::default()))
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("ClusterRouting"))
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["PlanPublished", "SwitchStarted", "SwitchCompleted"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }

    // 2. native -> vxlan, the coordinator killed in the middle and restarted.
    // node-3's agent is paused so the switch holds at Prepare.
    let paused = agents[2].0.id() as libc::pid_t;
    let (ok, out) = cluster.under_probes("native -> vxlan, the coordinator restarted", || {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(paused, libc::SIGSTOP) }, 0);
        let (ok, _) = switch(&kubeconfig, &["--to", "vxlan"]);
        assert!(ok);
        let at_prepare = |s: &ClusterRoutingStatus| {
            s.phase.as_deref() == Some("Prepare")
                && s.plan.as_ref().is_some_and(|p| p.generation == 4)
                && s.nodes
                    .as_ref()
                    .is_some_and(|n| n.applied == 2 && n.waiting == ["node-3"])
        };
        wait_for(
            "Prepare, waiting for node-3",
            Duration::from_secs(20),
            || at_prepare(&cluster.status()),
        );
        let _ = coordinator_a.0.kill();
        let _ = coordinator_a.0.wait();
        coordinator_a = start_coordinator(
            "coordinator-a",
            &kubeconfig,
            &log_a,
            &format!("127.0.0.1:{port_a}"),
        );
        // It resumes where it was: same plan, still waiting for node-3.
        std::thread::sleep(Duration::from_secs(3));
        let resumed = cluster.status();
        assert!(at_prepare(&resumed), "{resumed:?}");
        assert_eq!(cluster.lease_holder().as_deref(), Some("coordinator-a"));
        lab.assert_all_pods_talk(POD_MTU);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(paused, libc::SIGCONT) }, 0);
        switch(&kubeconfig, &["--to", "vxlan", "--wait"])
    });
    if !ok {
        dump("switch back to vxlan failed");
    }
    assert!(ok, "switch back to vxlan after a restart failed:\n{out}");
    // native -> vxlan: Prepare at 4, Switch at 5 (Finalize equals Switch).
    assert_eq!(cluster.assert_steady_on(Mode::Vxlan), 5);
    lab.assert_all_pods_talk(POD_MTU);

    // 3. A second coordinator waits on the Lease, then takes over.
    let coordinator_b = start_coordinator(
        "coordinator-b",
        &kubeconfig,
        &log_b,
        &format!("127.0.0.1:{port_b}"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cluster.lease_holder().as_deref(), Some("coordinator-a"));
    // The standby is ready (it reaches the API server) but does not lead.
    wait_for_metrics(
        port_b,
        &[
            "podroute_coordinator_leader 0",
            "podroute_coordinator_plan_generation 0",
        ],
    );
    let (ok, out) = cluster.under_probes("vxlan -> native, the leader handed over", || {
        let _ = coordinator_a.0.kill();
        let _ = coordinator_a.0.wait();
        wait_for(
            "coordinator-b takes the Lease",
            Duration::from_secs(30),
            || cluster.lease_holder().as_deref() == Some("coordinator-b"),
        );
        switch(&kubeconfig, &["--to", "native", "--wait"])
    });
    if !ok {
        dump("switch under coordinator-b failed");
    }
    assert!(ok, "switch under the new leader failed:\n{out}");
    assert_eq!(cluster.assert_steady_on(Mode::Native), 7);
    lab.assert_all_pods_talk(POD_MTU);
    wait_for_metrics(
        port_b,
        &[
            "podroute_coordinator_leader 1",
            "podroute_coordinator_plan_generation 7",
        ],
    );

    // 4. A node that does not converge within nodeTimeout: --wait ends
    // Blocked with a non-zero exit; --abort takes the cluster back.
    let routings: Api<ClusterRouting> = Api::all(client.clone());
    rt.block_on(routings.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"rollout": {"nodeTimeout": 2}}})),
    ))
    .expect("nodeTimeout");
    let (ok, out) = cluster.under_probes("a blocked switch, aborted", || {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(paused, libc::SIGSTOP) }, 0);
        let (ok, out) = switch(&kubeconfig, &["--to", "vxlan", "--wait"]);
        assert!(!ok, "a blocked switch exited 0:\n{out}");
        let blocked = cluster.status();
        assert_eq!(blocked.phase.as_deref(), Some("Blocked"), "{blocked:?}");
        assert!(
            blocked.blocked.contains(&"node-3".to_string()),
            "{blocked:?}"
        );
        assert_eq!(blocked.from, Some(Mode::Native));
        wait_for_metrics(port_b, &["podroute_coordinator_blocked 1"]);
        // A generous timeout again, so a slow machine does not block the abort.
        rt.block_on(routings.patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"rollout": {"nodeTimeout": 300}}})),
        ))
        .expect("nodeTimeout");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(paused, libc::SIGCONT) }, 0);
        switch(&kubeconfig, &["--abort", "--wait"])
    });
    assert!(ok, "abort failed:\n{out}");
    let generation = cluster.assert_steady_on(Mode::Native);
    assert!(generation > 7);
    lab.assert_all_pods_talk(POD_MTU);

    // status and nodes read back.
    let (ok, out) = switch(&kubeconfig, &["status"]);
    assert!(ok && out.contains("Steady"), "{out}");
    let nodes = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["nodes", "-o", "json", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .expect("podroute nodes");
    assert!(nodes.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&nodes.stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["applied"], format!("{generation}/native"), "{row}");
        assert_eq!(row["networkUnavailable"], "False", "{row}");
        assert_eq!(row["state"], "ok", "{row}");
    }

    // SIGTERM: the leader gives the Lease back at once.
    let pid = coordinator_b.0.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for("the Lease released", Duration::from_secs(10), || {
        cluster.lease_holder().is_none()
    });
}

/// An IPv6-only cluster: Nodes with IPv6 InternalIPs and pod CIDRs only.
/// The coordinator switches it vxlan -> native -> vxlan under continuous
/// IPv6 probes without losing one, and no node holds IPv4 state of ours.
#[test]
fn an_ipv6_only_cluster_switches_on_a_real_api_server() {
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    let lab = Lab::v6_only(3);
    rt.block_on(install(&client, &lab));
    let kubeconfig: PathBuf = cp.admin_kubeconfig().to_path_buf();
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("coordinator.log");
    let cluster = Cluster {
        rt: &rt,
        client: client.clone(),
        lab: &lab,
    };
    let _coordinator = start_coordinator("coordinator", &kubeconfig, &log, "127.0.0.1:0");
    let _agents: Vec<Process> = lab
        .names()
        .iter()
        .map(|n| start_agent(&lab, n, &kubeconfig))
        .collect();
    let dump = || {
        eprintln!(
            "--- coordinator:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    wait_for("steady vxlan", Duration::from_secs(30), || {
        cluster.applied() == vec![Some("1/vxlan".to_string()); 3]
    });
    for node in lab.names() {
        lab.topo.set_pod_mtu(&node, POD_MTU).expect("pod mtu");
    }
    lab.assert_all_pods_talk(POD_MTU);
    for to in ["native", "vxlan"] {
        let (ok, out) = cluster.under_probes(&format!("IPv6-only -> {to}"), || {
            switch(&kubeconfig, &["--to", to, "--wait"])
        });
        if !ok {
            dump();
        }
        assert!(ok, "switch to {to}: {out}");
    }
    for node in lab.names() {
        let v4 = lab.ip(&node, &["-4", "route", "show", "proto", "91"]);
        assert!(v4.trim().is_empty(), "{node}: IPv4 routes of ours: {v4}");
        let links = lab.ip(&node, &["link", "show"]);
        assert!(!links.contains("vxlan.calico:"), "{node}: {links}");
    }
}
