//! `podroute check` moves packets over the pods' path to every peer's
//! agent, and when a path is broken it names where: six peers, six
//! different breaks (route, FDB entry, VTEP neighbour, a stopped agent, an
//! underlay that drops full-size packets, a peer whose link is down), each
//! found at its place; native, ipip and IPv6 paths too. And the agent's
//! periodic check exports what it sees, at its pace.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use podroute::api::Mode;
use serde_json::Value;

use crate::agent::{bridge, wait_for, AgentProcess};
use crate::support::{have_root, http_get_in, our_routes, steady, write_cluster, Lab};

/// `podroute check -o json` from `node`, and its exit code.
fn check(lab: &Lab, cluster: &Path, node: &str, extra: &[&str]) -> (Value, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["check", "-o", "json", "--node", node])
        .args(["--netns", &lab.node(node).netns])
        .arg("--cluster")
        .arg(cluster)
        .args(extra)
        .output()
        .expect("run podroute check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("check JSON: {e}\n{stderr}"));
    (report, out.status.code())
}

fn peer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["peer"] == name))
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

/// Where `name`'s path breaks: (stage, detail).
fn broken_at(report: &Value, name: &str) -> (String, String) {
    let b = &peer(report, name)["broken"];
    (
        b["stage"].as_str().unwrap_or("none").to_string(),
        b["detail"].as_str().unwrap_or_default().to_string(),
    )
}

fn start_agents(lab: &Lab, cluster: &Path, nodes: &[&str]) -> Vec<AgentProcess> {
    let agents = nodes
        .iter()
        .map(|n| AgentProcess::start_args(lab, n, cluster, &["--check-interval-seconds", "1"]))
        .collect();
    let peers = lab.names().len() - 1;
    for node in nodes {
        wait_for("vxlan routes", Duration::from_secs(20), || {
            our_routes(lab, node).len() == peers
        });
    }
    agents
}

#[test]
fn check_reaches_every_peer_and_locates_each_kind_of_break() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(7);
    let work = tempfile::tempdir().expect("temp dir");
    let cluster = work.path().join("cluster.yaml");
    let names = lab.names();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    write_cluster(&lab, &cluster, "vxlan", &all);
    // node-1 has no agent: nothing repairs the breaks made there.
    lab.converge("node-1", &steady(Mode::Vxlan));
    let mut agents = start_agents(&lab, &cluster, &all[1..]);

    let (report, code) = check(&lab, &cluster, "node-1", &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["checked"], 6, "{report:#}");
    assert_eq!(report["ok"], 6, "{report:#}");
    let p2 = peer(&report, "node-2");
    assert_eq!(p2["dst"], lab.node("node-2").pod_cidr.network().to_string());
    assert_eq!(p2["dev"], "vxlan.calico");
    assert_eq!(p2["mtu"], 1450);
    assert_eq!(p2["mtuOk"], true);
    assert!(p2["rttMs"].as_f64().is_some_and(|ms| ms > 0.0), "{p2:#}");

    // One break per peer, each where a packet meets it first.
    let cidr = |n: &str| lab.node(n).pod_cidr.to_string();
    lab.ip("node-1", &["route", "del", &cidr("node-2")]);
    let node3_ip = lab.node("node-3").ip.to_string();
    let fdb = bridge(&lab, "node-1", &["fdb", "show", "dev", "vxlan.calico"]);
    let mac = fdb
        .lines()
        .find(|l| l.contains(&node3_ip))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("node-3's FDB entry in {fdb}"))
        .to_string();
    bridge(
        &lab,
        "node-1",
        &["fdb", "del", &mac, "dev", "vxlan.calico", "dst", &node3_ip],
    );
    let node4_vtep = lab.node("node-4").pod_cidr.network().to_string();
    lab.ip(
        "node-1",
        &["neigh", "del", &node4_vtep, "dev", "vxlan.calico"],
    );
    agents.remove(3); // node-5's agent: its kernel refuses the probe port
    lab.ip("node-6", &["link", "set", "eth0", "mtu", "1400"]);
    // node-7's link goes down; its ARP entry on node-1 is gone, as it is
    // once a node has been away longer than the kernel keeps a stale one.
    lab.ip("node-7", &["link", "set", "eth0", "down"]);
    let node7_ip = lab.node("node-7").ip.to_string();
    lab.ip(
        "node-1",
        &["neigh", "flush", "to", &node7_ip, "dev", "eth0"],
    );

    let (report, code) = check(&lab, &cluster, "node-1", &[]);
    eprintln!("{report:#}");
    assert_eq!(code, Some(1), "broken paths exit 1");
    assert_eq!(report["ok"], 0, "{report:#}");
    let (stage, detail) = broken_at(&report, "node-2");
    assert_eq!(stage, "route");
    assert!(
        detail.contains(&format!("no route to {}", cidr("node-2"))),
        "{detail}"
    );
    let (stage, detail) = broken_at(&report, "node-3");
    assert_eq!(stage, "fdb");
    assert!(detail.contains(&node3_ip), "{detail}");
    let (stage, detail) = broken_at(&report, "node-4");
    assert_eq!(stage, "neighbour");
    assert!(detail.contains(&node4_vtep), "{detail}");
    let (stage, detail) = broken_at(&report, "node-5");
    assert_eq!(stage, "answer");
    assert!(detail.contains("nothing listens on UDP 9471"), "{detail}");
    assert_eq!(peer(&report, "node-6")["reachable"], true, "{report:#}");
    assert_eq!(peer(&report, "node-6")["mtuOk"], false, "{report:#}");
    let (stage, detail) = broken_at(&report, "node-6");
    assert_eq!(stage, "mtu");
    assert!(detail.contains("1450"), "{detail}");
    let (stage, detail) = broken_at(&report, "node-7");
    assert_eq!(stage, "neighbour");
    assert!(
        detail.contains(&format!("underlay neighbour {node7_ip} on eth0 is")),
        "{detail}"
    );
    let took = report["tookMs"].as_u64().unwrap_or(u64::MAX);
    eprintln!("check located 6 breaks in {took} ms");

    // The table names them too.
    let table = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args([
            "check",
            "--node",
            "node-1",
            "--netns",
            &lab.node("node-1").netns,
        ])
        .arg("--cluster")
        .arg(&cluster)
        .output()
        .expect("run podroute check");
    let text = String::from_utf8_lossy(&table.stdout);
    eprintln!("{text}");
    assert!(text.contains("0 ok, 6 broken"), "{text}");
    assert!(text.contains("fdb: no FDB entry"), "{text}");

    // --peer narrows the check; a name that is not a peer is bad input.
    let (one, code) = check(&lab, &cluster, "node-1", &["--peer", "node-6"]);
    assert_eq!(code, Some(1));
    assert_eq!(one["checked"], 1, "{one:#}");
    let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["check", "--node", "node-1", "--peer", "node-9"])
        .args(["--netns", &lab.node("node-1").netns])
        .arg("--cluster")
        .arg(&cluster)
        .output()
        .expect("run podroute check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--peer") && stderr.contains("node-9"),
        "{stderr}"
    );

    // Repaired, the same peers pass again: the breaks were the cause.
    lab.converge("node-1", &steady(Mode::Vxlan));
    let (report, _) = check(&lab, &cluster, "node-1", &[]);
    for name in ["node-2", "node-3", "node-4"] {
        assert!(peer(&report, name)["broken"].is_null(), "{report:#}");
    }
}

/// Every peer over the path of the mode in use: the node address and the
/// uplink MTU in native mode, tunl0 over ipip (where the kernel has it),
/// and the IPv6 VXLAN device beside the IPv4 one in a dual-stack cluster.
#[test]
fn check_follows_the_dataplane_in_use() {
    if !have_root() {
        return;
    }
    let mut modes = vec![("native", Mode::Native, "eth0", 1500)];
    if crate::support::have_ipip() {
        modes.push(("ipip", Mode::Ipip, "tunl0", 1480));
    }
    for (name, mode, dev, mtu) in modes {
        let lab = Lab::flat(3);
        let work = tempfile::tempdir().expect("temp dir");
        let cluster = work.path().join("cluster.yaml");
        write_cluster(&lab, &cluster, name, &["node-1", "node-2", "node-3"]);
        lab.converge("node-1", &steady(mode));
        let _agents = start_agents(&lab, &cluster, &["node-2", "node-3"]);
        let (report, code) = check(&lab, &cluster, "node-1", &[]);
        assert_eq!(code, Some(0), "{name}: {report:#}");
        let p = peer(&report, "node-3");
        let dst = match mode {
            Mode::Native => lab.node("node-3").ip.to_string(),
            _ => lab.node("node-3").pod_cidr.network().to_string(),
        };
        assert_eq!(p["dst"], dst, "{name}: {p:#}");
        assert_eq!(p["dev"], dev, "{name}: {p:#}");
        assert_eq!(p["mtu"], mtu, "{name}: {p:#}");
        assert_eq!(p["mtuOk"], true, "{name}: {p:#}");
    }

    let lab = Lab::dual(3);
    let work = tempfile::tempdir().expect("temp dir");
    let cluster = work.path().join("cluster.yaml");
    crate::support::write_dual_cluster(&lab, &cluster, "vxlan");
    let _agents = start_agents(&lab, &cluster, &["node-1", "node-2", "node-3"]);
    for node in lab.names() {
        wait_for("IPv6 routes", Duration::from_secs(20), || {
            let routes = lab.ip(&node, &["-6", "route", "show", "proto", "91"]);
            routes
                .lines()
                .filter(|l| !l.starts_with("unreachable"))
                .count()
                == 2
        });
    }
    let (report, code) = check(&lab, &cluster, "node-1", &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["checked"], 4, "{report:#}");
    let v6 = report["peers"]
        .as_array()
        .and_then(|peers| {
            peers
                .iter()
                .find(|p| p["peer"] == "node-2" && p["family"] == "ipv6")
        })
        .unwrap_or_else(|| panic!("node-2 over IPv6 in {report:#}"));
    assert_eq!(v6["dev"], "vxlan-v6.calico", "{v6:#}");
    assert_eq!(v6["mtu"], 1430, "{v6:#}");
    assert_eq!(v6["mtuOk"], true, "{v6:#}");
}

#[test]
fn the_agents_periodic_check_exports_each_peers_reachability_at_its_pace() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(2);
    let work = tempfile::tempdir().expect("temp dir");
    let cluster = work.path().join("cluster.yaml");
    write_cluster(&lab, &cluster, "vxlan", &["node-1", "node-2"]);
    let mut agents = start_agents(&lab, &cluster, &["node-1", "node-2"]);
    let netns = lab.node("node-1").netns.clone();
    let metrics = || {
        http_get_in(&netns, 9469, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let reachable =
        |v: u8| format!("podroute_peer_reachable{{peer=\"node-2\",family=\"ipv4\"}} {v}");
    wait_for("node-2 reachable", Duration::from_secs(10), || {
        metrics().contains(&reachable(1))
    });
    assert!(metrics().contains("podroute_peer_rtt_seconds_count"));
    assert!(metrics().contains("podroute_peers_unreachable 0"));

    // Its pace: each agent probes its one peer once a second (a small and
    // a full-size probe, both answered), so node-1's tunnel receives about
    // 4 packets a second. A round must not follow the last without its gap.
    let rx = || lab.rx_packets("node-1", "vxlan.calico");
    let before = rx();
    std::thread::sleep(Duration::from_secs(3));
    let received = rx() - before;
    assert!(received < 60, "{received} packets in 3 s: the check floods");

    agents.remove(1); // node-2's agent, and with it its responder
    wait_for("node-2 unreachable", Duration::from_secs(10), || {
        let m = metrics();
        m.contains(&reachable(0)) && m.contains("podroute_peers_unreachable 1")
    });
}

/// The cost benchmark, not a pass/fail test: node-1's periodic
/// check at its defaults (a round per 60 s, at most 100 peers a second)
/// over 5000 peers that all answer (every target is node-2's tunnel
/// address under another peer name, so each probe crosses VXLAN and is
/// answered by node-2's agent), for 20 s: CPU of the prober and of the
/// answering agent, packets per second on node-1's vxlan.calico, and the
/// size and time of a /metrics page with 5000 peers.
/// Run: `cargo test --release --test netns check_at_5000 -- --ignored --nocapture`
#[test]
#[ignore]
fn check_at_5000_peers() {
    use podroute::check::{metrics::PeerMetrics, periodic, CheckOptions, DEFAULT_PORT};
    use podroute::plan::check::ProbeTarget;
    use std::sync::Arc;
    use std::time::Instant;
    if !have_root() {
        return;
    }
    const PEERS: usize = 5000;
    const WINDOW: Duration = Duration::from_secs(20);
    let lab = Lab::flat(2);
    let work = tempfile::tempdir().expect("temp dir");
    let cluster = work.path().join("cluster.yaml");
    write_cluster(&lab, &cluster, "vxlan", &["node-1", "node-2"]);
    lab.converge("node-1", &steady(Mode::Vxlan));
    let responder = start_agents(&lab, &cluster, &["node-2"]).remove(0);
    let node2 = lab.node("node-2").pod_cidr.network();
    let node1 = lab.node("node-1").pod_cidr.network();
    let targets: Vec<ProbeTarget> = (0..PEERS)
        .map(|i| ProbeTarget {
            peer: format!("peer-{i}"),
            family: "ipv4",
            route: lab.node("node-2").pod_cidr.into(),
            dev: "vxlan.calico".into(),
            via: Some(node2.into()),
            tunnel: true,
            dst: node2.into(),
            src: Some(node1.into()),
            mtu: 1450,
            underlay: Some(lab.node("node-2").ip.into()),
        })
        .collect();
    let counters = |lab: &Lab| {
        let dev = "vxlan.calico";
        (lab.tx_packets("node-1", dev), lab.rx_packets("node-1", dev))
    };
    let thread_ticks = || {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let rest = &stat[stat.rfind(')').expect("stat") + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f[11] + f[12]
    };
    let targets_copy = targets.clone();
    let metrics = PeerMetrics::register(&mut prometheus_client::registry::Registry::default());
    let answering_before = crate::support::cpu_ticks(responder.child.id());
    let (tx0, rx0) = counters(&lab);
    let netns = lab.node("node-1").netns.clone();
    let prober_metrics = metrics.clone();
    let prober_ticks = podroute::lab::netns::run_async_in_netns(&netns, move || async move {
        let before = thread_ticks();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (_keep, rx) = tokio::sync::watch::channel(Arc::new(targets));
        let options = CheckOptions {
            port: DEFAULT_PORT,
            interval: Duration::from_secs(60),
            max_rate: 100,
            timeout: podroute::check::PROBE_TIMEOUT,
        };
        let run = tokio::spawn(periodic::run(options, rx, prober_metrics, shutdown));
        tokio::time::sleep(WINDOW).await;
        let _ = stop.send(true);
        let _ = run.await;
        thread_ticks() - before
    })
    .expect("prober in node-1");
    let (tx1, rx1) = counters(&lab);
    // What `podroute check` does: all 5000 at once (256 in flight).
    let all = targets_copy;
    let (one_shot, answered) =
        podroute::lab::netns::run_async_in_netns(&netns, move || async move {
            let started = Instant::now();
            let probed =
                podroute::check::probe_all(&all, DEFAULT_PORT, podroute::check::PROBE_TIMEOUT)
                    .await;
            let answered = probed
                .iter()
                .filter(|p| p.small.is_ok() && p.full.is_ok())
                .count();
            (started.elapsed(), answered)
        })
        .expect("one-shot check in node-1");
    let answering = crate::support::cpu_ticks(responder.child.id()) - answering_before;
    let secs = WINDOW.as_secs_f64();
    let hz = 100.0; // USER_HZ
    let render = {
        let mut registry = prometheus_client::registry::Registry::default();
        let full = PeerMetrics::register(&mut registry);
        for i in 0..PEERS {
            full.reachable
                .get_or_create(&podroute::check::metrics::labels(
                    &format!("node-{i}"),
                    "ipv4",
                ))
                .set(1);
        }
        let started = Instant::now();
        let page = podroute::http::encode_registry(&registry);
        (page.len(), started.elapsed())
    };
    let text = metrics_text(&metrics);
    eprintln!("periodic check, {PEERS} peers, defaults (60 s round, max 100/s), {secs} s:");
    eprintln!(
        "  probed peers: {}",
        text.lines()
            .filter(|l| l.starts_with("peer_checks_total"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "  prober CPU: {:.2}% of a core; answering agent CPU: {:.2}%",
        prober_ticks as f64 / hz / secs * 100.0,
        answering as f64 / hz / secs * 100.0
    );
    eprintln!(
        "  node-1 vxlan.calico: {:.0} packets/s out, {:.0} in",
        (tx1 - tx0) as f64 / secs,
        (rx1 - rx0) as f64 / secs
    );
    eprintln!("  one-shot check of all {PEERS}: {one_shot:?}, {answered} answered at full size");
    eprintln!(
        "  /metrics with {PEERS} peers: {} KiB, encoded in {:?}",
        render.0 / 1024,
        render.1
    );
}

fn metrics_text(m: &podroute::check::metrics::PeerMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("peer_checks", "", m.results.clone());
    podroute::http::encode_registry(&registry)
}

/// The responder answers a probe from the address it was sent to (so a
/// connected prober accepts it), as large as the probe, in both families;
/// it answers nothing else: not a reply (no reflection between two
/// responders), not a stranger's packet.
#[test]
fn the_responder_answers_probes_only_and_from_the_address_probed() {
    use podroute::check::wire::{self, Kind};
    use podroute::check::Responder;
    use std::net::{IpAddr, SocketAddr};
    use tokio::net::UdpSocket;
    if !have_root() {
        return;
    }
    let ns = crate::support::scratch_node("prresp");
    for args in [
        &["addr", "add", "10.9.9.9/32", "dev", "lo"][..],
        &["addr", "add", "fd00:9::9/128", "dev", "lo", "nodad"],
        &["addr", "add", "fd00:8::8/128", "dev", "lo", "nodad"],
    ] {
        ns.ip(args).expect("address");
    }
    let outcome = podroute::lab::netns::run_async_in_netns(ns.name(), || async {
        let responder = Responder::bind(0).expect("bind the responder");
        let port = responder.port();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(responder.run(shutdown));
        let ask = |to: IpAddr, packet: Vec<u8>| async move {
            // From another local address: an answer whose source the
            // kernel picked would come from this one.
            let from: IpAddr = if to.is_ipv4() {
                "10.250.0.1"
            } else {
                "fd00:8::8"
            }
            .parse()
            .expect("ip");
            let sock = UdpSocket::bind((from, 0)).await.expect("client socket");
            sock.send_to(&packet, (to, port)).await.expect("send");
            let mut buf = vec![0u8; 2048];
            let answer =
                tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
            answer
                .ok()
                .map(|r| r.expect("recv"))
                .map(|(len, from): (usize, SocketAddr)| (buf[..len].to_vec(), from))
        };
        let mut seen = Vec::new();
        for to in ["10.9.9.9", "127.0.0.1", "fd00:9::9", "::1"] {
            let to: IpAddr = to.parse().expect("ip");
            let answer = ask(to, wire::encode(Kind::Request, 7, 300)).await;
            seen.push((to, answer));
        }
        let reply = ask(
            "10.9.9.9".parse().expect("ip"),
            wire::encode(Kind::Reply, 8, 300),
        )
        .await;
        let stranger = ask("10.9.9.9".parse().expect("ip"), vec![0x42; 100]).await;
        (seen, reply, stranger)
    })
    .expect("in the namespace");
    let (seen, reply, stranger) = outcome;
    for (to, answer) in seen {
        let (packet, from) = answer.unwrap_or_else(|| panic!("no answer from {to}"));
        assert_eq!(from.ip(), to, "answered from another address");
        assert_eq!(packet.len(), 300, "answer to {to} cut");
        assert_eq!(wire::decode(&packet), Some((Kind::Reply, 7)));
    }
    assert!(reply.is_none(), "a reply was answered: {reply:?}");
    assert!(stranger.is_none(), "a stranger was answered: {stranger:?}");
}
