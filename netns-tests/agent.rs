//! `podroute agent` as a process in each node namespace, on a cluster file:
//! converge, follow changes, repair drift at once, survive SIGKILL, and
//! restart without a single write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use podroute::model::Mac;

use crate::support::{
    cpu_ticks, have_root, host_only, our_routes, scale_peer, scratch_node, status_field,
    wait_until, write_cluster, Lab, Log,
};

/// An agent process; killed when dropped. Its stderr is collected.
pub(crate) struct AgentProcess {
    pub(crate) child: Child,
    pub(crate) log: Log,
}

impl AgentProcess {
    pub(crate) fn start(lab: &Lab, node: &str, cluster: &Path) -> AgentProcess {
        AgentProcess::start_logging(lab, node, cluster, "text")
    }

    /// With `--log-format <format>`.
    pub(crate) fn start_logging(
        lab: &Lab,
        node: &str,
        cluster: &Path,
        format: &str,
    ) -> AgentProcess {
        AgentProcess::start_args(lab, node, cluster, &["--log-format", format])
    }

    /// With `extra` arguments after the usual ones.
    pub(crate) fn start_args(
        lab: &Lab,
        node: &str,
        cluster: &Path,
        extra: &[&str],
    ) -> AgentProcess {
        let mtu_file = lab.config(node).mtu_file;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.node(node).netns,
                env!("CARGO_BIN_EXE_podroute"),
                "agent",
            ])
            .args(["--node-name", node, "--cluster"])
            .arg(cluster)
            .arg("--mtu-file")
            .arg(&mtu_file)
            .args(["--listen", "127.0.0.1:9469", "--log", "podroute=debug"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent");
        let log = Log::follow(&mut child);
        AgentProcess { child, log }
    }

    /// Kernel writes logged so far (one line per change, each with its why).
    pub(crate) fn writes(&self) -> usize {
        self.log
            .count(|l| l.contains("podroute::dataplane") && l.contains("why="))
    }

    /// CPU ticks the process uses during `period`.
    fn cpu_ticks_over(&self, period: Duration) -> u64 {
        let before = cpu_ticks(self.child.id());
        std::thread::sleep(period);
        cpu_ticks(self.child.id()) - before
    }

    /// (thread id, CapEff, CapBnd) of every thread of the process.
    fn thread_capabilities(&self) -> Vec<(String, u64, u64)> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&tasks).expect("task dir") {
            let tid = entry
                .expect("task")
                .file_name()
                .to_string_lossy()
                .into_owned();
            let Ok(status) = std::fs::read_to_string(format!("{tasks}/{tid}/status")) else {
                continue; // the thread just ended
            };
            let mask = |name: &str| {
                let hex = status_field(&status, name)
                    .unwrap_or_else(|| panic!("{name} in {tasks}/{tid}/status"));
                u64::from_str_radix(hex, 16).expect("capability mask")
            };
            out.push((tid.clone(), mask("CapEff:"), mask("CapBnd:")));
        }
        assert!(out.len() > 1, "expected several threads, found {out:?}");
        out
    }

    pub(crate) fn log(&self) -> String {
        self.log.text()
    }

    /// Send `signal` and go on (SIGSTOP, SIGCONT).
    pub(crate) fn send(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    pub(crate) fn signal(&mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // `ip netns exec` execs the agent, so this pid is the agent itself.
        let _ = nix::sys::signal::kill(pid, signal);
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polled every millisecond: the repair latency is measured with it.
pub(crate) fn wait_for(what: &str, timeout: Duration, check: impl FnMut() -> bool) -> Duration {
    wait_until(what, timeout, Duration::from_millis(1), check)
}

pub(crate) fn bridge(lab: &Lab, node: &str, args: &[&str]) -> String {
    let mut command = vec!["bridge"];
    command.extend_from_slice(args);
    lab.topo
        .node_netns(node)
        .and_then(|ns| ns.exec(&command))
        .unwrap_or_else(|e| panic!("bridge {args:?} in {node}: {e}"))
}

/// The JSON log line of `message`, parsed.
fn json_line(agent: &AgentProcess, message: &str) -> serde_json::Value {
    let line = agent
        .log
        .find(message)
        .unwrap_or_else(|| panic!("no {message:?} in the log:\n{}", agent.log()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

pub(crate) fn routes_via(lab: &Lab, node: &str, dev: &str) -> usize {
    our_routes(lab, node)
        .iter()
        .filter(|r| r.contains(&format!("dev {dev}")))
        .count()
}

#[test]
fn agents_follow_the_file_repair_drift_and_restart_without_writes() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let dir: PathBuf = lab
        .config("node-1")
        .mtu_file
        .parent()
        .and_then(Path::parent)
        .expect("dir")
        .into();
    let cluster = dir.join("cluster.yaml");
    let all = ["node-1", "node-2", "node-3"];
    write_cluster(&lab, &cluster, "vxlan", &all);
    // node-3 logs JSON; the others text (their write counts parse it).
    let mut agents: Vec<AgentProcess> = all
        .iter()
        .map(|n| match *n {
            "node-3" => AgentProcess::start_logging(&lab, n, &cluster, "json"),
            _ => AgentProcess::start(&lab, n, &cluster),
        })
        .collect();
    for node in all {
        wait_for(&format!("{node} in vxlan"), Duration::from_secs(10), || {
            routes_via(&lab, node, "vxlan.calico") == 2
        });
    }
    for node in all {
        lab.topo.set_pod_mtu(node, 1450).expect("mtu");
    }
    let started = json_line(&agents[2], "agent started");
    assert_eq!(started["fields"]["message"], "agent started", "{started}");
    assert_eq!(started["level"], "INFO", "{started}");
    // Idle means idle: no loop spinning on its own file or socket events.
    let ticks = agents[0].cpu_ticks_over(Duration::from_secs(1));
    assert!(ticks < 10, "an idle agent used {ticks} CPU ticks in 1 s");
    lab.assert_all_pods_talk(1450);
    // Started as root, every thread now holds CAP_NET_ADMIN and nothing else.
    for (tid, effective, bounding) in agents[0].thread_capabilities() {
        assert_eq!(effective, 1 << 12, "thread {tid}: effective capabilities");
        assert_eq!(bounding, 1 << 12, "thread {tid}: bounding set");
    }

    // Drift: a route deleted by hand comes back at once.
    let victim = lab.node("node-2").pod_cidr.to_string();
    let mut latencies = Vec::new();
    for _ in 0..20 {
        lab.ip("node-1", &["route", "del", &victim]);
        latencies.push(wait_for("repair", Duration::from_secs(5), || {
            routes_via(&lab, "node-1", "vxlan.calico") == 2
        }));
    }
    latencies.sort();
    println!(
        "drift repair latency over {} deletions: median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // So do a neighbour and an FDB entry of a peer's VTEP.
    let peer = lab.node("node-2");
    let (vtep, underlay) = (peer.pod_cidr.ip().to_string(), peer.ip.to_string());
    let mac = Mac::for_node("node-2").to_string();
    let neigh = || lab.ip("node-1", &["neigh", "show", "dev", "vxlan.calico"]);
    let fdb = || bridge(&lab, "node-1", &["fdb", "show", "dev", "vxlan.calico"]);
    let want_neigh = format!("{vtep} lladdr {mac} PERMANENT");
    let want_fdb = format!("{mac} dst {underlay} self permanent");
    assert!(neigh().contains(&want_neigh), "{}", neigh());
    assert!(fdb().contains(&want_fdb), "{}", fdb());
    lab.ip("node-1", &["neigh", "del", &vtep, "dev", "vxlan.calico"]);
    bridge(
        &lab,
        "node-1",
        &[
            "fdb",
            "del",
            &mac,
            "dev",
            "vxlan.calico",
            "dst",
            &underlay,
            "self",
        ],
    );
    wait_for("neighbour and FDB back", Duration::from_secs(5), || {
        neigh().contains(&want_neigh) && fdb().contains(&want_fdb)
    });
    assert!(
        lab.udp("node-1", "node-2", 64, false),
        "pod node-1 -> node-2"
    );

    // A deleted device comes back too.
    lab.ip("node-1", &["link", "del", "vxlan.calico"]);
    wait_for("device repair", Duration::from_secs(5), || {
        routes_via(&lab, "node-1", "vxlan.calico") == 2
    });

    // The file changes: the mode, then a peer leaves.
    write_cluster(&lab, &cluster, "native", &all);
    for node in all {
        wait_for(&format!("{node} native"), Duration::from_secs(10), || {
            routes_via(&lab, node, "eth0") == 2
        });
    }
    lab.assert_all_pods_talk(1450);
    write_cluster(&lab, &cluster, "native", &["node-1", "node-2"]);
    wait_for("node-3 gone", Duration::from_secs(10), || {
        our_routes(&lab, "node-1").len() == 1
    });

    // SIGKILL right after a change, then a restart converges.
    write_cluster(&lab, &cluster, "vxlan", &all);
    std::thread::sleep(Duration::from_millis(2));
    agents[0].signal(nix::sys::signal::Signal::SIGKILL);
    agents[0] = AgentProcess::start(&lab, "node-1", &cluster);
    wait_for("node-1 after SIGKILL", Duration::from_secs(10), || {
        routes_via(&lab, "node-1", "vxlan.calico") == 2
    });
    for node in ["node-2", "node-3"] {
        wait_for(
            &format!("{node} back to vxlan"),
            Duration::from_secs(10),
            || routes_via(&lab, node, "vxlan.calico") == 2,
        );
    }
    lab.assert_all_pods_talk(1450);

    // The HTTP endpoints, from inside node-1.
    let metrics = http_get(&lab, "node-1", "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for name in [
        // Two peers and the node's own pod CIDR, unreachable.
        "podroute_owned_routes 3",
        "podroute_ready 1",
        "podroute_update_refused 0",
        "podroute_applied_generation",
        "podroute_reconcile_duration_seconds_bucket",
        "podroute_drift_repairs_total",
        "podroute_netlink_errors_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(http_get(&lab, "node-1", "/readyz").starts_with("HTTP/1.1 200"));
    assert!(http_get(&lab, "node-1", "/healthz").starts_with("HTTP/1.1 200"));

    // SIGTERM leaves the dataplane; a restart on unchanged state writes nothing.
    agents[1].signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        routes_via(&lab, "node-2", "vxlan.calico"),
        2,
        "SIGTERM must not touch the dataplane"
    );
    agents[1] = AgentProcess::start(&lab, "node-2", &cluster);
    wait_for("restarted agent ready", Duration::from_secs(10), || {
        agents[1].log().contains("agent started")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agents[1].writes(),
        0,
        "restart wrote to the kernel:\n{}",
        agents[1].log()
    );
    lab.assert_all_pods_talk(1450);
}

pub(crate) fn http_get(lab: &Lab, node: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    lab.topo
        .node_netns(node)
        .expect("netns")
        .run(move || {
            let mut stream = std::net::TcpStream::connect("127.0.0.1:9469")?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok::<_, std::io::Error>(response)
        })
        .expect("netns")
        .expect("http")
}

#[test]
fn agent_without_cap_net_admin_says_so() {
    if !have_root() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_podroute"));
    command.args([
        "agent",
        "--node-name",
        "node-1",
        "--cluster",
        "/nonexistent.yaml",
    ]);
    // Root gets every capability of the bounding set at exec: take
    // CAP_NET_ADMIN out of it for the child only.
    unsafe {
        command.pre_exec(|| {
            caps::drop(
                None,
                caps::CapSet::Bounding,
                caps::Capability::CAP_NET_ADMIN,
            )
            .map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let out = command.output().expect("run podroute");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
}

#[test]
fn agent_killed_in_the_middle_of_applying_converges_after_restart() {
    // It hunts for the write phase by timing: the host run covers it.
    if !have_root() || !host_only() {
        return;
    }
    let ns = scratch_node("prkill");
    // Enough peers that applying takes a while (the kernel's FIB insert is
    // quadratic in routes through one device).
    const PEERS: usize = 5000;
    let dir = std::env::temp_dir().join(podroute::lab::netns::unique_name("prkill"));
    std::fs::create_dir_all(&dir).expect("dir");
    let cluster = dir.join("cluster.yaml");
    let mut yaml = String::from("mode: native\nnodes:\n");
    for i in 0..=PEERS {
        let (ip, cidr) = scale_peer(i);
        yaml.push_str(&format!(
            "  - name: n{i}\n    ip: {ip}\n    podCIDR: {cidr}\n"
        ));
    }
    std::fs::write(&cluster, yaml).expect("cluster file");
    let start = |logs: bool| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                env!("CARGO_BIN_EXE_podroute"),
                "agent",
                "--node-name",
                "n0",
            ])
            .arg("--cluster")
            .arg(&cluster)
            .arg("--mtu-file")
            .arg(dir.join("mtu"))
            .args(["--listen", "127.0.0.1:9469", "--log", "podroute=info"])
            .stdout(Stdio::null())
            .stderr(if logs { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("agent")
    };
    let routes = || {
        ns.ip(&["route", "show", "proto", "91", "type", "unicast"])
            .expect("routes")
            .lines()
            .count()
    };

    // Kill after a growing delay until the kill lands mid-apply.
    let mut partial = None;
    // Start-up (reading thousands of nodes) takes a while, then the writes:
    // step through delays finer than the write phase lasts.
    for delay_ms in (1..80u64).map(|k| k * 60) {
        let mut child = start(false);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let n = routes();
        if n > 0 && n < PEERS {
            partial = Some(n);
            break;
        }
        ns.ip(&["route", "flush", "proto", "91"]).expect("flush");
    }
    let partial = partial.expect("never caught the agent in the middle of applying");
    println!("SIGKILL left {partial} of {PEERS} routes");

    let mut child = start(false);
    wait_for(
        "full convergence after SIGKILL",
        Duration::from_secs(60),
        || routes() == PEERS,
    );
    let _ = child.kill();
    let _ = child.wait();

    // And a restart on that state writes nothing.
    let mut again = start(true);
    let log = Log::follow(&mut again);
    wait_for("agent up", Duration::from_secs(10), || {
        log.find("agent started").is_some()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let writes = log.count(|l| l.contains("why="));
    let _ = again.kill();
    let _ = again.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        writes, 0,
        "a restart on converged state wrote to the kernel"
    );
}
