//! Hostile input against the built `podroute` binary, run inside a lab node
//! namespace as a new user or an attacker would (issue 11, the contract in
//! /work/contract.md): bad cluster files, special files and bad flags exit 2
//! naming the bad thing and change nothing in the kernel or the MTU file;
//! state that is not ours survives every command.
//!
//! One test per class. Each tries every case of its table against one lab,
//! prints a summary and fails listing every failing case, not the first.
//! Per case: snapshot the node, run the command with a deadline (a hang is a
//! failure, not a stuck test), snapshot again, compare.
//!
//! The case tables keep one case per line (`#[rustfmt::skip]`): a table reads
//! and diffs better that way than spread over eight lines a case.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{have_root, host_only, spawn_retrying, Lab};

/// The node every case runs on: uplink eth0 10.250.0.1/24, pods 10.244.1.0/24.
const NODE: &str = "node-1";
/// A command still running after this is "hung" and killed.
const HANG: Duration = Duration::from_secs(5);
/// How long an agent may run before it is stopped and judged.
const AGENT_RUN: Duration = Duration::from_millis(1500);
/// Address-space cap of each podroute run: a reader that slurps /dev/zero
/// dies here instead of eating the shared machine's memory (a correct one
/// reads at most 32 MiB).
const ADDRESS_SPACE: libc::rlim_t = 1 << 30;

// ---------------------------------------------------------------------------
// The kernel state (and MTU file) of a node, compared before and after.

/// What `podroute` may change on a node, as text: links, addresses, routes
/// of every table, permanent neighbours, FDB, the net.ipv4 sysctls it
/// touches and the pod MTU file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSnapshot {
    sections: BTreeMap<String, Vec<String>>,
}

const SNAPSHOT_SCRIPT: &str = "\
echo @@links; ip -d link show; \
echo @@addresses; ip addr show; \
echo @@routes; ip route show table all; ip -6 route show table all; \
echo @@neighbours; ip neigh show; \
echo @@fdb; bridge fdb show; \
echo @@sysctls; grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/rp_filter";

impl KernelSnapshot {
    pub fn take(lab: &Lab, node: &str) -> KernelSnapshot {
        let netns = &lab.node(node).netns;
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "sh", "-c", SNAPSHOT_SCRIPT])
            .stdin(Stdio::null())
            .output()
            .expect("snapshot the node");
        let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current = String::from("?");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.strip_prefix("@@") {
                current = name.to_string();
                sections.entry(current.clone()).or_default();
            } else if let Some(line) = normalize(&current, line) {
                sections.entry(current.clone()).or_default().push(line);
            }
        }
        // An empty read would compare equal to anything: fail loudly instead.
        assert!(
            sections.get("links").is_some_and(|l| !l.is_empty()) && sections.contains_key("fdb"),
            "snapshot of {node} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sections.insert(
            "mtu-file".into(),
            vec![describe_file(&lab.config(node).mtu_file)],
        );
        KernelSnapshot { sections }
    }

    /// Lines only before (`-`) or only after (`+`), per section.
    pub fn diff(&self, after: &KernelSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let empty = Vec::new();
        let names: std::collections::BTreeSet<&String> =
            self.sections.keys().chain(after.sections.keys()).collect();
        for name in names {
            let a = self.sections.get(name).unwrap_or(&empty);
            let b = after.sections.get(name).unwrap_or(&empty);
            for line in multiset_minus(a, b) {
                out.push(format!("{name}: - {line}"));
            }
            for line in multiset_minus(b, a) {
                out.push(format!("{name}: + {line}"));
            }
        }
        out
    }

    fn lines(&self) -> impl Iterator<Item = &String> {
        self.sections.values().flatten()
    }

    /// Link names (without the `@peer` part).
    fn links(&self) -> Vec<String> {
        self.sections
            .get("links")
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let (index, rest) = l.split_once(": ")?;
                index.trim().parse::<u32>().ok()?;
                let name = rest.split(": ").next()?;
                Some(name.split('@').next()?.to_string())
            })
            .collect()
    }
}

/// Drops what moves by itself: IPv6 DAD's `tentative` flag and neighbour
/// entries the kernel learns and ages (only permanent ones can be ours).
fn normalize(section: &str, line: &str) -> Option<String> {
    match section {
        "addresses" => Some(line.replace(" tentative", "")),
        "neighbours" if !(line.contains("PERMANENT") || line.contains("NOARP")) => None,
        _ => Some(line.to_string()),
    }
}

fn describe_file(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Err(_) => "absent".into(),
        Ok(m) if m.is_file() => format!(
            "{}: {:?}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        ),
        Ok(m) => format!(
            "{}: not a regular file ({:?})",
            path.display(),
            m.file_type()
        ),
    }
}

fn multiset_minus<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
    let mut left: BTreeMap<&String, usize> = BTreeMap::new();
    for l in b {
        *left.entry(l).or_default() += 1;
    }
    a.iter()
        .filter(|l| match left.get_mut(l) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Cases.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Apply,
    Plan,
    Status,
    Agent,
    Cleanup,
}

impl Cmd {
    fn word(self) -> &'static str {
        match self {
            Cmd::Apply => "apply",
            Cmd::Plan => "plan",
            Cmd::Status => "status",
            Cmd::Agent => "agent",
            Cmd::Cleanup => "cleanup",
        }
    }
}

#[derive(Debug, Clone)]
enum Input {
    /// Cluster file contents (bytes: some are not UTF-8), written to `case.yaml`.
    Text(Vec<u8>),
    /// A path the class prepared: a FIFO, /dev/zero, a directory, ...
    Path(PathBuf),
    /// No `--cluster` at all.
    Nothing,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Exit(i32),
    Signal(i32),
    /// Still running at [`HANG`]: killed.
    Hung,
    /// An agent still running at [`AGENT_RUN`]: stopped.
    Running,
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Exit(c) => write!(f, "exit {c}"),
            Got::Signal(s) => write!(f, "killed by signal {s}"),
            Got::Hung => write!(f, "hung (killed after {}s)", HANG.as_secs()),
            Got::Running => write!(f, "still running after {:?}", AGENT_RUN),
        }
    }
}

/// Foreign state planted before the command, and what must hold after it.
#[derive(Debug, Clone, Default)]
struct Foreign {
    /// Acceptable ends (the contract's exit code; `Running` for an agent).
    ok: &'static [Got],
    /// Every line of the snapshot before that contains one of these must
    /// still be there after (and at least one must, or the plant failed).
    keep: &'static [&'static str],
    /// The whole state is byte for byte the same (refused before any write).
    unchanged: bool,
    /// vxlan.calico still exists and is up.
    device_up: bool,
    /// No route of ours (proto 91) is left.
    ours_gone: bool,
    /// Lines that must appear in the snapshot after.
    after_has: &'static [&'static str],
    /// stdout or stderr mention each (alternatives split by `|`).
    says: &'static [&'static str],
}

#[derive(Debug, Clone)]
enum Expect {
    /// Exit 2, stderr names each needle (alternatives split by `|`, case
    /// does not matter), nothing changed.
    Refused(Vec<&'static str>),
    /// Exit 1 or 2 and nothing changed (the kernel or a foreign device
    /// refuses the name; either way before any write).
    NoChange,
    /// Valid input, a control: exit 0.
    Accepted,
    /// The contract leaves it open: exit 0, or exit 2 with nothing changed.
    Either,
    /// A running agent leaves out a locally unusable peer, routes the
    /// others and keeps an underlay host reachable on the link.
    LeftOut {
        bad: &'static str,
        good: &'static str,
        host: &'static str,
    },
    Foreign(Foreign),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Refused(n) => write!(f, "exit 2 naming {n:?}, no change"),
            Expect::NoChange => write!(f, "exit 1 or 2, no change"),
            Expect::Accepted => write!(f, "exit 0"),
            Expect::Either => write!(f, "exit 0, or 2 with no change"),
            Expect::LeftOut { bad, good, .. } => {
                write!(f, "agent runs, routes {good}, leaves {bad} out")
            }
            Expect::Foreign(x) => write!(
                f,
                "{:?}, foreign state kept{}",
                x.ok,
                if x.unchanged { ", nothing changed" } else { "" }
            ),
        }
    }
}

/// Set-up steps before the snapshot.
#[derive(Debug, Clone)]
enum Prep {
    /// `podroute apply` of this file (plus flags), which must exit 0.
    Apply(String, Vec<String>),
    /// `ip <args>` in the node.
    Ip(Vec<String>),
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    cmd: Cmd,
    input: Input,
    args: Vec<String>,
    env: Vec<(String, String)>,
    prep: Vec<Prep>,
    /// `ip <args>` after the case, errors ignored (then the generic reset).
    teardown: Vec<Vec<String>>,
    expect: Expect,
}

impl Case {
    fn new(cmd: Cmd, name: impl Into<String>, input: Input, expect: Expect) -> Case {
        Case {
            name: name.into(),
            cmd,
            input,
            args: Vec::new(),
            env: Vec::new(),
            prep: Vec::new(),
            teardown: Vec::new(),
            expect,
        }
    }

    fn text(cmd: Cmd, name: impl Into<String>, text: impl Into<String>, expect: Expect) -> Case {
        Case::new(cmd, name, Input::Text(text.into().into_bytes()), expect)
    }

    fn args(mut self, args: &[&str]) -> Case {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.into(), value.into()));
        self
    }

    fn prep_apply(mut self, yaml: &str, args: &[&str]) -> Case {
        self.prep.push(Prep::Apply(
            yaml.into(),
            args.iter().map(|a| a.to_string()).collect(),
        ));
        self
    }

    fn plant(mut self, ip_commands: &[&[&str]]) -> Case {
        for c in ip_commands {
            self.prep
                .push(Prep::Ip(c.iter().map(|a| a.to_string()).collect()));
        }
        self
    }

    fn teardown(mut self, ip_commands: &[&[&str]]) -> Case {
        for c in ip_commands {
            self.teardown
                .push(c.iter().map(|a| a.to_string()).collect());
        }
        self
    }
}

fn refused(needles: &[&'static str]) -> Expect {
    Expect::Refused(needles.to_vec())
}

// ---------------------------------------------------------------------------
// Running podroute with a deadline.

struct Run {
    got: Got,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

fn run_bounded(mut command: Command, limit: Duration, agent: bool) -> Run {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        command.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = spawn_retrying(&mut command);
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let got = loop {
        match child.try_wait().expect("wait for podroute") {
            Some(status) => {
                use std::os::unix::process::ExitStatusExt;
                break match (status.code(), status.signal()) {
                    (Some(c), _) => Got::Exit(c),
                    (None, Some(s)) => Got::Signal(s),
                    (None, None) => Got::Exit(-1),
                };
            }
            None if start.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                break if agent { Got::Running } else { Got::Hung };
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let elapsed = start.elapsed();
    Run {
        got,
        elapsed,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// One class: a lab, its cases and their records.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exit 2 and nothing changed, as expected.
    RefusedClean,
    /// Exit 0, as expected (controls, and cases the contract leaves open).
    Accepted,
    /// Exit 1 with the foreign state (or everything) intact.
    RuntimeIntact,
    /// Foreign state intact after an exit 0 or a running agent.
    ForeignKept,
    Other,
    Failed,
}

struct Record {
    name: String,
    expected: String,
    got: String,
    outcome: Outcome,
    failure: Option<String>,
}

struct Bench {
    class: &'static str,
    lab: Lab,
    netns: String,
    dir: PathBuf,
    mtu_file: PathBuf,
    /// Applied before the first case and after every reset, if set.
    baseline: Option<String>,
    /// Link names of the fresh lab node: a reset deletes any other.
    links: Vec<String>,
    /// The state after setup or the last reset.
    rest: KernelSnapshot,
    records: Vec<Record>,
    started: Instant,
}

impl Bench {
    fn new(class: &'static str, baseline: Option<String>) -> Bench {
        let lab = Lab::flat(3);
        let netns = lab.node(NODE).netns.clone();
        let mtu_file = lab.config(NODE).mtu_file;
        let dir = mtu_file.parent().expect("lab dir").to_path_buf();
        std::fs::create_dir_all(&dir).expect("lab dir");
        settle(&lab);
        let rest = KernelSnapshot::take(&lab, NODE);
        let links = rest.links();
        let mut bench = Bench {
            class,
            lab,
            netns,
            dir,
            mtu_file,
            baseline,
            links,
            rest,
            records: Vec::new(),
            started: Instant::now(),
        };
        bench.reset();
        bench
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `podroute <cmd> [--cluster FILE] <the usual target flags> <args>` in the node.
    fn podroute(
        &self,
        cmd: Cmd,
        cluster: Option<&Path>,
        args: &[String],
        env: &[(String, String)],
    ) -> Run {
        let mut full: Vec<String> = vec![cmd.word().into()];
        let given = |flag: &str| {
            args.iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        if let Some(c) = cluster {
            full.extend(["--cluster".into(), c.display().to_string()]);
        }
        let named_by_env = env.iter().any(|(k, _)| k == "NODE_NAME");
        match cmd {
            Cmd::Apply | Cmd::Plan | Cmd::Status
                if cluster.is_some() && !given("--node") && !named_by_env =>
            {
                full.extend(["--node".into(), NODE.into()]);
            }
            Cmd::Agent if !given("--node-name") && !given("--node") && !named_by_env => {
                full.extend(["--node-name".into(), NODE.into()]);
            }
            _ => {}
        }
        if cmd == Cmd::Agent && !given("--listen") {
            full.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        if !given("--mtu-file") {
            full.extend(["--mtu-file".into(), self.mtu_file.display().to_string()]);
        }
        full.extend(args.iter().cloned());
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns, env!("CARGO_BIN_EXE_podroute")])
            .args(&full)
            .env_remove("NODE_NAME")
            .env_remove("PODROUTE_CLUSTER")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let agent = cmd == Cmd::Agent;
        run_bounded(command, if agent { AGENT_RUN } else { HANG }, agent)
    }

    fn ip(&self, args: &[String]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["-n", &self.netns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn apply_file(&self, yaml: &str, args: &[String]) -> Result<(), String> {
        let path = self.path("prep.yaml");
        std::fs::write(&path, yaml).expect("write prep file");
        let run = self.podroute(Cmd::Apply, Some(&path), args, &[]);
        match run.got {
            Got::Exit(0) => Ok(()),
            got => Err(format!(
                "set-up apply: {got}: {}",
                first_lines(&run.stderr, 3)
            )),
        }
    }

    /// Back to the class's starting point: our state removed, links the lab
    /// did not make deleted, the baseline applied again.
    fn reset(&mut self) {
        let now = KernelSnapshot::take(&self.lab, NODE);
        for link in now.links().iter().filter(|l| !self.links.contains(l)) {
            let _ = self.ip(&["link".into(), "del".into(), link.clone()]);
        }
        let _ = self.podroute(Cmd::Cleanup, None, &[], &[]);
        let _ = std::fs::remove_file(&self.mtu_file);
        if let Some(base) = self.baseline.clone() {
            self.apply_file(&base, &[])
                .unwrap_or_else(|e| panic!("{}: baseline: {e}", self.class));
        }
        settle(&self.lab);
        self.rest = KernelSnapshot::take(&self.lab, NODE);
    }

    fn try_case(&mut self, case: Case) {
        let name = format!("{} {}", case.cmd.word(), case.name);
        let record = match self.prepare(&case) {
            Err(e) => Record {
                name,
                expected: case.expect.to_string(),
                got: format!("set-up failed: {e}"),
                outcome: Outcome::Other,
                failure: Some(format!("set-up failed: {e}")),
            },
            Ok(cluster) => self.judge_case(name, &case, cluster.as_deref()),
        };
        for args in &case.teardown {
            let _ = self.ip(args);
        }
        let now = KernelSnapshot::take(&self.lab, NODE);
        let moved = self
            .rest
            .diff(&now)
            .iter()
            .any(|l| !l.starts_with("sysctls:"));
        if moved || !case.teardown.is_empty() {
            self.reset();
        }
        self.records.push(record);
    }

    /// Runs the case's set-up; returns the cluster file to pass.
    fn prepare(&self, case: &Case) -> Result<Option<PathBuf>, String> {
        for step in &case.prep {
            match step {
                Prep::Apply(yaml, args) => self.apply_file(yaml, args)?,
                Prep::Ip(args) => {
                    self.ip(args)?;
                }
            }
        }
        Ok(match &case.input {
            Input::Text(bytes) => {
                let path = self.path("case.yaml");
                std::fs::write(&path, bytes).expect("write case file");
                Some(path)
            }
            Input::Path(p) => Some(p.clone()),
            Input::Nothing => None,
        })
    }

    fn judge_case(&self, name: String, case: &Case, cluster: Option<&Path>) -> Record {
        let before = KernelSnapshot::take(&self.lab, NODE);
        let run = self.podroute(case.cmd, cluster, &case.args, &case.env);
        let after = KernelSnapshot::take(&self.lab, NODE);
        let changes = before.diff(&after);
        let mut why: Vec<String> = Vec::new();
        let err = run.stderr.to_lowercase();
        let said = format!("{}\n{}", run.stdout, run.stderr).to_lowercase();
        let names = |text: &str, needle: &str| {
            needle
                .split('|')
                .any(|alt| text.contains(&alt.to_lowercase()))
        };
        let exit = |codes: &[i32]| matches!(run.got, Got::Exit(c) if codes.contains(&c));
        let must_not_change = |why: &mut Vec<String>| {
            if !changes.is_empty() {
                why.push("changed the node".into());
            }
        };
        match &case.expect {
            Expect::Refused(needles) => {
                if run.got != Got::Exit(2) {
                    why.push(format!("{} instead of exit 2", run.got));
                }
                must_not_change(&mut why);
                for n in needles.iter().filter(|n| !names(&err, n)) {
                    why.push(format!("stderr does not name {n:?}"));
                }
            }
            Expect::NoChange => {
                if !exit(&[1, 2]) {
                    why.push(format!("{} instead of exit 1 or 2", run.got));
                }
                must_not_change(&mut why);
            }
            Expect::Accepted => {
                if run.got != Got::Exit(0) {
                    why.push(format!("{} instead of exit 0", run.got));
                }
            }
            Expect::Either => {
                if !exit(&[0, 2]) {
                    why.push(format!("{} instead of exit 0 or 2", run.got));
                }
                if run.got == Got::Exit(2) {
                    must_not_change(&mut why);
                }
            }
            Expect::LeftOut { bad, good, host } => {
                if run.got != Got::Running {
                    why.push(format!("{} instead of a running agent", run.got));
                }
                let routes = after.sections.get("routes").cloned().unwrap_or_default();
                if routes.iter().any(|r| r.starts_with(bad)) {
                    why.push(format!("routed {bad}"));
                }
                if !routes.iter().any(|r| r.starts_with(good)) {
                    why.push(format!("did not route {good}"));
                }
                let via = self
                    .ip(&["route".into(), "get".into(), host.to_string()])
                    .unwrap_or_else(|e| e);
                if via.contains(" via ") || !via.contains("dev eth0") {
                    why.push(format!(
                        "underlay host {host} no longer on the link: {}",
                        via.trim()
                    ));
                }
            }
            Expect::Foreign(x) => {
                if !x.ok.contains(&run.got) {
                    why.push(format!("{} instead of one of {:?}", run.got, x.ok));
                }
                if x.unchanged {
                    must_not_change(&mut why);
                }
                for marker in x.keep {
                    let planted: Vec<&String> =
                        before.lines().filter(|l| l.contains(marker)).collect();
                    if planted.is_empty() {
                        why.push(format!("set-up: nothing with {marker:?} was planted"));
                    }
                    let kept: Vec<&String> = after.lines().collect();
                    for line in planted.iter().filter(|l| !kept.contains(l)) {
                        why.push(format!("foreign state lost: {line}"));
                    }
                }
                if x.device_up {
                    match self.ip(&["link".into(), "show".into(), "vxlan.calico".into()]) {
                        Ok(l) if l.contains(",UP") || l.contains("<UP") => {}
                        Ok(l) => why.push(format!("vxlan.calico is not up: {}", l.trim())),
                        Err(_) => why.push("vxlan.calico was deleted".into()),
                    }
                }
                if x.ours_gone && after.lines().any(|l| l.contains("proto 91")) {
                    why.push("routes of ours left behind".into());
                }
                for line in x.after_has {
                    if !after.lines().any(|l| l.contains(line)) {
                        why.push(format!("no {line:?} after"));
                    }
                }
                for n in x.says.iter().filter(|n| !names(&said, n)) {
                    why.push(format!("output does not mention {n:?}"));
                }
            }
        }
        let outcome = match (why.is_empty(), &case.expect, run.got) {
            (false, _, _) => Outcome::Failed,
            (true, _, Got::Exit(2)) => Outcome::RefusedClean,
            (true, Expect::NoChange | Expect::Foreign(_), Got::Exit(1)) => Outcome::RuntimeIntact,
            (true, Expect::Foreign(_), _) => Outcome::ForeignKept,
            (true, _, Got::Exit(0)) => Outcome::Accepted,
            _ => Outcome::Other,
        };
        let mut got = format!("{} in {:.2}s", run.got, run.elapsed.as_secs_f64());
        if !changes.is_empty() {
            let _ = write!(got, "; changed {}", summarize(&changes));
        }
        let first = first_lines(&run.stderr, 1);
        if !first.is_empty() {
            let _ = write!(got, "; stderr: {}", clip(&first, 200));
        }
        Record {
            name,
            expected: case.expect.to_string(),
            got,
            outcome,
            failure: (!why.is_empty()).then(|| why.join("; ")),
        }
    }

    /// Prints the per-case table (captured) and the summary (always shown),
    /// then fails listing every failing case.
    fn finish(self) {
        let count = |o: Outcome| self.records.iter().filter(|r| r.outcome == o).count();
        let failures: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .collect();
        for r in &self.records {
            println!(
                "{:4} {} | {} | expected {} | got {}",
                if r.failure.is_some() { "FAIL" } else { "ok" },
                self.class,
                r.name,
                r.expected,
                r.got
            );
        }
        let mut summary = format!(
            "\nhostile input, class {:?}: {} cases in {:.0}s\n",
            self.class,
            self.records.len(),
            self.started.elapsed().as_secs_f64(),
        );
        for (label, n) in [
            (
                "refused with exit 2, nothing changed",
                count(Outcome::RefusedClean),
            ),
            (
                "exit 0 as expected (controls, open cases)",
                count(Outcome::Accepted),
            ),
            (
                "runtime failure (exit 1), state intact",
                count(Outcome::RuntimeIntact),
            ),
            (
                "exit 0 or agent running, foreign state kept",
                count(Outcome::ForeignKept),
            ),
            ("agent kept running, as expected", count(Outcome::Other)),
            ("failures", failures.len()),
        ] {
            let _ = writeln!(summary, "  {label:<44}: {n}");
        }
        for r in &failures {
            let _ = writeln!(
                summary,
                "    FAIL {}: {} (got {})",
                r.name,
                r.failure.as_deref().unwrap_or_default(),
                r.got
            );
        }
        // Straight to the stderr handle: the table shows even when it passes.
        let _ = std::io::stderr().write_all(summary.as_bytes());
        assert!(
            failures.is_empty(),
            "{} of {} {} cases failed:\n{}",
            failures.len(),
            self.records.len(),
            self.class,
            failures
                .iter()
                .map(|r| format!("  {}: {}", r.name, r.failure.as_deref().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Waits (up to 5 s) until IPv6 duplicate address detection is done on the
/// node's links: it adds `local fe80::...` routes by itself when it ends,
/// which would read as a change made by the case that runs at that moment.
fn settle(lab: &Lab) {
    let ns = &lab.node(NODE).netns;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let out = Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "tentative"])
            .output()
            .expect("ip addr");
        if out.stdout.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `routes +2 -0, links +3 -0 [routes: + 127.0.0.0/8 via ...]`: counts per
/// section, and the first change of the most telling section.
fn summarize(changes: &[String]) -> String {
    let order = [
        "routes",
        "neighbours",
        "fdb",
        "sysctls",
        "mtu-file",
        "links",
        "addresses",
    ];
    let mut parts = Vec::new();
    for section in order {
        let prefix = format!("{section}: ");
        let added = changes
            .iter()
            .filter(|c| c.starts_with(&format!("{prefix}+")))
            .count();
        let removed = changes
            .iter()
            .filter(|c| c.starts_with(&format!("{prefix}-")))
            .count();
        if added + removed > 0 {
            parts.push(format!("{section} +{added} -{removed}"));
        }
    }
    let example = order
        .iter()
        .find_map(|s| changes.iter().find(|c| c.starts_with(&format!("{s}: "))))
        .or(changes.first())
        .map(|c| format!(" [{}]", clip(c.trim_end(), 110)))
        .unwrap_or_default();
    format!("{}{example}", parts.join(", "))
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}...")
}

// ---------------------------------------------------------------------------
// Cluster files.

type Row<'a> = (&'a str, &'a str, &'a str);
const N1: Row<'static> = ("node-1", "10.250.0.1", "10.244.1.0/24");
const N2: Row<'static> = ("node-2", "10.250.0.2", "10.244.2.0/24");
const N3: Row<'static> = ("node-3", "10.250.0.3", "10.244.3.0/24");

/// `head` (top-level lines), then the nodes.
fn yaml(head: &str, rows: &[Row]) -> String {
    let mut s = format!("{head}\nnodes:\n");
    for (name, ip, cidr) in rows {
        let _ = write!(s, "  - name: {name}\n    ip: {ip}\n    podCIDR: {cidr}\n");
    }
    s
}

/// The lab's three nodes in `mode`.
fn valid(mode: &str) -> String {
    yaml(&format!("mode: {mode}"), &[N1, N2, N3])
}

/// The lab's nodes in vxlan mode, plus top-level `extra` lines.
fn with_top(extra: &str) -> String {
    yaml(&format!("mode: vxlan\n{extra}"), &[N1, N2, N3])
}

/// node-2 as given (raw YAML of its entry after `- `), the others valid.
fn with_peer_raw(mode: &str, entry: &str) -> String {
    let mut s = format!(
        "mode: {mode}\nnodes:\n  - name: node-1\n    ip: 10.250.0.1\n    podCIDR: 10.244.1.0/24\n"
    );
    let _ = writeln!(s, "  - {}", entry.replace('\n', "\n    "));
    s.push_str("  - name: node-3\n    ip: 10.250.0.3\n    podCIDR: 10.244.3.0/24\n");
    s
}

fn with_peer(mode: &str, ip: &str, cidr: &str) -> String {
    yaml(&format!("mode: {mode}"), &[N1, ("node-2", ip, cidr), N3])
}

fn with_self(mode: &str, ip: &str, cidr: &str) -> String {
    yaml(&format!("mode: {mode}"), &[("node-1", ip, cidr), N2, N3])
}

// ---------------------------------------------------------------------------
// Class: cluster file syntax and types.

#[rustfmt::skip]
fn syntax_cases() -> Vec<Case> {
    use Cmd::*;
    let f = "case.yaml";
    let base = valid("vxlan");
    let mut cases = vec![
        // Not a cluster file at all.
        Case::text(Apply, "empty file", "", refused(&[f])),
        Case::text(Apply, "only comments", "# cluster\n# file\n", refused(&[f])),
        Case::text(Apply, "only whitespace", "  \n\n   \n", refused(&[f])),
        Case::text(Apply, "a bare scalar", "hello\n", refused(&[f])),
        Case::text(Apply, "a list at the top", "- mode: vxlan\n", refused(&[f])),
        Case::text(Apply, "broken JSON", "{\"mode\": \"vxlan\", \"nodes\": [}", refused(&[f])),
        Case::text(Apply, "an INI file", "[cluster]\nmode = vxlan\n", refused(&[f])),
        Case::text(Apply, "tab indentation", base.replace("  - ", "\t- "), refused(&[f])),
        Case::new(Apply, "invalid UTF-8", Input::Text(b"mode: vx\xff\xfelan\nnodes: []\n".to_vec()), refused(&[f])),
        Case::text(Apply, "NUL bytes", "mode: vxlan\0\nnodes: []\n", refused(&[f])),
        Case::text(Apply, "unclosed quote", "mode: \"vxlan\nnodes: []\n", refused(&[f])),
        Case::text(Apply, "byte order mark", format!("\u{feff}{base}"), Expect::Either),
        Case::text(Apply, "CRLF line ends", base.replace('\n', "\r\n"), Expect::Either),
        // Required keys.
        Case::text(Apply, "no mode", base.replace("mode: vxlan\n", ""), refused(&[f, "mode"])),
        Case::text(Apply, "no nodes", "mode: vxlan\n", refused(&[f, "nodes"])),
        Case::text(Apply, "nodes: []", "mode: vxlan\nnodes: []\n", refused(&["node-1"])),
        Case::text(Apply, "nodes: null", "mode: vxlan\nnodes: null\n", refused(&[f, "nodes"])),
        // Wrong types.
        Case::text(Apply, "mode: 5", base.replace("mode: vxlan", "mode: 5"), refused(&[f, "mode"])),
        Case::text(Apply, "mode: [vxlan]", base.replace("mode: vxlan", "mode: [vxlan]"), refused(&[f, "mode"])),
        Case::text(Apply, "mode: {vxlan: 1}", base.replace("mode: vxlan", "mode: {vxlan: 1}"), refused(&[f, "mode"])),
        Case::text(Apply, "mode: null", base.replace("mode: vxlan", "mode: null"), refused(&[f, "mode"])),
        Case::text(Apply, "mode: VXLAN", base.replace("mode: vxlan", "mode: VXLAN"), Expect::Either),
        Case::text(Apply, "nodes: a string", "mode: vxlan\nnodes: node-1\n", refused(&[f, "nodes"])),
        Case::text(Apply, "nodes: a map", "mode: vxlan\nnodes: {name: node-1}\n", refused(&[f, "nodes"])),
        Case::text(Apply, "a node that is a string", "mode: vxlan\nnodes:\n  - node-1\n", refused(&[f, "nodes[0]"])),
        Case::text(Apply, "name: 5", with_peer_raw("vxlan", "name: 5\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24"), Expect::Either),
        Case::text(Apply, "name: [node-2]", with_peer_raw("vxlan", "name: [node-2]\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24"), refused(&[f, "nodes[1].name"])),
        Case::text(Apply, "name: null", with_peer_raw("vxlan", "name: null\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24"), refused(&[f, "nodes[1].name"])),
        Case::text(Apply, "name: ~", with_peer_raw("vxlan", "name: ~\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24"), refused(&[f, "nodes[1].name"])),
        Case::text(Apply, "name: (no value)", with_peer_raw("vxlan", "name:\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24"), refused(&[f, "nodes[1].name"])),
        Case::text(Apply, "ip: 10 (a number)", with_peer("vxlan", "10", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: a list", with_peer("vxlan", "[10.250.0.2]", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: true", with_peer("vxlan", "true", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: five octets", with_peer("vxlan", "10.250.0.2.5", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: leading zeros", with_peer("vxlan", "010.250.000.002", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: three octets", with_peer("vxlan", "10.250.2", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: hex", with_peer("vxlan", "0x0afa0002", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "ip: trailing space in quotes", with_peer("vxlan", "\"10.250.0.2 \"", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "no ip", with_peer_raw("vxlan", "name: node-2\npodCIDR: 10.244.2.0/24"), refused(&[f, "nodes[1].ip"])),
        Case::text(Apply, "podCIDR: 24", with_peer("vxlan", "10.250.0.2", "24"), refused(&[f, "nodes[1].podcidr"])),
        Case::text(Apply, "podCIDR without prefix", with_peer("vxlan", "10.250.0.2", "10.244.2.0"), refused(&[f, "nodes[1].podcidr"])),
        Case::text(Apply, "podCIDR /33", with_peer("vxlan", "10.250.0.2", "10.244.2.0/33"), refused(&[f, "nodes[1].podcidr"])),
        Case::text(Apply, "podCIDR /-1", with_peer("vxlan", "10.250.0.2", "10.244.2.0/-1"), refused(&[f, "nodes[1].podcidr"])),
        Case::text(Apply, "podCIDR /24/24", with_peer("vxlan", "10.250.0.2", "10.244.2.0/24/24"), refused(&[f, "nodes[1].podcidr"])),
        Case::text(Apply, "podCIDRs: a string", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\npodCIDRs: 10.244.2.0/24"), refused(&[f, "nodes[1].podcidrs"])),
        Case::text(Apply, "podCIDRs: nested list", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\npodCIDRs: [[10.244.2.0/24]]"), refused(&[f, "nodes[1].podcidrs"])),
        Case::text(Apply, "podCIDRs: []", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\npodCIDRs: []"), refused(&[f, "nodes[1].podcidr"])),
        Case::text(Apply, "podCIDR and podCIDRs", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24\npodCIDRs: [10.244.2.0/24]"), refused(&[f, "nodes[1]"])),
        Case::text(Apply, "three podCIDRs", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\npodCIDRs: [10.244.2.0/24, fd00:2::/64, fd00:3::/64]"), refused(&[f, "nodes[1].podcidrs"])),
        // Numbers: strings, floats, negatives, huge.
        Case::text(Apply, "generation: \"one\"", with_top("generation: one"), refused(&[f, "generation"])),
        Case::text(Apply, "generation: 1.5", with_top("generation: 1.5"), refused(&[f, "generation"])),
        Case::text(Apply, "generation: -1", with_top("generation: -1"), refused(&[f, "generation"])),
        Case::text(Apply, "generation: 2^64", with_top("generation: 18446744073709551616"), refused(&[f, "generation"])),
        Case::text(Plan, "generation: u64::MAX", with_top("generation: 18446744073709551615"), refused(&[f, "generation"])),
        Case::text(Plan, "generation: 2^63", with_top("generation: 9223372036854775808"), refused(&[f, "generation"])),
        Case::text(Plan, "generation: 2^63-1", with_top("generation: 9223372036854775807"), Expect::Accepted),
        Case::text(Apply, "mtu: \"1400\"", with_top("mtu: \"1400\""), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: 1400.5", with_top("mtu: 1400.5"), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: -1400", with_top("mtu: -1400"), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: 2^32", with_top("mtu: 4294967296"), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: 1e3", with_top("mtu: 1e3"), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: .inf", with_top("mtu: .inf"), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: .nan", with_top("mtu: .nan"), refused(&[f, "mtu"])),
        Case::text(Apply, "mtu: [1400]", with_top("mtu: [1400]"), refused(&[f, "mtu"])),
        Case::text(Plan, "mtu: 0x578 (hex 1400)", with_top("mtu: 0x578"), Expect::Either),
        Case::text(Apply, "vxlan: 5", with_top("vxlan: 5"), refused(&[f, "vxlan"])),
        Case::text(Apply, "vxlan.vni: \"x\"", with_top("vxlan: {vni: x}"), refused(&[f, "vni"])),
        Case::text(Apply, "vxlan.vni: 4096.0", with_top("vxlan: {vni: 4096.0}"), refused(&[f, "vni"])),
        Case::text(Apply, "vxlan.vni: 10^20", with_top("vxlan: {vni: 100000000000000000000}"), refused(&[f, "vni"])),
        Case::text(Apply, "vxlan.port: \"4789\"", with_top("vxlan: {port: \"4789\"}"), refused(&[f, "port"])),
        Case::text(Apply, "decap: a string", with_top("decap: vxlan"), refused(&[f, "decap"])),
        Case::text(Apply, "offSubnet: 3", with_top("offSubnet: 3"), refused(&[f, "offsubnet"])),
        // Unknown and duplicate keys, several documents.
        Case::text(Apply, "unknown key modes", base.replace("mode:", "modes:"), refused(&[f, "modes"])),
        Case::text(Apply, "unknown key extra", with_top("extra: 1"), refused(&[f, "extra"])),
        Case::text(Apply, "unknown node key podCidr", base.replace("podCIDR: 10.244.2", "podCidr: 10.244.2"), refused(&[f, "podcidr"])),
        Case::text(Apply, "unknown vxlan key id", with_top("vxlan: {id: 5}"), refused(&[f, "id"])),
        Case::text(Apply, "duplicate mode", with_top("mode: native"), refused(&[f, "mode"])),
        Case::text(Apply, "duplicate ip in a node", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\nip: 10.250.0.9\npodCIDR: 10.244.2.0/24"), refused(&[f, "ip"])),
        Case::text(Apply, "two documents", format!("{base}---\n{}", valid("native")), refused(&[f])),
        Case::text(Apply, "document end then junk", format!("{base}...\n}}}}: [\n"), refused(&[f])),
        // Anchors, aliases and tags.
        Case::text(Apply, "billion laughs at the top", laughs("lol"), refused(&[f])),
        Case::text(Apply, "billion laughs in nodes", laughs_in_nodes(), refused(&[f, "nodes[0]"])),
        Case::text(Apply, "alias of an undefined anchor", base.replace("mode: vxlan", "mode: *nope"), refused(&[f])),
        Case::text(Apply, "one node aliased 1000 times", aliased_nodes(1000), refused(&[f, "nodes[2].name"])),
        Case::text(Apply, "merge key", with_peer_raw("vxlan", "<<: {name: node-2}\nip: 10.250.0.2\npodCIDR: 10.244.2.0/24"), Expect::Either),
        Case::text(Apply, "python object tag", "!!python/object/apply:os.system [\"true\"]\n", refused(&[f])),
        Case::text(Apply, "mode: !!binary", base.replace("mode: vxlan", "mode: !!binary dnhsYW4="), Expect::Either),
        Case::text(Apply, "mode: !vxlan tag", base.replace("mode: vxlan", "mode: !vxlan"), Expect::Either),
        // Names.
        Case::text(Apply, "unicode peer name", base.replace("name: node-2", "name: \"nöde-2 ✓\""), Expect::Either),
        Case::text(Apply, "unicode local name", base.replace("name: node-1", "name: ノード1"), Expect::Either).args(&["--node", "ノード1"]),
        Case::text(Apply, "empty peer name", base.replace("name: node-2", "name: \"\""), refused(&[f, "nodes[1].name"])),
        Case::text(Apply, "10k-char peer name", base.replace("name: node-2", &format!("name: {}", "n".repeat(10_000))), Expect::Either),
        Case::text(Apply, "10k-char local name", base.replace("name: node-1", &format!("name: {}", "l".repeat(10_000))), Expect::Either).args(&["--node", &"l".repeat(10_000)]),
        Case::text(Apply, "name with newline and escape", base.replace("name: node-2", "name: \"node\\n2\\e[31m\""), Expect::Either),
        Case::text(Apply, "name with NUL", base.replace("name: node-2", "name: \"node\\0-2\""), Expect::Either),
    ];
    // The other commands that read a cluster file, on a sample.
    for cmd in [Plan, Status, Agent] {
        cases.push(Case::text(cmd, "empty file", "", refused(&[f])));
        cases.push(Case::text(cmd, "mode: 5", base.replace("mode: vxlan", "mode: 5"), refused(&[f, "mode"])));
        cases.push(Case::text(cmd, "ip: leading zeros", with_peer("vxlan", "010.250.000.002", "10.244.2.0/24"), refused(&[f, "nodes[1].ip"])));
        cases.push(Case::text(cmd, "billion laughs at the top", laughs("lol"), refused(&[f])));
        cases.push(Case::text(cmd, "two documents", format!("{base}---\n{}", valid("native")), refused(&[f])));
    }
    cases
}

/// The classic alias bomb under key `key`: ten levels of ten aliases each.
fn laughs(key: &str) -> String {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let _ = writeln!(s, "a{i}: &a{i} [{}]", [prev.as_str(); 10].join(", "));
    }
    let _ = writeln!(s, "{key}: [*a9, *a9, *a9]");
    s.replacen("a0:", "mode: vxlan\na0:", 1)
}

/// The same bomb as the items of `nodes`.
fn laughs_in_nodes() -> String {
    let mut s = String::from(
        "mode: vxlan\nnodes:\n  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let _ = writeln!(s, "  - &a{i} [{}]", [prev.as_str(); 10].join(", "));
    }
    s
}

/// node-1 once, then `n` aliases of node-2.
fn aliased_nodes(n: usize) -> String {
    let mut s = String::from(
        "mode: vxlan\nnodes:\n  - {name: node-1, ip: 10.250.0.1, podCIDR: 10.244.1.0/24}\n  \
         - &peer {name: node-2, ip: 10.250.0.2, podCIDR: 10.244.2.0/24}\n",
    );
    for _ in 0..n {
        s.push_str("  - *peer\n");
    }
    s
}

// ---------------------------------------------------------------------------
// Class: addresses.

/// Outside every node-local range (contract: IANA special-purpose registry).
const SPECIAL_NODE_IPS: &[&str] = &[
    "0.0.0.0",
    "0.0.0.1",
    "127.0.0.2",
    "169.254.1.1",
    "192.0.0.8",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.5",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
];

const SPECIAL_POD_CIDRS: &[&str] = &[
    "127.0.0.0/8",
    "127.0.0.0/30",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "239.1.2.0/24",
    "169.254.0.0/16",
    "240.0.0.0/24",
    "240.0.0.0/4",
    "255.255.255.0/24",
    "0.0.0.0/0",
    "96.0.0.0/3",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
];

#[rustfmt::skip]
fn address_cases() -> Vec<Case> {
    use Cmd::*;
    let mut cases = Vec::new();
    for ip in SPECIAL_NODE_IPS {
        cases.push(Case::text(Apply, format!("vxlan peer ip {ip}"), with_peer("vxlan", ip, "10.244.2.0/24"), refused(&["nodes[1].ip"])));
    }
    for ip in ["127.0.0.2", "169.254.1.1", "255.255.255.255"] {
        cases.push(Case::text(Apply, format!("native peer ip {ip}"), with_peer("native", ip, "10.244.2.0/24"), refused(&["nodes[1].ip"])));
    }
    for ip in ["127.0.0.1", "169.254.0.1", "224.0.0.1", "255.255.255.255"] {
        cases.push(Case::text(Apply, format!("own ip {ip}"), with_self("vxlan", ip, "10.244.1.0/24"), refused(&["nodes[0].ip"])));
    }
    for cidr in SPECIAL_POD_CIDRS {
        cases.push(Case::text(Apply, format!("vxlan peer podCIDR {cidr}"), with_peer("vxlan", "10.250.0.2", cidr), refused(&["nodes[1].podCIDRs[0]"])));
    }
    for cidr in [
        "127.0.0.0/8",
        "224.0.0.0/4",
        "0.0.0.0/0",
        "169.254.0.0/16",
        "255.255.255.0/24",
    ] {
        cases.push(Case::text(Apply, format!("native peer podCIDR {cidr}"), with_peer("native", "10.250.0.2", cidr), refused(&["nodes[1].podCIDRs[0]"])));
    }
    for cidr in ["127.0.0.0/8", "224.0.0.0/24"] {
        cases.push(Case::text(Apply, format!("own podCIDR {cidr}"), with_self("vxlan", "10.250.0.1", cidr), refused(&["nodes[0].podCIDRs[0]"])));
    }
    let peer = |name: &str, cidr: &str, needle: &'static str| {
        Case::text(Apply, name.to_string(), with_peer("vxlan", "10.250.0.2", cidr), refused(&[needle]))
    };
    let two = |name: &str, cidrs: &str, needle: &'static str| {
        Case::text(Apply, name.to_string(), with_peer_raw("vxlan", &format!("name: node-2\nip: 10.250.0.2\npodCIDRs: {cidrs}")), refused(&[needle]))
    };
    cases.extend([
        peer("host bits 10.244.2.1/24", "10.244.2.1/24", "nodes[1].podCIDRs[0]"),
        peer("host bits 10.244.2.128/24", "10.244.2.128/24", "nodes[1].podCIDRs[0]"),
        peer("podCIDR /31", "10.244.2.0/31", "nodes[1].podCIDRs[0]"),
        peer("podCIDR /32", "10.244.2.0/32", "nodes[1].podCIDRs[0]"),
        Case::text(Apply, "podCIDR /30 (control)", with_peer("vxlan", "10.250.0.2", "10.244.2.0/30"), Expect::Accepted),
        Case::text(Apply, "IPv6 peer ip", with_peer("vxlan", "fd00::2", "10.244.2.0/24"), refused(&["nodes[1].podCIDRs"])),
        Case::text(Apply, "IPv4-mapped IPv6 peer ip", with_peer("vxlan", "\"::ffff:10.250.0.2\"", "10.244.2.0/24"), refused(&["nodes[1].ip"])),
        two("IPv6-only podCIDRs", "[\"fd00:2::/64\"]", "nodes[1].podCIDRs"),
        two("IPv6 podCIDR with host bits", "[10.244.2.0/24, \"fd00:2::1/64\"]", "nodes[1].podCIDRs[1]"),
        two("IPv6 multicast podCIDR", "[10.244.2.0/24, \"ff02::/64\"]", "nodes[1].podCIDRs[1]"),
        two("IPv6 link-local podCIDR", "[10.244.2.0/24, \"fe80::/64\"]", "nodes[1].podCIDRs[1]"),
        two("IPv6 loopback podCIDR", "[10.244.2.0/24, \"::1/128\"]", "nodes[1].podCIDRs[1]"),
        two("IPv6 documentation podCIDR", "[10.244.2.0/24, \"2001:db8:2::/64\"]", "nodes[1].podCIDRs[1]"),
        two("IPv6 podCIDR /127", "[10.244.2.0/24, \"fd00:2::/127\"]", "nodes[1].podCIDRs[1]"),
        Case::text(Apply, "IPv6 podCIDR of another node", "mode: vxlan\nnodes:\n  - {name: node-1, ip: 10.250.0.1, podCIDRs: [10.244.1.0/24, \"fd00:1::/64\"]}\n  - {name: node-2, ip: 10.250.0.2, podCIDRs: [10.244.2.0/24, \"fd00:1::/64\"]}\n  - {name: node-3, ip: 10.250.0.3, podCIDR: 10.244.3.0/24}\n".to_string(), refused(&["nodes[1].podCIDRs"])),
        two("two IPv4 podCIDRs", "[10.244.2.0/24, 10.244.9.0/24]", "nodes[1].podCIDRs"),
        Case::text(Plan, "dual-stack podCIDRs (control)", with_peer_raw("vxlan", "name: node-2\nip: 10.250.0.2\npodCIDRs: [10.244.2.0/24, \"fd00:2::/64\"]"), Expect::Accepted),
        // The node's own underlay subnet (10.250.0.0/24 on eth0).
        Case::text(Apply, "vxlan peer podCIDR in the underlay subnet", with_peer("vxlan", "10.250.0.2", "10.250.0.128/25"), refused(&["node-2|nodes[1]"])),
        Case::text(Apply, "native peer podCIDR in the underlay subnet", with_peer("native", "10.250.0.2", "10.250.0.128/25"), refused(&["node-2|nodes[1]"])),
        Case::text(Plan, "peer podCIDR in the underlay subnet", with_peer("vxlan", "10.250.0.2", "10.250.0.128/25"), refused(&["node-2|nodes[1]"])),
        Case::text(Apply, "peer podCIDR /29 in the underlay subnet", with_peer("native", "10.250.0.2", "10.250.0.200/29"), refused(&["node-2|nodes[1]"])),
        Case::text(Apply, "own podCIDR in the underlay subnet", with_self("vxlan", "10.250.0.1", "10.250.0.128/25"), refused(&["node-1|nodes[0]"])),
        Case::text(Agent, "peer podCIDR in the underlay subnet", with_peer("native", "10.250.0.2", "10.250.0.128/25"), Expect::LeftOut { bad: "10.250.0.128/25", good: "10.244.3.0/24", host: "10.250.0.200", }),
        // Across nodes.
        Case::text(Apply, "duplicate name", yaml("mode: vxlan", &[N1, ("node-1", "10.250.0.2", "10.244.2.0/24"), N3]), refused(&["nodes[1].name"])),
        Case::text(Apply, "duplicate ip", with_peer("vxlan", "10.250.0.3", "10.244.2.0/24"), refused(&["nodes[2].ip|nodes[1].ip"])),
        peer("podCIDR overlaps node-1's", "10.244.1.0/25", "nodes[1].podCIDRs"),
        peer("podCIDR is a supernet of all", "10.244.0.0/16", "nodes[1].podCIDRs"),
        peer("podCIDR holds every node IP", "10.0.0.0/8", "nodes[1].podCIDRs"),
        Case::text(Apply, "podCIDR holds another node's IP", yaml("mode: vxlan", &[N1, ("node-2", "10.250.0.2", "10.99.0.0/24"), ("node-3", "10.99.0.3", "10.244.3.0/24")]), refused(&["nodes[1].podCIDRs"])),
        Case::text(Apply, "two nodes share a podCIDR", yaml("mode: vxlan", &[N1, N2, ("node-3", "10.250.0.3", "10.244.2.0/24")]), refused(&["nodes[2].podCIDRs"])),
        // Other commands on special ranges.
        Case::text(Plan, "peer podCIDR 224.0.0.0/4", with_peer("vxlan", "10.250.0.2", "224.0.0.0/4"), refused(&["nodes[1].podCIDRs[0]"])),
        Case::text(Status, "peer podCIDR 127.0.0.0/8", with_peer("vxlan", "10.250.0.2", "127.0.0.0/8"), refused(&["nodes[1].podCIDRs[0]"])),
        Case::text(Agent, "peer podCIDR 127.0.0.0/8", with_peer("vxlan", "10.250.0.2", "127.0.0.0/8"), refused(&["nodes[1].podCIDRs[0]"])),
        Case::text(Agent, "peer ip 255.255.255.255", with_peer("native", "255.255.255.255", "10.244.2.0/24"), refused(&["nodes[1].ip"])),
    ]);
    // Allowed ranges: the controls.
    for cidr in [
        "100.64.2.0/24",
        "172.16.2.0/24",
        "192.168.2.0/24",
        "198.18.2.0/24",
        "8.8.8.0/24",
    ] {
        cases.push(Case::text(Apply, format!("peer podCIDR {cidr} (control)"), with_peer("vxlan", "10.250.0.2", cidr), Expect::Accepted));
    }
    cases
}

// ---------------------------------------------------------------------------
// Class: cluster-wide settings.

#[rustfmt::skip]
fn setting_cases() -> Vec<Case> {
    use Cmd::*;
    let mut cases = Vec::new();
    let mut add = |cmd: Cmd, extra: &str, expect: Expect| {
        cases.push(Case::text(cmd, extra.to_string(), with_top(extra), expect));
    };
    for mtu in ["0", "50", "575", "65536", "4294967295"] {
        add(Apply, &format!("mtu: {mtu}"), refused(&["mtu"]));
    }
    // Valid at parse, but over what this node's uplink (1500) carries.
    add(Apply, "mtu: 9000", refused(&["mtu"]));
    add(Plan, "mtu: 9000", refused(&["mtu"]));
    add(Apply, "mtu: 65535", refused(&["mtu"]));
    add(Apply, "mtu: 1400", Expect::Accepted);
    for vni in ["0", "16777216", "-1", "4294967296"] {
        add(Apply, &format!("vxlan: {{vni: {vni}}}"), refused(&["vxlan.vni"]));
    }
    add(Plan, "vxlan: {vni: 16777215}", Expect::Accepted);
    for port in ["0", "65536", "-1"] {
        add(Apply, &format!("vxlan: {{port: {port}}}"), refused(&["vxlan.port"]));
    }
    add(Plan, "vxlan: {port: 1}", Expect::Accepted);
    add(Apply, "generation: 0", refused(&["generation"]));
    add(Plan, "vxlan: {}", Expect::Either);
    for mode in ["wireguard", "calico", "\"\"", "ipip,vxlan"] {
        cases.push(Case::text(Apply, format!("mode: {mode}"), valid("vxlan").replace("mode: vxlan", &format!("mode: {mode}")), refused(&["mode"])));
    }
    let mut add = |cmd: Cmd, extra: &str, expect: Expect| {
        cases.push(Case::text(cmd, extra.to_string(), with_top(extra), expect));
    };
    add(Apply, "offSubnet: bogus", refused(&["offSubnet"]));
    add(Apply, "offSubnet: \"\"", refused(&["offSubnet"]));
    add(Apply, "decap: [bogus]", refused(&["decap"]));
    add(Apply, "decap: [wireguard]", refused(&["decap"]));
    // Validated at parse: the agent and the read-only commands refuse them too.
    for cmd in [Agent, Plan, Status] {
        add(cmd, "mtu: 50", refused(&["mtu"]));
        add(cmd, "vxlan: {vni: 0}", refused(&["vxlan.vni"]));
    }
    add(Agent, "generation: 0", refused(&["generation"]));
    add(Agent, "vxlan: {port: 0}", refused(&["vxlan.port"]));
    cases
}

// ---------------------------------------------------------------------------
// Class: special files.

struct Special {
    name: &'static str,
    path: PathBuf,
    needles: Vec<&'static str>,
}

#[rustfmt::skip]
fn special_files(bench: &Bench) -> (Vec<Special>, std::os::unix::net::UnixListener) {
    let p = |n: &str| bench.path(n);
    let run = |args: &[&str]| {
        let ok = Command::new(args[0]).args(&args[1..]).status().expect("set-up command");
        assert!(ok.success(), "{args:?}");
    };
    run(&["mkfifo", &p("fifo.yaml").display().to_string()]);
    std::fs::create_dir_all(p("dir.yaml")).expect("dir");
    std::os::unix::fs::symlink(p("nowhere.yaml"), p("dangling.yaml")).expect("symlink");
    std::os::unix::fs::symlink(p("dir.yaml"), p("dirlink.yaml")).expect("symlink");
    std::os::unix::fs::symlink("/dev/zero", p("zero.yaml")).expect("symlink");
    let socket = std::os::unix::net::UnixListener::bind(p("socket.yaml")).expect("socket");
    // 33 MiB: a valid file, then comments.
    let mut big = valid("vxlan");
    let line = format!("# {}\n", "x".repeat(1022));
    while big.len() < 33 << 20 {
        big.push_str(&line);
    }
    std::fs::write(p("big.yaml"), big).expect("big file");
    std::fs::write(p("nested.yaml"), "[".repeat(200_000)).expect("nested file");
    std::fs::write(p("braces.yaml"), "{".repeat(200_000)).expect("nested file");
    // Well-formed but 70 levels deep.
    let deep = format!("mode: vxlan\nnodes: {}{}\n", "[".repeat(70), "]".repeat(70));
    std::fs::write(p("deep.yaml"), deep).expect("deep file");
    let not_regular = "not a regular file";
    let specials = vec![
        Special { name: "/dev/zero", path: "/dev/zero".into(), needles: vec!["/dev/zero", not_regular] },
        Special { name: "a FIFO", path: p("fifo.yaml"), needles: vec!["fifo.yaml", not_regular] },
        Special { name: "a directory", path: p("dir.yaml"), needles: vec!["dir.yaml", not_regular] },
        Special { name: "a 33 MiB file", path: p("big.yaml"), needles: vec!["big.yaml", "larger than 32 MiB"] },
        Special { name: "200 kB of nested [", path: p("nested.yaml"), needles: vec!["nested.yaml"] },
        Special { name: "a symlink to /dev/zero", path: p("zero.yaml"), needles: vec!["zero.yaml", not_regular] },
        Special { name: "a missing file", path: p("missing.yaml"), needles: vec!["missing.yaml"] },
        Special { name: "a dangling symlink", path: p("dangling.yaml"), needles: vec!["dangling.yaml"] },
        Special { name: "a symlink to a directory", path: p("dirlink.yaml"), needles: vec!["dirlink.yaml", not_regular] },
        Special { name: "a socket", path: p("socket.yaml"), needles: vec!["socket.yaml", not_regular] },
        Special { name: "/dev/null", path: "/dev/null".into(), needles: vec!["/dev/null", not_regular] },
        Special { name: "200 kB of nested {", path: p("braces.yaml"), needles: vec!["braces.yaml"] },
        Special { name: "70 levels of [] (well-formed)", path: p("deep.yaml"), needles: vec!["deep.yaml"] },
    ];
    (specials, socket)
}

#[rustfmt::skip]
fn file_cases(bench: &Bench, specials: &[Special]) -> Vec<Case> {
    use Cmd::*;
    let mut cases = Vec::new();
    for (i, s) in specials.iter().enumerate() {
        // Every special with apply; the first six with the other readers too.
        let cmds: &[Cmd] = if i < 6 { &[Apply, Plan, Status, Agent] } else { &[Apply] };
        for &cmd in cmds {
            cases.push(Case::new(cmd, s.name, Input::Path(s.path.clone()), Expect::Refused(s.needles.clone())));
        }
    }
    // Controls: a symlink to a regular file, and a ConfigMap volume's layout.
    let good = bench.path("good.yaml");
    std::fs::write(&good, valid("vxlan")).expect("good file");
    let link = bench.path("goodlink.yaml");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    cases.push(Case::new(Plan, "a symlink to a regular file (control)", Input::Path(link), Expect::Accepted));
    let data = bench.path("configmap/..2024_01_01");
    std::fs::create_dir_all(&data).expect("configmap dir");
    std::fs::write(data.join("cluster.yaml"), valid("vxlan")).expect("configmap file");
    std::os::unix::fs::symlink("..2024_01_01", bench.path("configmap/..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/cluster.yaml", bench.path("configmap/cluster.yaml")).expect("symlink");
    cases.push(Case::new(Plan, "a ConfigMap volume's symlinks (control)", Input::Path(bench.path("configmap/cluster.yaml")), Expect::Accepted));
    // The MTU file: status and apply read it (then apply writes it, cleanup
    // removes it), so it is bounded like every file podroute reads.
    let not_regular = || refused(&["not a regular file"]);
    let fifo = bench.path("fifo.yaml").display().to_string();
    let valid_text = || Input::Text(valid("vxlan").into_bytes());
    cases.extend([
        Case::new(Status, "--mtu-file /dev/zero", Input::Nothing, not_regular()).args(&["--mtu-file", "/dev/zero"]),
        Case::new(Status, "--mtu-file a FIFO", Input::Nothing, not_regular()).args(&["--mtu-file", &fifo]),
        Case::new(Apply, "--mtu-file a FIFO", valid_text(), not_regular()).args(&["--mtu-file", &fifo]),
        Case::new(Apply, "--mtu-file a directory", valid_text(), not_regular()).args(&["--mtu-file", &bench.path("dir.yaml").display().to_string()]),
        Case::new(Cleanup, "--mtu-file a FIFO", Input::Nothing, not_regular()).args(&["--mtu-file", &fifo]),
    ]);
    cases
}

// ---------------------------------------------------------------------------
// Class: node-local flags (on a node that already runs the valid vxlan file).

#[rustfmt::skip]
fn flag_cases() -> Vec<Case> {
    use Cmd::*;
    let good = || Input::Text(valid("vxlan").into_bytes());
    let bad = |cmd: Cmd, flag: &'static str, value: &str, needle: &'static str| {
        let input = if matches!(cmd, Cleanup) {
            Input::Nothing
        } else {
            good()
        };
        // `--flag=-1`: as two words, clap reads `-1` as a flag of its own.
        let case = Case::new(cmd, format!("{flag} {value:?}"), input, refused(&[needle]));
        if value.starts_with('-') {
            case.args(&[&format!("{flag}={value}")])
        } else {
            case.args(&[flag, value])
        }
    };
    let mut cases = Vec::new();
    for v in ["0", "4", "256", "-1", "kernel", "static", "nope", ""] {
        cases.push(bad(Apply, "--route-protocol", v, "route-protocol"));
    }
    for v in ["static", "boot", "0", "kernel", "91", "bird,nope", "300"] {
        cases.push(bad(Apply, "--adopt-route-protocols", v, "adopt-route-protocols"));
    }
    for v in ["0", "253", "255", "-1", "4294967296"] {
        cases.push(bad(Apply, "--route-table", v, "route-table"));
    }
    cases.push(bad(Apply, "--route-metric", "-1", "route-metric"));
    for v in ["0", "16777216", "-1"] {
        cases.push(bad(Apply, "--vxlan-vni", v, "vxlan-vni"));
    }
    for v in ["0", "65536"] {
        cases.push(bad(Apply, "--vxlan-port", v, "vxlan-port"));
    }
    for v in ["0", "100", "575", "9000"] {
        cases.push(bad(Apply, "--mtu", v, "mtu"));
    }
    for v in ["a/b", "", "abcdefghijklmnop", "..", "tun l0"] {
        cases.push(bad(Apply, "--ipip-device", v, "ipip-device"));
    }
    for v in [
        "a/b",
        "",
        "abcdefghijklmnop",
        "..",
        "vx:lan",
        "vx\tlan",
        "vx\nlan",
    ] {
        cases.push(bad(Apply, "--vxlan-device", v, "vxlan-device"));
    }
    // Names of devices that exist and are not VXLAN.
    for v in ["eth0", "lo", "pod0"] {
        cases.push(Case::new(Apply, format!("--vxlan-device {v}"), good(), Expect::NoChange).args(&["--vxlan-device", v]));
    }
    for v in ["/nonexistent", "/dev/zero", "/tmp", "", "/proc/sys/net"] {
        cases.push(bad(Apply, "--proc-sys", v, "proc-sys"));
    }
    cases.push(bad(Apply, "--mtu-file", "/proc/podroute/mtu", "mtu-file"));
    cases.push(bad(Apply, "--mtu-file", "", "mtu-file"));
    cases.push(bad(Apply, "--rp-filter", "strict", "rp-filter"));
    cases.push(bad(Apply, "--off-subnet", "x", "off-subnet"));
    cases.push(bad(Apply, "--cross-subnet-tunnel", "native", "cross-subnet-tunnel"));
    cases.push(bad(Apply, "--node", "nobody", "nobody"));
    cases.push(bad(Apply, "--node", "", "node"));
    cases.push(bad(Apply, "--output", "yaml", "output"));
    cases.push(Case::new(Apply, "PODROUTE_ROUTE_PROTOCOL=0", good(), refused(&["route-protocol"])).env("PODROUTE_ROUTE_PROTOCOL", "0"));
    cases.push(Case::new(Apply, "NODE_NAME=nobody", good(), refused(&["nobody"])).env("NODE_NAME", "nobody"));
    // cleanup must refuse bad flags before it removes anything.
    for (flag, value, needle) in [
        ("--route-protocol", "0", "route-protocol"),
        ("--adopt-route-protocols", "static", "adopt-route-protocols"),
        ("--route-table", "255", "route-table"),
        ("--vxlan-device", "a/b", "vxlan-device"),
        ("--vxlan-device", "", "vxlan-device"),
        ("--ipip-device", "..", "ipip-device"),
        ("--vxlan-vni", "0", "vxlan-vni"),
        ("--mtu", "100", "mtu"),
        ("--proc-sys", "/nonexistent", "proc-sys"),
        ("--rp-filter", "strict", "rp-filter"),
    ] {
        cases.push(bad(Cleanup, flag, value, needle));
    }
    for (flag, value, needle) in [
        ("--route-protocol", "0", "route-protocol"),
        ("--proc-sys", "/nonexistent", "proc-sys"),
    ] {
        cases.push(bad(Status, flag, value, needle));
    }
    for (flag, value, needle) in [
        ("--route-table", "253", "route-table"),
        ("--mtu", "9000", "mtu"),
    ] {
        cases.push(bad(Plan, flag, value, needle));
    }
    for (flag, value, needle) in [
        ("--route-protocol", "0", "route-protocol"),
        ("--vxlan-vni", "0", "vxlan-vni"),
        ("--mtu", "100", "mtu"),
        ("--vxlan-device", "a/b", "vxlan-device"),
        ("--listen", "nonsense", "listen"),
        ("--resync-seconds", "-1", "resync-seconds"),
    ] {
        cases.push(bad(Agent, flag, value, needle));
    }
    cases
}

// ---------------------------------------------------------------------------
// Class: foreign state on our devices and in our table.

#[rustfmt::skip]
fn foreign_cases() -> Vec<Case> {
    use Cmd::*;
    let vxlan = valid("vxlan");
    let native = valid("native");
    let text = |t: &str| Input::Text(t.as_bytes().to_vec());
    let f = |x: Foreign| Expect::Foreign(x);
    const BRIDGE: &[&str] = &["link", "add", "vxlan.calico", "type", "bridge"];
    const VETH: &[&str] = &["link", "add", "vxlan.calico", "type", "veth", "peer", "name", "vxpeer"];
    // After an apply: an admin's address and static route on our device.
    const ADDR: &[&str] = &["addr", "add", "192.168.77.1/24", "dev", "vxlan.calico"];
    const ROUTE: &[&str] = &["route", "add", "192.168.78.0/24", "via", "192.168.77.2", "dev", "vxlan.calico", "proto", "static"];
    const KEEP: &[&str] = &["192.168.77.1/24", "192.168.78.0/24"];
    const PEER_KEY: &[&str] = &["route", "add", "10.244.2.0/24", "via", "10.250.0.2", "dev", "eth0", "proto", "static"];
    const PEER_KEY_DEL: &[&str] = &["route", "del", "10.244.2.0/24", "proto", "static"];
    const BIRD: &[&str] = &["route", "add", "10.99.0.0/16", "via", "10.250.0.2", "dev", "eth0", "proto", "bird"];
    const BIRD_DEL: &[&str] = &["route", "del", "10.99.0.0/16"];
    const NEIGH: &[&str] = &["neigh", "add", "10.250.0.77", "lladdr", "02:00:00:00:00:77", "dev", "eth0", "nud", "permanent"];
    const NEIGH_DEL: &[&str] = &["neigh", "del", "10.250.0.77", "dev", "eth0"];
    let exit1 = &[Got::Exit(1)][..];
    let exit0or1 = &[Got::Exit(0), Got::Exit(1)][..];
    let running = &[Got::Running, Got::Exit(1)][..];
    vec![
        // A device with our name but another kind.
        Case::new(Apply, "bridge named vxlan.calico", text(&vxlan), f(Foreign { ok: exit1, unchanged: true, says: &["vxlan.calico"], ..Default::default() })).plant(&[BRIDGE]),
        Case::new(Cleanup, "bridge named vxlan.calico", Input::Nothing, f(Foreign { ok: exit0or1, unchanged: true, ..Default::default() })).plant(&[BRIDGE]),
        Case::new(Agent, "bridge named vxlan.calico", text(&vxlan), f(Foreign { ok: running, keep: &["vxlan.calico: <", "bridge forward_delay"], ..Default::default() })).plant(&[BRIDGE]),
        Case::new(Apply, "veth named vxlan.calico", text(&vxlan), f(Foreign { ok: exit1, unchanged: true, says: &["vxlan.calico"], ..Default::default() })).plant(&[VETH]),
        Case::new(Cleanup, "veth named vxlan.calico", Input::Nothing, f(Foreign { ok: exit0or1, unchanged: true, ..Default::default() })).plant(&[VETH]),
        Case::new(Apply, "veth named vxlan.calico, native", text(&native), f(Foreign { ok: exit0or1, keep: &["vxlan.calico@vxpeer"], ..Default::default() })).plant(&[VETH]),
        // Foreign address and route on our vxlan.calico.
        Case::new(Cleanup, "foreign address+route on vxlan.calico", Input::Nothing, f(Foreign { ok: exit0or1, keep: KEEP, device_up: true, ours_gone: true, ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Apply, "foreign address+route on vxlan.calico, native", text(&native), f(Foreign { ok: exit0or1, keep: KEEP, device_up: true, ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Apply, "foreign address+route on vxlan.calico, file vni 4097", text(&with_top("vxlan: {vni: 4097}")), f(Foreign { ok: exit1, unchanged: true, says: &["192.168.77|192.168.78"], ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Apply, "foreign address+route on vxlan.calico, --vxlan-vni 4097", text(&vxlan), f(Foreign { ok: exit1, unchanged: true, says: &["192.168.77|192.168.78"], ..Default::default() })).args(&["--vxlan-vni", "4097"]).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Apply, "foreign address+route on vxlan.calico, port 4790", text(&with_top("vxlan: {port: 4790}")), f(Foreign { ok: exit1, unchanged: true, says: &["192.168.77|192.168.78"], ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Agent, "foreign address+route on vxlan.calico, native", text(&native), f(Foreign { ok: running, keep: KEEP, device_up: true, ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Status, "foreign address+route on vxlan.calico", Input::Nothing, f(Foreign { ok: &[Got::Exit(0)], unchanged: true, says: &["192.168.77.1"], ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[ADDR, ROUTE]),
        Case::new(Cleanup, "foreign route only (proto boot) via vxlan.calico", Input::Nothing, f(Foreign { ok: exit0or1, keep: &["192.168.79.0/24"], device_up: true, ours_gone: true, ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[&["route", "add", "192.168.79.0/24", "dev", "vxlan.calico"]]),
        // A foreign route holding a peer's key.
        Case::new(Apply, "static route holding a peer's key", text(&vxlan), f(Foreign { ok: exit0or1, keep: &["10.244.2.0/24 via 10.250.0.2 dev eth0 proto static"], says: &["10.244.2.0/24", "not ours|conflict"], ..Default::default() })).plant(&[PEER_KEY]).teardown(&[PEER_KEY_DEL]),
        Case::new(Cleanup, "static route holding a peer's key", Input::Nothing, f(Foreign { ok: exit0or1, keep: &["10.244.2.0/24 via 10.250.0.2 dev eth0 proto static"], ..Default::default() })).prep_apply(&yaml("mode: native", &[N1, N3]), &[]).plant(&[PEER_KEY]).teardown(&[PEER_KEY_DEL]),
        // Adoption stays inside the pod network and our devices.
        Case::new(Apply, "unrelated bird route, --adopt-route-protocols bird", text(&vxlan), f(Foreign { ok: &[Got::Exit(0)], keep: &["10.99.0.0/16"], ..Default::default() })).args(&["--adopt-route-protocols", "bird"]).plant(&[BIRD]).teardown(&[BIRD_DEL]),
        Case::new(Cleanup, "unrelated bird route, --adopt-route-protocols bird", Input::Nothing, f(Foreign { ok: &[Got::Exit(0)], keep: &["10.99.0.0/16"], ..Default::default() })).args(&["--adopt-route-protocols", "bird"]).prep_apply(&vxlan, &[]).plant(&[BIRD]).teardown(&[BIRD_DEL]),
        Case::new(Agent, "unrelated bird route, --adopt-route-protocols bird", text(&native), f(Foreign { ok: &[Got::Running], keep: &["10.99.0.0/16"], ..Default::default() })).args(&["--adopt-route-protocols", "bird"]).plant(&[BIRD]).teardown(&[BIRD_DEL]),
        Case::new(Apply, "bird route for a peer's podCIDR is adopted (control)", text(&native), f(Foreign { ok: &[Got::Exit(0)], after_has: &["10.244.2.0/24 via 10.250.0.2 dev eth0 proto 91"], ..Default::default() })).args(&["--adopt-route-protocols", "bird"]).plant(&[&["route", "add", "10.244.2.0/24", "via", "10.250.0.2", "dev", "eth0", "proto", "bird"]]),
        // Neighbours and a bridge CNI's connected route.
        Case::new(Apply, "permanent neighbour on eth0", text(&vxlan), f(Foreign { ok: &[Got::Exit(0)], keep: &["10.250.0.77"], ..Default::default() })).plant(&[NEIGH]).teardown(&[NEIGH_DEL]),
        Case::new(Cleanup, "permanent neighbour on eth0", Input::Nothing, f(Foreign { ok: &[Got::Exit(0)], keep: &["10.250.0.77"], ..Default::default() })).prep_apply(&vxlan, &[]).plant(&[NEIGH]).teardown(&[NEIGH_DEL]),
        Case::new(Apply, "bridge CNI's connected route for our podCIDR", text(&native), f(Foreign { ok: &[Got::Exit(0)], keep: &["10.244.1.0/24 dev cni0"], ..Default::default() })).plant(&[&["link", "add", "cni0", "type", "bridge"], &["addr", "add", "10.244.1.1/24", "dev", "cni0"], &["link", "set", "cni0", "up"]]),
    ]
}

// ---------------------------------------------------------------------------
// The tests: one per class.

fn run_class(
    class: &'static str,
    baseline: Option<String>,
    cases: impl FnOnce(&Bench) -> Vec<Case>,
) {
    let mut bench = Bench::new(class, baseline);
    for case in cases(&bench) {
        bench.try_case(case);
    }
    bench.finish();
}

#[test]
fn hostile_cluster_file_syntax() {
    if !have_root() || !host_only() {
        return;
    }
    run_class("cluster file syntax", None, |_| syntax_cases());
}

#[test]
fn hostile_addresses() {
    if !have_root() || !host_only() {
        return;
    }
    run_class("addresses", None, |_| address_cases());
}

#[test]
fn hostile_settings() {
    if !have_root() || !host_only() {
        return;
    }
    run_class("settings", None, |_| setting_cases());
}

#[test]
fn hostile_special_files() {
    if !have_root() || !host_only() {
        return;
    }
    let mut bench = Bench::new("special files", None);
    let (specials, _socket) = special_files(&bench);
    for case in file_cases(&bench, &specials) {
        bench.try_case(case);
    }
    bench.finish();
}

#[test]
fn hostile_flags() {
    if !have_root() || !host_only() {
        return;
    }
    run_class("flags", Some(valid("vxlan")), |_| flag_cases());
}

#[test]
fn hostile_foreign_state() {
    if !have_root() || !host_only() {
        return;
    }
    run_class("foreign state", None, |_| foreign_cases());
}
