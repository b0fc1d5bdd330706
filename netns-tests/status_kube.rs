//! `podroute status --kubeconfig` on a node of a real cluster: the desired
//! state read from the API as the node's agent reads it, with the agent's
//! own service account (node-bound token, shipped RBAC). It shows no drift
//! on a converged node and the drift once someone deletes a route, the
//! plan's generation and phase, the node's annotation and condition, and a
//! peer left out with the field it was refused for; and it writes nothing,
//! not even the node's own missing record, which an agent would write.
//! `podroute plan --kubeconfig` previews the ops from the same desired state,
//! and writes nothing either.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use podroute::api::{Mode, Plan, PodrouteNode};
use serde_json::Value;

use crate::image_support::render;
use crate::kube_support::{
    apply_except_workloads, create_lab_nodes, keep_records, kube_node, kube_test, publish_plan,
    reported, start_agent, wait_for,
};
use crate::support::{have_root, our_routes, Lab};

/// `podroute <command> -o json` (status or plan) from the API, for `node`
/// as its agent reads it; it must succeed.
fn json_of(command: &str, lab: &Lab, kubeconfig: &std::path::Path, node: &str) -> Value {
    let out = run(command, lab, kubeconfig, node, "json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podroute {command}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{command} JSON: {e}\n{stderr}"))
}

fn run(
    command: &str,
    lab: &Lab,
    kubeconfig: &std::path::Path,
    node: &str,
    output: &str,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args([command, "-o", output, "--node", node])
        .args(["--netns", &lab.node(node).netns])
        // Where this lab's agents write the pod MTU (a node's default is
        // /run/podroute/mtu, for agent, status and plan alike).
        .arg("--mtu-file")
        .arg(lab.config(node).mtu_file)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("run podroute {command}: {e}"))
}

#[test]
fn status_reads_the_agents_desired_state_from_the_api_and_writes_nothing() {
    let Some((cp, rt, client)) = kube_test() else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    // The shipped CRDs, RBAC, admission policies and ClusterRouting (vxlan).
    apply_except_workloads(&cp, &render("restricted"), work.path());
    let lab = Lab::flat(3);
    rt.block_on(create_lab_nodes(&client, &lab));
    let admin = cp.admin_kubeconfig().to_path_buf();
    // No plan published yet: nothing to plan, which is not bad input.
    let out = run("plan", &lab, &admin, "node-1", "json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no plan published yet"), "{stderr}");
    rt.block_on(publish_plan(&client, &Plan::steady(Mode::Vxlan, 1)));
    let keeper = keep_records(&rt, &client);
    let mut agents: Vec<_> = lab
        .names()
        .iter()
        .map(|n| start_agent(&lab, n, &admin))
        .collect();
    for node in lab.names() {
        wait_for("vxlan routes", Duration::from_secs(20), || {
            our_routes(&lab, &node).len() == 2
        });
        wait_for("report", Duration::from_secs(20), || {
            rt.block_on(reported(&client, &node)).0.as_deref() == Some("1/vxlan")
        });
    }
    // What the agent pod of node-1 has: its service account, bound to node-1.
    let agent_sa =
        rt.block_on(cp.service_account("podroute-system", "podroute-agent", Some("node-1")));

    let s = json_of("status", &lab, &agent_sa.kubeconfig, "node-1");
    assert_eq!(s["drift"], serde_json::json!([]), "{s:#}");
    let c = &s["cluster"];
    assert_eq!(c["planGeneration"], 1, "{s:#}");
    assert_eq!(c["planMode"], "vxlan");
    assert_eq!(c["phase"], "Steady");
    assert_eq!(c["appliedAnnotation"], "1/vxlan");
    assert_eq!(c["networkUnavailable"]["status"], "False");
    assert_eq!(c["networkUnavailable"]["reason"], "RouteCreated");
    assert_eq!(c["peersRouted"], 2);
    assert_eq!(c["peersLeftOut"], serde_json::json!({}));

    // A peer the agents refuse: its pod CIDR overlaps node-2's. Its name
    // sorts before node-2's, but node-2 was there first and keeps its CIDR.
    let node2_cidr = lab.node("node-2").pod_cidr.to_string();
    // Creation times have whole seconds, and within one the name decides:
    // aaa-bad comes in a later second than node-2's record.
    std::thread::sleep(Duration::from_millis(1100));
    let bad = kube_node("aaa-bad", "10.250.0.99", &node2_cidr);
    rt.block_on(Api::<Node>::all(client.clone()).create(&PostParams::default(), &bad))
        .expect("create aaa-bad");
    let mut last = Value::Null;
    let left_out = (0..100).any(|_| {
        last = json_of("status", &lab, &agent_sa.kubeconfig, "node-1");
        let found = last["cluster"]["peersLeftOut"]["aaa-bad"].is_string();
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(left_out, "aaa-bad not shown as left out: {last:#}");
    let why = last["cluster"]["peersLeftOut"]["aaa-bad"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("podCIDR"), "the reason names the field: {why}");
    assert_eq!(
        last["cluster"]["peersRouted"], 2,
        "node-2 stays routed: {last:#}"
    );

    // Drift: node-1's agent stops, someone deletes its route to node-2.
    drop(agents.remove(0));
    lab.ip("node-1", &["route", "del", &node2_cidr]);
    let s = json_of("status", &lab, &agent_sa.kubeconfig, "node-1");
    let text = run("status", &lab, &agent_sa.kubeconfig, "node-1", "table");
    eprintln!("{}", String::from_utf8_lossy(&text.stdout));
    let drift = s["drift"].to_string();
    assert!(drift.contains(&node2_cidr), "drift names the route: {s:#}");

    // plan from the same desired state: the op that puts the route back,
    // the plan it comes from, the peer left out; and nothing written.
    let p = json_of("plan", &lab, &agent_sa.kubeconfig, "node-1");
    let ops = p["ops"].as_array().cloned().unwrap_or_default();
    let adds_route = ops
        .iter()
        .any(|op| op["op"] == "replace-route" && op["route"]["key"]["dst"] == node2_cidr.as_str());
    assert!(adds_route, "plan adds the route to node-2: {p:#}");
    assert_eq!(p["cluster"]["planGeneration"], 1, "{p:#}");
    assert!(p["peersLeftOut"]["aaa-bad"].is_string(), "{p:#}");
    let text = run("plan", &lab, &agent_sa.kubeconfig, "node-1", "table");
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(text.contains("plan: generation 1, vxlan"), "{text}");
    assert!(text.contains("left out aaa-bad"), "{text}");
    assert!(text.contains(&node2_cidr), "{text}");
    let routes = our_routes(&lab, "node-1");
    assert!(
        !routes.iter().any(|r| r.starts_with(&node2_cidr)),
        "plan wrote the route: {routes:?}"
    );

    // Nothing written: without the coordinator's keeper, node-1's record is
    // deleted; an agent's store would write it back, status must not.
    drop(keeper);
    let records: Api<PodrouteNode> = Api::all(client.clone());
    rt.block_on(records.delete("node-1", &DeleteParams::default()))
        .expect("delete node-1's record");
    let before = rt.block_on(reported(&client, "node-1"));
    let s = json_of("status", &lab, &agent_sa.kubeconfig, "node-1");
    assert!(s["drift"].is_array(), "{s:#}");
    std::thread::sleep(Duration::from_millis(500));
    let record = rt.block_on(records.get_opt("node-1")).expect("get record");
    assert!(record.is_none(), "status wrote node-1's record: {record:?}");
    assert_eq!(
        rt.block_on(reported(&client, "node-1")),
        before,
        "status changed the Node's report"
    );
}

#[test]
fn status_from_the_api_needs_the_node_name_and_says_so() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .env_remove("NODE_NAME")
        .output()
        .expect("run podroute status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--node"), "{stderr}");
    let both = std::process::Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args([
            "status",
            "--kubeconfig",
            "/x",
            "--cluster",
            "/y",
            "--node",
            "n",
        ])
        .output()
        .expect("run podroute status");
    assert_eq!(both.status.code(), Some(2), "--cluster with --kubeconfig");
}

#[test]
fn plan_needs_a_desired_state_and_from_the_api_the_node_name() {
    let plan = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_podroute"))
            .arg("plan")
            .args(args)
            .env_remove("NODE_NAME")
            .env_remove("PODROUTE_CLUSTER")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run podroute plan");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let (code, stderr) = plan(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--cluster"), "{stderr}");
    let (code, stderr) = plan(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--node"), "{stderr}");
    let (code, stderr) = plan(&["--kubeconfig", "/x", "--cluster", "/y", "--node", "n"]);
    assert_eq!(code, Some(2), "--cluster with --kubeconfig: {stderr}");
}

/// `kubectl exec` into an agent pod while the API server is away: status
/// still shows the kernel, and says why it shows nothing more.
#[test]
fn in_a_pod_without_the_api_status_shows_the_kernel_alone() {
    if !have_root() {
        return;
    }
    let ns = crate::support::scratch_node("prst");
    let home = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args(["status", "-o", "json", "--netns", ns.name()])
        // In-cluster config with no service account token: no API.
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", "1")
        .env("NODE_NAME", "node-1")
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .output()
        .expect("run podroute status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("could not be read"), "{stderr}");
    let s: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(s.get("cluster").is_none(), "{s:#}");
    assert!(s["drift"].is_null(), "{s:#}");
}
