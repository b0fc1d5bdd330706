//! `podroute lab`: a virtual cluster in network namespaces, a live switch
//! under pod-to-pod traffic, and a table of what each phase lost.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::{table, Output};
use crate::api::Mode;
use crate::lab::netns::Netns;
use crate::lab::report::{FamilyReport, LabReport, MtuCheck, RunReport};
use crate::lab::run::{Lab, LabOptions, Progress};
use crate::lab::topology::IpFamily;
use crate::privilege;
use crate::{Error, Result};

const LOCK_FILE: &str = "/run/podroute-lab.lock";

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Pods per node (each behind its own veth).
    #[arg(long, default_value_t = 1)]
    pub pods: usize,
    /// Underlay subnets (more than one adds a router between them).
    #[arg(long, default_value_t = 1)]
    pub subnets: usize,
    /// Mode before the switch; default ipip where the kernel has it, else vxlan.
    #[arg(long)]
    pub from: Option<Mode>,
    /// Mode after the switch.
    #[arg(long, default_value = "native")]
    pub to: Mode,
    /// Address families of nodes and pods; probes and the DF check run in
    /// each.
    #[arg(long, value_enum, default_value = "dual")]
    pub ip_family: IpFamilyArg,
    /// rp_filter the nodes start with (the agent sets loose on its devices).
    #[arg(long, value_parser = ["strict", "loose"], default_value = "loose")]
    pub rp_filter: String,
    /// Roll straight to the target, as an uncoordinated DaemonSet roll would.
    #[arg(long, conflicts_with = "compare")]
    pub naive: bool,
    /// Run the seamless switch, then the naive one, and show both.
    #[arg(long)]
    pub compare: bool,
    /// Leave the namespaces in place for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Probe interval per pod pair, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Pause between two nodes of a rollout, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub step_ms: u64,
    /// Traffic time after each phase, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    /// Same as `-o json`: the report scripts and benchmarks read.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Also write the report as one self-contained HTML page: a timeline of
    /// probes, the phases with their DF check, the loss of every pod pair.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpFamilyArg {
    Ipv4,
    Ipv6,
    Dual,
}

impl From<IpFamilyArg> for IpFamily {
    fn from(arg: IpFamilyArg) -> IpFamily {
        match arg {
            IpFamilyArg::Ipv4 => IpFamily::V4,
            IpFamilyArg::Ipv6 => IpFamily::V6,
            IpFamilyArg::Dual => IpFamily::Dual,
        }
    }
}

pub async fn run(args: LabArgs) -> Result<()> {
    privilege::require(
        privilege::NETNS,
        "lab",
        "needs root to create network namespaces (run with sudo)",
    )?;
    // Before anything exists to clean up: a Ctrl-C from here on cancels the
    // run, whose values then remove what they built.
    let cancel = cancel_on_signals()?;
    let _lock = take_lock()?;
    // Network namespaces must work here: the kernel, and the right to mount
    // /run/netns, both say so at the first `ip netns add`.
    let probe = Netns::create(&crate::lab::netns::unique_name("prlabk")).map_err(|e| {
        Error::invalid(
            "lab",
            format!("this system cannot create network namespaces: {e}"),
        )
    })?;
    let (from, modes_chosen) = choose_from(args.from, &probe);
    drop(probe);
    let opts = LabOptions {
        nodes: args.nodes,
        pods: args.pods,
        subnets: args.subnets,
        from,
        to: args.to,
        ip_family: args.ip_family.into(),
        strict_rp_filter: args.rp_filter == "strict",
        naive: args.naive,
        interval: Duration::from_millis(args.interval_ms.max(1)),
        step: Duration::from_millis(args.step_ms),
        settle: Duration::from_millis(args.settle_ms),
    };
    opts.validate()?;
    if let Some(path) = &args.report {
        check_report_path(path)?;
    }
    let output = if args.json { Output::Json } else { args.output };
    if output == Output::Table {
        eprintln!("{modes_chosen}");
    }

    let keep = args.keep;
    let compare = args.compare;
    let live = output == Output::Table;
    let worker = tokio::task::spawn_blocking(move || {
        let run = |opts: &LabOptions| -> Result<(RunReport, Vec<String>)> {
            let lab = Lab::build(opts)?;
            let progress = Arc::new(Mutex::new(Progress::default()));
            let ticker = live.then(|| spawn_ticker(progress.clone()));
            let result = lab.run(opts, &progress, &cancel);
            if let Some((stop, handle)) = ticker {
                stop.store(true, Ordering::SeqCst);
                let _ = handle.join();
            }
            let report = result?;
            let kept = if keep { lab.keep() } else { Vec::new() };
            Ok((report, kept))
        };
        let (report, mut kept) = run(&opts)?;
        let naive = if compare {
            let (naive, more) = run(&LabOptions {
                naive: true,
                ..opts.clone()
            })?;
            kept.extend(more);
            Some(naive)
        } else {
            None
        };
        Ok::<_, Error>(LabReport {
            modes_chosen,
            run: report,
            naive,
            kept_namespaces: kept,
        })
    });
    let report = worker
        .await
        .map_err(|e| Error::io("lab", std::io::Error::other(e.to_string())))??;
    if let Some(path) = &args.report {
        write_report(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    if output == Output::Json && !report.kept_namespaces.is_empty() {
        // stdout stays one JSON document.
        eprint!("{}", how_to_enter(&report.kept_namespaces));
    }
    output.print(&report, render)
}

/// Before the run: a report that cannot be written would cost the run.
fn check_report_path(path: &Path) -> Result<()> {
    let dir = directory_of(path);
    if path.is_dir() {
        return Err(Error::invalid(
            "--report",
            format!(
                "{} is a directory; name the HTML file to write",
                path.display()
            ),
        ));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(
            "--report",
            format!("{}: no directory {}", path.display(), dir.display()),
        ));
    }
    Ok(())
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Written whole or not at all: a temporary file beside it, renamed.
fn write_report(path: &Path, report: &LabReport) -> Result<()> {
    let dir = directory_of(path);
    let context = || format!("writing the report {}", path.display());
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(context(), e))?;
    file.write_all(crate::lab::html::render(report).as_bytes())
        .map_err(|e| Error::io(context(), e))?;
    // A page to share: readable as any file the user writes (the temporary
    // file is private).
    use std::os::unix::fs::PermissionsExt;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(context(), e))?;
    file.persist(path)
        .map_err(|e| Error::io(context(), e.error))?;
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM set the flag the run polls.
fn cancel_on_signals() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let cancel = Arc::new(AtomicBool::new(false));
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        // Registered here, not in the task: the handler is in place before
        // the first namespace is created.
        let mut signals = signal(kind).map_err(|e| Error::io("installing a signal handler", e))?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if signals.recv().await.is_some() {
                cancel.store(true, Ordering::SeqCst);
            }
        });
    }
    Ok(cancel)
}

fn render(r: &LabReport) -> String {
    let mut out = render_run(&r.run);
    if let Some(naive) = &r.naive {
        out.push('\n');
        out.push_str(&render_run(naive));
        out.push_str(&format!(
            "\nseamless lost {} of {} probes; naive lost {} of {}\n",
            r.run.lost, r.run.sent, naive.lost, naive.sent
        ));
        if let (Some((s4, s6)), Some((n4, n6))) = (r.run.families.dual(), naive.families.dual()) {
            out.push_str(&format!(
                "per family: seamless lost {}/{} (v4/v6) of {}/{}; naive lost {}/{} of {}/{}\n",
                s4.lost, s6.lost, s4.sent, s6.sent, n4.lost, n6.lost, n4.sent, n6.sent
            ));
        }
    }
    if !r.kept_namespaces.is_empty() {
        out.push('\n');
        out.push_str(&how_to_enter(&r.kept_namespaces));
    }
    out
}

fn render_run(run: &RunReport) -> String {
    let dual = run.families.dual().is_some();
    let rows: Vec<Vec<String>> = run
        .phases
        .iter()
        .map(|p| {
            let f = &p.families;
            let mut row = vec![
                p.name.clone(),
                p.generation.to_string(),
                format!("{:.1}s", p.duration_ms as f64 / 1000.0),
            ];
            match f.dual() {
                Some((v4, v6)) => row.extend([
                    format!("{}/{}", v4.sent, v6.sent),
                    format!("{}/{}", v4.lost, v6.lost),
                    df_cells(v4, v6),
                ]),
                None => row.extend([
                    p.sent.to_string(),
                    p.lost.to_string(),
                    p.mtu_check
                        .as_ref()
                        .map_or("-".into(), |m| format!("{} {}/{}", m.mtu, m.ok, m.total)),
                ]),
            }
            row
        })
        .collect();
    // One family alone reads like the IPv4 table; IPv6 alone names itself.
    let header: &[&str] = match (dual, run.families.ipv4.is_some()) {
        (true, _) => &[
            "PHASE",
            "GEN",
            "TIME",
            "SENT v4/v6",
            "LOST v4/v6",
            "DF AT POD MTU v4/v6",
        ],
        (false, true) => &["PHASE", "GEN", "TIME", "SENT", "LOST", "DF AT POD MTU"],
        (false, false) => &[
            "PHASE",
            "GEN",
            "TIME",
            "SENT v6",
            "LOST v6",
            "DF AT POD MTU v6",
        ],
    };
    let total = match run.families.dual() {
        Some((v4, v6)) => format!(
            "total: {} probes sent ({}/{} v4/v6), {} lost ({}/{})\n",
            run.sent, v4.sent, v6.sent, run.lost, v4.lost, v6.lost
        ),
        None => format!("total: {} probes sent, {} lost\n", run.sent, run.lost),
    };
    let family = match run.ip_family {
        "ipv4" => String::new(),
        other => format!(", {other}"),
    };
    format!(
        "{} rollout {} -> {} on {} nodes ({} subnet{}{}):\n{}{total}",
        run.rollout,
        run.from,
        run.to,
        run.nodes,
        run.subnets,
        if run.subnets == 1 { "" } else { "s" },
        family,
        table(header, &rows),
    )
}

/// `1430 12/12 12/12`: the pod MTU, then ok/total in each family.
fn df_cells(v4: &FamilyReport, v6: &FamilyReport) -> String {
    let counts = |m: &Option<MtuCheck>| m.map_or("-".into(), |m| format!("{}/{}", m.ok, m.total));
    match v4.mtu_check.or(v6.mtu_check) {
        Some(m) => format!(
            "{} {} {}",
            m.mtu,
            counts(&v4.mtu_check),
            counts(&v6.mtu_check)
        ),
        None => "-".into(),
    }
}

fn how_to_enter(kept: &[String]) -> String {
    let node = kept
        .iter()
        .find(|n| n.ends_with("-n1"))
        .map_or("NAMESPACE", String::as_str);
    let all = kept.join(" ");
    format!(
        "kept namespaces: {all}\n\
         enter a node:   ip netns exec {node} bash\n\
         inspect it:     ip netns exec {node} podroute status\n\
         remove them:    for ns in {all}; do ip netns del $ns; done\n"
    )
}

/// One lab per host: a second one would collide on nothing but CPU, yet its
/// timings would be noise. The lock dies with the process.
fn take_lock() -> Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| Error::io(format!("opening {LOCK_FILE}"), e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        Error::invalid(
            "lab",
            format!("another podroute lab is running (holds {LOCK_FILE}); wait for it or stop it"),
        )
    })
}

/// ipip where the kernel has it; say which was chosen and why.
fn choose_from(asked: Option<Mode>, probe: &Netns) -> (Mode, String) {
    if let Some(mode) = asked {
        return (mode, format!("from {mode}: as asked"));
    }
    let has_ipip = probe.ip(&["link", "show", "tunl0"]).is_ok()
        || probe.ip(&["link", "add", "tunl0", "type", "ipip"]).is_ok();
    if has_ipip {
        (Mode::Ipip, "from ipip: this kernel has ipip".into())
    } else {
        (
            Mode::Vxlan,
            "from vxlan: this kernel has no ipip module (ipip runs in netns-tests/vm)".into(),
        )
    }
}

fn spawn_ticker(progress: Arc<Mutex<Progress>>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    let tty = std::io::stderr().is_terminal();
    let handle = std::thread::spawn(move || {
        let mut last_phase = String::new();
        while !done.load(Ordering::SeqCst) {
            let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
            let probes =
                p.traffic
                    .as_ref()
                    .map_or("sent 0 lost 0".into(), |live| match p.ip_family {
                        IpFamily::Dual => format!(
                            "sent {}/{} lost {}/{} (v4/v6)",
                            live.sent_of(0),
                            live.sent_of(1),
                            live.lost_of(0),
                            live.lost_of(1)
                        ),
                        IpFamily::V6 => format!("sent {} lost {} (v6)", live.sent(), live.lost()),
                        IpFamily::V4 => format!("sent {} lost {}", live.sent(), live.lost()),
                    });
            let line = format!(
                "{} | phase {:<16} | nodes {}/{} | probes {probes}",
                p.rollout, p.phase, p.applied, p.total
            );
            let mut err = std::io::stderr();
            if tty {
                let _ = write!(err, "\r\x1b[K{line}");
            } else if p.phase != last_phase {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
            last_phase = p.phase;
            std::thread::sleep(Duration::from_millis(200));
        }
        if tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    });
    (stop, handle)
}
