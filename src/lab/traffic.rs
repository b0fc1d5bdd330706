//! Steady pod-to-pod traffic during a run: every pod probes every other pod
//! at a fixed interval, each probe tagged with the phase it was sent in, so
//! losses are counted per phase once the late echoes had their chance.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
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

/// The pods that take part: their namespace and address.
#[derive(Debug, Clone)]
pub struct Pod {
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// Live counters, readable while the traffic runs.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Probes the kernel refused, plus those still unanswered [`LOST_AFTER`]
    /// after they were sent. An echo that comes later takes its probe out.
    pub lost: AtomicU64,
}

impl Live {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// Sent and lost probes of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub lost: u64,
}

/// The sender threads. [`Traffic::stop`] collects their tallies; dropping
/// the value (a failed or cancelled run) stops them without waiting for
/// late echoes, so no thread outlives the run.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    live: Arc<Live>,
    threads: Vec<JoinHandle<Result<Vec<Tally>>>>,
}

impl Traffic {
    /// Start one sender thread per pod. `phase` is read at each send; it
    /// indexes the tallies returned by [`Traffic::stop`].
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
            threads: Vec::new(),
        };
        for (i, pod) in pods.iter().enumerate() {
            let targets: Vec<SocketAddrV4> = pods
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| SocketAddrV4::new(p.ip, port))
                .collect();
            // On error the threads started so far stop with `traffic`.
            let prober = Prober::new(&pod.netns, false)?;
            let sender = Sender {
                stop: traffic.stop.clone(),
                abandon: traffic.abandon.clone(),
                live: traffic.live.clone(),
                phase: phase.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("probe-{}", pod.netns))
                .spawn(move || sender.run(prober, &targets, interval))
                .map_err(|e| Error::io(format!("spawning a probe thread for {}", pod.netns), e))?;
            traffic.threads.push(thread);
        }
        Ok(traffic)
    }

    /// The counters the terminal shows while the traffic runs.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Stop sending, wait [`LOST_AFTER`] for late echoes, and return the
    /// tallies per phase index.
    pub fn stop(mut self) -> Result<Vec<Tally>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut total: Vec<Tally> = Vec::new();
        for thread in std::mem::take(&mut self.threads) {
            let tallies = thread
                .join()
                .map_err(|_| Error::io("probe thread", std::io::Error::other("panicked")))??;
            if total.len() < tallies.len() {
                total.resize(tallies.len(), Tally::default());
            }
            for (t, add) in total.iter_mut().zip(tallies) {
                t.sent += add.sent;
                t.lost += add.lost;
            }
        }
        Ok(total)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.abandon.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What one sender thread shares with the others and with [`Traffic`].
struct Sender {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    live: Arc<Live>,
    phase: Arc<AtomicUsize>,
}

impl Sender {
    fn run(
        self,
        mut prober: Prober,
        targets: &[SocketAddrV4],
        interval: Duration,
    ) -> Result<Vec<Tally>> {
        let mut phase_of: HashMap<u64, usize> = HashMap::new();
        let mut tallies: Vec<Tally> = Vec::new();
        let mut losses = LiveLoss::default();
        let mut next = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let now_phase = self.phase.load(Ordering::SeqCst);
            for to in targets {
                tally(&mut tallies, now_phase).sent += 1;
                self.live.sent.fetch_add(1, Ordering::Relaxed);
                match prober.send(*to, HEADER_LEN)? {
                    Some(seq) => {
                        phase_of.insert(seq, now_phase);
                        losses.sent(seq);
                    }
                    None => {
                        tally(&mut tallies, now_phase).lost += 1;
                        losses.refused += 1;
                    }
                }
            }
            next += interval;
            self.receive_until(&mut prober, next)?;
            losses.update(&prober, &self.live);
        }
        if self.abandon.load(Ordering::SeqCst) {
            return Ok(tallies);
        }
        self.receive_until(&mut prober, Instant::now() + LOST_AFTER)?;
        for seq in prober.pending() {
            if let Some(p) = phase_of.get(&seq) {
                tally(&mut tallies, *p).lost += 1;
            }
        }
        losses.finish(&prober, &self.live);
        Ok(tallies)
    }

    fn receive_until(&self, prober: &mut Prober, deadline: Instant) -> Result<()> {
        let before = prober.stats().received;
        prober.recv_until(deadline, None)?;
        self.live
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

    fn update(&mut self, prober: &Prober, live: &Live) {
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
    fn finish(&mut self, prober: &Prober, live: &Live) {
        self.publish(self.refused + prober.pending().count() as u64, live);
    }

    fn publish(&mut self, lost: u64, live: &Live) {
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

fn tally(tallies: &mut Vec<Tally>, phase: usize) -> &mut Tally {
    if tallies.len() <= phase {
        tallies.resize(phase + 1, Tally::default());
    }
    &mut tallies[phase]
}
