//! Steady pod-to-pod traffic during a run: every pod probes every other pod
//! at a fixed interval, each probe tagged with the phase it was sent in, so
//! losses are counted per phase once the late echoes had their chance. In a
//! dual-stack lab each pod sends in both families, each family from its own
//! socket, and every count is kept per family. Each probe is also counted
//! for its pod pair and for the [`BUCKET`] of time it was sent in.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::probe::{Prober, HEADER_LEN};
use crate::{Error, Result};

/// A probe whose echo has not come back this long after it was sent counts
/// as lost; also the time allowed for the last echoes once the senders stop,
/// so the live count and the final tallies agree.
pub const LOST_AFTER: Duration = Duration::from_millis(500);

/// The timeline's resolution: probes are counted per this much time since
/// the traffic started.
pub const BUCKET: Duration = Duration::from_millis(100);

/// The pods that take part: their namespace and one address. A pod with
/// an address in each family is listed once per family; a pod probes the
/// other pods of its address's family.
#[derive(Debug, Clone)]
pub struct Pod {
    /// What reports call it: its node's name (and its index with more pods).
    pub name: String,
    pub netns: String,
    pub ip: IpAddr,
}

/// Index of `ip`'s family in the per-family arrays: 0 IPv4, 1 IPv6.
pub fn family_index(ip: IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

/// Live counters of one family.
#[derive(Debug, Default)]
pub struct LiveFamily {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Probes the kernel refused, plus those still unanswered [`LOST_AFTER`]
    /// after they were sent. An echo that comes later takes its probe out.
    pub lost: AtomicU64,
}

/// Live counters, readable while the traffic runs: per family
/// (see [`family_index`]) and in total.
#[derive(Debug, Default)]
pub struct Live {
    pub families: [LiveFamily; 2],
}

impl Live {
    pub fn sent(&self) -> u64 {
        (0..2).map(|f| self.sent_of(f)).sum()
    }
    pub fn lost(&self) -> u64 {
        (0..2).map(|f| self.lost_of(f)).sum()
    }
    pub fn sent_of(&self, family: usize) -> u64 {
        self.families[family].sent.load(Ordering::Relaxed)
    }
    pub fn lost_of(&self, family: usize) -> u64 {
        self.families[family].lost.load(Ordering::Relaxed)
    }
}

/// Sent and lost probes of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub lost: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, add: Tally) {
        self.sent += add.sent;
        self.lost += add.lost;
    }
}

/// The tallies of one phase by family (see [`family_index`]).
pub type FamilyTallies = [Tally; 2];

/// Everything the traffic counted, once the late echoes had their chance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    /// Per phase index, per family.
    pub phases: Vec<FamilyTallies>,
    /// Per pod pair, by index into the pods the traffic started with.
    pub pairs: Vec<((usize, usize), Tally)>,
    /// Per [`BUCKET`] since the traffic started, per family.
    pub timeline: Vec<FamilyTallies>,
}

/// One sender's counts: per phase, per target (in its target order) and per
/// time bucket.
#[derive(Debug, Default)]
struct SenderTallies {
    phases: Vec<Tally>,
    targets: Vec<Tally>,
    timeline: Vec<Tally>,
}

/// What a probe in flight is counted under when its fate is known.
#[derive(Debug, Clone, Copy)]
struct Sent {
    phase: usize,
    target: usize,
    bucket: usize,
}

impl SenderTallies {
    fn count(&mut self, at: Sent, add: Tally) {
        *tally(&mut self.phases, at.phase) += add;
        *tally(&mut self.targets, at.target) += add;
        *tally(&mut self.timeline, at.bucket) += add;
    }
}

/// A sender thread, with what its counts are of.
struct Thread {
    family: usize,
    from: usize,
    targets: Vec<usize>,
    handle: JoinHandle<Result<SenderTallies>>,
}

/// The sender threads. [`Traffic::stop`] collects their tallies; dropping
/// the value (a failed or cancelled run) stops them without waiting for
/// late echoes, so no thread outlives the run.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    live: Arc<Live>,
    started: Instant,
    threads: Vec<Thread>,
}

impl Traffic {
    /// Start one sender thread per pod and family. `phase` is read at each
    /// send; it indexes the tallies returned by [`Traffic::stop`].
    pub fn start(
        pods: &[Pod],
        port: u16,
        interval: Duration,
        phase: Arc<AtomicUsize>,
    ) -> Result<Traffic> {
        let mut traffic = Traffic {
            stop: Arc::new(AtomicBool::new(false)),
            abandon: Arc::new(AtomicBool::new(false)),
            live: Arc::new(Live::default()),
            started: Instant::now(),
            threads: Vec::new(),
        };
        for (i, pod) in pods.iter().enumerate() {
            let family = family_index(pod.ip);
            let targets: Vec<usize> = pods
                .iter()
                .enumerate()
                .filter(|(j, p)| *j != i && family_index(p.ip) == family)
                .map(|(j, _)| j)
                .collect();
            let addresses: Vec<SocketAddr> = targets
                .iter()
                .map(|&j| SocketAddr::new(pods[j].ip, port))
                .collect();
            // On error the threads started so far stop with `traffic`.
            let prober = Prober::for_family(&pod.netns, pod.ip, false)?;
            let sender = Sender {
                stop: traffic.stop.clone(),
                abandon: traffic.abandon.clone(),
                live: traffic.live.clone(),
                family,
                phase: phase.clone(),
                started: traffic.started,
            };
            let thread = std::thread::Builder::new()
                .name(format!(
                    "probe{}-{}",
                    if family == 0 { 4 } else { 6 },
                    pod.netns
                ))
                .spawn(move || sender.run(prober, &addresses, interval))
                .map_err(|e| Error::io(format!("spawning a probe thread for {}", pod.netns), e))?;
            traffic.threads.push(Thread {
                family,
                from: i,
                targets,
                handle: thread,
            });
        }
        Ok(traffic)
    }

    /// The counters the terminal shows while the traffic runs.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// When the traffic started: the timeline's zero.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stop sending, wait [`LOST_AFTER`] for late echoes, and return the
    /// tallies per phase index, both families added up.
    pub fn stop(self) -> Result<Vec<Tally>> {
        Ok(self
            .stop_per_family()?
            .into_iter()
            .map(|[v4, v6]| Tally {
                sent: v4.sent + v6.sent,
                lost: v4.lost + v6.lost,
            })
            .collect())
    }

    /// [`Traffic::stop`], the tallies kept apart per family.
    pub fn stop_per_family(self) -> Result<Vec<FamilyTallies>> {
        Ok(self.finish()?.phases)
    }

    /// Stop sending, wait [`LOST_AFTER`] for late echoes, and return every
    /// count: per phase, per pod pair and per time bucket.
    pub fn finish(mut self) -> Result<Measured> {
        self.stop.store(true, Ordering::SeqCst);
        let mut measured = Measured::default();
        for thread in std::mem::take(&mut self.threads) {
            let tallies = thread
                .handle
                .join()
                .map_err(|_| Error::io("probe thread", std::io::Error::other("panicked")))??;
            add_per_family(&mut measured.phases, thread.family, &tallies.phases);
            add_per_family(&mut measured.timeline, thread.family, &tallies.timeline);
            for (to, tally) in thread.targets.iter().zip(&tallies.targets) {
                measured.pairs.push(((thread.from, *to), *tally));
            }
        }
        measured.pairs.sort_by_key(|(pair, _)| *pair);
        Ok(measured)
    }
}

fn add_per_family(total: &mut Vec<FamilyTallies>, family: usize, tallies: &[Tally]) {
    if total.len() < tallies.len() {
        total.resize(tallies.len(), FamilyTallies::default());
    }
    for (t, add) in total.iter_mut().zip(tallies) {
        t[family] += *add;
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.abandon.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.handle.join();
        }
    }
}

/// What one sender thread shares with the others and with [`Traffic`].
struct Sender {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    live: Arc<Live>,
    /// The family this sender's probes are counted under.
    family: usize,
    phase: Arc<AtomicUsize>,
    started: Instant,
}

impl Sender {
    fn run(
        self,
        mut prober: Prober,
        targets: &[SocketAddr],
        interval: Duration,
    ) -> Result<SenderTallies> {
        let mut in_flight: HashMap<u64, Sent> = HashMap::new();
        let mut tallies = SenderTallies::default();
        let mut losses = LiveLoss::default();
        let live = &self.live.families[self.family];
        let mut next = Instant::now();
        let sent = Tally { sent: 1, lost: 0 };
        let lost = Tally { sent: 0, lost: 1 };
        while !self.stop.load(Ordering::SeqCst) {
            let phase = self.phase.load(Ordering::SeqCst);
            let bucket = (self.started.elapsed().as_millis() / BUCKET.as_millis()) as usize;
            for (target, to) in targets.iter().enumerate() {
                let at = Sent {
                    phase,
                    target,
                    bucket,
                };
                tallies.count(at, sent);
                live.sent.fetch_add(1, Ordering::Relaxed);
                match prober.send(*to, HEADER_LEN)? {
                    Some(seq) => {
                        in_flight.insert(seq, at);
                        losses.sent(seq);
                    }
                    None => {
                        tallies.count(at, lost);
                        losses.refused += 1;
                    }
                }
            }
            next += interval;
            self.receive_until(&mut prober, next)?;
            losses.update(&prober, live);
        }
        if self.abandon.load(Ordering::SeqCst) {
            return Ok(tallies);
        }
        self.receive_until(&mut prober, Instant::now() + LOST_AFTER)?;
        for seq in prober.pending() {
            if let Some(at) = in_flight.get(&seq) {
                tallies.count(*at, lost);
            }
        }
        losses.finish(&prober, live);
        Ok(tallies)
    }

    fn receive_until(&self, prober: &mut Prober, deadline: Instant) -> Result<()> {
        let before = prober.stats().received;
        prober.recv_until(deadline, None)?;
        self.live.families[self.family]
            .received
            .fetch_add(prober.stats().received - before, Ordering::Relaxed);
        Ok(())
    }
}

/// One sender's share of [`Live::lost`].
#[derive(Default)]
struct LiveLoss {
    /// Probes sent less than [`LOST_AFTER`] ago, oldest first.
    young: VecDeque<(u64, Instant)>,
    /// Older probes still without their echo.
    overdue: Vec<u64>,
    refused: u64,
    published: u64,
}

impl LiveLoss {
    fn sent(&mut self, seq: u64) {
        self.young.push_back((seq, Instant::now()));
    }

    fn update(&mut self, prober: &Prober, live: &LiveFamily) {
        while let Some(&(seq, at)) = self.young.front() {
            if at.elapsed() < LOST_AFTER {
                break;
            }
            self.young.pop_front();
            self.overdue.push(seq);
        }
        self.overdue.retain(|seq| prober.is_pending(*seq));
        self.publish(self.refused + self.overdue.len() as u64, live);
    }

    /// After the last wait: every probe still pending is lost, exactly as
    /// the final tallies count it.
    fn finish(&mut self, prober: &Prober, live: &LiveFamily) {
        self.publish(self.refused + prober.pending().count() as u64, live);
    }

    fn publish(&mut self, lost: u64, live: &LiveFamily) {
        if lost > self.published {
            live.lost
                .fetch_add(lost - self.published, Ordering::Relaxed);
        } else {
            live.lost
                .fetch_sub(self.published - lost, Ordering::Relaxed);
        }
        self.published = lost;
    }
}

fn tally(tallies: &mut Vec<Tally>, index: usize) -> &mut Tally {
    if tallies.len() <= index {
        tallies.resize(index + 1, Tally::default());
    }
    &mut tallies[index]
}
