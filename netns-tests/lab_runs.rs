//! `podroute lab` end to end: the seamless switch loses nothing, and the same
//! measurement run on a naive rollout does see loss (so it can see loss).

use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use crate::support::{have_root, spawn_retrying};

/// One lab at a time per host: the lab takes a machine-wide lock and
/// refuses a second, so every test that runs or blocks a lab takes its turn.
static ONE_LAB: Mutex<()> = Mutex::new(());

pub(crate) fn one_lab() -> MutexGuard<'static, ()> {
    ONE_LAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `podroute lab ARGS...`, output piped.
pub(crate) fn lab_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podroute"));
    command
        .arg("lab")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `podroute lab ARGS...` to its end; returns its output and pid.
pub(crate) fn run_lab(args: &[&str]) -> (Output, u32) {
    let child = spawn_retrying(&mut lab_command(args));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the lab");
    (out, pid)
}

/// The namespaces process `pid` named: `unique_name` puts the pid in base 36
/// right after the prefix (`pr` for the topology, `prlabk` for the probe).
pub(crate) fn namespaces_of(pid: u32) -> Vec<String> {
    let tag = base36(pid);
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            ["pr", "prlabk"]
                .iter()
                .any(|prefix| name.starts_with(&format!("{prefix}{tag}-")))
        })
        .map(str::to_string)
        .collect()
}

fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(n % 36, 36).expect("a base-36 digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

pub(crate) fn assert_nothing_left(pid: u32) {
    let left = namespaces_of(pid);
    assert!(left.is_empty(), "the lab left namespaces behind: {left:?}");
}

fn lab(args: &[&str]) -> Value {
    let _turn = one_lab();
    let mut all = vec!["-o", "json", "--settle-ms", "500", "--step-ms", "200"];
    all.extend_from_slice(args);
    let (out, pid) = run_lab(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(pid);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn assert_seamless(report: &Value) {
    assert!(report["sent"].as_u64() > Some(100), "{report}");
    assert_eq!(report["lost"], 0, "{report:#}");
    for phase in report["phases"].as_array().expect("phases") {
        let mtu = &phase["mtuCheck"];
        assert_eq!(
            mtu["ok"], mtu["total"],
            "DF packets of the pod MTU lost in {phase}"
        );
    }
}

#[test]
fn lab_switches_without_loss_and_naive_loses() {
    if !have_root() {
        return;
    }
    let seamless = lab(&[]);
    assert_seamless(&seamless);
    // The default start mode says which it is and why (ipip where the kernel has it).
    let from = seamless["from"].as_str().expect("from");
    let why = seamless["modesChosen"].as_str().expect("modesChosen");
    assert!(
        why.starts_with(&format!("from {from}: ")) && why.contains("ipip"),
        "{why}"
    );
    let names: Vec<&str> = seamless["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"switch") && names.contains(&"finalize"),
        "{names:?}"
    );

    let asked = lab(&[
        "--from",
        "native",
        "--to",
        "vxlan",
        "--rp-filter",
        "strict",
        "--subnets",
        "2",
    ]);
    assert_seamless(&asked);
    assert_eq!(asked["modesChosen"], "from native: as asked");

    let naive = lab(&["--naive"]);
    assert!(
        naive["lost"].as_u64() > Some(0),
        "the naive rollout lost nothing: {naive:#}"
    );
}

/// Issue 5's matrix: every pair of modes this kernel has, with the nodes
/// starting on strict and on loose rp_filter, switches without a lost probe.
/// ipip pairs run where the kernel has ipip (the VM runner).
#[test]
fn every_pair_of_modes_switches_without_loss() {
    if !have_root() {
        return;
    }
    let mut modes = vec!["vxlan", "native"];
    if crate::support::have_ipip() {
        modes.push("ipip");
    }
    for from in &modes {
        for to in modes.iter().filter(|m| *m != from) {
            for rp in ["strict", "loose"] {
                let report = lab(&[
                    "--from",
                    from,
                    "--to",
                    to,
                    "--rp-filter",
                    rp,
                    "--nodes",
                    "3",
                ]);
                println!(
                    "{from} -> {to} (rp_filter {rp}): {} sent, {} lost",
                    report["sent"], report["lost"]
                );
                assert_seamless(&report);
            }
        }
    }
}
