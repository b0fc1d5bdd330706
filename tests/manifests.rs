//! The shipped manifests (manifests/), checked against the binary and a real
//! kube-apiserver (see tests/kube_env):
//! - manifests/base/crd.yaml is exactly what `podroute crd` prints;
//! - both variants (restricted, privileged) render from base + overlay, and
//!   every object is accepted by the API server (server-side dry run; the
//!   Namespace and the CRD are created for real first, so namespaced objects
//!   and the ClusterRouting can be validated), object by object and through
//!   the literal `kubectl apply --dry-run=server -k manifests/<variant>`;
//! - the agent's RBAC, bound to a node-bound service-account token, allows
//!   what the agent does and refuses the rest;
//! - the shipped ValidatingAdmissionPolicy keeps that agent to its own Node.
//!
//! Rendering: the overlays are plain kustomizations (`resources: [../base]`
//! plus strategic-merge patch files). The test renders them itself (a small
//! strategic merge: maps merge, lists of named maps merge by name, other
//! lists replace) and checks that `kubectl kustomize` renders the same
//! objects, with the kubectl that testenv/build.sh builds (else `kustomize` or
//! `kubectl` from PATH, if any).
//!
//! Without built kube binaries (kubectl included) the API-server tests and the
//! kustomize comparison print "skipping: ..." and pass, unless
//! PODROUTE_REQUIRE_KUBE_TESTS=1 (CI), where they fail.

mod kube_env;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSpec, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{pinned_kind, Scope};
use kube::Client;
use kube_env::{status_code, unique_name};
use podroute::api::{PodrouteNode, PodrouteNodeSpec};
use serde_json::{json, Value};

const AGENT_NS: &str = "podroute-system";
const AGENT_SA: &str = "podroute-agent";

/// Held by the kubectl test and by the tests that create shipped objects for
/// real (besides the Namespace and the CRD, which the kubectl test creates
/// first): `kubectl apply` reads an object, then creates it (dry run), which
/// fails with AlreadyExists when another test creates it in between.
static SHIPPED_OBJECTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

fn read_yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_yaml_docs(&text, &path.display().to_string())
}

/// The non-empty documents of a YAML stream; `origin` names it in a panic.
fn parse_yaml_docs(text: &str, origin: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .unwrap_or_else(|e| panic!("{origin}: bad YAML: {e}"));
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

fn kustomization(dir: &Path) -> Value {
    read_yaml_docs(&dir.join("kustomization.yaml"))
        .pop()
        .unwrap_or_else(|| panic!("{}: empty kustomization", dir.display()))
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    Value::Object(m) => m["path"].as_str().expect("patch path").to_string(),
                    other => panic!("unexpected entry {other}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Strategic merge as far as these manifests need it.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                match b.get_mut(k) {
                    Some(bv) => merge(bv, pv),
                    None => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p))
            if p.iter()
                .all(|x| x.get("name").is_some_and(Value::is_string)) =>
        {
            // New items go first, in the patch's order, as kustomize puts them.
            let mut new = Vec::new();
            for pv in p {
                match b.iter_mut().find(|bv| bv.get("name") == pv.get("name")) {
                    Some(bv) => merge(bv, pv),
                    None => new.push(pv.clone()),
                }
            }
            b.splice(0..0, new);
        }
        (b, p) => *b = p.clone(),
    }
}

fn key(v: &Value) -> (String, String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

/// Renders a kustomization directory: resources (files or directories) and
/// strategic-merge patches.
fn render(dir: &Path) -> Vec<Value> {
    let k = kustomization(dir);
    let mut objects = Vec::new();
    for r in strings(&k, "resources") {
        let p = dir.join(&r);
        if p.is_dir() {
            objects.extend(render(&p));
        } else {
            objects.extend(read_yaml_docs(&p));
        }
    }
    for p in strings(&k, "patches")
        .into_iter()
        .chain(strings(&k, "patchesStrategicMerge"))
    {
        for patch in read_yaml_docs(&dir.join(&p)) {
            let target = objects
                .iter_mut()
                .find(|o| key(o) == key(&patch))
                .unwrap_or_else(|| panic!("{p}: no object {:?} to patch", key(&patch)));
            merge(target, &patch);
        }
    }
    objects
}

/// What kustomize renders from `dir`, and the command that rendered it: the
/// testenv kubectl when given, else `kustomize build` or `kubectl kustomize`
/// from PATH; `None` when there is none of them.
fn kustomize_render(testenv_kubectl: Option<&Path>, dir: &Path) -> Option<(String, Vec<Value>)> {
    let path_tools = [("kustomize", "build"), ("kubectl", "kustomize")];
    let candidates = testenv_kubectl
        .map(|k| (k.to_path_buf(), "kustomize"))
        .into_iter()
        .chain(path_tools.map(|(bin, sub)| (PathBuf::from(bin), sub)));
    for (bin, sub) in candidates {
        let command = format!("{} {sub} {}", bin.display(), dir.display());
        let out = match Command::new(&bin).arg(sub).arg(dir).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{command}: {e}"),
        };
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objects = parse_yaml_docs(&String::from_utf8_lossy(&out.stdout), &command);
        return Some((command, objects));
    }
    None
}

/// Numbers as f64: `podroute crd` writes `maximum: 65535.0`, kustomize `65535`.
fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(key);
    v
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The entry of the list `v[list]` whose `field` is `value`.
fn entry<'a>(v: &'a Value, list: &str, field: &str, value: &str) -> Option<&'a Value> {
    v[list].as_array()?.iter().find(|e| e[field] == value)
}

// ---------------------------------------------------------------------------
// Without an API server

#[test]
fn checked_in_crd_is_what_podroute_crd_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .arg("crd")
        .output()
        .expect("run podroute crd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let checked_in = std::fs::read_to_string(manifests().join("base/crd.yaml")).unwrap();
    assert!(
        generated == checked_in,
        "manifests/base/crd.yaml drifted from `podroute crd`: regenerate it with\n  cargo run -q -- crd > manifests/base/crd.yaml"
    );
}

#[test]
fn variants_render_as_kustomize_does_and_keep_the_agent_contract() {
    let restricted = render(&manifests().join("restricted"));
    let privileged = render(&manifests().join("privileged"));
    // The pinned kubectl; required with PODROUTE_REQUIRE_KUBE_TESTS=1.
    let kubectl = kube_env::kubectl_or_skip();
    for (name, objects) in [("restricted", &restricted), ("privileged", &privileged)] {
        if let Some((command, k)) = kustomize_render(kubectl.as_deref(), &manifests().join(name)) {
            eprintln!("{name}: comparing with `{command}`");
            let (k, ours) = (sorted(k), sorted(objects.clone()));
            assert_eq!(
                k.iter().map(key).collect::<Vec<_>>(),
                ours.iter().map(key).collect::<Vec<_>>(),
                "{name}: kustomize renders other objects than this test"
            );
            for (a, b) in k.iter().zip(&ours) {
                assert!(
                    numbers_as_floats(a) == numbers_as_floats(b),
                    "{name}: {:?}: kustomize renders\n{}\nthis test\n{}",
                    key(a),
                    serde_json::to_string(a).unwrap(),
                    serde_json::to_string(b).unwrap()
                );
            }
        } else {
            eprintln!("no kustomize/kubectl on PATH: checked the test's own rendering only");
        }
    }
    assert_eq!(restricted.len(), privileged.len());

    let agent = |objects: &[Value]| {
        find(objects, "DaemonSet", "podroute-agent")["spec"]["template"]["spec"].clone()
    };
    let r = agent(&restricted);
    let c = &r["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], false);
    assert_eq!(c["securityContext"]["runAsUser"], 0);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN"])
    );
    assert_eq!(
        c["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(r["hostNetwork"], true);
    assert_eq!(r["tolerations"], json!([{"operator": "Exists"}]));
    let node_name =
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}});
    assert_eq!(entry(c, "env", "name", "NODE_NAME"), Some(&node_name));
    // The node's net sysctls, where the agent is told they are (--proc-sys).
    assert_eq!(
        entry(c, "env", "name", "PODROUTE_PROC_SYS"),
        Some(&json!({"name": "PODROUTE_PROC_SYS", "value": "/host/proc/sys"}))
    );
    let sysctl_mount = entry(c, "volumeMounts", "mountPath", "/host/proc/sys/net")
        .expect("restricted: a volumeMount at /host/proc/sys/net");
    let sysctl_volume = sysctl_mount["name"]
        .as_str()
        .and_then(|v| entry(&r, "volumes", "name", v))
        .expect("restricted: the volume of /host/proc/sys/net");
    assert_eq!(sysctl_volume["hostPath"]["path"], "/proc/sys/net");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], 9469);
    // The check responder: one port for the agent and `podroute check` in
    // the pod, declared so that a second agent on the node cannot be scheduled.
    assert_eq!(
        entry(c, "env", "name", "PODROUTE_CHECK_PORT"),
        Some(&json!({"name": "PODROUTE_CHECK_PORT", "value": "9471"}))
    );
    assert_eq!(
        entry(c, "ports", "name", "check"),
        Some(&json!({"name": "check", "containerPort": 9471, "protocol": "UDP"}))
    );
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/run/podroute"), "{mounts:?}");
    let p = agent(&privileged);
    let c = &p["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    assert_eq!(entry(c, "env", "name", "NODE_NAME"), Some(&node_name));
    // Privileged: /proc/sys is the node's and writable, where the agent looks by default.
    assert_eq!(entry(c, "env", "name", "PODROUTE_PROC_SYS"), None);

    let coordinator = find(&restricted, "Deployment", "podroute-coordinator");
    assert_eq!(coordinator["spec"]["replicas"], 2);
    let cc = &coordinator["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(cc["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(cc["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(cc["readinessProbe"]["httpGet"]["port"], 9470);
    let pdb = find(&restricted, "PodDisruptionBudget", "podroute-coordinator");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        find(&restricted, "ClusterRouting", "default")["spec"]["mode"],
        "vxlan"
    );
}

// ---------------------------------------------------------------------------
// Against the API server

async fn resource(client: &Client, obj: &Value) -> (ApiResource, bool) {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap());
    // A freshly created CRD reaches discovery after a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match pinned_kind(client, &gvk).await {
            Ok((ar, caps)) => return (ar, caps.scope == Scope::Namespaced),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for discovery of {gvk:?}: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("discovery of {gvk:?}: {e}"),
        }
    }
}

fn api_for(client: &Client, ar: &ApiResource, namespaced: bool, obj: &Value) -> Api<DynamicObject> {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if namespaced => Api::namespaced_with(client.clone(), ns, ar),
        _ => {
            assert!(
                !namespaced,
                "namespaced object without namespace: {:?}",
                key(obj)
            );
            Api::all_with(client.clone(), ar)
        }
    }
}

/// Creates `obj` for real; an existing one (another test got there first) is fine.
async fn create_for_real(client: &Client, obj: &Value) {
    let (ar, namespaced) = resource(client, obj).await;
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    match api_for(client, &ar, namespaced, obj)
        .create(&PostParams::default(), &dynamic)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create {:?}: {e}", key(obj)),
    }
}

/// The Namespace and the CRDs, for real, so that the rest can be validated.
async fn create_prerequisites(client: &Client, objects: &[Value]) {
    create_for_real(client, find(objects, "Namespace", AGENT_NS)).await;
    for name in ["clusterroutings.podroute.io", "podroutenodes.podroute.io"] {
        create_for_real(client, find(objects, "CustomResourceDefinition", name)).await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = crds.get(name).await.unwrap();
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} never became Established"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn every_object_of_both_variants_passes_server_side_dry_run() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    for variant in ["restricted", "privileged"] {
        let objects = render(&manifests().join(variant));
        create_prerequisites(&admin, &objects).await;
        for obj in &objects {
            let (ar, namespaced) = resource(&admin, obj).await;
            // What `kubectl apply --dry-run=server` does: server-side apply,
            // dry run. It validates whether or not the object exists (the
            // other test creates some of them for real).
            let pp = PatchParams::apply("podroute-manifests-test")
                .dry_run()
                .force();
            let name = obj["metadata"]["name"].as_str().unwrap();
            match api_for(&admin, &ar, namespaced, obj)
                .patch(name, &pp, &Patch::Apply(obj))
                .await
            {
                Ok(_) => eprintln!("{variant}: {:?} accepted (dry run)", key(obj)),
                Err(e) => panic!("{variant}: {:?} refused by the API server: {e}", key(obj)),
            }
        }
    }
}

/// The API server takes the shipped CRDs without a warning (kubectl prints
/// each: `Warning: unrecognized format "uint16"` was one). Dry-run create,
/// under a group of its own so that the real CRD may exist meanwhile.
#[tokio::test]
async fn the_crd_is_created_without_a_warning() {
    let Some(cp) = kube_env::shared() else { return };
    let admin = cp.client().await;
    let crds = read_yaml_docs(&manifests().join("base/crd.yaml"));
    assert_eq!(crds.len(), 2, "ClusterRouting and PodrouteNode");
    for mut crd in crds {
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_string();
        let group = format!("{}.podroute.io", unique_name("warnings"));
        crd["metadata"]["name"] = json!(format!("{plural}.{group}"));
        crd["spec"]["group"] = json!(group);
        let request = http::Request::post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?dryRun=All",
        )
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&crd).unwrap().into())
        .unwrap();
        let response = admin
            .send(request)
            .await
            .expect("dry-run create of the CRD");
        assert!(
            response.status().is_success(),
            "{plural}: {}",
            response.status()
        );
        let warnings: Vec<&str> = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|w| w.to_str().unwrap_or("(not text)"))
            .collect();
        assert!(
            warnings.is_empty(),
            "the API server warns about {plural}: {warnings:#?}"
        );
    }
}

/// The done-criterion as written: `kubectl apply --dry-run=server -k
/// manifests/<variant>`, with the kubectl of the API server's release.
#[tokio::test]
async fn kubectl_apply_dry_run_server_accepts_both_variants() {
    let Some(cp) = kube_env::shared() else { return };
    let Some(kubectl) = kube_env::kubectl_or_skip() else {
        return;
    };
    let _shipped_objects = SHIPPED_OBJECTS.lock().await;
    let admin = cp.client().await;
    for variant in ["restricted", "privileged"] {
        let objects = render(&manifests().join(variant));
        create_prerequisites(&admin, &objects).await;
        let dir = format!("manifests/{variant}");
        let out = Command::new(&kubectl)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--kubeconfig")
            .arg(cp.admin_kubeconfig())
            .args(["apply", "--dry-run=server", "-k", &dir])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", kubectl.display()));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        eprintln!("$ kubectl apply --dry-run=server -k {dir}\n{stdout}{stderr}");
        assert!(
            out.status.success(),
            "{dir}: kubectl apply failed: {stderr}"
        );
        // One "<kind>/<name> <verb> (server dry run)" line per object.
        let applied = stdout.lines().filter(|l| l.ends_with("(server dry run)"));
        assert_eq!(applied.count(), objects.len(), "{dir}: {stdout}");
    }
}

fn test_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some("10.244.70.0/24".into()),
            pod_cidrs: Some(vec!["10.244.70.0/24".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The shipped RBAC and admission policy, created for real, seen from a
/// podroute-agent token bound to one Node: everything the agent does works
/// on its own Node, writes to another Node are refused by the policy, and
/// everything else is refused by RBAC.
#[tokio::test]
async fn shipped_rbac_and_policy_confine_the_agent_to_its_own_node() {
    let Some(cp) = kube_env::shared() else { return };
    let _shipped_objects = SHIPPED_OBJECTS.lock().await;
    let admin = cp.client().await;
    let objects = render(&manifests().join("restricted"));
    create_prerequisites(&admin, &objects).await;
    for (kind, name) in [
        ("ServiceAccount", AGENT_SA),
        ("ClusterRole", "podroute-agent"),
        ("ClusterRoleBinding", "podroute-agent"),
        ("Role", "podroute-agent-events"),
        ("RoleBinding", "podroute-agent-events"),
        ("ValidatingAdmissionPolicy", "podroute-agent-own-node"),
        (
            "ValidatingAdmissionPolicyBinding",
            "podroute-agent-own-node",
        ),
        ("ValidatingAdmissionPolicy", "podroute-agent-own-record"),
        (
            "ValidatingAdmissionPolicyBinding",
            "podroute-agent-own-record",
        ),
        ("ClusterRouting", "default"),
    ] {
        create_for_real(&admin, find(&objects, kind, name)).await;
    }
    let admin_nodes: Api<Node> = Api::all(admin.clone());
    let own = unique_name("node-manifests-own");
    let other = unique_name("node-manifests-other");
    for n in [&own, &other] {
        admin_nodes
            .create(&PostParams::default(), &test_node(n))
            .await
            .expect("create node");
    }
    let agent = cp.service_account(AGENT_NS, AGENT_SA, Some(&own)).await;
    assert_eq!(
        agent.username,
        format!("system:serviceaccount:{AGENT_NS}:{AGENT_SA}")
    );
    let client = agent.client().await;
    let nodes: Api<Node> = Api::all(client.clone());

    // Bindings reach the authorizer, policies admission, through informers.
    let annotate =
        |v: &str| Patch::Merge(json!({"metadata": {"annotations": {"podroute.io/applied": v}}}));
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let result = nodes
            .patch(&other, &PatchParams::default(), &annotate("0/other"))
            .await;
        match result {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("own Node") => break s,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            r => panic!("the shipped policy never refused a write to another Node: {r:?}"),
        }
    };
    eprintln!("another node's metadata: refused: {}", refusal.message);

    // What the agent does: read nodes, watch them, patch its own.
    nodes.get(&own).await.expect("get own node");
    nodes.get(&other).await.expect("get another node (peers)");
    nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    nodes
        .patch(&own, &PatchParams::default(), &annotate("1/vxlan"))
        .await
        .expect("patch own node");
    let status = Patch::Strategic(json!({"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated",
        "message": "podroute: vxlan, plan generation 1",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
    }]}}));
    nodes
        .patch_status(&own, &PatchParams::default(), &status)
        .await
        .expect("patch own node status");
    let err = nodes
        .patch_status(&other, &PatchParams::default(), &status)
        .await;
    assert_eq!(status_code(&err), Some(403), "{err:?}");

    let routing_ar = resource(&admin, find(&objects, "ClusterRouting", "default"))
        .await
        .0;
    let routings: Api<DynamicObject> = Api::all_with(client.clone(), &routing_ar);
    routings.get("default").await.expect("get clusterrouting");
    routings
        .list(&ListParams::default())
        .await
        .expect("list clusterroutings");

    // And nothing else.
    let err = routings
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "ipip"}})),
        )
        .await;
    assert_eq!(
        status_code(&err),
        Some(403),
        "patch clusterrouting: {err:?}"
    );
    let err = routings
        .patch_status(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "x"}})),
        )
        .await;
    assert_eq!(
        status_code(&err),
        Some(403),
        "patch clusterrouting status: {err:?}"
    );
    let err = nodes.delete(&own, &DeleteParams::default()).await;
    assert_eq!(status_code(&err), Some(403), "delete node: {err:?}");
    let err = nodes
        .create(&PostParams::default(), &test_node(&unique_name("node-x")))
        .await;
    assert_eq!(status_code(&err), Some(403), "create node: {err:?}");
    let err = Api::<Secret>::namespaced(client.clone(), AGENT_NS)
        .list(&ListParams::default())
        .await;
    assert_eq!(status_code(&err), Some(403), "list secrets: {err:?}");

    // A Warning Event on its Node (a contested condition), in `default` only.
    let reporter = podroute::store::events::Reporter {
        component: "podroute-agent".into(),
        instance: own.clone(),
    };
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent =
            podroute::store::events::warn_node(&events, &reporter, &own, "Test", "rbac").await;
        match sent {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("the agent cannot record an Event on its Node: {e}"),
        }
    }
    let elsewhere: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), "kube-system");
    let err = podroute::store::events::warn_node(&elsewhere, &reporter, &own, "Test", "rbac").await;
    assert!(err.is_err(), "an Event outside default was allowed");
    let err = events.list(&ListParams::default()).await;
    assert_eq!(status_code(&err), Some(403), "list events: {err:?}");

    // Its own node's PodrouteNode record: written; another node's: refused
    // by the policy; all of them read and watched.
    let records: Api<PodrouteNode> = Api::all(client.clone());
    let record = |name: &str| {
        PodrouteNode::new(
            name,
            PodrouteNodeSpec {
                node_ips: vec!["10.250.0.70".into()],
                pod_cidrs: vec!["10.244.70.0/24".into()],
            },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        match records
            .create(&PostParams::default(), &record(&other))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("own node") => break s,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            r => panic!("the shipped policy never refused another node's record: {r:?}"),
        }
    };
    eprintln!("another node's record: refused: {}", refusal.message);
    let mut mine = records
        .create(&PostParams::default(), &record(&own))
        .await
        .expect("create own record");
    mine.spec.pod_cidrs = vec!["10.244.71.0/24".into()];
    records
        .replace(&own, &PostParams::default(), &mine)
        .await
        .expect("update own record");
    records
        .list(&ListParams::default())
        .await
        .expect("list records");
    let err = records.delete(&own, &DeleteParams::default()).await;
    assert_eq!(status_code(&err), Some(403), "delete own record: {err:?}");
    Api::<PodrouteNode>::all(admin.clone())
        .delete(&own, &DeleteParams::default())
        .await
        .expect("admin deletes the record");

    // The same service account with a token bound to no Node writes no Node.
    let unbound = cp.service_account(AGENT_NS, AGENT_SA, None).await;
    let err = Api::<Node>::all(unbound.client().await)
        .patch(&own, &PatchParams::default(), &annotate("1/unbound"))
        .await;
    assert_eq!(status_code(&err), Some(403), "{err:?}");

    for n in [own, other] {
        admin_nodes
            .delete(&n, &DeleteParams::default())
            .await
            .expect("delete node");
    }
}
