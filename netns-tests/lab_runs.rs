//! `podroute lab` end to end: the seamless switch loses nothing, and the same
//! measurement run on a naive rollout does see loss (so it can see loss).

use std::process::Command;

use serde_json::Value;

use crate::support::have_root;

/// One lab at a time per host (the lab takes a lock and refuses a second).
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lab(args: &[&str]) -> Value {
    let _turn = ONE_LAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut command = Command::new(env!("CARGO_BIN_EXE_podroute"));
    command
        .args([
            "lab",
            "-o",
            "json",
            "--settle-ms",
            "500",
            "--step-ms",
            "200",
        ])
        .args(args);
    let out = crate::support::output_retrying(&mut command);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    assert_seamless(&lab(&[
        "--from",
        "native",
        "--to",
        "vxlan",
        "--rp-filter",
        "strict",
        "--subnets",
        "2",
    ]));

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
