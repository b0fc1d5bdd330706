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
    // One lab at a time: each runs a probe thread per pod and family, and
    // several at once starve one another of CPU on a small machine (the
    // 2-CPU VM counted late echoes as lost), which is not what they measure.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

/// The per-family counts of `part` (the run or one phase) add up to its
/// totals; returns them as (family, counts).
fn families_sum_to_totals<'a>(part: &'a Value, families: &[&str]) -> Vec<(String, &'a Value)> {
    let per: Vec<(String, &Value)> = families
        .iter()
        .map(|f| {
            let counts = &part["families"][*f];
            assert!(counts.is_object(), "no families.{f}: {part:#}");
            (f.to_string(), counts)
        })
        .collect();
    let sum = |key: &str| -> u64 {
        per.iter()
            .map(|(_, c)| c[key].as_u64().expect("a count"))
            .sum()
    };
    assert_eq!(Some(sum("sent")), part["sent"].as_u64(), "{part:#}");
    assert_eq!(Some(sum("lost")), part["lost"].as_u64(), "{part:#}");
    for key in ["ok", "total"] {
        let sum: u64 = per
            .iter()
            .map(|(_, c)| c["mtuCheck"][key].as_u64().expect("a DF count"))
            .sum();
        if part.get("mtuCheck").is_some() {
            assert_eq!(Some(sum), part["mtuCheck"][key].as_u64(), "{part:#}");
        }
    }
    per
}

/// Zero lost probes and every DF packet through, in each family on its
/// own: a family that sent nothing would hide behind the other's count.
fn assert_seamless_in_each_family(report: &Value) {
    assert_seamless(report);
    assert_eq!(report["ipFamily"], "dual", "{report:#}");
    for (family, counts) in families_sum_to_totals(report, &["ipv4", "ipv6"]) {
        assert!(counts["sent"].as_u64() > Some(50), "{family}: {report:#}");
        assert_eq!(counts["lost"], 0, "{family} lost probes: {report:#}");
    }
    for phase in report["phases"].as_array().expect("phases") {
        for (family, counts) in families_sum_to_totals(phase, &["ipv4", "ipv6"]) {
            assert!(counts["sent"].as_u64() > Some(0), "{family}: {phase:#}");
            assert_eq!(counts["lost"], 0, "{family} lost probes: {phase:#}");
            let df = &counts["mtuCheck"];
            assert!(df["total"].as_u64() > Some(0), "{family}: {phase:#}");
            assert_eq!(
                df["ok"], df["total"],
                "{family} DF at the pod MTU: {phase:#}"
            );
        }
    }
}

/// Issue 13: the dual-stack lab (the default) switches vxlan <-> native
/// without a lost probe in either family, while the naive rollout of the
/// same switch loses some; an IPv4 lab still reports IPv4 alone.
#[test]
fn a_dual_stack_lab_switches_without_loss_in_each_family() {
    if !have_root() {
        return;
    }
    for (from, to) in [("vxlan", "native"), ("native", "vxlan")] {
        let report = lab(&[
            "--ip-family",
            "dual",
            "--from",
            from,
            "--to",
            to,
            "--nodes",
            "3",
        ]);
        let f = &report["families"];
        println!(
            "dual {from} -> {to}: sent {}/{}, lost {}/{} (v4/v6)",
            f["ipv4"]["sent"], f["ipv6"]["sent"], f["ipv4"]["lost"], f["ipv6"]["lost"]
        );
        assert_seamless_in_each_family(&report);
    }

    let naive = lab(&[
        "--ip-family",
        "dual",
        "--from",
        "vxlan",
        "--naive",
        "--nodes",
        "3",
    ]);
    let per = families_sum_to_totals(&naive, &["ipv4", "ipv6"]);
    assert!(
        per.iter().all(|(_, c)| c["sent"].as_u64() > Some(0)),
        "{naive:#}"
    );
    assert!(
        per.iter().any(|(_, c)| c["lost"].as_u64() > Some(0)),
        "the naive rollout lost nothing in either family: {naive:#}"
    );
    for phase in naive["phases"].as_array().expect("phases") {
        families_sum_to_totals(phase, &["ipv4", "ipv6"]);
    }

    let ipv4 = lab(&["--ip-family", "ipv4", "--from", "vxlan", "--nodes", "2"]);
    assert_seamless(&ipv4);
    assert_eq!(ipv4["ipFamily"], "ipv4", "{ipv4:#}");
    assert!(ipv4["families"].get("ipv6").is_none(), "{ipv4:#}");
    families_sum_to_totals(&ipv4, &["ipv4"]);
}
