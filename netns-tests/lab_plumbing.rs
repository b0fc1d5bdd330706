//! Smoke test of the lab plumbing: namespaces, a 3-node topology with a
//! router, hand-made native routes and UDP probes between pods. Needs root.

use std::net::SocketAddrV4;
use std::time::Duration;

use podroute::lab::netns::{unique_name, Netns};
use podroute::lab::probe::{udp_roundtrip, EchoServer, Prober, OVERHEAD};
use podroute::lab::topology::Topology;

use crate::support::have_root;

const PORT: u16 = 7777;
const TIMEOUT: Duration = Duration::from_secs(2);

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let list = netns_list();
    for name in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} still listed:\n{list}"
        );
    }
}

#[test]
fn netns_run_and_cleanup() {
    if !have_root() {
        return;
    }
    let name = unique_name("prt");
    let ns = Netns::create(&name).expect("create");
    assert_eq!(ns.name(), name);
    assert!(ns.ip(&["link", "show", "lo"]).expect("ip").contains("lo"));
    assert!(ns.exec(&["true"]).is_ok());
    let err = ns
        .ip(&["link", "show", "nope0"])
        .expect_err("missing device");
    assert!(
        err.to_string()
            .contains(&format!("ip -n {name} link show nope0")),
        "{err}"
    );
    // The thread really is in the namespace: it sees the namespace's devices
    // (lo, plus fallback tunnels like tunl0 where those modules are loaded).
    let dev = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .expect("run")
        .expect("read net/dev");
    let mut devices: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|d| d.trim().to_string())
        .collect();
    let mut listed: Vec<String> = ns
        .ip(&["-o", "link", "show"])
        .expect("ip link")
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|d| d.trim().split('@').next().unwrap_or_default().to_string())
        .collect();
    devices.sort();
    listed.sort();
    assert_eq!(devices, listed, "{dev}");
    assert!(devices.contains(&"lo".to_string()));
    assert_forwarding_is_its_own(&ns);
    let panicked = ns.run(|| panic!("boom")).expect_err("panic is an error");
    assert!(panicked.to_string().contains("boom"), "{panicked}");
    drop(ns);
    assert_gone(&[name]);
}

#[test]
fn three_nodes_native_routes_and_mtu() {
    if !have_root() {
        return;
    }
    let topo = Topology::builder()
        .nodes(0, 2)
        .node(1)
        .router(true)
        .build()
        .expect("build topology");
    let names = topo.namespace_names();
    let [n1, n2, n3] = topo.nodes() else {
        panic!("expected 3 nodes")
    };
    println!("topology {}: {names:?}", topo.id());
    assert_eq!(n1.name, "node-1");
    assert_eq!(n1.ip.to_string(), "10.250.0.1");
    assert_eq!(n3.ip.to_string(), "10.250.1.3");
    assert_eq!(n2.pod_cidr.to_string(), "10.244.2.0/24");
    assert_eq!(n2.pods[0].ip.to_string(), "10.244.2.2");

    // Node namespaces have their own forwarding; pod host routes are not proto 91.
    for node in topo.nodes() {
        let ns = topo.node_netns(&node.name).expect("node ns");
        assert_forwarding_is_its_own(ns);
        let pod = format!("{}/32", node.pods[0].ip);
        let boot = ns
            .ip(&["route", "show", &pod, "proto", "boot"])
            .expect("route");
        assert!(boot.contains("dev pod0"), "{node:?}: {boot}");
    }

    let echoes: Vec<EchoServer> = topo
        .nodes()
        .iter()
        .map(|n| EchoServer::start(&n.pods[0].netns, PORT).expect("echo"))
        .collect();
    let pod1 = &n1.pods[0];
    let pod2 = SocketAddrV4::new(n2.pods[0].ip, PORT);

    // No routes between pod CIDRs yet: nothing gets through.
    for node in topo.nodes() {
        topo.enable_ip_forward(&node.name).expect("ip_forward");
    }
    let short = Duration::from_millis(300);
    assert!(
        !udp_roundtrip(&pod1.netns, pod2.ip().to_owned(), PORT, 64, false, short).expect("probe")
    );

    // Native routes by hand: same subnet direct, other subnet via the router.
    let route = |node: &str, cidr: String, via: String| {
        topo.node_netns(node)
            .expect("node ns")
            .ip(&["route", "add", &cidr, "via", &via])
            .expect("route add");
    };
    route("node-1", n2.pod_cidr.to_string(), n2.ip.to_string());
    route("node-2", n1.pod_cidr.to_string(), n1.ip.to_string());
    topo.add_router_pod_routes().expect("router routes");

    // Every pod reaches every other pod.
    for from in topo.nodes() {
        let mut prober = Prober::new(&from.pods[0].netns, false).expect("prober");
        for to in topo.nodes().iter().filter(|t| t.name != from.name) {
            let addr = SocketAddrV4::new(to.pods[0].ip, PORT);
            assert!(
                prober.roundtrip(addr, 64, TIMEOUT).expect("probe"),
                "{} -> {}",
                from.name,
                to.name
            );
        }
        assert_eq!(prober.stats().lost(), 0);
    }

    // DF: exactly the uplink MTU passes, one byte more does not.
    let mtu = n1.uplink_mtu as usize;
    let mut df = Prober::new(&pod1.netns, true).expect("prober");
    assert!(df.roundtrip(pod2, mtu - OVERHEAD, TIMEOUT).expect("probe"));
    assert!(!df
        .roundtrip(pod2, mtu - OVERHEAD + 1, TIMEOUT)
        .expect("probe"));
    // Without DF the big packet is fragmented and arrives.
    assert!(udp_roundtrip(
        &pod1.netns,
        *pod2.ip(),
        PORT,
        mtu - OVERHEAD + 1,
        false,
        TIMEOUT
    )
    .expect("probe"));

    // A smaller pod MTU is enforced at the pod.
    topo.set_pod_mtu("node-1", 1400).expect("pod mtu");
    assert!(df.roundtrip(pod2, 1400 - OVERHEAD, TIMEOUT).expect("probe"));
    assert!(!df
        .roundtrip(pod2, 1400 - OVERHEAD + 1, TIMEOUT)
        .expect("probe"));

    // A short steady stream loses nothing.
    let stats = df
        .stream(
            pod2,
            200,
            Duration::from_millis(5),
            Duration::from_millis(200),
            short,
        )
        .expect("stream");
    assert!(stats.sent >= 20 && stats.lost() == 0, "{stats:?}");

    // Node to node across the router.
    let node_echo = EchoServer::start(&n3.netns, 0).expect("node echo");
    assert!(udp_roundtrip(&n1.netns, n3.ip, node_echo.port(), 64, false, TIMEOUT).expect("probe"));
    assert!(node_echo.stop().expect("stop") >= 1);

    for echo in echoes {
        echo.stop().expect("stop echo");
    }
    drop(topo);
    assert_gone(&names);
}

/// `ns` reads and writes its own IPv4 forwarding, not the host's. A new
/// namespace starts with the host's value (devconf_inherit_init_net=0), so
/// the test flips it and checks the host's stayed.
fn assert_forwarding_is_its_own(ns: &Netns) {
    let host_file = "/proc/sys/net/ipv4/ip_forward";
    let host = std::fs::read_to_string(host_file).expect("host sysctl");
    let flipped = if host.trim() == "1" { "0" } else { "1" };
    ns.sysctl("net.ipv4.ip_forward", flipped).expect("sysctl");
    assert_eq!(
        ns.read_sysctl("net.ipv4.ip_forward").expect("sysctl"),
        flipped
    );
    let host_after = std::fs::read_to_string(host_file).expect("host sysctl");
    assert_eq!(host_after, host, "the host's forwarding changed");
}
