//! Agents against a real kube-apiserver: Nodes and the ClusterRouting
//! object in, annotations and NetworkUnavailable out; the dataplane keeps
//! forwarding while the API server is gone, and the watch resumes after.
//!
//! The API server listens on the host's loopback, out of reach from the
//! node namespaces, so each agent runs with `--netns`: its dataplane in the
//! node namespace, its API connection in the host's.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use podroute::api::{Mode, Plan};

use crate::kube_env::kubelet_shaped;
use crate::kube_support::{
    create_lab_nodes, install_routing, keep_records, kube_node, kube_test, publish_plan, reported,
    start_agent, wait_for, Process, WatchedAgent,
};
use crate::support::{cpu_ticks, our_routes, scale_peer, scratch_node, wait_until, Lab};

#[test]
fn agents_on_a_real_api_server() {
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    let lab = Lab::flat(3);
    rt.block_on(async {
        install_routing(&client, Mode::Vxlan).await;
        create_lab_nodes(&client, &lab).await;
    });
    rt.block_on(publish_plan(&client, &Plan::steady(Mode::Vxlan, 1)));
    // The joiner below has no agent: the coordinator's record keeper writes its record.
    let _records = keep_records(&rt, &client);

    let kubeconfig = cp.admin_kubeconfig().to_path_buf();
    let agents: Vec<Process> = lab
        .names()
        .iter()
        .map(|n| start_agent(&lab, n, &kubeconfig))
        .collect();
    for node in lab.names() {
        wait_for("vxlan routes", Duration::from_secs(20), || {
            our_routes(&lab, &node).len() == 2
        });
        wait_for("report", Duration::from_secs(20), || {
            rt.block_on(reported(&client, &node))
                == (
                    Some("1/vxlan".into()),
                    Some(("False".into(), "RouteCreated".into())),
                )
        });
        lab.topo.set_pod_mtu(&node, 1450).expect("mtu");
    }
    lab.assert_all_pods_talk(1450);

    // A new plan arrives through the watch.
    rt.block_on(publish_plan(&client, &Plan::steady(Mode::Native, 2)));
    for node in lab.names() {
        wait_for("native routes", Duration::from_secs(20), || {
            our_routes(&lab, &node)
                .iter()
                .all(|r| r.contains("dev eth0"))
                && our_routes(&lab, &node).len() == 2
        });
        wait_for("report 2", Duration::from_secs(20), || {
            rt.block_on(reported(&client, &node)).0.as_deref() == Some("2/native")
        });
    }

    // The API server goes away: the dataplane keeps forwarding and repairs.
    cp.kill_apiserver();
    lab.assert_all_pods_talk(1450);
    let victim = lab.node("node-2").pod_cidr.to_string();
    lab.ip("node-1", &["route", "del", &victim]);
    let latency = wait_until(
        "repair without the API server",
        Duration::from_secs(5),
        Duration::from_millis(1),
        || our_routes(&lab, "node-1").len() == 2,
    );
    println!("repair latency of a deleted route (API server away): {latency:?}");
    lab.assert_all_pods_talk(1450);

    // It comes back: the watch resumes and a new plan is followed.
    cp.start_apiserver().expect("restart kube-apiserver");
    let client = rt.block_on(cp.client());
    rt.block_on(publish_plan(&client, &Plan::steady(Mode::Vxlan, 3)));
    for node in lab.names() {
        wait_for("vxlan again", Duration::from_secs(60), || {
            our_routes(&lab, &node)
                .iter()
                .filter(|r| r.contains("vxlan.calico"))
                .count()
                == 2
        });
        wait_for("report 3", Duration::from_secs(60), || {
            rt.block_on(reported(&client, &node)).0.as_deref() == Some("3/vxlan")
        });
    }
    lab.assert_all_pods_talk(1450);

    // A peer joins (a Node appears): its route on every node; it leaves: gone.
    let nodes: Api<Node> = Api::all(client.clone());
    let joiner = kube_node("node-4", "10.250.0.4", "10.244.4.0/24");
    rt.block_on(nodes.create(&PostParams::default(), &joiner))
        .expect("create node-4");
    let routes_to_joiner = |node: &str| {
        our_routes(&lab, node)
            .iter()
            .filter(|r| r.starts_with("10.244.4.0/24 "))
            .count()
    };
    for node in lab.names() {
        wait_for("route to the new peer", Duration::from_secs(20), || {
            routes_to_joiner(&node) == 1 && our_routes(&lab, &node).len() == 3
        });
    }
    rt.block_on(nodes.delete("node-4", &DeleteParams::default()))
        .expect("delete node-4");
    for node in lab.names() {
        wait_for("route to the peer gone", Duration::from_secs(20), || {
            routes_to_joiner(&node) == 0 && our_routes(&lab, &node).len() == 2
        });
    }
    lab.assert_all_pods_talk(1450);

    // A restart on unchanged state writes nothing: not to the Node, not to
    // the kernel. The old agent is gone before the new one starts.
    let version = |name: &str| {
        rt.block_on(nodes.get(name))
            .expect("node")
            .metadata
            .resource_version
    };
    let before = version("node-1");
    let mut agents = agents.into_iter();
    drop(agents.next());
    let restarted = WatchedAgent::start(&lab, "node-1", &kubeconfig);
    wait_for("restarted agent ready", Duration::from_secs(20), || {
        restarted.ready()
    });
    assert_eq!(version("node-1"), before, "a restart rewrote the Node");
    assert_eq!(
        restarted.kernel_writes(),
        0,
        "a restart wrote to the kernel:\n{}",
        restarted.log()
    );
    assert_eq!(our_routes(&lab, "node-1").len(), 2);
}

/// The agent benchmark, not a pass/fail test: an agent on a real API
/// server with 1000, then 5000 peers (Nodes created in the API server).
/// Run: `cargo test --release --test netns agent_resources -- --ignored --nocapture`
#[test]
#[ignore]
fn agent_resources_with_many_peers() {
    use futures::StreamExt;
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    let ns = scratch_node("prbk");
    let node = |i: usize| {
        let (ip, cidr) = scale_peer(i);
        kubelet_shaped(kube_node(&format!("bench-{i}"), &ip, &cidr), i)
    };
    let create = |from: usize, to: usize| {
        rt.block_on(async {
            let nodes: Api<Node> = Api::all(client.clone());
            futures::stream::iter(from..to)
                .map(|i| {
                    let (nodes, n) = (nodes.clone(), node(i));
                    async move {
                        nodes
                            .create(&PostParams::default(), &n)
                            .await
                            .expect("create node")
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await;
        })
    };
    let dir = std::env::temp_dir().join(podroute::lab::netns::unique_name("prbk"));
    std::fs::create_dir_all(&dir).expect("dir");
    rt.block_on(install_routing(&client, Mode::Native));
    rt.block_on(publish_plan(&client, &Plan::steady(Mode::Native, 1)));
    let _records = keep_records(&rt, &client);
    create(0, 1);

    let routes = || {
        ns.ip(&["route", "show", "proto", "91", "type", "unicast"])
            .expect("routes")
            .lines()
            .count()
    };
    let victim = "100.64.1.0/24";
    let repair_latency = || {
        ns.run(|| {
            let deleted = Command::new("ip")
                .args(["route", "del", victim])
                .status()
                .expect("ip route del");
            assert!(deleted.success(), "ip route del {victim}");
            let start = Instant::now();
            while !main_table_has(victim) {
                assert!(start.elapsed() < Duration::from_secs(10), "no repair");
                std::thread::sleep(Duration::from_micros(200));
            }
            start.elapsed()
        })
        .expect("netns")
    };
    let mut agent: Option<Child> = None;
    println!("PEERS  CONVERGE  RSS      PEAK RSS  IDLE CPU (10 s)  REPAIR MEDIAN  REPAIR P99");
    let mut from = 1;
    for peers in [1000usize, 5000] {
        let started = Instant::now();
        create(from, peers + 1);
        from = peers + 1;
        if agent.is_none() {
            let child = Command::new(env!("CARGO_BIN_EXE_podroute"))
                .args([
                    "agent",
                    "--node-name",
                    "bench-0",
                    "--netns",
                    ns.name(),
                    "--listen",
                    "127.0.0.1:0",
                    "--log",
                    "warn",
                ])
                .arg("--kubeconfig")
                .arg(cp.admin_kubeconfig())
                .arg("--mtu-file")
                .arg(dir.join("mtu"))
                .spawn()
                .expect("agent");
            agent = Some(child);
        }
        wait_for("all routes", Duration::from_secs(300), || routes() == peers);
        let converge = started.elapsed();
        let pid = agent.as_ref().expect("agent").id();
        let status = |key: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .expect("status")
                .lines()
                .find(|l| l.starts_with(key))
                .map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .unwrap_or("0")
                        .parse::<u64>()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        };
        std::thread::sleep(Duration::from_secs(2));
        let t0 = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(10));
        let idle = cpu_ticks(pid) - t0;
        let mut latencies: Vec<Duration> = (0..100).map(|_| repair_latency()).collect();
        latencies.sort();
        println!(
            "{peers:<6} {:>7.1}s  {:>5} MB  {:>5} MB  {idle:>3} ticks        {:>8.1?}       {:>8.1?}",
            converge.as_secs_f64(),
            status("VmRSS:") / 1024,
            status("VmHWM:") / 1024,
            latencies[50],
            latencies[98],
        );
    }
    // A node joins the 5000: from its Node's creation to its route in this
    // agent's kernel (the coordinator's record write included).
    let joiner = 5001;
    let (_, cidr) = scale_peer(joiner);
    let created = Instant::now();
    create(joiner, joiner + 1);
    let seen = ns
        .run(|| {
            while !main_table_has(&cidr) {
                assert!(
                    created.elapsed() < Duration::from_secs(30),
                    "no route to the joiner"
                );
                std::thread::sleep(Duration::from_micros(500));
            }
            created.elapsed()
        })
        .expect("netns");
    println!("a node joins 5000: Node created -> its route in the agent's kernel: {seen:.1?}");
    if let Some(mut child) = agent {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the main table of the calling thread's namespace routes exactly
/// `cidr` (`/proc/thread-self/net/route`: no process per poll).
fn main_table_has(cidr: &str) -> bool {
    let net: ipnetwork::Ipv4Network = cidr.parse().expect("cidr");
    // The kernel prints the raw big-endian words with %08X.
    let hex = |addr: std::net::Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(addr.octets()));
    let (dst, mask) = (hex(net.network()), hex(net.mask()));
    std::fs::read_to_string("/proc/thread-self/net/route")
        .expect("/proc/thread-self/net/route")
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.get(1) == Some(&dst.as_str()) && f.get(7) == Some(&mask.as_str()))
}
