//! Shared scaffolding: a topology of node namespaces plus the engine run
//! inside each node, and checks that read the kernel and move packets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use podroute::api::{Mode, Plan};
use podroute::dataplane::Dataplane;
use podroute::engine::{self, Outcome};
use podroute::lab::netns::unique_name;
use podroute::lab::probe::{overhead, udp_roundtrip, EchoServer};
use podroute::lab::topology::{IpFamily, NodeInfo, Topology, TopologyBuilder};
use podroute::model::{Cluster, Config, Node, Settings};
use podroute::plan::Observed;

pub const PORT: u16 = 7777;

/// The family a probe is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}
const TIMEOUT: Duration = Duration::from_secs(2);

/// Root tests skip cleanly without root, unless CI demands them.
pub fn have_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("PODROUTE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("PODROUTE_REQUIRE_ROOT_TESTS=1 but not running as root");
    }
    println!("skipping: needs root");
    false
}

/// ipip exists only where the kernel has the module (the VM runner); on a
/// kernel without it the test says so and skips, except inside the VM.
pub fn have_ipip() -> bool {
    let probe = podroute::lab::netns::Netns::create(&unique_name("pripip")).expect("netns");
    let ok = probe.ip(&["link", "show", "tunl0"]).is_ok()
        || probe.ip(&["link", "add", "tunl0", "type", "ipip"]).is_ok();
    if ok {
        return true;
    }
    if std::env::var("PODROUTE_IN_VM").as_deref() == Ok("1") {
        panic!("inside the VM runner the kernel must have ipip");
    }
    // Straight to the stderr handle: libtest captures println! and eprintln!
    // of a passing test, and a skip must never read as a plain `ok`.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipping {}: this kernel has no ipip (run netns-tests/vm/run.sh for the ipip tests)",
        std::thread::current().name().unwrap_or("test")
    );
    false
}

/// Tests of input handling, scale or faults that prove nothing about ipip
/// run on the host only: under the VM's emulated CPU they would take minutes,
/// and the same CI run has them on the host. Says so on stderr (a skip must
/// never read as a plain `ok`).
pub fn host_only() -> bool {
    if std::env::var("PODROUTE_IN_VM").is_err() {
        return true;
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipping {} in the VM: it runs on the host in the same CI",
        std::thread::current().name().unwrap_or("test")
    );
    false
}

pub struct Lab {
    pub topo: Topology,
    pub nodes: Vec<Node>,
    dir: PathBuf,
    _echo: Vec<EchoServer>,
}

impl Lab {
    pub fn new(builder: TopologyBuilder) -> Lab {
        let topo = builder.build().expect("topology");
        let nodes = topo.model_nodes();
        let dir = std::env::temp_dir().join(unique_name("prtest"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let echo = topo
            .nodes()
            .iter()
            .flat_map(|n| &n.pods)
            .map(|p| EchoServer::start(&p.netns, PORT).expect("echo server"))
            .collect();
        Lab {
            topo,
            nodes,
            dir,
            _echo: echo,
        }
    }

    /// `n` nodes on one subnet, one pod each.
    pub fn flat(n: usize) -> Lab {
        Lab::new(Topology::builder().nodes(0, n))
    }

    /// [`Lab::flat`], dual-stack.
    pub fn dual(n: usize) -> Lab {
        Lab::new(Topology::builder().ip_family(IpFamily::Dual).nodes(0, n))
    }

    /// [`Lab::flat`], IPv6 only: no IPv4 address anywhere.
    pub fn v6_only(n: usize) -> Lab {
        Lab::new(Topology::builder().ip_family(IpFamily::V6).nodes(0, n))
    }

    /// The families every node's pods have: IPv4 unless the lab is
    /// IPv6-only, IPv6 in a dual-stack or IPv6-only lab.
    pub fn families(&self) -> Vec<Family> {
        let nodes = self.topo.nodes();
        let all = |has: fn(&NodeInfo) -> bool| !nodes.is_empty() && nodes.iter().all(has);
        let v4 = all(|n| n.v4().is_some()).then_some(Family::V4);
        let v6 = all(|n| n.pod_cidr6.is_some()).then_some(Family::V6);
        v4.into_iter().chain(v6).collect()
    }

    /// Panics, naming `what`, when the lab has no IPv4 (an IPv6-only lab).
    fn expect_v4(&self, what: &str) {
        assert!(
            self.families().contains(&Family::V4),
            "{what}: this lab is IPv6-only, it has no IPv4 (use the IPv6 helpers)"
        );
    }

    pub fn node(&self, name: &str) -> &NodeInfo {
        self.topo.node(name).expect("node in topology")
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn config(&self, node: &str) -> Config {
        Config {
            mtu_file: self.dir.join(node).join("mtu"),
            ..Config::default()
        }
    }

    pub fn cluster(&self, plan: &Plan) -> Cluster {
        Cluster {
            nodes: self.nodes.clone(),
            plan: plan.clone(),
            settings: Settings::default(),
        }
    }

    /// Run the engine once in `node`'s namespace.
    pub fn converge_with(
        &self,
        node: &str,
        plan: &Plan,
        config: Config,
    ) -> podroute::Result<Outcome> {
        let cluster = self.cluster(plan);
        let netns = self.topo.node_netns(node)?;
        netns.run_async(|| async {
            let mut dp = Dataplane::connect(config)?;
            let local = engine::local_node(&dp, &cluster, Some(node)).await?;
            let (desired, _) = engine::desired_for(&mut dp, &cluster, local).await?;
            engine::converge(&mut dp, &desired).await
        })?
    }

    pub fn converge(&self, node: &str, plan: &Plan) -> Outcome {
        self.converge_with(node, plan, self.config(node))
            .unwrap_or_else(|e| panic!("converge {node}: {e}"))
    }

    /// Converge every node, then give the pods the MTU the engine chose.
    pub fn converge_all(&self, plan: &Plan) -> BTreeMap<String, Outcome> {
        let out: BTreeMap<String, Outcome> = self
            .names()
            .into_iter()
            .map(|n| {
                let o = self.converge(&n, plan);
                (n, o)
            })
            .collect();
        for (node, outcome) in &out {
            let mtu = outcome.pod_mtu.expect("pod mtu");
            self.topo.set_pod_mtu(node, mtu).expect("pod mtu");
        }
        out
    }

    /// Remove everything we own from `node`.
    pub fn cleanup(&self, node: &str, config: Config) -> Outcome {
        let netns = self.topo.node_netns(node).expect("netns");
        netns
            .run_async(|| async {
                let nothing = podroute::plan::nothing(&config);
                let mut dp = Dataplane::connect(config)?;
                engine::converge(&mut dp, &nothing).await
            })
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("cleanup {node}: {e}"))
    }

    pub fn observe(&self, node: &str) -> Observed {
        let config = self.config(node);
        let netns = self.topo.node_netns(node).expect("netns");
        netns
            .run_async(|| async {
                let mut dp = Dataplane::connect(config)?;
                dp.observe(std::iter::empty()).await
            })
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("observe {node}: {e}"))
    }

    /// `ip -n <node> args...`
    pub fn ip(&self, node: &str, args: &[&str]) -> String {
        self.topo
            .node_netns(node)
            .and_then(|ns| ns.ip(args))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first pod's IPv4 address; panics in an IPv6-only lab.
    pub fn pod_ip(&self, node: &str) -> Ipv4Addr {
        self.expect_v4("pod_ip");
        self.node(node).pods[0].ip
    }

    /// The first pod's IPv6 address; the lab must be dual-stack or IPv6-only.
    pub fn pod_ip6(&self, node: &str) -> Ipv6Addr {
        self.node(node).pods[0]
            .ip6
            .expect("a dual-stack or IPv6-only lab")
    }

    /// The first pod's address in `family`.
    pub fn pod_addr(&self, node: &str, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.pod_ip(node).into(),
            Family::V6 => self.pod_ip6(node).into(),
        }
    }

    /// A UDP round trip from the first pod of `from` to the first pod of `to`.
    pub fn udp(&self, from: &str, to: &str, payload: usize, df: bool) -> bool {
        self.udp_in(Family::V4, from, to, payload, df)
    }

    /// [`Lab::udp`] over IPv6.
    pub fn udp6(&self, from: &str, to: &str, payload: usize, df: bool) -> bool {
        self.udp_in(Family::V6, from, to, payload, df)
    }

    /// [`Lab::udp`] in `family`.
    pub fn udp_in(&self, family: Family, from: &str, to: &str, payload: usize, df: bool) -> bool {
        let src = &self.node(from).pods[0].netns;
        let to = self.pod_addr(to, family);
        udp_roundtrip(src, to, PORT, payload, df, TIMEOUT).expect("probe")
    }

    /// The UDP payload of a packet of exactly `mtu` bytes in `family`.
    pub fn payload_at(&self, family: Family, mtu: u32) -> usize {
        let ip = match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        mtu as usize - overhead(ip)
    }

    /// Every ordered pair of pods exchanges a small packet and a DF packet of
    /// exactly the pod MTU (the pod veth MTU the engine chose), in each
    /// family of the lab.
    pub fn assert_all_pods_talk(&self, pod_mtu: u32) {
        let families = self.families();
        assert!(!families.is_empty(), "a lab without pods in any family");
        for family in families {
            self.assert_all_pods_talk_in(family, pod_mtu);
        }
    }

    /// [`Lab::assert_all_pods_talk`] in `family` only.
    pub fn assert_all_pods_talk_in(&self, family: Family, pod_mtu: u32) {
        for from in self.names() {
            for to in self.names().into_iter().filter(|t| *t != from) {
                assert!(
                    self.udp_in(family, &from, &to, 64, false),
                    "{family:?} pod {from} -> pod {to}: no echo"
                );
                let exact = self.payload_at(family, pod_mtu);
                assert!(
                    self.udp_in(family, &from, &to, exact, true),
                    "{family:?} pod {from} -> pod {to}: DF packet of the pod MTU {pod_mtu} lost"
                );
            }
        }
    }

    /// Transmitted packet count of a device in a node (from
    /// /proc/thread-self/net/dev: /sys shows the mounter's namespace).
    pub fn tx_packets(&self, node: &str, dev: &str) -> u64 {
        self.packets(node, dev, TX_PACKETS)
    }

    /// Received packet count of a device in a node, as [`Lab::tx_packets`].
    pub fn rx_packets(&self, node: &str, dev: &str) -> u64 {
        self.packets(node, dev, RX_PACKETS)
    }

    fn packets(&self, node: &str, dev: &str, column: usize) -> u64 {
        let netns = self.topo.node_netns(node).expect("netns");
        packets_by_device(netns, column)
            .into_iter()
            .find(|(name, _)| name == dev)
            .map_or(0, |(_, packets)| packets)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Columns of /proc/net/dev after the device name.
const RX_PACKETS: usize = 1;
const TX_PACKETS: usize = 9;

/// Transmitted packets of every device of `netns`, from
/// /proc/thread-self/net/dev (/sys shows the mounter's namespace).
pub fn tx_packets_by_device(netns: &podroute::lab::netns::Netns) -> Vec<(String, u64)> {
    packets_by_device(netns, TX_PACKETS)
}

fn packets_by_device(netns: &podroute::lab::netns::Netns, column: usize) -> Vec<(String, u64)> {
    let table = netns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .expect("netns")
        .expect("net/dev");
    table
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter_map(|(name, counters)| {
            let packets = counters.split_whitespace().nth(column)?.parse().ok()?;
            Some((name.to_string(), packets))
        })
        .collect()
}

pub fn steady(mode: Mode) -> Plan {
    Plan::steady(mode, 1)
}

/// Lines of `ip route show proto 91` for peers (our routes in the main
/// table; the filter proves the protocol, so ip leaves it out of each
/// line). The node's own pod CIDR, unreachable, is [`own_unreachable`].
pub fn our_routes(lab: &Lab, node: &str) -> Vec<String> {
    lab.ip(node, &["route", "show", "proto", "91"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.starts_with("unreachable "))
        .collect()
}

/// Our `unreachable <own pod CIDR>` route of `node`, if the kernel holds it.
pub fn own_unreachable(lab: &Lab, node: &str) -> Option<String> {
    lab.expect_v4("own_unreachable");
    let cidr = lab.node(node).pod_cidr.to_string();
    lab.ip(
        node,
        &["route", "show", "proto", "91", "type", "unreachable"],
    )
    .lines()
    .map(|l| l.trim().to_string())
    .find(|l| l.starts_with(&format!("unreachable {cidr} ")) && l.contains("metric 4294967295"))
}

/// A lone node namespace for scale tests: `eth0` 10.250.0.1/16 (peers on
/// link anywhere in 10.250/16), up, and `lo` up.
pub fn scratch_node(prefix: &str) -> podroute::lab::netns::Netns {
    let ns = podroute::lab::netns::Netns::create(&unique_name(prefix)).expect("netns");
    for args in [
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ][..],
        &["addr", "add", "10.250.0.1/16", "dev", "eth0"],
        &["link", "set", "eth0", "up"],
        &["link", "set", "eth1", "up"],
        &["link", "set", "lo", "up"],
    ] {
        ns.ip(args).expect("scratch namespace");
    }
    ns
}

/// Peer `i` of a scale test: node IP on 10.250/16 (0 is the scratch node),
/// pod CIDR a /24 of 100.64/10.
pub fn scale_peer(i: usize) -> (String, String) {
    (
        format!("10.250.{}.{}", i / 250, i % 250 + 1),
        format!("100.{}.{}.0/24", 64 + i / 256, i % 256),
    )
}

/// CPU time (utime + stime, clock ticks) a process has used so far.
/// The first value of field `name` (e.g. `CapEff:`) in a /proc/.../status text.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()
}

/// A cluster file holding `nodes` of the lab in `mode`, replaced atomically
/// as an editor or a ConfigMap update does.
pub fn write_cluster(lab: &Lab, path: &Path, mode: &str, nodes: &[&str]) {
    write_cluster_with(lab, path, mode, "", nodes);
}

/// [`write_cluster`] with `extra` top-level lines (`mtu: 9000\n`, ...).
pub fn write_cluster_with(lab: &Lab, path: &Path, mode: &str, extra: &str, nodes: &[&str]) {
    lab.expect_v4("write_cluster");
    let mut yaml = format!("mode: {mode}\n{extra}nodes:\n");
    for n in lab
        .topo
        .nodes()
        .iter()
        .filter(|n| nodes.contains(&n.name.as_str()))
    {
        yaml.push_str(&format!(
            "  - name: {}\n    ip: {}\n    podCIDR: {}\n",
            n.name, n.ip, n.pod_cidr
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write cluster file");
    std::fs::rename(&tmp, path).expect("rename cluster file");
}

/// A cluster file with every family of the lab's nodes: `ips` and
/// `podCIDRs` per node.
pub fn write_dual_cluster(lab: &Lab, path: &Path, mode: &str) -> String {
    let mut yaml = format!("mode: {mode}\nnodes:\n");
    for n in lab.topo.model_nodes() {
        let ips: Vec<String> = n.ips().map(|ip| format!("'{ip}'")).collect();
        let cidrs: Vec<String> = n.pod_cidrs.iter().map(|c| format!("'{c}'")).collect();
        yaml.push_str(&format!(
            "  - name: {}\n    ips: [{}]\n    podCIDRs: [{}]\n",
            n.name,
            ips.join(", "),
            cidrs.join(", ")
        ));
    }
    std::fs::write(path, yaml).expect("write cluster file");
    path.display().to_string()
}

pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command name (which may hold spaces and parentheses) come
    // the state (field 3) and then numbers, some signed (tpgid is -1 without
    // a terminal), so count by position: utime and stime are fields 14 and
    // 15, indices 11 and 12 from the state.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("utime/stime");
    ticks(11) + ticks(12)
}

/// `Command::output` through [`spawn_retrying`].
pub fn output_retrying(command: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_retrying(command)
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {command:?}: {e}"))
}

/// A copy of a program in the temp directory, removed on drop: to run it as
/// another user (the build's own binary may sit under a directory only root
/// can enter, such as a clone in `mktemp -d`), or after exec said ETXTBSY.
pub struct TempCopy(pub PathBuf);

impl TempCopy {
    pub fn of(program: impl AsRef<Path>) -> TempCopy {
        let copy = std::env::temp_dir().join(unique_name("prexe"));
        std::fs::copy(program, &copy).expect("copy the program");
        TempCopy(copy)
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `Command::spawn`; when exec says ETXTBSY (seen in the VM runner, where
/// a binary unpacked from the initramfs can stay "open for writing"), run a
/// fresh copy of the program instead.
pub fn spawn_retrying(command: &mut std::process::Command) -> std::process::Child {
    match command.spawn() {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
            let copy = TempCopy::of(command.get_program());
            let mut again = std::process::Command::new(&copy.0);
            again.args(command.get_args());
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => again.env(key, value),
                    None => again.env_remove(key),
                };
            }
            // Stdio does not carry over from `command`: the callers pipe.
            again
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            again
                .spawn()
                .unwrap_or_else(|e| panic!("run {again:?}: {e}"))
        }
        other => other.unwrap_or_else(|e| panic!("run {command:?}: {e}")),
    }
}

/// The stderr lines of a child, collected by a thread as they come.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    /// Follows `child`'s piped stderr.
    pub fn follow(child: &mut std::process::Child) -> Log {
        use std::io::{BufRead, BufReader};
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Log::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.0.lock().expect("log").push(line);
            }
        });
        log
    }

    /// Lines so far that match `filter`.
    pub fn count(&self, filter: impl Fn(&str) -> bool) -> usize {
        self.0
            .lock()
            .expect("log")
            .iter()
            .filter(|l| filter(l))
            .count()
    }

    /// The first line so far that contains `text`.
    pub fn find(&self, text: &str) -> Option<String> {
        self.0
            .lock()
            .expect("log")
            .iter()
            .find(|l| l.contains(text))
            .cloned()
    }

    pub fn text(&self) -> String {
        self.0.lock().expect("log").join("\n")
    }
}

/// Whether `check` holds within `timeout` (polled every 20 ms).
pub fn poll_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Poll `check` every `poll` until it holds; fails the test after `timeout`.
/// Returns how long it took (the tests that measure repair latency use it).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(poll);
    }
    start.elapsed()
}

/// (status code, body) of GET `path` on 127.0.0.1:`port`; `None` while
/// nothing answers there.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// [`http_get`] from inside network namespace `netns`.
pub fn http_get_in(netns: &str, port: u16, path: &str) -> Option<(u16, String)> {
    podroute::lab::netns::run_in_netns(netns, || http_get(port, path))
        .ok()
        .flatten()
}
