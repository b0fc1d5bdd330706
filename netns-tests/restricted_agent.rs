//! The restricted DaemonSet's promise at the process level: the agent needs
//! CAP_NET_ADMIN and nothing else, not even uid 0. Each agent runs as
//! `nobody` with CAP_NET_ADMIN as its only capability (ambient, as systemd's
//! `AmbientCapabilities=` gives it), in a mount namespace shaped like the
//! restricted container's (/proc/sys read-only, the node's /proc/sys/net
//! bound read-write at <dir>/host/proc/sys/net), reaches its sysctls through
//! `--proc-sys`, and converges: routes, sysctls, MTU file, packets.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{have_root, our_routes, status_field, write_cluster, Lab, TempCopy};

const NOBODY: u32 = 65534;
const CAP_NET_ADMIN_MASK: u64 = 1 << 12;

/// The agent, and the copy of podroute it runs (see [`TempCopy`]), removed
/// after it.
struct Restricted(Child, #[allow(dead_code)] TempCopy);

impl Drop for Restricted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `podroute agent` in `netns` as uid/gid `NOBODY` with only
/// CAP_NET_ADMIN: the child enters the namespace as root, mounts as a
/// restricted container sees it (see `mount_like_a_container`), shrinks its
/// bounding set, changes uid keeping capabilities, and hands CAP_NET_ADMIN
/// to the exec'd agent through the ambient set.
fn start_restricted(
    netns: &str,
    host_proc_sys_net: &Path,
    args: &[&std::ffi::OsStr],
    log: &Path,
) -> Restricted {
    let ns = File::open(Path::new("/run/netns").join(netns)).expect("open netns");
    let log = File::create(log).expect("log file");
    let podroute = TempCopy::of(env!("CARGO_BIN_EXE_podroute"));
    let mut command = Command::new(&podroute.0);
    command
        .arg("agent")
        .args(args)
        .stdout(Stdio::null())
        .stderr(log);
    let ns_fd = ns.as_raw_fd();
    let target = host_proc_sys_net.to_path_buf();
    unsafe {
        command.pre_exec(move || {
            mount_like_a_container(&target)?;
            become_nobody_with_net_admin(ns_fd)
        });
    }
    let child = command.spawn().expect("start restricted agent");
    drop(ns);
    Restricted(child, podroute)
}

/// A private mount namespace where /proc/sys is read-only (as runtimes
/// mount it in unprivileged containers) and /proc/sys/net is bound
/// read-write at `target` (the DaemonSet's hostPath volume).
fn mount_like_a_container(target: &Path) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    mount(Some("/proc/sys/net"), target, none, MsFlags::MS_BIND, none)?;
    mount(Some("/proc/sys"), "/proc/sys", none, MsFlags::MS_BIND, none)?;
    let read_only = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    mount(none, "/proc/sys", none, read_only, none)?;
    Ok(())
}

fn become_nobody_with_net_admin(ns_fd: i32) -> std::io::Result<()> {
    use caps::{CapSet, Capability};
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let err = |e: caps::errors::CapsError| std::io::Error::other(e.to_string());
    let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(ns_fd) };
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let keep = caps::CapsHashSet::from([Capability::CAP_NET_ADMIN]);
    for cap in caps::all().difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(err)?;
    }
    nix::sys::prctl::set_keepcaps(true)?;
    setgroups(&[])?;
    setresgid(
        Gid::from_raw(NOBODY),
        Gid::from_raw(NOBODY),
        Gid::from_raw(NOBODY),
    )?;
    setresuid(
        Uid::from_raw(NOBODY),
        Uid::from_raw(NOBODY),
        Uid::from_raw(NOBODY),
    )?;
    for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable] {
        caps::set(None, set, &keep).map_err(err)?;
    }
    caps::raise(None, CapSet::Ambient, Capability::CAP_NET_ADMIN).map_err(err)?;
    Ok(())
}

/// (uid, effective capabilities) of a running process.
fn identity(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status_field(&status, name).unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    let uid = field("Uid:").parse().expect("uid");
    let caps = u64::from_str_radix(field("CapEff:"), 16).expect("CapEff");
    (uid, caps)
}

#[test]
fn agent_as_nobody_with_only_cap_net_admin_converges() {
    if !have_root() {
        return;
    }
    let lab = Lab::flat(2);
    let names = ["node-1", "node-2"];
    // A world-readable work dir: the cluster file, a stand-in for the
    // container's /host/proc/sys (its `net` is the node's /proc/sys/net), and
    // per node a run dir owned by the agent's user.
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let host_proc_sys = dir.join("host/proc/sys");
    std::fs::create_dir_all(host_proc_sys.join("net")).expect("dir");
    let cluster = dir.join("cluster.yaml");
    write_cluster(&lab, &cluster, "vxlan", &names);
    for d in [
        dir,
        &dir.join("host"),
        &dir.join("host/proc"),
        &host_proc_sys,
    ] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let mut agents = Vec::new();
    for node in names {
        // Strict rp_filter and no forwarding: the agent must write both.
        let ns = lab.topo.node_netns(node).expect("netns");
        ns.sysctl("net.ipv4.ip_forward", "0").expect("sysctl");
        ns.sysctl("net.ipv4.conf.eth0.rp_filter", "1")
            .expect("sysctl");
        let run_dir = dir.join(node);
        std::fs::create_dir(&run_dir).expect("run dir");
        std::os::unix::fs::chown(&run_dir, Some(NOBODY), Some(NOBODY)).expect("chown");
        let mtu_file = run_dir.join("mtu");
        let args: Vec<&std::ffi::OsStr> = vec![
            "--node-name".as_ref(),
            node.as_ref(),
            "--cluster".as_ref(),
            cluster.as_os_str(),
            "--mtu-file".as_ref(),
            mtu_file.as_os_str(),
            "--proc-sys".as_ref(),
            host_proc_sys.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:9469".as_ref(),
        ];
        let log = dir.join(format!("{node}.log"));
        agents.push((
            node,
            start_restricted(
                &lab.node(node).netns,
                &host_proc_sys.join("net"),
                &args,
                &log,
            ),
            log,
            mtu_file,
        ));
    }

    for (node, agent, log, mtu_file) in &agents {
        let converged = || {
            our_routes(&lab, node)
                .iter()
                .any(|r| r.contains("dev vxlan.calico"))
                && std::fs::read_to_string(mtu_file).is_ok()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !converged() {
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{node} did not converge in 10 s; agent log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (uid, caps) = identity(agent.0.id());
        assert_eq!(uid, NOBODY, "{node}: agent uid");
        assert_eq!(caps, CAP_NET_ADMIN_MASK, "{node}: effective capabilities");
        let ns = lab.topo.node_netns(node).expect("netns");
        for (key, want) in [
            ("ipv4/ip_forward", "1"),
            ("ipv4/conf/eth0/rp_filter", "2"),
            ("ipv4/conf/vxlan.calico/rp_filter", "2"),
        ] {
            let path = format!("/proc/sys/net/{key}");
            let value = ns
                .run(move || std::fs::read_to_string(path))
                .expect("netns")
                .expect("sysctl");
            assert_eq!(value.trim(), want, "{node}: {key}");
        }
        let mtu = std::fs::read_to_string(mtu_file).expect("mtu file");
        assert_eq!(mtu.trim(), "1450", "{node}: pod MTU file");
    }
    for node in names {
        lab.topo.set_pod_mtu(node, 1450).expect("pod mtu");
    }
    lab.assert_all_pods_talk(1450);
}

#[test]
fn agent_pointed_at_a_tree_without_net_sysctls_names_the_flag() {
    if !have_root() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let empty = work.path();
    let out = Command::new(env!("CARGO_BIN_EXE_podroute"))
        .args([
            "agent",
            "--node-name",
            "node-1",
            "--cluster",
            "/nonexistent.yaml",
        ])
        .arg("--proc-sys")
        .arg(empty)
        .output()
        .expect("run podroute");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("proc-sys"), "{stderr}");
    assert!(stderr.contains(&*empty.to_string_lossy()), "{stderr}");
}
