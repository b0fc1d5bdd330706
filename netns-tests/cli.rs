//! The `podroute` binary on a namespace cluster: apply, plan, status and
//! cleanup as a sysadmin runs them, exit codes included.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{have_root, our_routes, write_dual_cluster, Lab};

fn podroute(lab: &Lab, node: &str, args: &[&str]) -> (i32, String, String) {
    let netns = &lab.node(node).netns;
    let out = Command::new("ip")
        .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_podroute")])
        .args(args)
        .output()
        .expect("run podroute");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn write_cluster(lab: &Lab, dir: &Path, mode: &str, tweak: &str) -> String {
    let mut yaml = format!("mode: {mode}\nnodes:\n");
    for n in lab.topo.nodes() {
        yaml.push_str(&format!(
            "  - name: {}\n    ip: {}\n    podCIDR: {}\n",
            n.name, n.ip, n.pod_cidr
        ));
    }
    let yaml = yaml.replace("podCIDR: 10.244.2.0/24", tweak);
    let path = dir.join(format!("cluster-{mode}.yaml"));
    std::fs::write(&path, yaml).expect("write cluster file");
    path.display().to_string()
}

/// plan says what carries each family, and that ipip carries IPv6 over
/// vxlan-v6.calico; apply in vxlan then programs both families.
#[test]
fn plan_and_apply_show_each_family() {
    if !have_root() {
        return;
    }
    let lab = Lab::dual(2);
    let dir = lab_dir(&lab);
    let mtu_file = dir.join("mtu").display().to_string();
    for (mode, v4_dev) in [
        ("ipip", "tunl0"),
        ("vxlan", "vxlan.calico"),
        ("native", "eth0"),
    ] {
        let cluster = write_dual_cluster(&lab, &dir.join(format!("dual-{mode}.yaml")), mode);
        let args = [
            "plan",
            "--cluster",
            &cluster,
            "--node",
            "node-1",
            "--mtu-file",
            &mtu_file,
        ];
        let (code, out, err) = podroute(&lab, "node-1", &[&args[..], &["-o", "json"]].concat());
        assert_eq!(code, 0, "{mode}: {err}");
        let report = json(&out);
        let v6_dev = if mode == "native" {
            "eth0"
        } else {
            "vxlan-v6.calico"
        };
        assert_eq!(
            report["families"]["ipv4"]["devices"],
            serde_json::json!([v4_dev]),
            "{out}"
        );
        assert_eq!(
            report["families"]["ipv6"]["devices"],
            serde_json::json!([v6_dev]),
            "{out}"
        );
        assert_eq!(report["families"]["ipv6"]["routes"], 1, "{out}");
        let ipip_note = report["notes"].as_array().expect("notes").iter().any(|n| {
            n.as_str()
                .is_some_and(|n| n.contains("carries IPv6 over vxlan-v6.calico"))
        });
        assert_eq!(ipip_note, mode == "ipip", "{mode}: {out}");
        let (_, text, _) = podroute(&lab, "node-1", &args);
        assert!(
            text.contains(&format!("ipv6: 1 peer routes via {v6_dev}")),
            "{text}"
        );
        // status with the cluster file says it too.
        let status = [
            "status",
            "--cluster",
            &cluster,
            "--node",
            "node-1",
            "--mtu-file",
            &mtu_file,
        ];
        let (code, out, err) = podroute(&lab, "node-1", &[&status[..], &["-o", "json"]].concat());
        assert_eq!(code, 0, "{mode}: {err}");
        let notes = json(&out)["notes"].to_string();
        assert_eq!(
            notes.contains("carries IPv6 over vxlan-v6.calico"),
            mode == "ipip",
            "{out}"
        );
    }
    let cluster = write_dual_cluster(&lab, &dir.join("dual-vxlan.yaml"), "vxlan");
    let args = [
        "apply",
        "--cluster",
        &cluster,
        "--node",
        "node-1",
        "--mtu-file",
        &mtu_file,
    ];
    let (code, _, err) = podroute(&lab, "node-1", &args);
    assert_eq!(code, 0, "{err}");
    let routes6 = lab.ip("node-1", &["-6", "route", "show", "proto", "91"]);
    assert!(routes6.contains("dev vxlan-v6.calico"), "{routes6}");
    assert_eq!(
        std::fs::read_to_string(dir.join("mtu"))
            .expect("mtu")
            .trim(),
        "1430"
    );
}

#[test]
fn apply_plan_status_cleanup_from_the_command_line() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let dir = lab_dir(&lab);
    let mtu_file = dir.join("mtu").display().to_string();
    let cluster = write_cluster(&lab, &dir, "vxlan", "podCIDR: 10.244.2.0/24");
    let common = [
        "--cluster",
        &cluster,
        "--node",
        "node-1",
        "--mtu-file",
        &mtu_file,
        "-o",
        "json",
    ];

    // Bad input: exit 2, names the field, changes nothing.
    let bad = write_cluster(&lab, &dir, "native", "podCIDR: 10.244.2.7/24");
    let (code, _, err) = podroute(
        &lab,
        "node-1",
        &["apply", "--cluster", &bad, "--mtu-file", &mtu_file],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nodes[1].podCIDRs[0]"), "{err}");
    let (code, _, err) = podroute(
        &lab,
        "node-1",
        &[&["apply"], &common[..], &["--mtu", "9000"]].concat(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mtu"), "{err}");
    assert!(
        our_routes(&lab, "node-1").is_empty(),
        "bad input changed the kernel"
    );
    assert!(!lab.ip("node-1", &["link", "show"]).contains("vxlan.calico"));

    let (code, out, err) = podroute(&lab, "node-1", &[&["plan"], &common[..]].concat());
    assert_eq!(code, 0, "{err}");
    let ops = json(&out)["ops"].as_array().expect("ops").len();
    assert!(ops >= 7, "{out}");
    assert!(
        our_routes(&lab, "node-1").is_empty(),
        "plan changed the kernel"
    );
    let (code, out, err) = podroute(
        &lab,
        "node-1",
        &[&["apply", "--dry-run"], &common[..]].concat(),
    );
    assert_eq!(
        (code, json(&out)["changes"].as_u64()),
        (0, Some(0)),
        "{err}"
    );
    assert!(
        our_routes(&lab, "node-1").is_empty(),
        "dry run changed the kernel"
    );

    let (code, out, err) = podroute(&lab, "node-1", &[&["apply"], &common[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["changes"].as_u64(), Some(ops as u64), "{out}");
    assert_eq!(our_routes(&lab, "node-1").len(), 2);
    assert!(
        err.contains("route replace"),
        "one log line per change: {err}"
    );

    let (code, out, _) = podroute(&lab, "node-1", &[&["apply"], &common[..]].concat());
    assert_eq!(
        (code, json(&out)["changes"].as_u64()),
        (0, Some(0)),
        "{out}"
    );

    lab.ip("node-1", &["route", "del", "10.244.3.0/24"]);
    let (code, out, _) = podroute(&lab, "node-1", &[&["status"], &common[..]].concat());
    assert_eq!(code, 0);
    let status = json(&out);
    assert_eq!(status["mode"], "vxlan");
    // node-2's route and node-1's own pod CIDR, unreachable.
    assert_eq!(status["ownedRoutes"], 2);
    assert_eq!(status["drift"].as_array().map(Vec::len), Some(1), "{out}");

    // An underlay that shrank under a tunnel that did not: status says so.
    let (_, out, _) = podroute(&lab, "node-1", &["status", "--mtu", "1400", "-o", "json"]);
    let warnings = json(&out)["warnings"].to_string();
    assert!(
        warnings.contains("vxlan.calico has MTU 1450, over the 1350"),
        "{warnings}"
    );

    // Someone makes the uplink's reverse-path filter strict behind our back.
    let strict = "rp_filter is strict (1) on eth0";
    assert!(!warnings.contains(strict), "loose after apply: {warnings}");
    lab.topo
        .node_netns("node-1")
        .and_then(|ns| ns.sysctl("net.ipv4.conf.eth0.rp_filter", "1"))
        .expect("strict rp_filter");
    let (code, out, err) = podroute(
        &lab,
        "node-1",
        &["status", "--rp-filter", "keep", "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let status = json(&out);
    assert_eq!(
        status["sysctls"]["net/ipv4/conf/eth0/rp_filter"], "1",
        "{out}"
    );
    assert!(status["warnings"].to_string().contains(strict), "{out}");
    let vxlan = status["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "vxlan.calico"))
        .unwrap_or_else(|| panic!("no vxlan.calico in {out}"));
    assert_eq!(vxlan["mtu"], 1450, "{out}");
    let tunnel_address = format!("{}/32", lab.node("node-1").pod_cidr.ip());
    assert_eq!(
        vxlan["addresses"],
        serde_json::json!([tunnel_address]),
        "{out}"
    );

    let (code, out, _) = podroute(
        &lab,
        "node-1",
        &[
            "cleanup",
            "--dry-run",
            "--mtu-file",
            &mtu_file,
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0);
    assert!(!json(&out)["steps"].as_array().expect("steps").is_empty());
    assert_eq!(
        our_routes(&lab, "node-1").len(),
        1,
        "cleanup --dry-run changed the kernel"
    );
    let (code, _, err) = podroute(&lab, "node-1", &["cleanup", "--mtu-file", &mtu_file]);
    assert_eq!(code, 0, "{err}");
    assert!(our_routes(&lab, "node-1").is_empty());
    assert!(!lab.ip("node-1", &["link", "show"]).contains("vxlan.calico"));
    assert!(!Path::new(&mtu_file).exists());
}

/// A runtime failure that is not bad input: a foreign device holds the name
/// of ours. Exit 1, the device named, and nothing written.
#[test]
fn foreign_device_in_our_place_is_a_runtime_failure() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(2);
    let dir = lab_dir(&lab);
    let mtu_file = dir.join("mtu").display().to_string();
    let cluster = write_cluster(&lab, &dir, "vxlan", "podCIDR: 10.244.2.0/24");
    lab.ip("node-1", &["link", "add", "vxlan.calico", "type", "bridge"]);

    let (code, out, err) = podroute(
        &lab,
        "node-1",
        &[
            "apply",
            "--cluster",
            &cluster,
            "--node",
            "node-1",
            "--mtu-file",
            &mtu_file,
        ],
    );
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("device vxlan.calico exists but is not vxlan"),
        "{err}"
    );
    // The check runs on the observed state, before the first write.
    assert!(our_routes(&lab, "node-1").is_empty(), "routes written");
    assert!(!Path::new(&mtu_file).exists(), "pod MTU file written");
    let link = lab.ip("node-1", &["-d", "link", "show", "vxlan.calico"]);
    assert!(
        link.contains("bridge"),
        "the foreign device changed:\n{link}"
    );
    assert!(!link.contains("vxlan id"), "{link}");
}

/// The default output, as a sysadmin reads it: each command's header.
#[test]
fn table_output_of_plan_apply_status_cleanup() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(2);
    let dir = lab_dir(&lab);
    let mtu_file = dir.join("mtu").display().to_string();
    let cluster = write_cluster(&lab, &dir, "vxlan", "podCIDR: 10.244.2.0/24");
    let target = [
        "--cluster",
        &cluster,
        "--node",
        "node-1",
        "--mtu-file",
        &mtu_file,
    ];
    let run = |args: &[&str]| {
        let (code, out, err) = podroute(&lab, "node-1", args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            serde_json::from_str::<Value>(&out).is_err(),
            "{args:?}: JSON without -o json"
        );
        out
    };
    let steps_header = ["STAGE", "OP", "WHY"];

    let out = run(&[&["plan"], &target[..]].concat());
    assert!(out.contains("ops to reach mode vxlan"), "{out}");
    assert_header(&out, &steps_header);
    assert!(
        our_routes(&lab, "node-1").is_empty(),
        "plan changed the kernel"
    );

    let out = run(&[&["apply"], &target[..]].concat());
    assert!(
        out.starts_with("node node-1: mode vxlan (generation 1), pod MTU 1450"),
        "{out}"
    );
    assert_header(&out, &steps_header);
    assert!(out.contains("changed"), "{out}");
    let out = run(&[&["apply"], &target[..]].concat());
    assert!(out.contains("already converged"), "{out}");

    let out = run(&["status", "--mtu-file", &mtu_file]);
    assert!(out.starts_with("mode in the kernel: vxlan"), "{out}");
    assert_header(
        &out,
        &["DEVICE", "KIND", "STATE", "MTU", "ADDRESSES", "DETAIL"],
    );
    // One peer and the node's own pod CIDR, unreachable.
    assert!(out.contains("routes: 2 owned"), "{out}");

    let out = run(&["cleanup", "--mtu-file", &mtu_file]);
    assert_header(&out, &steps_header);
    assert!(out.contains("removed"), "{out}");
    assert!(our_routes(&lab, "node-1").is_empty());
    let out = run(&["cleanup", "--mtu-file", &mtu_file]);
    assert!(out.contains("nothing of podroute's on this host"), "{out}");
}

/// The benchmark runs end to end and reports every phase (no timing checked).
#[test]
fn bench_reports_every_phase() {
    if !have_root() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["bench", "--peers", "10", "--repeat", "1", "-o", "json"])
        .output()
        .expect("run podroute bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&stdout);
    assert_eq!(report["failures"], serde_json::json!([]), "{stdout}");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{stdout}");
    assert_eq!(results[0]["peers"], 10);
    let phases = results[0]["phases"].as_array().expect("phases");
    let phase = |tool: &str, name: &str| {
        phases
            .iter()
            .find(|p| p["tool"] == tool && p["phase"] == name)
            .unwrap_or_else(|| panic!("no {tool} {name} phase in {stdout}"))
    };
    for name in ["plan", "program", "observe", "resync", "delete"] {
        assert!(phase("podroute", name)["ms"].is_number(), "{stdout}");
    }
    for name in ["program", "delete"] {
        phase("ip-batch", name);
        assert!(
            phase("podroute", name)["ratioToIpBatch"].is_number(),
            "{stdout}"
        );
    }
    // Ten peers and the node's own pod CIDR, unreachable.
    assert_eq!(phase("podroute", "program")["routeWrites"], 11, "{stdout}");
    assert_eq!(phase("podroute", "resync")["writes"], 0, "{stdout}");
    assert!(results[0]["peakRssKib"].as_u64().is_some_and(|k| k > 0));
}

/// `bench --family ipv6|dual` in both modes: every phase reported, the
/// engine writes each family's routes (the bench itself fails when the
/// kernel does not hold them after either tool, or when a resync writes),
/// and ip -batch writes the same peers' routes, neighbours and FDB entries.
#[test]
fn bench_reports_ipv6_and_dual_families() {
    if !have_root() {
        return;
    }
    // (family, mode, engine route writes, ip -batch lines, VXLAN devices)
    let cases = [
        // Ten IPv6 peer routes and the node's own IPv6 pod CIDR, unreachable.
        ("ipv6", "native", 11, 10, 0),
        // Per peer a neighbour, an FDB entry and a route.
        ("ipv6", "vxlan", 11, 10 * 3, 1),
        ("dual", "native", 22, 20, 0),
        ("dual", "vxlan", 22, 2 * 10 * 3, 2),
    ];
    for (family, mode, engine_routes, ip_lines, devices) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
            .args(["bench", "--peers", "10", "--repeat", "1", "-o", "json"])
            .args(["--family", family, "--mode", mode])
            .output()
            .expect("run podroute bench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let context = format!(
            "{family} {mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{context}");
        let report = json(&stdout);
        assert_eq!(report["family"], family, "{context}");
        assert_eq!(report["mode"], mode, "{context}");
        assert_eq!(report["failures"], serde_json::json!([]), "{context}");
        let phases = report["results"][0]["phases"].as_array().expect("phases");
        let phase = |tool: &str, name: &str| {
            phases
                .iter()
                .find(|p| p["tool"] == tool && p["phase"] == name)
                .unwrap_or_else(|| panic!("no {tool} {name} phase in {context}"))
        };
        for name in ["plan", "program", "observe", "resync", "delete"] {
            assert!(phase("podroute", name)["ms"].is_number(), "{context}");
        }
        let program = phase("podroute", "program");
        assert_eq!(program["routeWrites"], engine_routes, "{context}");
        assert!(program["ratioToIpBatch"].is_number(), "{context}");
        assert_eq!(phase("podroute", "resync")["writes"], 0, "{context}");
        // Deleting a VXLAN device takes its routes along.
        let deleted = if devices == 0 {
            engine_routes
        } else {
            family_count(family)
        };
        assert_eq!(
            phase("podroute", "delete")["routeWrites"],
            deleted,
            "{context}"
        );
        let ip_routes = 10 * family_count(family);
        // A device is three writes to create (link, address, up), one to delete.
        for (name, device_writes) in [("program", 3), ("delete", 1)] {
            let ip = phase("ip-batch", name);
            assert_eq!(
                ip["writes"],
                ip_lines + devices * device_writes,
                "{context}"
            );
            assert_eq!(ip["routeWrites"], ip_routes, "{context}");
        }
    }
}

/// Address families `bench --family` programs.
fn family_count(family: &str) -> usize {
    if family == "dual" {
        2
    } else {
        1
    }
}

/// The lab's per-test directory (where the MTU file lives), created.
fn lab_dir(lab: &Lab) -> std::path::PathBuf {
    let mtu_file = lab.config("node-1").mtu_file;
    let dir = mtu_file.parent().expect("dir").to_path_buf();
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// Some line of `out` is exactly these column headers.
fn assert_header(out: &str, columns: &[&str]) {
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(columns.iter().copied())),
        "no {columns:?} header in:\n{out}"
    );
}
