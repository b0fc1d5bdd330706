//! Drift repair of the one object a kernel event names: a route, a
//! neighbour or an FDB entry of ours deleted under a running agent comes
//! back without a full pass (no pass is reported), and a route of someone
//! else's that takes the key of a deleted route of ours is never replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use podroute::agent::{AgentOptions, Pass};
use podroute::api::{Mode, Plan};
use podroute::lab::netns::Netns;
use podroute::lab::node_agent::NodeAgent;
use podroute::model::Cluster;
use podroute::store::{ClusterStore, MemoryStore, Snapshot};
use tokio::sync::mpsc;

use crate::agent::bridge;
use crate::support::{have_root, our_routes, wait_until, Lab};

/// Long enough that a periodic resync never runs during the test.
const RESYNC: Duration = Duration::from_secs(3600);

fn agent(lab: &Lab, store: Arc<MemoryStore>) -> (NodeAgent, mpsc::UnboundedReceiver<Pass>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let store: Arc<dyn ClusterStore> = store;
    let options = AgentOptions {
        resync: RESYNC,
        ..AgentOptions::new("node-1")
    };
    let agent = NodeAgent::spawn(
        &lab.node("node-1").netns,
        options,
        store,
        lab.config("node-1"),
        Some(tx),
    )
    .expect("agent");
    (agent, rx)
}

/// An agent on node-1 of `cluster`, once the kernel holds a route to every
/// peer and the agent is quiet (its report wakes one more pass).
fn converged_agent(lab: &Lab, cluster: &Cluster) -> (NodeAgent, mpsc::UnboundedReceiver<Pass>) {
    let store = Arc::new(MemoryStore::new(Snapshot::from_cluster(cluster)));
    let (agent, mut rx) = agent(lab, store);
    let peers = cluster.nodes.len() - 1;
    wait_until(
        "converged",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || our_routes(lab, "node-1").len() == peers,
    );
    wait_quiet(&mut rx);
    (agent, rx)
}

/// Full passes reported so far, without waiting.
fn passes(rx: &mut mpsc::UnboundedReceiver<Pass>) -> usize {
    std::iter::from_fn(|| rx.try_recv().ok()).count()
}

fn node_1(lab: &Lab) -> &Netns {
    lab.topo.node_netns("node-1").expect("node-1's namespace")
}

/// Until no full pass has been reported for 200 ms.
fn wait_quiet(rx: &mut mpsc::UnboundedReceiver<Pass>) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if passes(rx) == 0 {
            return;
        }
    }
}

fn show(lab: &Lab, args: &[&str]) -> String {
    lab.ip("node-1", args)
}

/// Polled from outside the agent, without a process per poll.
fn in_proc(lab: &Lab, file: &str, needle: &str) -> bool {
    node_1(lab)
        .run(|| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
                .map(|text| text.contains(needle))
                .unwrap_or(false)
        })
        .expect("netns")
}

#[test]
fn a_deleted_route_neighbour_or_fdb_entry_comes_back_without_a_full_pass() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let (agent, mut rx) = converged_agent(&lab, &lab.cluster(&Plan::steady(Mode::Vxlan, 1)));
    let poll = Duration::from_micros(200);
    let wait = Duration::from_secs(10);
    let route_of = |n: &str| lab.node(n).pod_cidr.to_string();
    let repairs = agent.metrics().drift_repairs.get();

    // A route: its destination in /proc/net/route as the kernel prints it.
    let victim = route_of("node-2");
    let gateway = victim.trim_end_matches("/24");
    let hex = {
        let ip: std::net::Ipv4Addr = gateway.parse().expect("ip");
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    };
    let mut took = Vec::new();
    for _ in 0..20 {
        show(&lab, &["route", "del", &victim]);
        let start = Instant::now();
        wait_until("route back", wait, poll, || in_proc(&lab, "route", &hex));
        took.push(start.elapsed());
    }
    // A neighbour (/proc/net/arp), then an FDB entry.
    for _ in 0..5 {
        show(&lab, &["neigh", "del", gateway, "dev", "vxlan.calico"]);
        wait_until("neighbour back", wait, poll, || {
            in_proc(&lab, "arp", &format!("{gateway} "))
        });
    }
    let fdb = bridge(&lab, "node-1", &["fdb", "show", "dev", "vxlan.calico"]);
    let entry = fdb
        .lines()
        .find(|l| l.contains(" dst "))
        .expect("an FDB entry");
    let mac = entry.split_whitespace().next().expect("mac").to_string();
    for _ in 0..5 {
        bridge(&lab, "node-1", &["fdb", "del", &mac, "dev", "vxlan.calico"]);
        wait_until("fdb back", wait, poll, || {
            bridge(&lab, "node-1", &["fdb", "show", "dev", "vxlan.calico"]).contains(&mac)
        });
    }

    std::thread::sleep(Duration::from_millis(100));
    let full: Vec<Pass> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        full.is_empty(),
        "each repair was one write, not a full pass; passes: {full:#?}"
    );
    let repaired = agent.metrics().drift_repairs.get() - repairs;
    assert!(repaired >= 30, "repairs counted: {repaired}");
    took.sort();
    println!(
        "route repaired alone over {} deletions: median {:?}, worst {:?} (polled via /proc)",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    agent.stop().expect("stop");
}

#[test]
fn a_route_of_someone_else_that_takes_a_deleted_key_is_never_replaced() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let (agent, mut rx) = converged_agent(&lab, &lab.cluster(&Plan::steady(Mode::Vxlan, 1)));
    let wait = Duration::from_secs(10);
    let poll = Duration::from_millis(5);
    let victim = lab.node("node-2").pod_cidr.to_string();
    let mut taken = 0;
    for round in 0..20 {
        // No full pass in flight when a round starts: a pass that read the
        // kernel before the round would replace what it then finds (a
        // window design.md lists); this test is about the repair alone.
        wait_quiet(&mut rx);
        // Ours out, theirs in, as fast as ip can: the agent's exclusive add
        // either comes first (theirs is refused) or finds the key taken.
        let batch = format!("route del {victim}\nroute add blackhole {victim} proto static\n");
        let theirs = node_1(&lab)
            .run(|| {
                let mut child = std::process::Command::new("ip")
                    .args(["-batch", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .spawn()?;
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(batch.as_bytes())?;
                child.wait()
            })
            .expect("netns")
            .expect("ip -batch")
            .success();
        std::thread::sleep(Duration::from_millis(50));
        let now = show(&lab, &["route", "show", &victim]);
        if theirs {
            taken += 1;
            assert!(
                now.contains("blackhole") && now.contains("proto static"),
                "round {round}: the route of someone else's was replaced: {now}"
            );
            // Theirs going away is not our event; a change to our device
            // is, and its full pass puts ours back.
            show(&lab, &["route", "del", &victim, "proto", "static"]);
            show(&lab, &["link", "set", "vxlan.calico", "mtu", "1400"]);
        }
        wait_until("ours back", wait, poll, || {
            show(&lab, &["route", "show", &victim, "proto", "91"])
                .lines()
                .count()
                == 1
        });
    }
    println!("someone else's route took the key in {taken} of 20 rounds");
    agent.stop().expect("stop");
}

/// The repair benchmark, not a pass/fail test: node-1 with 5000
/// VXLAN peers (3 lab nodes and synthetic ones), a peer's route deleted
/// 100 times, polled from outside the agent through /proc (which lists
/// every route, so each poll costs a little too).
/// Run: `cargo test --release --test netns repair_at_5000 -- --ignored --nocapture`
#[test]
#[ignore]
fn repair_at_5000_vxlan_peers() {
    use ipnetwork::{IpNetwork, Ipv4Network};
    use podroute::model::Node;
    use std::net::Ipv4Addr;
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let mut cluster = lab.cluster(&Plan::steady(Mode::Vxlan, 1));
    for i in 0..4997u32 {
        let pod = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (i << 8));
        cluster.nodes.push(Node {
            name: format!("peer-{i}"),
            node_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 251, 0, 1)) + i)),
            node_ip6: None,
            pod_cidrs: vec![IpNetwork::V4(Ipv4Network::new(pod, 24).expect("a /24"))],
        });
    }
    let (agent, mut rx) = converged_agent(&lab, &cluster);
    let wait = Duration::from_secs(10);
    let mut took: Vec<Duration> = node_1(&lab)
        .run(|| {
            let lookup = FibMatch::open();
            (0..100)
                .map(|_| {
                    // The clock starts before the delete is sent: the agent
                    // may put the route back before a deleting process
                    // would even have exited.
                    let start = Instant::now();
                    lookup.delete([100, 64, 7, 0], 24);
                    while !lookup.ours([100, 64, 7, 1]) {
                        assert!(start.elapsed() < wait, "no repair");
                    }
                    start.elapsed()
                })
                .collect()
        })
        .expect("netns");
    took.sort();
    println!(
        "5000 VXLAN peers, route repaired over 100 deletions: median {:?}, worst {:?}; full passes meanwhile: {}",
        took[50],
        took[99],
        passes(&mut rx)
    );
    agent.stop().expect("stop");
}

/// `ip route get fibmatch`, without a process: one RTM_GETROUTE lookup that
/// answers with the route entry that matches, in the calling thread's
/// namespace.
struct FibMatch(rtnetlink::sys::Socket);

impl FibMatch {
    fn open() -> FibMatch {
        use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
        let mut socket = Socket::new(NETLINK_ROUTE).expect("netlink socket");
        socket.bind_auto().expect("bind");
        socket.connect(&SocketAddr::new(0, 0)).expect("connect");
        FibMatch(socket)
    }

    /// Delete the main table's route to `dst/len` and wait for the ack.
    fn delete(&self, dst: [u8; 4], len: u8) {
        use rtnetlink::packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_REQUEST};
        use rtnetlink::packet_route::route::{
            RouteAddress, RouteAttribute, RouteMessage, RouteScope,
        };
        use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = len;
        route.header.table = 254;
        route.header.scope = RouteScope::NoWhere;
        let dst = RouteAddress::Inet(std::net::Ipv4Addr::from(dst));
        route.attributes.push(RouteAttribute::Destination(dst));
        let mut message = NetlinkMessage::from(RouteNetlinkMessage::DelRoute(route));
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        message.finalize();
        let mut bytes = vec![0; message.header.length as usize];
        message.serialize(&mut bytes);
        self.0.send(&bytes, 0).expect("send delete");
        let mut ack = Vec::with_capacity(8192);
        self.0.recv(&mut ack, 0).expect("recv ack");
        let code = i32::from_ne_bytes(ack[16..20].try_into().expect("an error code"));
        assert_eq!(code, 0, "route delete refused");
    }

    /// The route that `ip` matches is one of ours (protocol 91).
    fn ours(&self, ip: [u8; 4]) -> bool {
        use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
        use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
        const RTM_F_FIB_MATCH: u32 = 0x2000;
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = 32;
        route.header.flags =
            rtnetlink::packet_route::route::RouteFlags::from_bits_retain(RTM_F_FIB_MATCH);
        let dst = RouteAddress::Inet(std::net::Ipv4Addr::from(ip));
        route.attributes.push(RouteAttribute::Destination(dst));
        let mut message = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(route));
        message.header.flags = NLM_F_REQUEST;
        message.finalize();
        let mut bytes = vec![0; message.header.length as usize];
        message.serialize(&mut bytes);
        self.0.send(&bytes, 0).expect("send lookup");
        let mut reply = Vec::with_capacity(8192);
        self.0.recv(&mut reply, 0).expect("recv lookup");
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply) {
            Ok(m) => matches!(
                m.payload,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r))
                    if u8::from(r.header.protocol) == 91
            ),
            Err(_) => false,
        }
    }
}
