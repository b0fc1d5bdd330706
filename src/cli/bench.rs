//! `podroute bench [--peers 100,1000,10000] [--mode native|vxlan] [--repeat R] [-o table|json]`
//!
//! Programs N peers in a scratch network namespace with the real engine
//! (`engine::converge`, the same call `apply` and the agent make) and the
//! same N peers with `ip -batch` in a second scratch namespace, and compares.
//!
//! Each scratch namespace holds a veth pair `eth0`/`eth1` (both up, MTU 1500),
//! with the node IP 10.250.0.1/16 on `eth0`. Peers are `node-1..node-N` with
//! node IPs from 10.250.0.2 upward (all on-link) and /24 pod CIDRs from
//! 100.64.0.0/10 (the local node has the first). Namespaces are deleted when
//! they go out of scope, also on error; the MTU file and the batch files live
//! in a temporary directory that is removed at the end.
//!
//! Phases of the engine, per N, each timed and with the netlink requests sent
//! (`Dataplane::requests`: a dump counts once, whatever its size):
//! - `plan`: `engine::desired_for` (link and address dump, pure planner);
//! - `program`: `engine::converge` from empty (observe, apply, read back);
//! - `observe`: `engine::dry_run` alone (dump + diff; must be empty);
//! - `resync`: `engine::converge` again: must make zero writes (fails the bench otherwise);
//! - `delete`: `engine::converge` to `Desired::default()`.
//!
//! `ip -batch` does the same writes with one `ip` process (`ip -n NS -batch FILE`,
//! process start included in the time); in vxlan mode also the device
//! (`ip link add`, address, up) and the FDB entries (`bridge -batch`).
//!
//! With `--repeat R` (default 3) the engine's cycle and the `ip -batch`
//! cycle alternate R times in the same two namespaces (each cycle starts and
//! ends empty) and every phase reports the median, so background load hits
//! both sides alike.
//!
//! Peak RSS is VmHWM of the whole bench process (main runtime, the namespace
//! threads, and the engine's state), reset before each N by writing 5 to
//! /proc/self/clear_refs.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;

use super::output::table;
use super::Output;
use crate::api::{Mode, Plan};
use crate::dataplane::Dataplane;
use crate::engine;
use crate::lab::netns::{unique_name, Netns};
use crate::model::{Cluster, Config, Mac, Node};
use crate::plan::{Desired, Op, Step};
use crate::{Error, Result};

/// The local node's IP; peers follow it on the same /16.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const UNDERLAY_PREFIX: u8 = 16;
/// Pod CIDRs are the /24s of 100.64.0.0/10; the local node takes the first.
const POD_RANGE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
const POD_RANGE_PREFIX: u8 = 10;
const POD_PREFIX: u8 = 24;
const MAX_PEERS: usize = (1 << (POD_PREFIX - POD_RANGE_PREFIX)) - 1;
const UPLINK: &str = "eth0";
const UPLINK_MTU: u32 = 1500;

/// Targets from the issue: printed next to the results, not enforced.
const TARGET_PROGRAM_RATIO: f64 = 1.2;
const TARGET_RESYNC_PEERS: usize = 10_000;
const TARGET_RESYNC_MS: f64 = 50.0;
const TARGET_RSS_PEERS: usize = 10_000;
const TARGET_RSS_MIB: f64 = 30.0;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Peer counts to benchmark (comma-separated; run in ascending order).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub peers: Vec<usize>,
    /// Dataplane to program: native routes on the uplink, or VXLAN (device,
    /// routes, neighbours and FDB entries).
    #[arg(long, value_enum, default_value = "native")]
    pub mode: BenchMode,
    /// Run every phase this many times per N (engine and ip -batch
    /// alternating) and report the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Keep podroute's per-write log lines during the timed phases. Off by
    /// default: they are suppressed so the bench times netlink, not stderr.
    #[arg(long)]
    pub step_logs: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Native,
    Vxlan,
}

impl BenchMode {
    fn mode(self) -> Mode {
        match self {
            BenchMode::Native => Mode::Native,
            BenchMode::Vxlan => Mode::Vxlan,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub mode: String,
    /// Runs per phase; times are the median.
    pub repeat: u32,
    pub step_logs: bool,
    pub rss_scope: String,
    pub results: Vec<PeersResult>,
    /// Broken invariants (writes on a no-op resync, ...): the command fails when non-empty.
    pub failures: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeersResult {
    pub peers: usize,
    pub phases: Vec<PhaseResult>,
    /// VmHWM of the whole bench process over this N (KiB).
    pub peak_rss_kib: u64,
    pub targets: Vec<TargetResult>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseResult {
    /// `podroute` or `ip-batch`.
    pub tool: String,
    pub phase: String,
    /// Median over the runs, milliseconds.
    pub ms: f64,
    /// Every run, milliseconds (only with --repeat > 1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs_ms: Vec<f64>,
    /// Kernel (and file) writes.
    pub writes: usize,
    /// Of which route writes.
    pub route_writes: usize,
    /// Netlink requests sent (a dump counts once).
    pub netlink_messages: u64,
    /// Time relative to the same phase of `ip -batch` (program and delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_ip_batch: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetResult {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    check_privileges()?;
    let mut peers = args.peers.clone();
    peers.sort_unstable();
    peers.dedup();
    if peers.is_empty() {
        return Err(Error::invalid("peers", "give at least one peer count"));
    }
    if let Some(bad) = peers.iter().find(|&&n| n == 0 || n > MAX_PEERS) {
        return Err(Error::invalid(
            "peers",
            format!("{bad} is not in 1..={MAX_PEERS} (the /24s of {POD_RANGE}/{POD_RANGE_PREFIX})"),
        ));
    }
    let settings = Settings {
        mode: args.mode.mode(),
        repeat: args.repeat as usize,
        step_logs: args.step_logs,
    };
    let dir = TempDir::create()?;

    let mut report = BenchReport {
        mode: settings.mode.to_string(),
        repeat: args.repeat,
        step_logs: args.step_logs,
        rss_scope: "whole bench process: VmHWM, reset per N via /proc/self/clear_refs".into(),
        results: Vec::new(),
        failures: Vec::new(),
    };
    for &n in &peers {
        let result = bench_peers(n, &settings, &dir.path, &mut report.failures)?;
        report.results.push(result);
    }
    drop(dir);

    args.output.print(&report, render)?;
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Unconverged(format!(
            "bench: {}",
            report.failures.join("; ")
        )))
    }
}

struct Settings {
    mode: Mode,
    repeat: usize,
    step_logs: bool,
}

/// One N: the engine in one scratch namespace, `ip -batch` in another,
/// alternating run by run so background load hits both alike.
fn bench_peers(
    n: usize,
    settings: &Settings,
    dir: &Path,
    failures: &mut Vec<String>,
) -> Result<PeersResult> {
    reset_peak_rss()?;
    let cluster = cluster(n, settings.mode);
    let mut config = Config {
        mtu_file: dir.join("mtu"),
        ..Config::default()
    };
    cluster.apply_to(&mut config);
    progress(n, &format!("{n} peers, {} mode", settings.mode));
    let files = BatchFiles::write(&cluster, settings.mode, dir)?;
    let engine_ns = scratch_netns()?;
    let ip_ns = scratch_netns()?;
    let mut engine_runs = Vec::with_capacity(settings.repeat);
    let mut ip_runs = Vec::with_capacity(settings.repeat);
    for _ in 0..settings.repeat {
        engine_runs.push(engine_cycle(
            &engine_ns,
            &cluster,
            &config,
            settings.step_logs,
            failures,
        )?);
        ip_runs.push(ip_batch_cycle(&ip_ns, &cluster, settings.mode, &files)?);
    }
    drop(engine_ns);
    drop(ip_ns);
    let peak_rss_kib = peak_rss_kib()?;

    let mut phases = Vec::new();
    let ip_program = median_phase("ip-batch", "program", &ip_runs, 0);
    let ip_delete = median_phase("ip-batch", "delete", &ip_runs, 1);
    for (i, name) in ENGINE_PHASES.iter().enumerate() {
        let mut phase = median_phase("podroute", name, &engine_runs, i);
        phase.ratio_to_ip_batch = match *name {
            "program" => Some(ratio(phase.ms, ip_program.ms)),
            "delete" => Some(ratio(phase.ms, ip_delete.ms)),
            _ => None,
        };
        phases.push(phase);
    }
    phases.push(ip_program);
    phases.push(ip_delete);
    let targets = targets(n, &phases, peak_rss_kib);
    progress(
        n,
        &format!(
            "peak RSS {:.1} MiB (whole bench process)",
            kib_to_mib(peak_rss_kib)
        ),
    );
    Ok(PeersResult {
        peers: n,
        phases,
        peak_rss_kib,
        targets,
    })
}

const ENGINE_PHASES: [&str; 5] = ["plan", "program", "observe", "resync", "delete"];

/// One timed phase of one run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    time: Duration,
    writes: usize,
    route_writes: usize,
    netlink: u64,
}

/// One run of the engine's phases, from an empty namespace back to empty,
/// with a fresh netlink socket as an agent (re)start would have.
fn engine_cycle(
    ns: &Netns,
    cluster: &Cluster,
    config: &Config,
    step_logs: bool,
    failures: &mut Vec<String>,
) -> Result<Vec<Sample>> {
    let n = cluster.nodes.len() - 1;
    let config = config.clone();
    let (samples, broken) = ns.run_async(|| async move {
        // The per-write info lines would time stderr, not netlink.
        let quiet = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let _quiet = (!step_logs).then(|| tracing::dispatcher::set_default(&quiet));
        let mut dp = Dataplane::connect(config)?;
        let local = &cluster.nodes[0];
        let mut samples = Vec::with_capacity(ENGINE_PHASES.len());
        let mut broken = Vec::new();

        let (start, before) = (Instant::now(), dp.requests());
        let (desired, _) = engine::desired_for(&mut dp, cluster, local).await?;
        samples.push(sample(start, &dp, before, &[], 0));
        progress_sample(n, "podroute plan", samples.last());

        let (start, before) = (Instant::now(), dp.requests());
        let outcome = engine::converge(&mut dp, &desired).await?;
        samples.push(sample(start, &dp, before, &outcome.steps, outcome.changes));
        drop(outcome);
        progress_sample(n, "podroute program", samples.last());
        let (expected, routes) = (desired.routes.len(), samples[1].route_writes);
        if routes != expected {
            broken.push(format!(
                "{n} peers: program made {routes} route writes, expected {expected}"
            ));
        }

        let (start, before) = (Instant::now(), dp.requests());
        let diff = engine::dry_run(&mut dp, &desired).await?;
        samples.push(sample(start, &dp, before, &[], 0));
        progress_sample(n, "podroute observe", samples.last());
        if !diff.is_empty() {
            broken.push(format!(
                "{n} peers: observe right after program still wants {} writes",
                diff.steps.len()
            ));
        }

        let (start, before) = (Instant::now(), dp.requests());
        let outcome = engine::converge(&mut dp, &desired).await?;
        samples.push(sample(start, &dp, before, &outcome.steps, outcome.changes));
        progress_sample(n, "podroute resync", samples.last());
        if outcome.changes != 0 {
            let first: Vec<String> = outcome
                .steps
                .iter()
                .take(5)
                .map(|s| s.op.to_string())
                .collect();
            let message = format!(
                "{n} peers: no-op resync made {} writes (first: {})",
                outcome.changes,
                first.join("; ")
            );
            eprintln!("bench: FAIL: {message}");
            broken.push(message);
        }
        drop(outcome);

        let (start, before) = (Instant::now(), dp.requests());
        let outcome = engine::converge(&mut dp, &Desired::default()).await?;
        samples.push(sample(start, &dp, before, &outcome.steps, outcome.changes));
        progress_sample(n, "podroute delete", samples.last());
        Ok::<_, Error>((samples, broken))
    })??;
    failures.extend(broken);
    Ok(samples)
}

fn sample(
    start: Instant,
    dp: &Dataplane,
    requests_before: u64,
    steps: &[Step],
    writes: usize,
) -> Sample {
    let time = start.elapsed();
    Sample {
        time,
        writes,
        route_writes: steps
            .iter()
            .filter(|s| matches!(s.op, Op::ReplaceRoute { .. } | Op::DelRoute { .. }))
            .count(),
        netlink: dp.requests() - requests_before,
    }
}

/// The same writes with `ip -batch` (and `bridge -batch` for FDB entries):
/// `[program, delete]`. One netlink request per batch line or `ip` call.
fn ip_batch_cycle(
    ns: &Netns,
    cluster: &Cluster,
    mode: Mode,
    files: &BatchFiles,
) -> Result<Vec<Sample>> {
    let n = cluster.nodes.len() - 1;
    let start = Instant::now();
    let mut commands = 0;
    if mode == Mode::Vxlan {
        commands += vxlan_device_up(ns, cluster)?;
    }
    run_timed_command("ip", &["-n", ns.name(), "-batch", path_str(&files.ip_add)?])?;
    if mode == Mode::Vxlan {
        run_timed_command(
            "bridge",
            &["-n", ns.name(), "-batch", path_str(&files.fdb_add)?],
        )?;
    }
    let program = Sample {
        time: start.elapsed(),
        writes: files.writes + commands,
        route_writes: n,
        netlink: (files.writes + commands) as u64,
    };
    progress_sample(n, "ip -batch program", Some(&program));
    let held = count_lines(&ns.ip(&["route", "show", "proto", "91"])?);
    if held != n {
        return Err(Error::Unconverged(format!(
            "ip -batch installed {held} routes of {n}"
        )));
    }

    let start = Instant::now();
    let mut commands = 0;
    run_timed_command("ip", &["-n", ns.name(), "-batch", path_str(&files.ip_del)?])?;
    if mode == Mode::Vxlan {
        run_timed_command(
            "bridge",
            &["-n", ns.name(), "-batch", path_str(&files.fdb_del)?],
        )?;
        ns.ip(&["link", "del", "vxlan.calico"])?;
        commands += 1;
    }
    let delete = Sample {
        time: start.elapsed(),
        writes: files.writes + commands,
        route_writes: n,
        netlink: (files.writes + commands) as u64,
    };
    progress_sample(n, "ip -batch delete", Some(&delete));
    let held = count_lines(&ns.ip(&["route", "show", "proto", "91"])?);
    if held != 0 {
        return Err(Error::Unconverged(format!("ip -batch left {held} routes")));
    }
    Ok(vec![program, delete])
}

/// What the engine creates for VXLAN, with `ip`: the device (MTU, MAC,
/// VNI, port, local, link, learning off), its tunnel address, up.
/// Returns the number of writes.
fn vxlan_device_up(ns: &Netns, cluster: &Cluster) -> Result<usize> {
    let local = &cluster.nodes[0];
    let config = Config::default();
    let mac = Mac::for_node(&local.name).to_string();
    let mtu = (UPLINK_MTU - Mode::Vxlan.overhead()).to_string();
    let vni = config.vxlan_vni.to_string();
    let port = config.vxlan_port.to_string();
    let local_ip = local.node_ip.to_string();
    let dev = config.vxlan_device.as_str();
    ns.ip(&[
        "link",
        "add",
        dev,
        "address",
        &mac,
        "mtu",
        &mtu,
        "type",
        "vxlan",
        "id",
        &vni,
        "dstport",
        &port,
        "local",
        &local_ip,
        "dev",
        UPLINK,
        "nolearning",
    ])?;
    let address = format!("{}/32", local.tunnel_ip());
    ns.ip(&["addr", "add", &address, "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(3)
}

struct BatchFiles {
    ip_add: PathBuf,
    ip_del: PathBuf,
    fdb_add: PathBuf,
    fdb_del: PathBuf,
    /// Lines of the add batches (= of the delete batches).
    writes: usize,
}

impl BatchFiles {
    fn write(cluster: &Cluster, mode: Mode, dir: &Path) -> Result<BatchFiles> {
        let config = Config::default();
        let protocol = config.route_protocol;
        let vxlan = config.vxlan_device.as_str();
        let tunnel_mtu = UPLINK_MTU - Mode::Vxlan.overhead();
        let (mut ip_add, mut ip_del, mut fdb_add, mut fdb_del) =
            (String::new(), String::new(), String::new(), String::new());
        let mut writes = 0;
        let peers = &cluster.nodes[1..];
        if mode == Mode::Vxlan {
            for peer in peers {
                let mac = Mac::for_node(&peer.name);
                let vtep = peer.tunnel_ip();
                let _ = writeln!(
                    ip_add,
                    "neigh replace {vtep} lladdr {mac} dev {vxlan} nud permanent"
                );
                let _ = writeln!(ip_del, "neigh del {vtep} dev {vxlan}");
                let _ = writeln!(
                    fdb_add,
                    "fdb replace {mac} dev {vxlan} dst {} self permanent",
                    peer.node_ip
                );
                let _ = writeln!(
                    fdb_del,
                    "fdb del {mac} dev {vxlan} dst {} self",
                    peer.node_ip
                );
                writes += 2;
            }
        }
        for peer in peers {
            let cidr = peer.pod_cidr();
            let line = match mode {
                Mode::Vxlan => format!(
                    "{cidr} via {} dev {vxlan} onlink mtu {tunnel_mtu} proto {protocol}",
                    peer.tunnel_ip()
                ),
                _ => format!("{cidr} via {} dev {UPLINK} proto {protocol}", peer.node_ip),
            };
            let _ = writeln!(ip_add, "route replace {line}");
            let _ = writeln!(ip_del, "route del {line}");
            writes += 1;
        }
        let files = BatchFiles {
            ip_add: dir.join("ip-add.batch"),
            ip_del: dir.join("ip-del.batch"),
            fdb_add: dir.join("fdb-add.batch"),
            fdb_del: dir.join("fdb-del.batch"),
            writes,
        };
        for (path, text) in [
            (&files.ip_add, ip_add),
            (&files.ip_del, ip_del),
            (&files.fdb_add, fdb_add),
            (&files.fdb_del, fdb_del),
        ] {
            std::fs::write(path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(files)
    }
}

fn run_timed_command(program: &str, args: &[&str]) -> Result<()> {
    let line = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running `{line}`"), e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = stderr.lines().take(3).collect();
        return Err(Error::Command {
            command: line,
            stderr: first.join(" / "),
        });
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::invalid("bench", format!("{} is not UTF-8", path.display())))
}

fn count_lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// A namespace with the uplink the engine expects: veth `eth0` (peer `eth1`
/// in the same namespace), both up, node IP 10.250.0.1/16 on `eth0`.
/// Deleted on drop, so also when a later step fails.
fn scratch_netns() -> Result<Netns> {
    let ns = Netns::create(&unique_name("prbench"))?;
    let mtu = UPLINK_MTU.to_string();
    let address = format!("{NODE_IP}/{UNDERLAY_PREFIX}");
    ns.ip(&["link", "set", "lo", "up"])?;
    ns.ip(&[
        "link", "add", UPLINK, "mtu", &mtu, "type", "veth", "peer", "name", "eth1", "mtu", &mtu,
    ])?;
    ns.ip(&["link", "set", "eth1", "up"])?;
    ns.ip(&["link", "set", UPLINK, "up"])?;
    ns.ip(&["addr", "add", &address, "dev", UPLINK])?;
    Ok(ns)
}

/// Local node `node-0` (10.250.0.1, 100.64.0.0/24) and `peers` peers on-link.
fn cluster(peers: usize, mode: Mode) -> Cluster {
    let nodes = (0..=peers)
        .map(|i| {
            let i = i as u32;
            let pod = Ipv4Addr::from(u32::from(POD_RANGE) + (i << (32 - POD_PREFIX)));
            Node {
                name: format!("node-{i}"),
                node_ip: Ipv4Addr::from(u32::from(NODE_IP) + i),
                pod_cidrs: vec![IpNetwork::V4(
                    Ipv4Network::new(pod, POD_PREFIX).expect("a /24 is a valid prefix"),
                )],
            }
        })
        .collect();
    Cluster {
        nodes,
        plan: Plan::steady(mode, 1),
        settings: crate::model::Settings::default(),
    }
}

/// Creating a named namespace needs CAP_SYS_ADMIN (the bind mount under
/// /run/netns), programming it CAP_NET_ADMIN.
fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        Ok(())
    } else {
        Err(Error::invalid(
            "bench",
            "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create a scratch network namespace",
        ))
    }
}

/// Reset VmHWM of this process to its current RSS.
fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| Error::io("writing 5 to /proc/self/clear_refs", e))
}

fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| {
            Error::io(
                "reading VmHWM",
                std::io::Error::other("no VmHWM in /proc/self/status"),
            )
        })
}

/// A directory for the MTU file and the batch files, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("podroute-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "removing the bench directory");
        }
    }
}

fn median_phase(tool: &str, phase: &str, runs: &[Vec<Sample>], index: usize) -> PhaseResult {
    let mut times: Vec<f64> = runs.iter().map(|r| ms(r[index].time)).collect();
    let runs_ms = if times.len() > 1 {
        times.iter().map(|&t| round3(t)).collect()
    } else {
        Vec::new()
    };
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    let first = runs[0][index];
    PhaseResult {
        tool: tool.into(),
        phase: phase.into(),
        ms: round3(median),
        runs_ms,
        writes: first.writes,
        route_writes: first.route_writes,
        netlink_messages: first.netlink,
        ratio_to_ip_batch: None,
    }
}

fn targets(n: usize, phases: &[PhaseResult], peak_rss_kib: u64) -> Vec<TargetResult> {
    let find = |tool: &str, phase: &str| phases.iter().find(|p| p.tool == tool && p.phase == phase);
    let mut out = Vec::new();
    if let Some(program) = find("podroute", "program") {
        let ratio = program.ratio_to_ip_batch.unwrap_or(f64::INFINITY);
        out.push(TargetResult {
            target: format!("program within {TARGET_PROGRAM_RATIO}x of ip -batch"),
            measured: format!("{ratio:.2}x"),
            met: ratio <= TARGET_PROGRAM_RATIO,
        });
    }
    if let Some(resync) = find("podroute", "resync") {
        if n >= TARGET_RESYNC_PEERS {
            out.push(TargetResult {
                target: format!("no-op resync of {TARGET_RESYNC_PEERS} routes: 0 writes, under {TARGET_RESYNC_MS} ms"),
                measured: format!("{} writes, {:.1} ms", resync.writes, resync.ms),
                met: resync.writes == 0 && resync.ms < TARGET_RESYNC_MS,
            });
        } else {
            out.push(TargetResult {
                target: "no-op resync: 0 writes".into(),
                measured: format!("{} writes", resync.writes),
                met: resync.writes == 0,
            });
        }
    }
    if n >= TARGET_RSS_PEERS {
        let mib = kib_to_mib(peak_rss_kib);
        out.push(TargetResult {
            target: format!("peak RSS under {TARGET_RSS_MIB} MiB at {TARGET_RSS_PEERS} peers"),
            measured: format!("{mib:.1} MiB"),
            met: mib < TARGET_RSS_MIB,
        });
    }
    out
}

fn render(r: &BenchReport) -> String {
    let runs = if r.repeat > 1 {
        format!(", median of {} runs", r.repeat)
    } else {
        String::new()
    };
    let mut out = format!(
        "podroute bench: {} mode{runs}; netlink = requests sent (a dump counts once); RSS = {}\n",
        r.mode, r.rss_scope
    );
    if r.mode == "vxlan" {
        out.push_str("ip -batch side: device (ip link/addr), neighbours and routes (ip -batch), FDB (bridge -batch)\n");
    }
    for result in &r.results {
        out.push_str(&format!(
            "\n{} peers, peak RSS {:.1} MiB\n",
            result.peers,
            kib_to_mib(result.peak_rss_kib)
        ));
        let rows: Vec<Vec<String>> = result
            .phases
            .iter()
            .map(|p| {
                let name = if p.tool == "podroute" {
                    p.phase.clone()
                } else {
                    format!("{} ({})", p.phase, p.tool)
                };
                vec![
                    name,
                    format!("{:.1}", p.ms),
                    p.writes.to_string(),
                    p.route_writes.to_string(),
                    p.netlink_messages.to_string(),
                    p.ratio_to_ip_batch
                        .map_or(String::new(), |x| format!("{x:.2}x")),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "PHASE",
                "TIME ms",
                "WRITES",
                "ROUTES",
                "NETLINK",
                "VS IP -BATCH",
            ],
            &rows,
        ));
        let rows: Vec<Vec<String>> = result
            .targets
            .iter()
            .map(|t| {
                vec![
                    format!("  {}", t.target),
                    t.measured.clone(),
                    if t.met { "met" } else { "MISSED" }.into(),
                ]
            })
            .collect();
        out.push_str(&table(&["TARGET", "MEASURED", ""], &rows));
    }
    for failure in &r.failures {
        out.push_str(&format!("\nFAIL: {failure}\n"));
    }
    out
}

fn progress(n: usize, what: &str) {
    eprintln!("bench: n={n}: {what}");
}

fn progress_sample(n: usize, what: &str, sample: Option<&Sample>) {
    if let Some(s) = sample {
        progress(
            n,
            &format!(
                "{what} {:.1} ms, {} writes, {} netlink requests (VmHWM {:.1} MiB)",
                ms(s.time),
                s.writes,
                s.netlink,
                kib_to_mib(peak_rss_kib().unwrap_or(0))
            ),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        round3(a / b)
    } else {
        f64::INFINITY
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses_are_on_link_and_disjoint() {
        let c = cluster(300, Mode::Native);
        assert_eq!(c.nodes.len(), 301);
        assert_eq!(c.nodes[0].node_ip, NODE_IP);
        assert_eq!(c.nodes[0].pod_cidr().to_string(), "100.64.0.0/24");
        assert_eq!(c.nodes[300].node_ip, Ipv4Addr::new(10, 250, 1, 45));
        assert_eq!(c.nodes[300].pod_cidr().to_string(), "100.65.44.0/24");
        let underlay = Ipv4Network::new(NODE_IP, UNDERLAY_PREFIX).unwrap();
        assert!(c.nodes.iter().all(|n| underlay.contains(n.node_ip)));
        crate::model::validate_nodes(&c.nodes).unwrap();
    }

    #[test]
    fn the_largest_cluster_fits_the_pod_range() {
        let c = cluster(MAX_PEERS, Mode::Native);
        let range = Ipv4Network::new(POD_RANGE, POD_RANGE_PREFIX).unwrap();
        assert!(range.contains(c.nodes[MAX_PEERS].pod_cidr().network()));
    }

    #[test]
    fn median_of_even_and_odd_runs() {
        let s = |ms: u64| Sample {
            time: Duration::from_millis(ms),
            writes: 1,
            route_writes: 1,
            netlink: 1,
        };
        let odd = vec![vec![s(3)], vec![s(1)], vec![s(2)]];
        assert_eq!(median_phase("x", "y", &odd, 0).ms, 2.0);
        let even = vec![vec![s(1)], vec![s(4)]];
        assert_eq!(median_phase("x", "y", &even, 0).ms, 2.5);
    }
}
