//! Agents beside the real kube-controller-manager (KCM) of the testenv
//! release, running its node IPAM and node lifecycle controllers:
//!
//! - Nodes are created as a kubelet registers them, without a podCIDR and
//!   with NetworkUnavailable=True; the node IPAM gives each a /24 of
//!   10.244.0.0/22 and the lifecycle controller taints it
//!   `node.kubernetes.io/network-unavailable:NoSchedule`;
//! - the coordinator and one agent per lab node start: KCM's podCIDRs are
//!   routed (kernel read back, pod-to-pod packets), the taints go once the
//!   agents report, and none comes back through `podroute switch --to native`;
//! - issue 11 (contract): a condition overwritten to True is restored within
//!   seconds and the taint goes again; a Node deleted and re-created (KCM
//!   gives it a new podCIDR) gets its annotation and condition back.
//!
//! The kubelets are simulated: Ready=True at registration and a Lease in
//! kube-node-lease renewed every 2 s (the heartbeat the lifecycle controller
//! reads); `--node-monitor-grace-period=20s` makes a missing heartbeat show
//! (an unreachable taint) within the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use podroute::api::Mode;
use podroute::api::{ClusterRouting, ClusterRoutingStatus};
use serde_json::json;

use crate::kube_env::{tail, ControlPlane, ControllerManager};
use crate::kube_support::{install_routing, start_coordinator, switch, wait_for, WatchedAgent};
use crate::support::{have_root, our_routes, Lab};

/// Four /24s: kcm-first's, then the lab's three (10.244.1-3.0/24). Small, so
/// KCM's allocation cursor comes round within four registrations (below).
const CLUSTER_CIDR: &str = "10.244.0.0/22";
const TAINT: &str = "node.kubernetes.io/network-unavailable";
const POD_MTU: u32 = 1450;
/// The contract's "within seconds" for a report the agent must restore.
const RESTORE: Duration = Duration::from_secs(10);

#[test]
fn agents_beside_the_real_controller_manager() {
    if !have_root() {
        return;
    }
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let Some(kcm) = cp.controller_manager_or_skip(
        CLUSTER_CIDR,
        &[
            "--node-monitor-grace-period=20s",
            "--node-monitor-period=2s",
        ],
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(cp.client());
    let lab = Lab::flat(3);
    let k = Kube {
        rt: &rt,
        client: client.clone(),
    };
    let kubelets = Kubelets::start(&rt, client.clone());
    let mut diagnostics = Diagnostics {
        kcm: &kcm,
        coordinator_log: cp.dir().join("coordinator.log"),
        agents: Vec::new(),
    };

    // 1. The node IPAM hands out the free /24s of the cluster CIDR in order,
    // from 10.244.0.0/24 on. A Node that is no lab node takes that one and
    // goes again (the allocator's next candidate moves on), so node-N gets
    // 10.244.N.0/24, where the lab put its pods. It also proves both
    // controllers run: a podCIDR and the taint.
    let started = Instant::now();
    k.create(&registering_node("kcm-first", "10.250.0.250"));
    wait_for(
        "kcm-first: a podCIDR and the taint",
        Duration::from_secs(30),
        || k.pod_cidr("kcm-first").is_some() && k.tainted("kcm-first"),
    );
    println!(
        "kcm-first: podCIDR {:?} and taint after {:?}",
        k.pod_cidr("kcm-first"),
        started.elapsed()
    );
    k.delete("kcm-first");
    for name in lab.names() {
        let node = lab.node(&name);
        kubelets.add(&name);
        // Under load KCM can allocate twice for one Node (an update event
        // before its own patch is in its cache): it releases the spare /24
        // but its cursor has moved past it, so the next Node skips the free
        // one. Registering the Node again walks the cursor round the /22.
        let want = Some(node.pod_cidr.to_string());
        let mut assigned = None;
        for attempt in 1..=8 {
            let created = Instant::now();
            k.create(&registering_node(&name, &node.ip.to_string()));
            wait_for("a podCIDR from KCM", Duration::from_secs(30), || {
                k.pod_cidr(&name).is_some()
            });
            assigned = k.pod_cidr(&name);
            println!(
                "{name}: KCM assigned {assigned:?} in {:?} (registration {attempt})",
                created.elapsed()
            );
            if assigned == want {
                break;
            }
            k.delete(&name);
        }
        assert_eq!(
            assigned, want,
            "{name}: KCM's podCIDR is not the lab's after 8 registrations"
        );
        wait_for(
            "KCM's network-unavailable taint",
            Duration::from_secs(30),
            || k.tainted(&name),
        );
    }

    // 2. The coordinator and the agents. The taints go once they report.
    rt.block_on(async {
        crate::kube_env::ensure_namespace(&client, "podroute-system").await;
        install_routing(&client, Mode::Vxlan).await;
    });
    let kubeconfig = cp.admin_kubeconfig().to_path_buf();
    let _coordinator = start_coordinator(
        "coordinator-kcm",
        &kubeconfig,
        &diagnostics.coordinator_log,
        "127.0.0.1:0",
    );
    let agents_started = Instant::now();
    for name in lab.names() {
        diagnostics
            .agents
            .push((name.clone(), WatchedAgent::start(&lab, &name, &kubeconfig)));
    }
    let untainted = wait_each(&lab.names(), Duration::from_secs(30), |n| !k.tainted(n));
    for (name, after) in &untainted {
        println!("{name}: taint gone {after:?} after the agents started");
    }
    wait_for(
        "steady vxlan, every node applied",
        Duration::from_secs(30),
        || k.steady_applied(&lab, "1/vxlan"),
    );
    println!(
        "steady vxlan, every node reported: {:?} after the agents started",
        agents_started.elapsed()
    );
    assert_routed(&lab, &k, Mode::Vxlan);
    for name in lab.names() {
        lab.topo.set_pod_mtu(&name, POD_MTU).expect("pod mtu");
    }
    lab.assert_all_pods_talk(POD_MTU);

    // 3. vxlan -> native: no taint, no NetworkUnavailable=True on the way.
    let watch = TaintWatch::start(&rt, client.clone(), lab.names());
    let switch_started = Instant::now();
    let (ok, out) = switch(&kubeconfig, &["--to", "native", "--wait"]);
    assert!(ok, "switch --to native --wait failed:\n{out}");
    let generation = k.routing_status().plan.expect("plan").generation;
    let applied = format!("{generation}/native");
    wait_for(
        "steady native, every node applied",
        Duration::from_secs(30),
        || k.steady_applied(&lab, &applied),
    );
    println!("switch to native: {:?}", switch_started.elapsed());
    let seen = watch.stop();
    assert!(
        seen.is_empty(),
        "a taint or NetworkUnavailable=True during the switch: {seen:?}"
    );
    assert_routed(&lab, &k, Mode::Native);
    lab.assert_all_pods_talk(POD_MTU);

    // 4. Issue 11 (contract). Both parts run; failures are collected.
    let mut failures = Vec::new();
    if let Err(e) = overwritten_condition_restored(&k, "node-2") {
        failures.push(e);
    }
    if let Err(e) = recreated_node_reported(&k, &lab, "node-3", &applied) {
        failures.push(e);
    }

    // The simulated kubelets kept every Node healthy for KCM throughout. (A
    // re-created Node starts with the not-ready taint the API server's
    // TaintNodesByCondition admission puts on every new Node; the lifecycle
    // controller lifts it on its next pass.)
    for name in lab.names() {
        let healthy = || {
            !k.taint_keys(&name)
                .iter()
                .any(|t| t.contains("unreachable") || t.contains("not-ready"))
        };
        assert!(
            poll(Duration::from_secs(20), healthy).is_some(),
            "{name}: {:?}: the kubelet simulation did not keep the Node ready",
            k.taint_keys(&name)
        );
    }
    assert!(
        failures.is_empty(),
        "issue 11 contract:\n- {}",
        failures.join("\n- ")
    );
}

/// A cloud route controller (or an old CNI) sets NetworkUnavailable=True on
/// a routed node: the agent restores its condition and KCM lifts the taint.
fn overwritten_condition_restored(k: &Kube, name: &str) -> Result<(), String> {
    let now = serde_json::to_value(Time(Timestamp::now())).expect("time");
    let patch = json!({"status": {"conditions": [{
        "type": "NetworkUnavailable",
        "status": "True",
        "reason": "NoRouteCreated",
        "message": "overwritten by the test, as a cloud route controller would",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }]}});
    let nodes: Api<Node> = Api::all(k.client.clone());
    k.rt.block_on(nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)))
        .expect("overwrite NetworkUnavailable");
    let overwritten = Instant::now();
    let tainted = poll(Duration::from_secs(3), || k.tainted(name));
    println!("{name}: condition overwritten; KCM's taint seen: {tainted:?}");
    let restored = poll(RESTORE, || {
        k.condition(name) == Some(("False".into(), "RouteCreated".into()))
    })
    .ok_or_else(|| {
        format!(
            "{name}: NetworkUnavailable overwritten to True was not restored within {RESTORE:?} (now {:?}, taints {:?})",
            k.condition(name),
            k.taint_keys(name)
        )
    })?;
    println!("{name}: condition restored {restored:?} after the overwrite");
    let gone = poll(RESTORE, || !k.tainted(name)).ok_or_else(|| {
        format!("{name}: KCM's taint still there {RESTORE:?} after the condition came back")
    })?;
    println!(
        "{name}: taint gone {gone:?} after the restore ({:?} after the overwrite)",
        overwritten.elapsed()
    );
    Ok(())
}

/// A Node deleted and registered again under a running agent: KCM gives it
/// a new podCIDR, the peers route it, and the agent reports it again.
fn recreated_node_reported(k: &Kube, lab: &Lab, name: &str, applied: &str) -> Result<(), String> {
    let old = k.pod_cidr(name).expect("podCIDR");
    let ip = lab.node(name).ip.to_string();
    let peers: Vec<String> = lab.names().into_iter().filter(|n| n != name).collect();
    k.delete(name);
    wait_for(
        "peers drop the deleted node's route",
        Duration::from_secs(20),
        || peers.iter().all(|p| !has_route(lab, p, &old)),
    );
    let created = Instant::now();
    k.create(&registering_node(name, &ip));
    wait_for("a new podCIDR from KCM", Duration::from_secs(30), || {
        k.pod_cidr(name).is_some()
    });
    let new = k.pod_cidr(name).expect("podCIDR");
    wait_for(
        "peers route the new podCIDR",
        Duration::from_secs(20),
        || {
            peers.iter().all(|p| {
                route_line(lab, p, &new).is_some_and(|r| r.contains(&format!("via {ip} dev eth0")))
            })
        },
    );
    println!(
        "{name}: re-created, KCM gave {new} (was {old}); peers route it {:?} after the create",
        created.elapsed()
    );
    let reported = poll(RESTORE, || {
        k.applied(name).as_deref() == Some(applied)
            && k.condition(name) == Some(("False".into(), "RouteCreated".into()))
    })
    .ok_or_else(|| {
        format!(
            "{name}: re-created Node not reported within {RESTORE:?}: annotation {:?}, condition {:?}",
            k.applied(name),
            k.condition(name)
        )
    })?;
    println!("{name}: reported again {reported:?} after it was re-created");
    let gone = poll(RESTORE, || !k.tainted(name))
        .ok_or_else(|| format!("{name}: KCM's taint still there after the report"))?;
    println!("{name}: taint gone {gone:?} after the report");
    poll(RESTORE, || {
        k.routing_status()
            .nodes
            .is_some_and(|n| !n.waiting.iter().any(|w| w == name))
    })
    .ok_or_else(|| format!("{name}: the coordinator still waits for the re-created Node"))?;
    Ok(())
}

/// A Node as a kubelet registers it before the network is up: an
/// InternalIP, Ready=True, NetworkUnavailable=True, and no podCIDR.
fn registering_node(name: &str, ip: &str) -> Node {
    let now = Time(Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(format!("{reason} (the test's kubelet)")),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            conditions: Some(vec![
                condition("Ready", "True", "KubeletReady"),
                condition("NetworkUnavailable", "True", "NoRouteCreated"),
            ]),
            ..Default::default()
        }),
    }
}

/// Every node routes every peer's podCIDR (as KCM assigned it) the way
/// `mode` does.
fn assert_routed(lab: &Lab, k: &Kube, mode: Mode) {
    for name in lab.names() {
        for peer in lab.names().into_iter().filter(|p| *p != name) {
            let cidr = k.pod_cidr(&peer).expect("podCIDR");
            let want = match mode {
                Mode::Native => format!("via {} dev eth0", lab.node(&peer).ip),
                _ => "dev vxlan.calico".to_string(),
            };
            let what = format!("{name}: our route {cidr} {want} ({peer}'s podCIDR)");
            wait_for(&what, Duration::from_secs(10), || {
                route_line(lab, &name, &cidr).is_some_and(|l| l.contains(&want))
            });
        }
    }
}

/// Our route for `cidr` on `node`, if any.
fn route_line(lab: &Lab, node: &str, cidr: &str) -> Option<String> {
    our_routes(lab, node)
        .into_iter()
        .find(|r| r.starts_with(&format!("{cidr} ")))
}

fn has_route(lab: &Lab, node: &str, cidr: &str) -> bool {
    route_line(lab, node, cidr).is_some()
}

/// Polls `check` every 20 ms for up to `timeout`: how long it took, or
/// `None` (for the checks whose failure is collected, not raised at once).
fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `check` holds for every name; when it first did for each.
fn wait_each(
    names: &[String],
    timeout: Duration,
    mut check: impl FnMut(&str) -> bool,
) -> BTreeMap<String, Duration> {
    let start = Instant::now();
    let mut done = BTreeMap::new();
    wait_for("every node", timeout, || {
        for name in names {
            if !done.contains_key(name) && check(name) {
                done.insert(name.clone(), start.elapsed());
            }
        }
        done.len() == names.len()
    });
    done
}

/// Blocking reads and writes through the admin client.
struct Kube<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: Client,
}

impl Kube<'_> {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn get(&self, name: &str) -> Option<Node> {
        self.rt
            .block_on(self.nodes().get_opt(name))
            .expect("get node")
    }

    fn create(&self, node: &Node) {
        self.rt
            .block_on(self.nodes().create(&PostParams::default(), node))
            .expect("create node");
    }

    fn delete(&self, name: &str) {
        self.rt
            .block_on(self.nodes().delete(name, &DeleteParams::default()))
            .expect("delete node");
        wait_for("the Node gone", Duration::from_secs(10), || {
            self.get(name).is_none()
        });
    }

    fn pod_cidr(&self, name: &str) -> Option<String> {
        self.get(name)?.spec?.pod_cidr
    }

    fn taint_keys(&self, name: &str) -> Vec<String> {
        self.get(name)
            .and_then(|n| n.spec)
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    fn tainted(&self, name: &str) -> bool {
        self.taint_keys(name)
            .contains(&format!("{TAINT}:NoSchedule"))
    }

    /// NetworkUnavailable's (status, reason).
    fn condition(&self, name: &str) -> Option<(String, String)> {
        network_unavailable(&self.get(name)?)
    }

    fn applied(&self, name: &str) -> Option<String> {
        self.get(name)?
            .metadata
            .annotations?
            .get("podroute.io/applied")
            .cloned()
    }

    fn routing_status(&self) -> ClusterRoutingStatus {
        let api: Api<ClusterRouting> = Api::all(self.client.clone());
        self.rt
            .block_on(api.get("default"))
            .expect("get ClusterRouting")
            .status
            .unwrap_or_default()
    }

    /// Steady, every lab node annotated `applied` with its condition False,
    /// and the coordinator waiting for nobody.
    fn steady_applied(&self, lab: &Lab, applied: &str) -> bool {
        let status = self.routing_status();
        status.phase.as_deref() == Some("Steady")
            && status
                .nodes
                .is_some_and(|n| n.applied == 3 && n.waiting.is_empty())
            && lab.names().iter().all(|n| {
                self.applied(n).as_deref() == Some(applied)
                    && self.condition(n) == Some(("False".into(), "RouteCreated".into()))
            })
    }
}

fn network_unavailable(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "NetworkUnavailable")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// The kubelets' heartbeat: a Lease per node in kube-node-lease, renewed
/// every 2 s by a task on the test's runtime (stopped with it).
struct Kubelets {
    names: Arc<Mutex<BTreeSet<String>>>,
}

impl Kubelets {
    fn start(rt: &tokio::runtime::Runtime, client: Client) -> Kubelets {
        let names = Arc::new(Mutex::new(BTreeSet::new()));
        let renewing = names.clone();
        rt.spawn(async move {
            let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
            let params = PatchParams::apply("podroute-test-kubelet").force();
            loop {
                let current: Vec<String> =
                    renewing.lock().expect("names").iter().cloned().collect();
                for name in current {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some("kube-node-lease".into()),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(name.clone()),
                            lease_duration_seconds: Some(40),
                            renew_time: Some(MicroTime(Timestamp::now())),
                            ..Default::default()
                        }),
                    };
                    if let Err(e) = leases.patch(&name, &params, &Patch::Apply(&lease)).await {
                        eprintln!("kubelet {name}: lease renewal failed: {e}");
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        Kubelets { names }
    }

    fn add(&self, name: &str) {
        self.names.lock().expect("names").insert(name.into());
    }
}

/// Records every time a watched Node shows the taint or
/// NetworkUnavailable=True (polled every 50 ms).
struct TaintWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl TaintWatch {
    fn start(rt: &tokio::runtime::Runtime, client: Client, names: Vec<String>) -> TaintWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, found, handle) = (stop.clone(), seen.clone(), rt.handle().clone());
        let thread = std::thread::spawn(move || {
            let nodes: Api<Node> = Api::all(client);
            let start = Instant::now();
            while !s.load(Ordering::SeqCst) {
                for name in &names {
                    let Ok(node) = handle.block_on(nodes.get(name)) else {
                        continue;
                    };
                    let tainted = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT));
                    let condition = network_unavailable(&node);
                    if tainted || condition.as_ref().is_some_and(|(s, _)| s == "True") {
                        found.lock().expect("seen").push(format!(
                            "{name} at {:?}: taint {tainted}, condition {condition:?}",
                            start.elapsed()
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        TaintWatch { stop, seen, thread }
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        self.seen.lock().expect("seen").clone()
    }
}

/// On a failure, the tails of the KCM, coordinator and agent logs.
struct Diagnostics<'a> {
    kcm: &'a ControllerManager,
    coordinator_log: PathBuf,
    agents: Vec<(String, WatchedAgent)>,
}

impl Drop for Diagnostics<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("--- kube-controller-manager:\n{}", tail(self.kcm.log(), 30));
        eprintln!("--- coordinator:\n{}", tail(&self.coordinator_log, 30));
        for (name, agent) in &self.agents {
            let log = agent.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- agent {name}:\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}
