//! `podroute lab` as a user meets it: refusals (a lab already running, no
//! root), Ctrl-C, `--keep`, a setup error, `--compare` and the progress it
//! prints. Small labs (2 nodes) keep the runs short.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::lab_runs::{assert_nothing_left, lab_command, namespaces_of, one_lab, run_lab};
use crate::support::{have_root, spawn_retrying};

/// The lock `podroute lab` takes (src/cli/lab.rs).
const LOCK_FILE: &str = "/run/podroute-lab.lock";
/// Short phases: these tests look at behaviour, not at loss under load.
const QUICK: [&str; 6] = ["--nodes", "2", "--settle-ms", "300", "--step-ms", "100"];

fn quick(args: &[&str]) -> Vec<String> {
    QUICK.iter().chain(args).map(|a| a.to_string()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_quick(args: &[&str]) -> (std::process::Output, u32) {
    let args = quick(args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_lab(&args)
}

#[test]
fn a_second_lab_refuses_while_one_runs() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .expect("open the lab lock");
    // Blocks while another process's lab runs; ours is the one that holds it.
    let _held = Flock::lock(file, FlockArg::LockExclusive).expect("take the lab lock");

    let (out, pid) = run_quick(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("another podroute lab is running"),
        "{stderr}"
    );
    assert_nothing_left(pid);
}

#[test]
fn without_root_it_says_so_and_exits_2() {
    if !have_root() {
        return;
    }
    // std drops the supplementary groups too when root sets the uid. Not
    // setpriv: the VM runner has busybox's, which cannot change ids.
    use std::os::unix::process::CommandExt;
    let podroute = crate::support::TempCopy::of(env!("CARGO_BIN_EXE_podroute"));
    let mut command = Command::new(&podroute.0);
    command.uid(65534).gid(65534).args(["lab", "--nodes", "2"]);
    let out = crate::support::output_retrying(&mut command);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

/// A lab running in the background. If the test fails while it runs, it is
/// interrupted (killed if it ignores that), and whatever it left is removed.
struct Running(Child);

impl Running {
    /// Waits for the lab's exit; None if it is still running after `timeout`.
    fn wait_for(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32);
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(pid, Signal::SIGINT);
            if self.wait_for(Duration::from_secs(60)).is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        delete_namespaces_of(self.0.id());
    }
}

fn delete_namespaces_of(pid: u32) {
    for name in namespaces_of(pid) {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
}

#[test]
fn ctrl_c_stops_the_lab_and_removes_its_namespaces() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    // Long settle: the interrupt lands while probes flow, whatever the pace.
    let args = ["--nodes", "2", "--settle-ms", "600000"];
    let mut lab = Running(spawn_retrying(&mut lab_command(&args)));
    let pid = lab.0.id();
    let stderr = lab.0.stderr.take().expect("piped stderr");
    let (lines, progress) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("phase steady")) {
        match progress.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no steady phase ({e}); stderr so far: {seen:#?}"),
        }
    }
    assert!(
        !namespaces_of(pid).is_empty(),
        "the running lab has no namespaces?"
    );

    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("send SIGINT");
    let status = lab
        .wait_for(Duration::from_secs(120))
        .expect("the lab ignored SIGINT");
    let rest: Vec<String> = progress.iter().collect();
    assert_eq!(status.code(), Some(130), "{seen:#?}\n{rest:#?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:#?}");
    assert_nothing_left(pid);
}

/// Deletes the namespaces a `--keep` lab left, also when the test fails.
struct Kept(u32);

impl Drop for Kept {
    fn drop(&mut self) {
        delete_namespaces_of(self.0);
    }
}

#[test]
fn keep_leaves_the_namespaces_and_says_how_to_enter() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    // `--json` is `-o json`.
    let (out, pid) = run_quick(&["--keep", "--json", "--naive"]);
    let kept = Kept(pid);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));

    let mut reported: Vec<String> = report["keptNamespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no keptNamespaces: {report:#}"))
        .iter()
        .map(|n| n.as_str().expect("a name").to_string())
        .collect();
    let mut present = namespaces_of(pid);
    reported.sort();
    present.sort();
    assert!(!reported.is_empty());
    assert_eq!(reported, present, "reported vs. left in place");

    let node = reported
        .iter()
        .find(|n| n.ends_with("-n1"))
        .unwrap_or_else(|| panic!("no node namespace in {reported:?}"));
    assert!(
        stderr.contains(&format!("ip netns exec {node} ")),
        "{stderr}"
    );
    // What is left is the switched node, ready to inspect: a native route
    // to the other node's pods.
    let routes = Command::new("ip")
        .args(["-n", node, "route"])
        .output()
        .expect("ip route");
    assert!(
        text(&routes.stdout).contains("10.244.2.0/24"),
        "{}",
        text(&routes.stdout)
    );

    drop(kept);
    assert_nothing_left(pid);
}

#[test]
fn a_setup_error_exits_2_and_removes_what_it_made() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    // Passes clap, fails once the lab created its probe namespace.
    let (out, pid) = run_quick(&["--from", "vxlan", "--to", "vxlan"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing to switch"), "{stderr}");
    assert_nothing_left(pid);
}

/// `seamless lost 0 of 236 probes; naive lost 30 of 240` -> (0, 236, 30, 240)
fn compare_totals(stdout: &str) -> (u64, u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("seamless lost "))
        .unwrap_or_else(|| panic!("no comparison line:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [a, b, c, d] => (a, b, c, d),
        _ => panic!("unexpected comparison line: {line}"),
    }
}

#[test]
fn compare_shows_both_rollouts_and_says_why_the_mode() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    let (out, pid) = run_quick(&["--compare"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert_nothing_left(pid);

    let seamless = stdout.find("seamless rollout").expect("seamless table");
    let naive = stdout.find("naive rollout").expect("naive table");
    assert!(seamless < naive, "{stdout}");
    assert_eq!(stdout.matches("PHASE").count(), 2, "{stdout}");
    let (seamless_lost, seamless_sent, _, naive_sent) = compare_totals(&stdout);
    assert_eq!(seamless_lost, 0, "{stdout}");
    assert!(seamless_sent > 0 && naive_sent > 0, "{stdout}");

    // Which start mode and why, before anything else.
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("from ") && first.contains("ipip"),
        "{stderr}"
    );
    // Not a terminal: one progress line per phase, none repeated.
    let progress: Vec<&str> = stderr.lines().filter(|l| l.contains(" | phase ")).collect();
    assert!(
        ["seamless | ", "naive | "]
            .iter()
            .all(|rollout| progress.iter().any(|l| l.starts_with(rollout))),
        "{stderr}"
    );
    let phase = |line: &str| line.split(" | ").nth(1).unwrap_or_default().to_string();
    for pair in progress.windows(2) {
        assert_ne!(
            phase(pair[0]),
            phase(pair[1]),
            "a repeated phase:\n{stderr}"
        );
    }
    assert!(
        progress
            .iter()
            .all(|l| l.contains("probes sent ") && l.contains(" lost ")),
        "{stderr}"
    );
}

/// An unknown family is refused by clap: exit 2, the flag named, nothing
/// built. `--ip-family ipv6` (IPv6-only nodes) runs and says so.
#[test]
fn ip_family_ipv6_runs_and_unknown_families_exit_2() {
    let _turn = one_lab();
    let (out, pid) = run_quick(&["--ip-family", "bogus"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bogus: {stderr}");
    assert!(
        stderr.contains("--ip-family") && stderr.contains("invalid value"),
        "bogus: {stderr}"
    );
    assert!(out.stdout.is_empty(), "bogus: {}", text(&out.stdout));
    assert_nothing_left(pid);

    if !have_root() {
        return;
    }
    let (out, pid) = run_quick(&["--ip-family", "ipv6", "--from", "vxlan", "-o", "json"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "ipv6: {stderr}\n{stdout}");
    assert_nothing_left(pid);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(report["ipFamily"], "ipv6", "{report:#}");
    assert!(report["families"].get("ipv4").is_none(), "{report:#}");
    assert_eq!(
        report["sent"], report["families"]["ipv6"]["sent"],
        "{report:#}"
    );
}

#[test]
fn a_dual_stack_compare_shows_sent_and_lost_per_family() {
    if !have_root() {
        return;
    }
    let _turn = one_lab();
    let (out, pid) = run_quick(&["--ip-family", "dual", "--from", "vxlan", "--compare"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert_nothing_left(pid);

    let header = "PHASE          GEN  TIME  SENT v4/v6  LOST v4/v6  DF AT POD MTU v4/v6";
    assert_eq!(stdout.matches(header).count(), 2, "{stdout}");
    assert!(stdout.contains("(1 subnet, dual):"), "{stdout}");
    // Every phase row (between a header and its total):
    // "<sent4>/<sent6>  <lost4>/<lost6>  <mtu> <ok>/<n> <ok>/<n>".
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in stdout.lines() {
        if line == header {
            in_table = true;
        } else if line.starts_with("total: ") {
            in_table = false;
        } else if in_table {
            rows.push(line);
        }
    }
    assert!(rows.len() >= 6, "{stdout}");
    for row in &rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let pairs = cells.iter().filter(|c| c.split('/').count() == 2).count();
        assert_eq!(pairs, 4, "not two families in {row:?}:\n{stdout}");
    }
    // The totals line keeps its four numbers; the per-family one follows.
    let (seamless_lost, seamless_sent, _, naive_sent) = compare_totals(&stdout);
    assert_eq!(seamless_lost, 0, "{stdout}");
    assert!(seamless_sent > 0 && naive_sent > 0, "{stdout}");
    let per_family = stdout
        .lines()
        .find(|l| l.starts_with("per family: seamless lost 0/0 (v4/v6) of "))
        .unwrap_or_else(|| panic!("no per-family comparison:\n{stdout}"));
    assert!(per_family.contains("; naive lost "), "{per_family}");
    // Not a terminal: the progress lines count probes per family too.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" | phase ") && l.contains(" (v4/v6)")),
        "{stderr}"
    );
}
