//! The `podroute` binary on a namespace cluster: apply, plan, status and
//! cleanup as a sysadmin runs them, exit codes included.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{have_root, our_routes, Lab};

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

#[test]
fn apply_plan_status_cleanup_from_the_command_line() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(3);
    let dir = lab
        .config("node-1")
        .mtu_file
        .parent()
        .expect("dir")
        .to_path_buf();
    std::fs::create_dir_all(&dir).expect("dir");
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
    assert_eq!(status["ownedRoutes"], 1);
    assert_eq!(status["drift"].as_array().map(Vec::len), Some(1), "{out}");

    // An underlay that shrank under a tunnel that did not: status says so.
    let (_, out, _) = podroute(&lab, "node-1", &["status", "--mtu", "1400", "-o", "json"]);
    let warnings = json(&out)["warnings"].to_string();
    assert!(
        warnings.contains("vxlan.calico has MTU 1450, over the 1350"),
        "{warnings}"
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
