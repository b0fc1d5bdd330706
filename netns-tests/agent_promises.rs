//! The agent's promises under bad updates and foreign state, tried on a
//! running agent process: an update it cannot use changes nothing and drift
//! is still repaired against the last good plan; `/readyz` and the gauges
//! tell what the latest pass found, not the first; a generation past i64 is
//! shown as it is. And the routing-loop guard: a node's own pod CIDR is
//! unreachable, so a probe for an unused pod address gets an ICMP error
//! instead of looping through the underlay, while a bridge CNI's connected
//! route for the same CIDR keeps working.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use podroute::api::{Mode, OffSubnet};
use podroute::lab::probe::EchoServer;
use podroute::lab::topology::Topology;

use crate::agent::{http_get, routes_via, wait_for, AgentProcess};
use crate::support::{
    have_root, our_routes, own_unreachable, steady, tx_packets_by_device, write_cluster_with, Lab,
};

/// A cluster file of every lab node, with `extra` settings lines.
fn write_file(lab: &Lab, path: &Path, mode: &str, extra: &str) {
    let names = lab.names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    write_cluster_with(lab, path, mode, extra, &names);
}

fn cluster_path(lab: &Lab) -> PathBuf {
    let dir = lab
        .config("node-1")
        .mtu_file
        .parent()
        .and_then(Path::parent)
        .expect("lab dir")
        .to_path_buf();
    std::fs::create_dir_all(&dir).expect("lab dir");
    dir.join("cluster.yaml")
}

/// The value of a metric line `name value` in /metrics of node-1.
fn metric(lab: &Lab, name: &str) -> Option<String> {
    let body = http_get(lab, "node-1", "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(str::to_string)
}

fn readyz(lab: &Lab) -> String {
    http_get(lab, "node-1", "/readyz")
}

/// vxlan.calico's index, kind, flags, MTU and MAC (not its timers).
fn link_identity(lab: &Lab) -> serde_json::Value {
    let text = lab.ip("node-1", &["-j", "-d", "link", "show", "vxlan.calico"]);
    let links: serde_json::Value = serde_json::from_str(&text).expect("ip -j");
    let link = &links[0];
    serde_json::json!({
        "ifindex": link["ifindex"],
        "kind": link["linkinfo"]["info_kind"],
        "flags": link["flags"],
        "mtu": link["mtu"],
        "address": link["address"],
    })
}

fn vxlan_mtu(lab: &Lab) -> String {
    lab.ip("node-1", &["link", "show", "vxlan.calico"])
}

#[test]
fn an_update_the_agent_cannot_use_keeps_the_last_good_plan() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let cluster = cluster_path(&lab);
    write_file(&lab, &cluster, "vxlan", "");
    let agent = AgentProcess::start(&lab, "node-1", &cluster);
    let converged = || routes_via(&lab, "node-1", "vxlan.calico") == 2;
    wait_for("vxlan", Duration::from_secs(10), converged);
    let victim = lab.node("node-2").pod_cidr.to_string();

    // Files that parse but are invalid: the file store keeps the last good
    // one, and the agent keeps repairing against it.
    let refusals = || {
        agent
            .log
            .count(|l| l.contains("keeping the last good version"))
    };
    for bad in [
        "mtu: 50\n",
        "vxlan: {vni: 0}\n",
        "mtu: 70000\n",
        "generation: 0\n",
    ] {
        let before = refusals();
        write_file(&lab, &cluster, "native", bad);
        wait_for("the refusal logged", Duration::from_secs(5), || {
            refusals() > before
        });
        lab.ip("node-1", &["route", "del", &victim]);
        wait_for(
            &format!("repair under {bad:?}"),
            Duration::from_secs(5),
            converged,
        );
        assert!(readyz(&lab).starts_with("HTTP/1.1 200"), "{}", readyz(&lab));
        assert!(vxlan_mtu(&lab).contains("mtu 1450"), "{bad:?} was adopted");
        assert_eq!(routes_via(&lab, "node-1", "eth0"), 0, "{bad:?} was adopted");
    }

    // A valid file this node cannot use (an MTU over its uplink's 1500):
    // refused by the agent, said once, the last good plan kept and repaired.
    write_file(&lab, &cluster, "vxlan", "mtu: 9000\ngeneration: 2\n");
    wait_for("the agent refuses", Duration::from_secs(5), || {
        metric(&lab, "podroute_update_refused").as_deref() == Some("1")
    });
    let ready = readyz(&lab);
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        ready.contains("generation 2 cannot be used") && ready.contains("9000"),
        "{ready}"
    );
    for _ in 0..3 {
        lab.ip("node-1", &["route", "del", &victim]);
        wait_for("repair while refusing", Duration::from_secs(5), converged);
    }
    assert!(vxlan_mtu(&lab).contains("mtu 1450"), "{}", vxlan_mtu(&lab));
    assert_eq!(
        metric(&lab, "podroute_applied_generation").as_deref(),
        Some("1")
    );
    assert_eq!(
        agent.log.count(|l| l.contains("refusing the update")),
        1,
        "one line per refusal, not per pass:\n{}",
        agent.log()
    );

    // A good file again: applied, and the agent says the refusal is over.
    write_file(&lab, &cluster, "native", "generation: 3\n");
    wait_for("native", Duration::from_secs(10), || {
        routes_via(&lab, "node-1", "eth0") == 2
    });
    wait_for("refusal over", Duration::from_secs(5), || {
        metric(&lab, "podroute_update_refused").as_deref() == Some("0")
    });
    assert_eq!(readyz(&lab).lines().last(), Some("ok"), "{}", readyz(&lab));
}

#[test]
fn readiness_and_gauges_come_from_the_latest_pass() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let cluster = cluster_path(&lab);
    write_file(&lab, &cluster, "vxlan", "generation: 9223372036854775807\n");
    let agent = AgentProcess::start(&lab, "node-1", &cluster);
    wait_for("vxlan", Duration::from_secs(10), || {
        routes_via(&lab, "node-1", "vxlan.calico") == 2
    });
    wait_for("ready", Duration::from_secs(5), || {
        readyz(&lab).starts_with("HTTP/1.1 200")
    });
    // Two peers and the node's own pod CIDR; the largest generation shows as it is.
    assert_eq!(metric(&lab, "podroute_owned_routes").as_deref(), Some("3"));
    assert_eq!(
        metric(&lab, "podroute_applied_generation").as_deref(),
        Some("9223372036854775807")
    );

    // Behind the agent's back: vxlan.calico replaced by a bridge. (SIGSTOP
    // must find it idle: the echo of its own writes triggers one more pass.)
    std::thread::sleep(Duration::from_millis(500));
    agent.send(Signal::SIGSTOP);
    lab.ip("node-1", &["link", "del", "vxlan.calico"]);
    lab.ip("node-1", &["link", "add", "vxlan.calico", "type", "bridge"]);
    let bridge = link_identity(&lab);
    assert_eq!(bridge["kind"], "bridge", "{bridge}");
    agent.send(Signal::SIGCONT);
    // A pass caught in flight may fail on the deleted device first; the
    // retries then find the bridge.
    wait_for(
        "not ready, naming the bridge",
        Duration::from_secs(10),
        || {
            let ready = readyz(&lab);
            ready.starts_with("HTTP/1.1 503")
                && ready.contains("vxlan.calico exists but is not vxlan")
        },
    );
    let held = lab
        .ip("node-1", &["route", "show", "proto", "91"])
        .lines()
        .count();
    assert_eq!(
        metric(&lab, "podroute_owned_routes"),
        Some(held.to_string()),
        "the gauge must say what the kernel holds now"
    );
    assert_eq!(metric(&lab, "podroute_ready").as_deref(), Some("0"));
    // The bridge is someone else's: untouched.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(link_identity(&lab), bridge);

    // Its owner removes it: the agent takes the name back and is ready again.
    lab.ip("node-1", &["link", "del", "vxlan.calico"]);
    wait_for("vxlan back", Duration::from_secs(10), || {
        routes_via(&lab, "node-1", "vxlan.calico") == 2
    });
    wait_for("ready again", Duration::from_secs(5), || {
        readyz(&lab).starts_with("HTTP/1.1 200")
    });
    assert_eq!(metric(&lab, "podroute_owned_routes").as_deref(), Some("3"));
    assert_eq!(
        metric(&lab, "podroute_applied_generation").as_deref(),
        Some("9223372036854775807")
    );
}

/// Sends one UDP datagram from `netns` to `to` and waits for an answer or an
/// ICMP error: the error the socket reports, or `TimedOut`.
fn udp_outcome(netns: &str, to: Ipv4Addr) -> ErrorKind {
    podroute::lab::netns::run_in_netns(netns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        // Host unreachable is a "soft" ICMP error: a UDP socket hears of it
        // only with IP_RECVERR.
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
            .expect("IP_RECVERR");
        sock.connect(SocketAddrV4::new(to, 9)).expect("connect");
        sock.send(b"anyone?").expect("send");
        let mut buf = [0u8; 64];
        match sock.recv(&mut buf) {
            Ok(_) => ErrorKind::Other,
            Err(e) if e.kind() == ErrorKind::WouldBlock => ErrorKind::TimedOut,
            Err(e) => e.kind(),
        }
    })
    .expect("netns")
}

/// Packets the router sent on all its legs.
fn router_tx(lab: &Lab) -> u64 {
    let router = lab.topo.router().expect("router").netns.clone();
    let netns = lab.topo.netns(&router).expect("router netns");
    tx_packets_by_device(netns)
        .into_iter()
        .filter(|(name, _)| name != "lo")
        .map(|(_, packets)| packets)
        .sum()
}

#[test]
fn an_unused_pod_address_is_unreachable_instead_of_a_routing_loop() {
    if !have_root() {
        return;
    }
    // The cloud-route setup: native, off-subnet peers left to the underlay,
    // whose router routes every pod CIDR to its node.
    let lab = Lab::new(Topology::builder().nodes(0, 1).nodes(1, 1).router(true));
    lab.topo.add_router_pod_routes().expect("router routes");
    for node in lab.names() {
        let mut config = lab.config(&node);
        config.off_subnet = OffSubnet::Underlay;
        lab.converge_with(&node, &steady(Mode::Native), config)
            .expect("converge");
        assert!(own_unreachable(&lab, &node).is_some(), "{node}");
    }
    lab.assert_all_pods_talk(1500);
    let unused = Ipv4Addr::new(10, 244, 1, 99);
    let pod = lab.node("node-2").pods[0].netns.clone();

    let before = router_tx(&lab);
    assert_eq!(udp_outcome(&pod, unused), ErrorKind::HostUnreachable);
    let with_guard = router_tx(&lab) - before;

    // Without the route (as before podroute installed it): the packet
    // bounces between node-1 and the router until its TTL runs out.
    let cidr = lab.node("node-1").pod_cidr.to_string();
    lab.ip(
        "node-1",
        &["route", "del", "unreachable", &cidr, "metric", "4294967295"],
    );
    // (The sender hears "time exceeded" at the end, which a UDP socket also
    // reports as host unreachable: the router's packet count tells.)
    let before = router_tx(&lab);
    udp_outcome(&pod, unused);
    let looping = router_tx(&lab) - before;
    println!("router packets for one probe: {with_guard} with the guard, {looping} without");
    assert!(with_guard <= 4, "{with_guard} packets with the guard");
    assert!(looping >= 20, "expected a loop, saw {looping} packets");
}

#[test]
fn a_bridge_cni_route_for_the_pod_cidr_keeps_working() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(2);
    // A bridge CNI on node-1: cni0 holds the gateway of the pod CIDR, so the
    // kernel has a connected route for the whole CIDR (metric 0), and a pod
    // namespace sits behind it.
    let cidr = lab.node("node-1").pod_cidr;
    let gateway = Ipv4Addr::from(u32::from(cidr.network()) + 1).to_string();
    let bridged = Ipv4Addr::from(u32::from(cidr.network()) + 50);
    let pod = podroute::lab::netns::Netns::create(&podroute::lab::netns::unique_name("prbr"))
        .expect("netns");
    lab.ip("node-1", &["link", "add", "cni0", "type", "bridge"]);
    lab.ip(
        "node-1",
        &[
            "addr",
            "add",
            &format!("{gateway}/{}", cidr.prefix()),
            "dev",
            "cni0",
        ],
    );
    lab.ip("node-1", &["link", "set", "cni0", "up"]);
    lab.ip(
        "node-1",
        &[
            "link",
            "add",
            "vethbr",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ],
    );
    lab.ip("node-1", &["link", "set", "vethbr", "master", "cni0", "up"]);
    pod.ip(&[
        "addr",
        "add",
        &format!("{bridged}/{}", cidr.prefix()),
        "dev",
        "eth0",
    ])
    .expect("pod address");
    pod.ip(&["link", "set", "eth0", "up"]).expect("pod up");
    pod.ip(&["link", "set", "lo", "up"]).expect("lo up");
    pod.ip(&["route", "add", "default", "via", &gateway])
        .expect("pod route");
    let _echo = EchoServer::start(pod.name(), 7777).expect("echo");

    let plan = steady(Mode::Native);
    let first = lab.converge("node-1", &plan);
    assert!(first.conflicts.is_empty(), "{:?}", first.conflicts);
    lab.converge("node-2", &plan);
    assert!(own_unreachable(&lab, "node-1").is_some());
    assert_eq!(our_routes(&lab, "node-2").len(), 1);
    let get = lab.ip("node-1", &["route", "get", &bridged.to_string()]);
    assert!(get.contains("dev cni0"), "{get}");
    assert!(
        podroute::lab::probe::udp_roundtrip(
            &lab.node("node-2").pods[0].netns,
            bridged,
            7777,
            64,
            false,
            Duration::from_secs(2)
        )
        .expect("probe"),
        "node-2's pod cannot reach the bridged pod on node-1"
    );
    // A second pass writes nothing: the connected route is not in our way.
    assert_eq!(lab.converge("node-1", &plan).changes, 0);
}
