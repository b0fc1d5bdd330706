//! A real Kubernetes control plane for tests: etcd and kube-apiserver, built by
//! `testenv/build.sh`, started by the test itself on free loopback ports in a
//! temporary directory.
//!
//! - certificates (CA, serving cert, client certs) are generated with rcgen;
//! - a service-account signing key, `--authorization-mode=Node,RBAC` and the
//!   NodeRestriction admission plugin, as a kubeadm cluster has them;
//! - an admin identity (client cert in `system:masters`), kubelet-like node
//!   identities (`system:node:<name>`), and service-account identities with
//!   tokens from the TokenRequest API, bound to a Node where asked;
//! - [`ControlPlane::start`] waits for `/readyz`; dropping the value kills both
//!   processes and removes the directory (also when a test panics, since the
//!   value is dropped while unwinding).
//!
//! [`shared`] gives one control plane per test binary: started on first use,
//! stopped at process exit (an `atexit` hook). Children are spawned from one
//! long-lived thread with `PR_SET_PDEATHSIG=SIGKILL`, so they die with the test
//! process even when it is killed and no hook runs.
//!
//! [`ControlPlane::controller_manager_or_skip`] adds the real
//! kube-controller-manager of the same release (node IPAM and node lifecycle
//! controllers, no cloud provider), killed when its value is dropped.
//!
//! Binaries: `$PODROUTE_TESTENV_BIN/{kube-apiserver,etcd,kubectl,kube-controller-manager}`, else the
//! cache path that `testenv/build.sh` fills, running the script once first
//! when they are not there yet (Go and the module proxy needed;
//! `PODROUTE_TESTENV_NO_BUILD=1` skips it). When they are missing, [`shared`],
//! [`ControlPlane::start_or_skip`] and [`kubectl_or_skip`] print "skipping: ..."
//! and return `None`, unless `PODROUTE_REQUIRE_KUBE_TESTS=1`, where they panic.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeAddress, NodeSpec, NodeStatus, ServiceAccount,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

/// The audience and issuer of service-account tokens, as in a default cluster.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Cluster IP range handed to kube-apiserver: configuration only, nothing routes to it.
const SERVICE_CIDR: &str = "10.96.0.0/24";
const START_TIMEOUT: Duration = Duration::from_secs(90);

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------
// Finding the binaries

/// Where the binaries are, or why they are not there.
pub fn find_binaries() -> Result<PathBuf, String> {
    let dir = bin_dir()?;
    for name in ["kube-apiserver", "etcd"] {
        if !dir.join(name).is_file() {
            return Err(format!("{} not found", dir.join(name).display()));
        }
    }
    Ok(dir)
}

/// The `kubectl` that `testenv/build.sh` builds next to kube-apiserver (same
/// Kubernetes release), or why it is not there.
pub fn find_kubectl() -> Result<PathBuf, String> {
    let kubectl = bin_dir()?.join("kubectl");
    if kubectl.is_file() {
        Ok(kubectl)
    } else {
        Err(format!("{} not found", kubectl.display()))
    }
}

/// The `kube-controller-manager` that `testenv/build.sh` builds next to
/// kube-apiserver (same Kubernetes release), or why it is not there.
pub fn find_controller_manager() -> Result<PathBuf, String> {
    let kcm = bin_dir()?.join("kube-controller-manager");
    if kcm.is_file() {
        Ok(kcm)
    } else {
        Err(format!("{} not found", kcm.display()))
    }
}

/// `$PODROUTE_TESTENV_BIN`, else [`default_bin_dir`], built there by
/// `testenv/build.sh` first when a binary is missing (see [`build_once`]).
fn bin_dir() -> Result<PathBuf, String> {
    match std::env::var_os("PODROUTE_TESTENV_BIN") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => {
            let dir = default_bin_dir()?;
            let complete = [
                "kube-apiserver",
                "etcd",
                "kubectl",
                "kube-controller-manager",
            ]
            .iter()
            .all(|tool| dir.join(tool).is_file());
            if complete {
                Ok(dir)
            } else {
                build_once()
            }
        }
    }
}

/// Runs `testenv/build.sh` once per test process, so that `cargo test` on a
/// clean clone starts a real control plane with nothing done by hand. The
/// script serialises concurrent builds (test binaries run in parallel) with a
/// lock and reuses what is built. `PODROUTE_TESTENV_NO_BUILD=1` turns this off.
fn build_once() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if std::env::var("PODROUTE_TESTENV_NO_BUILD").is_ok_and(|v| v == "1") {
                return Err("PODROUTE_TESTENV_NO_BUILD=1".into());
            }
            let script = Path::new(MANIFEST_DIR).join("testenv/build.sh");
            let _ = writeln!(
                std::io::stderr(),
                "kube tests: building kube-apiserver, etcd, kubectl and kube-controller-manager with {} (once; minutes when cold)",
                script.display()
            );
            // The script's progress goes straight to our stderr; stdout is the bin dir.
            let out = Command::new("bash")
                .arg(&script)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!("{} failed ({})", script.display(), out.status));
            }
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(PathBuf::from(dir))
        })
        .clone()
}

/// `${PODROUTE_TESTENV_CACHE:-/var/cache/podroute-testenv}/k8s-<v>_etcd-<v>/bin`,
/// with the versions read from testenv/go.mod as testenv/build.sh does.
pub fn default_bin_dir() -> Result<PathBuf, String> {
    let go_mod = Path::new(MANIFEST_DIR).join("testenv/go.mod");
    let text = fs::read_to_string(&go_mod)
        .map_err(|e| format!("cannot read {}: {e}", go_mod.display()))?;
    let version = |module: &str| {
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next()) {
                    (Some(m), Some(v)) if m == module && v.starts_with('v') => Some(v.to_string()),
                    _ => None,
                }
            })
            .next()
            .ok_or_else(|| format!("no {module} version in {}", go_mod.display()))
    };
    let k8s = version("k8s.io/kubernetes")?;
    let etcd = version("go.etcd.io/etcd/server/v3")?;
    let cache = std::env::var_os("PODROUTE_TESTENV_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/podroute-testenv"));
    Ok(cache.join(format!("k8s-{k8s}_etcd-{etcd}")).join("bin"))
}

fn kube_tests_required() -> bool {
    std::env::var("PODROUTE_REQUIRE_KUBE_TESTS").is_ok_and(|v| v == "1")
}

/// The binaries, or `None` after printing why the caller skips; panics instead
/// when `PODROUTE_REQUIRE_KUBE_TESTS=1`.
fn binaries_or_skip() -> Option<PathBuf> {
    if std::env::var("PODROUTE_IN_VM").is_ok_and(|v| v == "1") {
        // The VM runner carries no control plane: these run on the host.
        let _ = writeln!(
            std::io::stderr(),
            "skipping in the VM: the kube tests run on the host"
        );
        return None;
    }
    found_or_skip(find_binaries(), "kube-apiserver")
}

/// A Node as the kubelet and the node IPAM make it: an InternalIP and one
/// pod CIDR (in spec.podCIDR and spec.podCIDRs).
pub fn kube_node(name: &str, ip: &str, pod_cidr: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.into()),
            pod_cidrs: Some(vec![pod_cidr.into()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        }),
    }
}

/// `node` with the bulk a kubelet gives it: ~50 images with long names and
/// sizes, the five conditions, nodeInfo and capacity: about 13 kB as a watch
/// event, as on a real cluster. `seed` makes the image names differ.
pub fn kubelet_shaped(mut node: Node, seed: usize) -> Node {
    use k8s_openapi::api::core::v1::{ContainerImage, NodeCondition, NodeSystemInfo};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let images = (0..50)
        .map(|i| {
            let repo = format!(
                "registry.example.internal/platform-team/service-{seed}-{i}/application-image"
            );
            let digest = format!("{:064x}", (seed as u128) << 64 | i as u128);
            ContainerImage {
                names: Some(vec![
                    format!("{repo}@sha256:{digest}"),
                    format!("{repo}:v1.{i}.{seed}"),
                ]),
                size_bytes: Some(50_000_000 + (i as i64) * 1_234_567),
            }
        })
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    };
    let status = node.status.get_or_insert_with(Default::default);
    status.images = Some(images);
    status.conditions = Some(vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]);
    let quantities = |cpu: &str, memory: &str| {
        [
            ("cpu", cpu),
            ("memory", memory),
            ("pods", "110"),
            ("ephemeral-storage", "101203600Ki"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.into())))
        .collect()
    };
    status.capacity = Some(quantities("8", "32869040Ki"));
    status.allocatable = Some(quantities("7910m", "31717040Ki"));
    status.node_info = Some(NodeSystemInfo {
        architecture: "amd64".into(),
        boot_id: format!("{:032x}", seed),
        container_runtime_version: "containerd://1.7.22".into(),
        kernel_version: "6.1.0-27-cloud-amd64".into(),
        kube_proxy_version: String::new(),
        kubelet_version: "v1.36.0".into(),
        machine_id: format!("{:032x}", seed + 1),
        operating_system: "linux".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        system_uuid: format!("{:032x}", seed + 2),
        ..Default::default()
    });
    node
}

/// The testenv `kubectl`, or `None` after printing why the caller skips;
/// panics instead when `PODROUTE_REQUIRE_KUBE_TESTS=1`.
pub fn kubectl_or_skip() -> Option<PathBuf> {
    found_or_skip(find_kubectl(), "kubectl")
}

fn found_or_skip(found: Result<PathBuf, String>, what: &str) -> Option<PathBuf> {
    match found {
        Ok(path) => Some(path),
        Err(why) if kube_tests_required() => {
            panic!("PODROUTE_REQUIRE_KUBE_TESTS=1 but {what} is not built ({why}): run testenv/build.sh")
        }
        Err(why) => {
            // Straight to fd 2, past libtest's capture, so a skip is never silent.
            let _ = writeln!(
                std::io::stderr(),
                "skipping: {what} not built, run testenv/build.sh ({why})"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// One control plane per test binary

static SHARED: OnceLock<Result<Option<ControlPlane>, String>> = OnceLock::new();

/// The control plane shared by the tests of this binary, started on first
/// use. `None` means "skip" (binaries not built; the reason is printed).
/// A failed start panics in every test that asks, without retrying.
///
/// Tests that share it must not disturb each other: use [`unique_name`] for
/// cluster-scoped objects, and do not restart it (own a [`ControlPlane`] for that).
pub fn shared() -> Option<&'static ControlPlane> {
    let result = SHARED.get_or_init(|| {
        let Some(bin) = binaries_or_skip() else {
            return Ok(None);
        };
        let cp = ControlPlane::start_with(&bin).map_err(|e| e.to_string())?;
        // SAFETY: registering a plain extern "C" fn; it runs once at exit.
        unsafe { libc::atexit(stop_shared) };
        Ok(Some(cp))
    });
    match result {
        Ok(cp) => cp.as_ref(),
        Err(e) => panic!("the shared control plane failed to start: {e}"),
    }
}

extern "C" fn stop_shared() {
    if let Some(Ok(Some(cp))) = SHARED.get() {
        cp.stop();
    }
}

/// A name unique within this process (for Nodes and other cluster-scoped objects).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// Processes: spawned from one thread that lives as long as the process, so that
// PR_SET_PDEATHSIG (which fires when the spawning *thread* exits) means "when
// the test process dies".

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawn_supervised(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("kube-env-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                // the parent died before prctl took effect
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

const DIR_PREFIX: &str = "podroute-kube-";

/// Removes the directories of control planes whose test process was killed
/// (SIGKILL: no drop, no atexit; PR_SET_PDEATHSIG took care of the processes).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let Ok(pid) = fs::read_to_string(entry.path().join("owner.pid")) else {
            continue;
        };
        let alive = pid
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// The control plane

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct ControlPlane {
    /// Removed on stop; `None` once stopped.
    dir: Mutex<Option<tempfile::TempDir>>,
    path: PathBuf,
    bin: PathBuf,
    etcd: Mutex<Option<Child>>,
    apiserver: Mutex<Option<Child>>,
    apiserver_args: Vec<OsString>,
    etcd_port: u16,
    apiserver_port: u16,
    ca: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
    admin_kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane owned by the caller (for tests that restart or
    /// break it); `None` after printing why when the binaries are not built.
    pub fn start_or_skip() -> Option<ControlPlane> {
        let bin = binaries_or_skip()?;
        match ControlPlane::start_with(&bin) {
            Ok(cp) => Some(cp),
            Err(e) => panic!("the control plane failed to start: {e}"),
        }
    }

    /// Starts etcd and kube-apiserver from `bin` and waits until `/readyz` is ok.
    /// Blocking; safe to call from inside an async test.
    ///
    /// Ports are picked free and released before the servers bind them, so
    /// another process (a client's source port, a parallel test) can take
    /// one in between: such a start is retried on fresh ports.
    pub fn start_with(bin: &Path) -> Result<ControlPlane, Error> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match ControlPlane::start_once(bin) {
                Err(e)
                    if attempt < ATTEMPTS && e.to_string().contains("address already in use") =>
                {
                    let _ = writeln!(
                        std::io::stderr(),
                        "control plane start {attempt}/{ATTEMPTS} lost a port race, retrying: {e}"
                    );
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_once(bin: &Path) -> Result<ControlPlane, Error> {
        remove_stale_dirs();
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        let path = dir.path().to_path_buf();
        fs::write(path.join("owner.pid"), std::process::id().to_string())?;
        let pki = path.join("pki");
        fs::create_dir_all(&pki)?;

        // CA, serving certificate, admin client certificate, SA signing key.
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "podroute-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_file = pki.join("ca.crt");
        write_private(&ca_file, ca_cert.pem().as_bytes())?;
        let ca = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &ca)?;
        write_private(&pki.join("apiserver.crt"), serving_cert.pem().as_bytes())?;
        write_private(
            &pki.join("apiserver.key"),
            serving_key.serialize_pem().as_bytes(),
        )?;

        let sa_key = KeyPair::generate()?; // ECDSA P-256: tokens are signed ES256
        write_private(&pki.join("sa.key"), sa_key.serialize_pem().as_bytes())?;
        // --service-account-key-file does not read PKCS#8 private keys: give it the public key
        write_private(&pki.join("sa.pub"), sa_key.public_key_pem().as_bytes())?;

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let apiserver_port = free_port();

        let mut cp = ControlPlane {
            dir: Mutex::new(Some(dir)),
            path: path.clone(),
            bin: bin.to_path_buf(),
            etcd: Mutex::new(None),
            apiserver: Mutex::new(None),
            apiserver_args: Vec::new(),
            etcd_port,
            apiserver_port,
            ca,
            ca_file,
            admin_kubeconfig: path.join("admin.kubeconfig"),
        };

        // etcd
        let peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let client = format!("http://127.0.0.1:{etcd_port}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.arg("--name=default")
            .arg(format!("--data-dir={}", path.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--unsafe-no-fsync") // test data: no fsync, much faster on a shared disk
            .arg("--log-level=warn");
        let log = fs::File::create(path.join("etcd.log"))?;
        etcd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        *cp.etcd.lock().unwrap() = Some(spawn_supervised(etcd)?);
        cp.wait_etcd_healthy()?;

        // kube-apiserver
        let p = |f: &str| pki.join(f).display().to_string();
        cp.apiserver_args = [
            format!("--etcd-servers={client}"),
            format!("--secure-port={apiserver_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--cert-dir={}", p("generated")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-account-issuer={SA_ISSUER}"),
            format!("--api-audiences={SA_ISSUER}"),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            // As on every real cluster (kubeadm, managed ones): privileged
            // containers are allowed, e.g. the privileged agent variant.
            "--allow-privileged=true".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            // Endpoints may not hold loopback addresses: don't reconcile the
            // `kubernetes` Service onto 127.0.0.1.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "podroute-test-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &cp.ca)?;
        write_private(&pki.join("admin.crt"), admin_cert.pem().as_bytes())?;
        write_private(&pki.join("admin.key"), admin_key.serialize_pem().as_bytes())?;
        let admin_user = format!(
            "    client-certificate: {}\n    client-key: {}\n",
            p("admin.crt"),
            p("admin.key")
        );
        cp.write_kubeconfig(&cp.admin_kubeconfig, "admin", &admin_user)?;

        cp.start_apiserver()?;
        Ok(cp)
    }

    /// Process ids of etcd and kube-apiserver (those running).
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver]
            .iter()
            .filter_map(|m| {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|c| c.id())
            })
            .collect()
    }

    /// The temporary directory holding certs, logs, kubeconfigs and etcd data.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    pub fn apiserver_log(&self) -> PathBuf {
        self.path.join("kube-apiserver.log")
    }

    pub fn etcd_log(&self) -> PathBuf {
        self.path.join("etcd.log")
    }

    /// A kubeconfig for the admin identity (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// An admin client, bound to the calling tokio runtime (make one per test).
    pub async fn client(&self) -> Client {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// A kubelet-like identity: client cert `CN=system:node:<node>`, `O=system:nodes`,
    /// subject to the Node authorizer and NodeRestriction.
    pub fn node_identity(&self, node: &str) -> Identity {
        let user = format!("system:node:{node}");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, user.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca).expect("sign node cert");
        let base = unique_name(&format!("node-{node}"));
        let crt = self.path.join("pki").join(format!("{base}.crt"));
        let k = self.path.join("pki").join(format!("{base}.key"));
        write_private(&crt, cert.pem().as_bytes()).expect("write cert");
        write_private(&k, key.serialize_pem().as_bytes()).expect("write key");
        let kubeconfig = self.path.join(format!("{base}.kubeconfig"));
        let user_yaml = format!(
            "    client-certificate: {}\n    client-key: {}\n",
            crt.display(),
            k.display()
        );
        self.write_kubeconfig(&kubeconfig, &user, &user_yaml)
            .expect("write kubeconfig");
        Identity {
            username: user,
            kubeconfig,
            token: None,
        }
    }

    /// A service-account identity with a token from the TokenRequest API. The
    /// namespace and service account are created when missing. With
    /// `bound_node`, the token is bound to that Node (it must exist): the API
    /// server puts the node name into the token and into the user's extra
    /// `authentication.kubernetes.io/node-name`, and the token dies with the Node.
    pub async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        bound_node: Option<&str>,
    ) -> Identity {
        let admin = self.client().await;
        ensure_namespace(&admin, namespace).await;
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create service account {namespace}/{name}: {e}"),
        }
        let bound_object_ref = match bound_node {
            None => None,
            Some(node) => {
                let n = Api::<Node>::all(admin.clone())
                    .get(node)
                    .await
                    .unwrap_or_else(|e| panic!("node {node} for a bound token: {e}"));
                Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.into()),
                    uid: n.metadata.uid,
                })
            }
        };
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![SA_ISSUER.into()]),
                bound_object_ref,
                expiration_seconds: Some(3600),
            }),
            ..Default::default()
        };
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"))
            .status
            .and_then(|s| s.token)
            .expect("TokenRequest status.token");
        let user = format!("system:serviceaccount:{namespace}:{name}");
        // one file per token: an earlier Identity keeps its own
        let file = match bound_node {
            Some(node) => unique_name(&format!("sa-{namespace}-{name}-{node}")),
            None => unique_name(&format!("sa-{namespace}-{name}")),
        };
        let kubeconfig = self.path.join(format!("{file}.kubeconfig"));
        self.write_kubeconfig(&kubeconfig, &user, &format!("    token: {token}\n"))
            .expect("write kubeconfig");
        Identity {
            username: user,
            kubeconfig,
            token: Some(token),
        }
    }

    /// SIGKILLs kube-apiserver (etcd keeps running).
    pub fn kill_apiserver(&self) {
        if let Some(mut child) = self
            .apiserver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            kill_and_reap(&mut child);
        }
    }

    /// Starts kube-apiserver (again) with the same flags, port and etcd, and
    /// waits for `/readyz`. Blocking.
    pub fn start_apiserver(&self) -> Result<(), Error> {
        let log_path = self.apiserver_log();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.args(&self.apiserver_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_supervised(cmd)?;
        *self.apiserver.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.wait_apiserver_ready().map_err(|e| {
            format!(
                "{e}\n--- last lines of {} ---\n{}",
                log_path.display(),
                tail(&log_path, 40)
            )
            .into()
        })
    }

    /// Kills both processes and removes the directory. Idempotent.
    pub fn stop(&self) {
        self.kill_apiserver();
        if let Some(mut child) = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).take() {
            kill_and_reap(&mut child);
        }
        if let Some(dir) = self.dir.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let keep = std::env::var_os("PODROUTE_KEEP_KUBE_ENV").is_some();
            if keep {
                eprintln!("kube_env: keeping {}", dir.keep().display());
            } else {
                let _ = dir.close();
            }
        }
    }

    fn wait_etcd_healthy(&self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .etcd
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(
                    format!("etcd exited ({status}):\n{}", tail(&self.etcd_log(), 40)).into(),
                );
            }
            if http_get_local(self.etcd_port, "/health")
                .is_ok_and(|body| body.contains("\"health\":\"true\""))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not healthy after 30s:\n{}",
                    tail(&self.etcd_log(), 40)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_apiserver_ready(&self) -> Result<(), Error> {
        let kubeconfig = self.admin_kubeconfig.clone();
        let apiserver = &self.apiserver;
        // Own runtime on a scoped thread: callers may be inside a runtime.
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(), Error> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let client = client_from_kubeconfig(&kubeconfig).await;
                    let deadline = Instant::now() + START_TIMEOUT;
                    let mut last: String;
                    loop {
                        let exited = apiserver
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .as_mut()
                            .map(|c| c.try_wait().ok().flatten());
                        match exited {
                            None => return Err("kube-apiserver is not running".into()),
                            Some(Some(status)) => {
                                return Err(format!("kube-apiserver exited ({status})").into())
                            }
                            Some(None) => {}
                        }
                        let req = http::Request::get("/readyz").body(Vec::new())?;
                        match client.request_text(req).await {
                            Ok(body) if body.trim() == "ok" => return Ok(()),
                            Ok(body) => last = body,
                            Err(e) => last = e.to_string(),
                        }
                        if Instant::now() > deadline {
                            return Err(format!(
                                "kube-apiserver not ready after {START_TIMEOUT:?}: {last}"
                            )
                            .into());
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err("readiness thread panicked".into()))
        })
    }

    fn write_kubeconfig(&self, path: &Path, user: &str, user_yaml: &str) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: podroute-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user:?}\n  user:\n{user_yaml}contexts:\n- name: {user:?}\n  context:\n    cluster: podroute-test\n    user: {user:?}\ncurrent-context: {user:?}\n",
            server = self.server_url(),
            ca = self.ca_file.display(),
        );
        write_private(path, text.as_bytes())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// kube-controller-manager

/// The real kube-controller-manager of the testenv release, running only the
/// node IPAM and node lifecycle controllers (no cloud provider: the
/// kube-controller-manager has none since v1.31). It acts as kubeadm's does:
/// identity `system:kube-controller-manager`, each controller under its own
/// service account (`--use-service-account-credentials`; both use
/// `kube-system/node-controller`). No serving port, no leader election; its
/// log is `kube-controller-manager.log` in the control plane's directory.
/// Dropping the value kills the process.
pub struct ControllerManager {
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

/// Lines kube-controller-manager logs when each controller we run starts.
const KCM_STARTED: [&str; 2] = ["Starting range CIDR allocator", "Starting node controller"];

impl ControlPlane {
    /// A kubeconfig for `system:kube-controller-manager` (client cert, as
    /// kubeadm writes it): the RBAC bootstrap policy binds that user to the
    /// ClusterRole of the same name (read everything, mint tokens for the
    /// controllers' service accounts).
    pub fn controller_manager_identity(&self) -> Identity {
        let user = "system:kube-controller-manager";
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca).expect("sign kcm cert");
        let base = unique_name("kube-controller-manager");
        let crt = self.path.join("pki").join(format!("{base}.crt"));
        let k = self.path.join("pki").join(format!("{base}.key"));
        write_private(&crt, cert.pem().as_bytes()).expect("write cert");
        write_private(&k, key.serialize_pem().as_bytes()).expect("write key");
        let kubeconfig = self.path.join(format!("{base}.kubeconfig"));
        let user_yaml = format!(
            "    client-certificate: {}\n    client-key: {}\n",
            crt.display(),
            k.display()
        );
        self.write_kubeconfig(&kubeconfig, user, &user_yaml)
            .expect("write kubeconfig");
        Identity {
            username: user.into(),
            kubeconfig,
            token: None,
        }
    }

    /// [`ControlPlane::start_controller_manager`] when the binary is built;
    /// otherwise `None` after printing why (a panic with
    /// `PODROUTE_REQUIRE_KUBE_TESTS=1`).
    pub fn controller_manager_or_skip(
        &self,
        cluster_cidr: &str,
        extra_args: &[&str],
    ) -> Option<ControllerManager> {
        let kcm = self.bin.join("kube-controller-manager");
        let found = if kcm.is_file() {
            Ok(kcm)
        } else {
            Err(format!("{} not found", kcm.display()))
        };
        found_or_skip(found, "kube-controller-manager")?;
        match self.start_controller_manager(cluster_cidr, extra_args) {
            Ok(kcm) => Some(kcm),
            Err(e) => panic!("kube-controller-manager failed to start: {e}"),
        }
    }

    /// Starts kube-controller-manager with the node IPAM controller (pod
    /// CIDRs of `--node-cidr-mask-size=24` from `cluster_cidr`, the
    /// apiserver's service range left out) and the node lifecycle controller
    /// (condition taints; Nodes without a kubelet heartbeat, a renewed Lease
    /// in `kube-node-lease`, go Unknown after `--node-monitor-grace-period`).
    /// `extra_args` come last, so they can override. Waits until both
    /// controllers log that they started. Blocking.
    pub fn start_controller_manager(
        &self,
        cluster_cidr: &str,
        extra_args: &[&str],
    ) -> Result<ControllerManager, Error> {
        let identity = self.controller_manager_identity();
        let log_path = self.path.join("kube-controller-manager.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(self.bin.join("kube-controller-manager"));
        cmd.arg(format!("--kubeconfig={}", identity.kubeconfig.display()))
            .arg("--controllers=nodeipam,nodelifecycle")
            .arg("--use-service-account-credentials=true")
            .arg("--allocate-node-cidrs=true")
            .arg(format!("--cluster-cidr={cluster_cidr}"))
            .arg("--node-cidr-mask-size=24")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg("--profiling=false")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let kcm = ControllerManager {
            child: Mutex::new(Some(spawn_supervised(cmd)?)),
            log: log_path,
        };
        kcm.wait_started()?;
        Ok(kcm)
    }
}

impl ControllerManager {
    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id())
    }

    /// Kills the process. Idempotent.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            kill_and_reap(&mut child);
        }
    }

    fn wait_started(&self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "kube-controller-manager exited ({status}):\n{}",
                    tail(&self.log, 40)
                )
                .into());
            }
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if KCM_STARTED.iter().all(|line| text.contains(line)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-controller-manager did not start its controllers within {START_TIMEOUT:?}:\n{}",
                    tail(&self.log, 40)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Someone the tests act as.
pub struct Identity {
    /// As the API server sees it: `system:serviceaccount:<ns>:<name>`, `system:node:<name>`.
    pub username: String,
    pub kubeconfig: PathBuf,
    pub token: Option<String>,
}

impl Identity {
    /// A client acting as this identity, bound to the calling tokio runtime.
    pub async fn client(&self) -> Client {
        client_from_kubeconfig(&self.kubeconfig).await
    }
}

pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("load kubeconfig {}: {e}", path.display()));
    Client::try_from(config).expect("kube client")
}

pub async fn ensure_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// The HTTP status of a failed call (403, 404, 409, ...), or `None` for success
/// or a non-API error.
pub fn status_code<T>(result: &Result<T, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// The ValidatingAdmissionPolicy of docs/design.md, keyed to one test identity:
/// requests by `username` may update only the Node whose name is bound into
/// their token. Creates the policy and its binding under one unique name and
/// returns it; the caller deletes both.
pub async fn create_own_node_policy(admin: &Client, username: &str) -> String {
    let name = unique_name("podroute-agent-own-node");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["UPDATE"],
                "resources": ["nodes", "nodes/status"],
            }]},
            "matchConditions": [{
                "name": "podroute-agent",
                "expression": format!("request.userInfo.username == '{username}'"),
            }],
            "validations": [{
                "expression": "'authentication.kubernetes.io/node-name' in request.userInfo.extra && request.userInfo.extra['authentication.kubernetes.io/node-name'][0] == object.metadata.name",
                "message": "a podroute agent may only write its own Node",
                "reason": "Forbidden",
            }],
        },
    }))
    .expect("a ValidatingAdmissionPolicy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }))
    .expect("a ValidatingAdmissionPolicyBinding");
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("create ValidatingAdmissionPolicy");
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create ValidatingAdmissionPolicyBinding");
    name
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}

/// A plain-HTTP GET to 127.0.0.1:port (etcd's client port), returning the body.
fn http_get_local(port: u16, path: &str) -> std::io::Result<String> {
    let mut s =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
