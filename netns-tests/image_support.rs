//! Running the shipped image as Kubernetes would: the pod spec is read from
//! the manifests as `kubectl kustomize` renders them, and translated into a
//! `podman run` (securityContext, env, hostPath volumes, host network), so
//! that a manifest change is tested, not a copy of it.
//!
//! The image comes from `PODROUTE_IMAGE` (image/build.sh prints it). Without
//! it the image tests skip with a message, unless
//! `PODROUTE_REQUIRE_IMAGE_TESTS=1` (CI) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_yaml::Value;

use crate::kube_env;
use crate::support::status_field;

/// The image under test, or `None` (skip) when none was built.
pub fn image_or_skip() -> Option<String> {
    match std::env::var("PODROUTE_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ if std::env::var_os("PODROUTE_REQUIRE_IMAGE_TESTS").is_some() => {
            panic!(
                "PODROUTE_REQUIRE_IMAGE_TESTS is set but PODROUTE_IMAGE is not: run image/build.sh"
            )
        }
        _ => {
            eprintln!("skipping: PODROUTE_IMAGE is not set (build it with image/build.sh)");
            None
        }
    }
}

/// `image/podman`: podman with the runtime settings this machine needs.
pub fn podman() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("image/podman"))
}

fn podman_output(args: &[&str]) -> Output {
    podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
}

/// The objects `kubectl kustomize manifests/<variant>` renders.
pub fn render(variant: &str) -> Vec<Value> {
    let kubectl = kube_env::find_kubectl().unwrap_or_else(|e| panic!("kubectl: {e}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(variant);
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

/// Where the pod of a translated container lives: its network, what the
/// downward API would give it, and where its hostPath volumes are.
pub struct PodPlace<'a> {
    /// `ns:/run/netns/<name>` for a hostNetwork pod, or `host`.
    pub network: String,
    pub node_name: &'a str,
    pub pod_name: &'a str,
    /// The node's filesystem for hostPath volumes (each lab node has its own
    /// /run/podroute); /proc paths stay the host's, whose net sysctls are
    /// those of the namespace of the process that reads them.
    pub node_root: &'a Path,
}

/// `podman run` arguments for the first container of `pod_spec` (a
/// template's spec), image and container args last. Panics on a field it
/// does not translate, so that a new manifest field cannot be ignored here.
pub fn run_args(pod_spec: &Value, image: &str, place: &PodPlace) -> Vec<String> {
    let container = &pod_spec["containers"][0];
    let mut args: Vec<String> = vec!["--network".into(), place.network.clone()];
    args.push("--pull=never".into());
    args.extend(security_args(
        &pod_spec["securityContext"],
        &container["securityContext"],
    ));
    for env in container["env"].as_sequence().into_iter().flatten() {
        let name = env["name"].as_str().expect("env name");
        let value = match (&env["value"], &env["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(field)) if field == "spec.nodeName" => place.node_name.into(),
            (_, Value::String(field)) if field == "metadata.name" => place.pod_name.into(),
            other => panic!("env {name}: no translation for {other:?}"),
        };
        args.push("--env".into());
        args.push(format!("{name}={value}"));
    }
    for mount in container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let name = mount["name"].as_str().expect("volumeMount name");
        let volume = pod_spec["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volumeMount {name}: no such volume"));
        let host = host_path(volume, place.node_root);
        let target = mount["mountPath"].as_str().expect("mountPath");
        let mode = if mount["readOnly"] == true {
            "ro"
        } else {
            "rw"
        };
        args.push("--volume".into());
        args.push(format!("{}:{target}:{mode}", host.display()));
    }
    args.push(image.into());
    for arg in container["args"].as_sequence().into_iter().flatten() {
        args.push(arg.as_str().expect("args are strings").into());
    }
    args
}

fn host_path(volume: &Value, node_root: &Path) -> PathBuf {
    let path = volume["hostPath"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("volume {volume:?}: only hostPath is translated"));
    if path.starts_with("/proc/") {
        return PathBuf::from(path);
    }
    let on_node = node_root.join(path.trim_start_matches('/'));
    match volume["hostPath"]["type"].as_str() {
        Some("DirectoryOrCreate") => std::fs::create_dir_all(&on_node).expect("hostPath dir"),
        Some("Directory") => assert!(on_node.is_dir(), "hostPath {path}: not a directory"),
        other => panic!("hostPath {path}: type {other:?} is not translated"),
    }
    on_node
}

/// The securityContext, the container's over the pod's as Kubernetes merges
/// them, as podman flags.
fn security_args(pod: &Value, container: &Value) -> Vec<String> {
    let field = |name: &str| match &container[name] {
        Value::Null => &pod[name],
        v => v,
    };
    let mut args = Vec::new();
    if container["privileged"] == true {
        args.push("--privileged".to_string());
    }
    let user = field("runAsUser").as_u64();
    let group = field("runAsGroup").as_u64();
    if field("runAsNonRoot").as_bool() == Some(true) {
        assert_ne!(user, Some(0), "runAsNonRoot with runAsUser 0");
    }
    match (user, group) {
        (Some(u), Some(g)) => args.push(format!("--user={u}:{g}")),
        (Some(u), None) => args.push(format!("--user={u}")),
        (None, _) => {}
    }
    if container["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if container["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    match field("seccompProfile")["type"].as_str() {
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => args.push("--security-opt=seccomp=unconfined".into()),
        Some(other) => panic!("seccompProfile {other}: not translated"),
    }
    let caps = &container["capabilities"];
    for (key, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
        for cap in caps[key].as_sequence().into_iter().flatten() {
            args.push(format!("{flag}={}", cap.as_str().expect("capability")));
        }
    }
    args
}

/// A container started with `podman run -d`, removed when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    pub fn run(name: String, extra: &[String], args: &[String]) -> Container {
        let mut command = podman();
        command
            .args(["run", "-d", "--name", &name])
            .args(extra)
            .args(args);
        let out = command.output().expect("podman run");
        let container = Container { name };
        assert!(
            out.status.success(),
            "podman run {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        container
    }

    pub fn inspect(&self, format: &str) -> String {
        let out = podman_output(&["inspect", "--format", format, &self.name]);
        assert!(out.status.success(), "podman inspect {}", self.name);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn logs(&self) -> String {
        let out = podman_output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// (uid, CapEff, CapPrm, CapBnd) of its main process, from /proc; every
    /// thread of it must show the same (capabilities are per thread).
    pub fn identity(&self) -> (u32, u64, u64, u64) {
        let pid = self.inspect("{{.State.Pid}}");
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap_or_else(|e| panic!("{}: /proc/{pid}/task: {e}", self.name));
        let mut seen = Vec::new();
        for task in tasks {
            let status = task.expect("task").path().join("status");
            let status = std::fs::read_to_string(&status)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", self.name, status.display()));
            let field = |name: &str| {
                status_field(&status, name).unwrap_or_else(|| panic!("{name} in {status}"))
            };
            let caps = |name: &str| u64::from_str_radix(field(name), 16).expect("capability mask");
            let uid: u32 = field("Uid:").parse().expect("uid");
            seen.push((uid, caps("CapEff:"), caps("CapPrm:"), caps("CapBnd:")));
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "{}: threads differ: {seen:x?}", self.name);
        seen[0]
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `grace_seconds`); the exit code.
    pub fn stop(&self, grace_seconds: u32) -> i64 {
        let grace = grace_seconds.to_string();
        let out = podman_output(&["stop", "--time", &grace, &self.name]);
        assert!(out.status.success(), "podman stop {}", self.name);
        self.inspect("{{.State.ExitCode}}")
            .parse()
            .expect("exit code")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}
