//! One lab run: build the cluster, bring every node to mode A, start
//! pod-to-pod traffic, roll the switch to B node by node, phase by phase,
//! and count what was lost in each phase.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::unique_name;
use super::node_agent::NodeAgent;
use super::probe::{overhead, udp_roundtrip, EchoServer};
use super::report::{Families, MtuCheck, PairReport, PhaseReport, RunReport, Timeline};
use super::topology::{IpFamily, Topology, UPLINK};
use super::traffic::{family_index, FamilyTallies, Live, Pod, Traffic};
use crate::agent::AgentOptions;
use crate::api::{Mode, Phase, Plan};
use crate::coordinator::memory::LocalCoordinator;
use crate::model::{Config, Settings};
use crate::store::{ClusterStore, MemoryStore, Snapshot};
use crate::{Error, Result};

pub const PROBE_PORT: u16 = 7777;

#[derive(Debug, Clone)]
pub struct LabOptions {
    pub nodes: usize,
    pub pods: usize,
    pub subnets: usize,
    pub from: Mode,
    pub to: Mode,
    /// IPv4 only, IPv6 only, or dual-stack nodes and pods probed in both families.
    pub ip_family: IpFamily,
    /// rp_filter the nodes start with: strict (1) or loose (2).
    pub strict_rp_filter: bool,
    /// Roll straight to B (what an uncoordinated DaemonSet roll does).
    pub naive: bool,
    /// Probe interval per pod pair.
    pub interval: Duration,
    /// Pause between two nodes of a rollout, as a rolling update has.
    pub step: Duration,
    /// Traffic time after each phase completed.
    pub settle: Duration,
}

impl LabOptions {
    pub fn validate(&self) -> Result<()> {
        if !(2..=200).contains(&self.nodes) {
            return Err(Error::invalid(
                "nodes",
                format!("{} is not in 2..=200", self.nodes),
            ));
        }
        if !(1..=8).contains(&self.pods) {
            return Err(Error::invalid(
                "pods",
                format!("{} is not in 1..=8", self.pods),
            ));
        }
        if self.subnets == 0 || self.subnets > self.nodes || self.subnets > 50 {
            return Err(Error::invalid(
                "subnets",
                format!(
                    "{} must be 1..=50 and at most the number of nodes",
                    self.subnets
                ),
            ));
        }
        if self.from == self.to {
            return Err(Error::invalid(
                "to",
                format!("already in {}: nothing to switch", self.from),
            ));
        }
        Ok(())
    }
}

/// What the terminal shows while a run goes on.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub rollout: String,
    pub phase: String,
    pub applied: usize,
    pub total: usize,
    /// The families the probes run in.
    pub ip_family: IpFamily,
    /// The probes' live counters, once traffic runs.
    pub traffic: Option<Arc<Live>>,
}

/// Everything a run owns; dropping it removes it all.
pub struct Lab {
    // Field order is drop order: agents and servers first, namespaces last.
    agents: Vec<NodeAgent>,
    _echo: Vec<EchoServer>,
    store: Arc<MemoryStore>,
    pub topo: Topology,
    mtu_files: Vec<PathBuf>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop the agents first: a running one may write its MTU file again.
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long a rollout may take before the lab gives up on it.
const PLAN_TIMEOUT: Duration = Duration::from_secs(120);

impl Lab {
    /// The cluster, with a real agent per node on one memory store. Node
    /// `i` reacts to a change `i * step` after it (its debounce), as the
    /// pods of a rolling DaemonSet would: the same skew for both rollouts.
    pub fn build(opts: &LabOptions) -> Result<Lab> {
        let mut builder = Topology::builder()
            .ip_family(opts.ip_family)
            .router(opts.subnets > 1)
            .pods_per_node(opts.pods);
        for subnet in 0..opts.subnets {
            let count = opts.nodes / opts.subnets + usize::from(subnet < opts.nodes % opts.subnets);
            builder = builder.nodes(subnet as u8, count);
        }
        let topo = builder.build()?;
        let dir = std::env::temp_dir().join(unique_name("prlab"));
        let store = Arc::new(MemoryStore::new(Snapshot {
            nodes: Vec::new(),
            plan: None,
            settings: Settings::default(),
        }));
        for node in topo.model_nodes() {
            store.upsert_node(node);
        }
        let rp = if opts.strict_rp_filter { "1" } else { "2" };
        let mut agents = Vec::new();
        let mut mtu_files = Vec::new();
        for (i, node) in topo.nodes().iter().enumerate() {
            let netns = topo.node_netns(&node.name)?;
            if opts.ip_family.has_v4() {
                netns.sysctl("net.ipv4.conf.all.rp_filter", rp)?;
                netns.sysctl(&format!("net.ipv4.conf.{UPLINK}.rp_filter"), rp)?;
            }
            let config = Config {
                mtu_file: dir.join(&node.name).join("mtu"),
                ..Config::default()
            };
            mtu_files.push(config.mtu_file.clone());
            let mut options = AgentOptions::new(&node.name);
            options.debounce = Duration::from_millis(5) + opts.step * i as u32;
            let shared: Arc<dyn ClusterStore> = store.clone();
            agents.push(NodeAgent::spawn(
                &node.netns,
                options,
                shared,
                config,
                None,
            )?);
        }
        let echo = topo
            .nodes()
            .iter()
            .flat_map(|n| &n.pods)
            .map(|p| EchoServer::start(&p.netns, PROBE_PORT))
            .collect::<Result<Vec<_>>>()?;
        Ok(Lab {
            agents,
            _echo: echo,
            store,
            topo,
            mtu_files,
            dir,
        })
    }

    /// Leave the namespaces in place; returns their names.
    pub fn keep(mut self) -> Vec<String> {
        self.topo.keep()
    }

    /// Every pod once per address it has: the IPv4 ones, then the IPv6 ones.
    fn pods(&self) -> Vec<Pod> {
        let pods = || {
            self.topo.nodes().iter().flat_map(|n| {
                n.pods.iter().enumerate().map(move |(k, p)| {
                    let name = match n.pods.len() {
                        1 => n.name.clone(),
                        _ => format!("{}/pod{k}", n.name),
                    };
                    (name, p)
                })
            })
        };
        let v4 = pods().filter_map(|(name, p)| {
            Some(Pod {
                name,
                netns: p.netns.clone(),
                ip: p.ip4()?.into(),
            })
        });
        let v6 = pods().filter_map(|(name, p)| {
            Some(Pod {
                name,
                netns: p.netns.clone(),
                ip: p.ip6?.into(),
            })
        });
        v4.chain(v6).collect()
    }

    /// Nodes that report `generation` (or a later one: the coordinator may
    /// already have moved on) applied and their network available.
    fn applied(&self, generation: u64) -> usize {
        self.store
            .snapshot()
            .nodes
            .iter()
            .filter(|n| {
                n.report.applied.is_some_and(|a| a.generation >= generation)
                    && n.report.is_available()
            })
            .count()
    }

    /// The smallest pod MTU the agents wrote.
    fn pod_mtu(&self) -> Option<u32> {
        self.mtu_files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
            .min()
    }

    /// A DF packet of exactly `mtu` from every pod to every other pod, in
    /// each family the pods have (IPv6 has no DF bit: its probes are sent
    /// with IPV6_PMTUDISC_DO, so the kernel never fragments them either).
    fn mtu_check(&self, mtu: u32) -> Result<[Option<MtuCheck>; 2]> {
        let pods = self.pods();
        let mut checks = [None, None];
        for from in &pods {
            let family = family_index(from.ip);
            for to in pods
                .iter()
                .filter(|p| p.ip != from.ip && family_index(p.ip) == family)
            {
                let check = checks[family].get_or_insert(MtuCheck {
                    mtu,
                    ok: 0,
                    total: 0,
                });
                check.total += 1;
                let payload = mtu as usize - overhead(to.ip);
                if udp_roundtrip(
                    &from.netns,
                    to.ip,
                    PROBE_PORT,
                    payload,
                    true,
                    Duration::from_secs(1),
                )? {
                    check.ok += 1;
                }
            }
        }
        Ok(checks)
    }

    fn set_pod_mtu(&self, mtu: u32) -> Result<()> {
        for node in self.topo.nodes() {
            self.topo.set_pod_mtu(&node.name, mtu)?;
        }
        Ok(())
    }

    /// Wait until every node holds `generation`, or give up.
    fn wait_applied(
        &self,
        generation: u64,
        progress: &Mutex<Progress>,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let began = Instant::now();
        loop {
            let applied = self.applied(generation);
            update(progress, |p| p.applied = applied);
            if applied == self.agents.len() {
                return Ok(());
            }
            if began.elapsed() > PLAN_TIMEOUT {
                return Err(Error::Unconverged(format!(
                    "{applied} of {} nodes applied generation {generation} in {PLAN_TIMEOUT:?}",
                    self.agents.len()
                )));
            }
            pause(Duration::from_millis(10), cancel)?;
        }
    }

    /// The whole run: steady A, the rollout, steady B.
    pub fn run(
        &self,
        opts: &LabOptions,
        progress: &Mutex<Progress>,
        cancel: &AtomicBool,
    ) -> Result<RunReport> {
        let rollout = if opts.naive { "naive" } else { "seamless" };
        update(progress, |p| {
            p.rollout = rollout.into();
            p.ip_family = opts.ip_family;
            p.phase = format!("start {}", opts.from);
            p.total = self.agents.len();
        });
        let coordinator = LocalCoordinator::spawn(self.store.clone(), opts.from)?;
        let start_generation = loop {
            if let Some(plan) = coordinator.status().plan {
                break plan.generation;
            }
            pause(Duration::from_millis(10), cancel)?;
        };
        self.wait_applied(start_generation, progress, cancel)?;
        let mut pod_mtu = self.pod_mtu().unwrap_or(1500);
        self.set_pod_mtu(pod_mtu)?;

        let phase = Arc::new(AtomicUsize::new(0));
        let pods = self.pods();
        let traffic = Traffic::start(&pods, PROBE_PORT, opts.interval, phase.clone())?;
        let traffic_started = traffic.started();
        let mut reports = Vec::new();
        let mut began = Instant::now();
        let mut current = (format!("steady {}", opts.from), start_generation);
        update(progress, |p| {
            p.phase = current.0.clone();
            p.traffic = Some(traffic.live());
        });
        pause(opts.settle, cancel)?;

        // Phases as they happen: a new phase starts the moment a new plan is
        // published; each gets its DF check once every node holds its plan.
        let target = format!("steady {}", opts.to);
        let total = self.agents.len();
        let mut record =
            |name: &str, generation: u64, began: Instant, pod_mtu: u32| -> Result<()> {
                let duration_ms = began.elapsed().as_millis() as u64;
                let start_ms = began.duration_since(traffic_started).as_millis() as u64;
                let [v4, v6] = self.mtu_check(pod_mtu)?;
                let mut families = Families::of(opts.ip_family);
                for (family, check) in [(&mut families.ipv4, v4), (&mut families.ipv6, v6)] {
                    if let Some(f) = family {
                        f.mtu_check = check;
                    }
                }
                reports.push(PhaseReport {
                    name: name.to_string(),
                    generation,
                    start_ms,
                    duration_ms,
                    sent: 0,
                    lost: 0,
                    mtu_check: families.total().mtu_check,
                    families,
                });
                phase.store(reports.len(), Ordering::SeqCst);
                Ok(())
            };
        record(&current.0, current.1, began, pod_mtu)?;
        began = Instant::now();
        if opts.naive {
            // Uncoordinated: everyone straight to B at once.
            drop(coordinator);
            let plan = Plan::steady(opts.to, current.1 + 1);
            self.store.set_plan(plan.clone());
            update(progress, |p| p.phase = "naive".into());
            self.wait_applied(plan.generation, progress, cancel)?;
            pod_mtu = self.lower_pod_mtu(pod_mtu)?;
            record("naive", plan.generation, began, pod_mtu)?;
            current = (target.clone(), plan.generation);
        } else {
            coordinator.set_mode(opts.to);
            let mut last = (start_generation, Phase::Steady);
            loop {
                let (name, plan, state) = self.next_plan(&coordinator, last, progress, cancel)?;
                last = (plan.generation, state);
                if name == target {
                    current = (name, plan.generation);
                    break;
                }
                update(progress, |p| p.phase = name.clone());
                self.wait_applied(plan.generation, progress, cancel)?;
                pod_mtu = self.lower_pod_mtu(pod_mtu)?;
                // The coordinator may already have moved on: the phase ends here.
                record(&name, plan.generation, began, pod_mtu)?;
                began = Instant::now();
            }
        }
        update(progress, |p| {
            p.phase = target.clone();
            p.applied = total;
        });
        self.wait_applied(current.1, progress, cancel)?;
        pause(opts.settle, cancel)?;
        pod_mtu = self.lower_pod_mtu(pod_mtu)?;
        record(&current.0, current.1, began, pod_mtu)?;
        let measured = traffic.finish()?;
        let mut families = Families::of(opts.ip_family);
        for (report, tally) in reports.iter_mut().zip(&measured.phases) {
            fill(report, tally);
            families.add(&report.families);
        }
        Ok(RunReport {
            rollout,
            from: opts.from,
            to: opts.to,
            nodes: opts.nodes,
            subnets: opts.subnets,
            ip_family: family_name(opts.ip_family),
            sent: reports.iter().map(|r| r.sent).sum(),
            lost: reports.iter().map(|r| r.lost).sum(),
            families,
            phases: reports,
            pairs: measured
                .pairs
                .iter()
                .map(|&((from, to), tally)| PairReport {
                    from: pods[from].name.clone(),
                    to: pods[to].name.clone(),
                    family: if pods[from].ip.is_ipv4() {
                        "ipv4"
                    } else {
                        "ipv6"
                    },
                    sent: tally.sent,
                    lost: tally.lost,
                })
                .collect(),
            timeline: Timeline::of(&measured.timeline),
        })
    }

    /// New pods get the smaller MTU the agents now write; existing ones must
    /// not send more than the path carries either.
    fn lower_pod_mtu(&self, current: u32) -> Result<u32> {
        match self.pod_mtu() {
            Some(mtu) if mtu < current => {
                self.set_pod_mtu(mtu)?;
                Ok(mtu)
            }
            _ => Ok(current),
        }
    }

    /// Wait for the coordinator to move past `last` (generation, phase);
    /// returns the phase's name, its plan and its state.
    fn next_plan(
        &self,
        coordinator: &LocalCoordinator,
        last: (u64, Phase),
        progress: &Mutex<Progress>,
        cancel: &AtomicBool,
    ) -> Result<(String, Plan, Phase)> {
        let began = Instant::now();
        loop {
            let status = coordinator.status();
            if let Some(plan) = &status.plan {
                let phase = status.current_phase();
                if (plan.generation, phase) != last {
                    let name = match phase {
                        Phase::Steady => format!("steady {}", plan.route_mode),
                        phase => phase.to_string().to_lowercase(),
                    };
                    return Ok((name, plan.clone(), phase));
                }
            }
            update(progress, |p| {
                p.phase = format!("coordinator: {}", status.phase_name().to_lowercase())
            });
            if began.elapsed() > PLAN_TIMEOUT {
                return Err(Error::Unconverged(format!(
                    "the coordinator did not move past generation {} ({})",
                    last.0,
                    status.phase_name()
                )));
            }
            pause(Duration::from_millis(5), cancel)?;
        }
    }
}

/// The probes a phase sent and lost, per family and in total.
fn fill(report: &mut PhaseReport, [v4, v6]: &FamilyTallies) {
    let families = &mut report.families;
    for (family, tally) in [(&mut families.ipv4, v4), (&mut families.ipv6, v6)] {
        if let Some(f) = family {
            f.sent = tally.sent;
            f.lost = tally.lost;
        }
    }
    let total = report.families.total();
    report.sent = total.sent;
    report.lost = total.lost;
}

/// `--ip-family`'s spelling of `family`.
pub fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
        IpFamily::Dual => "dual",
    }
}

fn update(progress: &Mutex<Progress>, f: impl FnOnce(&mut Progress)) {
    if let Ok(mut p) = progress.lock() {
        f(&mut p);
    }
}

/// Sleep that gives up as soon as the run is cancelled (Ctrl-C).
fn pause(duration: Duration, cancel: &AtomicBool) -> Result<()> {
    let until = Instant::now() + duration;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}
