//! The shipped image as the coordinator Deployment runs it, against a real
//! kube-apiserver: the pod spec read from the rendered manifests (user
//! 65532, no capability, read-only root), the shipped RBAC applied, and the
//! coordinator's service account token handed over as a kubeconfig in place
//! of the in-cluster one. Proven: its probes answer, it takes the Lease
//! under its pod name, and it exits cleanly on SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::image_support::{find, image_or_skip, render, run_args, Container, PodPlace};
use crate::kube_env::ControlPlane;
use crate::kube_support::{apply_except_workloads, kubectl};
use crate::support::{have_root, http_get, poll_until};

const NAMESPACE: &str = "podroute-system";
const POD_NAME: &str = "podroute-coordinator-7d9f-image";
const NONROOT: u32 = 65532;

#[test]
fn coordinator_image_answers_its_probes_and_leads() {
    if !have_root() {
        return;
    }
    let Some(image) = image_or_skip() else {
        return;
    };
    let Some(cp) = ControlPlane::start_or_skip() else {
        return;
    };
    let objects = render("restricted");
    let deployment = find(&objects, "Deployment", "podroute-coordinator");
    let pod = &deployment["spec"]["template"]["spec"];
    let port = pod["containers"][0]["readinessProbe"]["httpGet"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("readinessProbe port");

    let work = tempfile::tempdir().expect("temp dir");
    apply_except_workloads(&cp, &objects, work.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let identity = rt.block_on(cp.service_account(NAMESPACE, "podroute-coordinator", None));
    let config_dir = readable_kubeconfig(&identity.kubeconfig, work.path());

    let place = PodPlace {
        network: "host".into(),
        node_name: "control-plane-1",
        pod_name: POD_NAME,
        node_root: &work.path().join("node"),
    };
    let credentials = [
        "--volume".to_string(),
        format!("{}:/etc/podroute:ro", config_dir.display()),
        "--env=KUBECONFIG=/etc/podroute/kubeconfig".to_string(),
    ];
    let name = format!("podroute-test-{}-coordinator", std::process::id());
    let container = Container::run(name, &credentials, &run_args(pod, &image, &place));

    for path in ["/healthz", "/readyz"] {
        let answered = poll_until(Duration::from_secs(30), || {
            http_get(port, path).is_some_and(|(code, _)| code == 200)
        });
        assert!(
            answered,
            "probe {path} on {port}: no 200 in 30 s; log:\n{}",
            container.logs()
        );
    }
    let (uid, eff, prm, _) = container.identity();
    assert_eq!(uid, NONROOT, "coordinator uid");
    assert_eq!((eff, prm), (0, 0), "coordinator capabilities");
    let holder = || {
        kubectl(
            &cp,
            &[
                "get",
                "lease",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.items[*].spec.holderIdentity}",
            ],
        )
    };
    assert!(
        poll_until(Duration::from_secs(30), || holder() == POD_NAME),
        "Lease holder {:?}, want {POD_NAME}; log:\n{}",
        holder(),
        container.logs()
    );
    let code = container.stop(10);
    assert_eq!(
        code,
        0,
        "exit code after SIGTERM; log:\n{}",
        container.logs()
    );
}

/// A copy of the service account's kubeconfig and the API server's CA that
/// the container's user can read, the CA at its path inside the container.
fn readable_kubeconfig(kubeconfig: &Path, dir: &Path) -> std::path::PathBuf {
    let config_dir = dir.join("etc-podroute");
    std::fs::create_dir(&config_dir).expect("config dir");
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let ca = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
        .expect("certificate-authority in the kubeconfig")
        .to_string();
    std::fs::copy(&ca, config_dir.join("ca.crt")).expect("copy CA");
    let text = text.replace(&ca, "/etc/podroute/ca.crt");
    std::fs::write(config_dir.join("kubeconfig"), text).expect("write kubeconfig");
    for entry in [dir.to_path_buf(), config_dir.clone()] {
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for file in ["ca.crt", "kubeconfig"] {
        let path = config_dir.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    config_dir
}
