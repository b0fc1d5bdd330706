//! One lab run: build the cluster, bring every node to mode A, start
//! pod-to-pod traffic, roll the switch to B node by node, phase by phase,
//! and count what was lost in each phase.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::unique_name;
use super::node_worker::NodeWorker;
use super::probe::{udp_roundtrip, EchoServer, OVERHEAD};
use super::report::{MtuCheck, PhaseReport, RunReport};
use super::topology::{Topology, UPLINK};
use super::traffic::{Pod, Traffic};
use crate::coordinator::{self, PhasePlan};
use crate::model::{Cluster, Config, Mode, Node, Plan};
use crate::{Error, Result};

pub const PROBE_PORT: u16 = 7777;

#[derive(Debug, Clone)]
pub struct LabOptions {
    pub nodes: usize,
    pub subnets: usize,
    pub from: Mode,
    pub to: Mode,
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
    pub sent: u64,
    pub received: u64,
}

/// Everything a run owns; dropping it removes it all.
pub struct Lab {
    // Field order is drop order: traffic and servers first, namespaces last.
    workers: Vec<NodeWorker>,
    _echo: Vec<EchoServer>,
    pub topo: Topology,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    pub fn build(opts: &LabOptions) -> Result<Lab> {
        let mut builder = Topology::builder().router(opts.subnets > 1);
        for subnet in 0..opts.subnets {
            let count = opts.nodes / opts.subnets + usize::from(subnet < opts.nodes % opts.subnets);
            builder = builder.nodes(subnet as u8, count);
        }
        let topo = builder.build()?;
        let dir = std::env::temp_dir().join(unique_name("prlab"));
        let nodes: Vec<Node> = topo.model_nodes();
        let cluster = Cluster {
            nodes,
            plan: Plan::steady(opts.from, 1),
            off_subnet: None,
            mtu: None,
            vxlan_vni: None,
            vxlan_port: None,
        };
        let rp = if opts.strict_rp_filter { "1" } else { "2" };
        let mut workers = Vec::new();
        for node in topo.nodes() {
            let netns = topo.node_netns(&node.name)?;
            netns.sysctl("net.ipv4.conf.all.rp_filter", rp)?;
            netns.sysctl(&format!("net.ipv4.conf.{UPLINK}.rp_filter"), rp)?;
            let config = Config {
                mtu_file: dir.join(&node.name).join("mtu"),
                ..Config::default()
            };
            workers.push(NodeWorker::spawn(
                &node.netns,
                &node.name,
                cluster.clone(),
                config,
            )?);
        }
        let echo = topo
            .nodes()
            .iter()
            .flat_map(|n| &n.pods)
            .map(|p| EchoServer::start(&p.netns, PROBE_PORT))
            .collect::<Result<Vec<_>>>()?;
        Ok(Lab {
            workers,
            _echo: echo,
            topo,
            dir,
        })
    }

    /// Leave the namespaces in place; returns their names.
    pub fn keep(mut self) -> Vec<String> {
        self.topo.keep()
    }

    fn pods(&self) -> Vec<Pod> {
        self.topo
            .nodes()
            .iter()
            .flat_map(|n| &n.pods)
            .map(|p| Pod {
                netns: p.netns.clone(),
                ip: p.ip,
            })
            .collect()
    }

    /// Every node to `plan`, one after the other; returns the smallest pod MTU.
    fn roll(
        &self,
        plan: &Plan,
        step: Duration,
        progress: &Mutex<Progress>,
        cancel: &AtomicBool,
    ) -> Result<u32> {
        let mut pod_mtu = u32::MAX;
        for (i, worker) in self.workers.iter().enumerate() {
            if i > 0 {
                pause(step, cancel)?;
            }
            let outcome = worker.apply(plan).map_err(|e| Error::Io {
                context: format!("node {} to generation {}", worker.name(), plan.generation),
                source: std::io::Error::other(e.to_string()),
            })?;
            pod_mtu = pod_mtu.min(outcome.pod_mtu.unwrap_or(u32::MAX));
            tracing::debug!(
                node = worker.name(),
                changes = outcome.changes,
                "applied generation {}",
                plan.generation
            );
            update(progress, |p| p.applied = i + 1);
        }
        Ok(pod_mtu)
    }

    /// A DF packet of exactly `mtu` from every pod to every other pod.
    fn mtu_check(&self, mtu: u32) -> Result<MtuCheck> {
        let pods = self.pods();
        let mut check = MtuCheck {
            mtu,
            ok: 0,
            total: 0,
        };
        for from in &pods {
            for to in pods.iter().filter(|p| p.ip != from.ip) {
                check.total += 1;
                let payload = mtu as usize - OVERHEAD;
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
        Ok(check)
    }

    fn set_pod_mtu(&self, mtu: u32) -> Result<()> {
        for node in self.topo.nodes() {
            self.topo.set_pod_mtu(&node.name, mtu)?;
        }
        Ok(())
    }

    /// The whole run: steady A, the rollout's phases, steady B.
    pub fn run(
        &self,
        opts: &LabOptions,
        progress: &Mutex<Progress>,
        cancel: &AtomicBool,
    ) -> Result<RunReport> {
        let rollout = if opts.naive { "naive" } else { "seamless" };
        update(progress, |p| {
            p.rollout = rollout.into();
            p.phase = format!("start {}", opts.from);
            p.total = self.workers.len();
        });
        let start = Plan::steady(opts.from, 1);
        let mut pod_mtu = self.roll(&start, Duration::ZERO, progress, cancel)?;
        self.set_pod_mtu(pod_mtu)?;

        let steps: Vec<PhasePlan> = if opts.naive {
            coordinator::naive(opts.to, 1)
        } else {
            coordinator::phases(opts.from, opts.to, 1)
        };
        let last_generation = steps.last().map_or(1, |s| s.plan.generation);
        let mut names = vec![(format!("steady {}", opts.from), 1)];
        names.extend(
            steps
                .iter()
                .map(|s| (s.phase.to_string(), s.plan.generation)),
        );
        names.push((format!("steady {}", opts.to), last_generation));

        let phase = Arc::new(AtomicUsize::new(0));
        let traffic = Traffic::start(&self.pods(), PROBE_PORT, opts.interval, phase.clone())?;
        let mut reports = Vec::new();
        for (i, (name, generation)) in names.iter().enumerate() {
            let began = Instant::now();
            phase.store(i, Ordering::SeqCst);
            update(progress, |p| {
                p.phase = name.clone();
                p.applied = 0;
            });
            if let Some(step) = i.checked_sub(1).and_then(|k| steps.get(k)) {
                let mtu = self.roll(&step.plan, opts.step, progress, cancel)?;
                // New pods would get the smaller MTU; existing ones must not
                // send more than the path now carries.
                if mtu < pod_mtu {
                    pod_mtu = mtu;
                    self.set_pod_mtu(pod_mtu)?;
                }
            } else {
                update(progress, |p| p.applied = p.total);
            }
            let settle_until = began.max(Instant::now()) + opts.settle;
            while Instant::now() < settle_until {
                pause(Duration::from_millis(100), cancel)?;
                update(progress, |p| {
                    p.sent = traffic.live().sent.load(Ordering::Relaxed);
                    p.received = traffic.live().received.load(Ordering::Relaxed);
                });
            }
            reports.push(PhaseReport {
                name: name.clone(),
                generation: *generation,
                duration_ms: began.elapsed().as_millis() as u64,
                sent: 0,
                lost: 0,
                mtu_check: Some(self.mtu_check(pod_mtu)?),
            });
        }
        let tallies = traffic.stop()?;
        for (report, tally) in reports.iter_mut().zip(&tallies) {
            report.sent = tally.sent;
            report.lost = tally.lost;
        }
        Ok(RunReport {
            rollout,
            from: opts.from,
            to: opts.to,
            nodes: opts.nodes,
            subnets: opts.subnets,
            sent: reports.iter().map(|r| r.sent).sum(),
            lost: reports.iter().map(|r| r.lost).sum(),
            phases: reports,
        })
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
