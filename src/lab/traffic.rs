//! Steady pod-to-pod traffic during a run: every pod probes every other pod
//! at a fixed interval, each probe tagged with the phase it was sent in, so
//! losses are counted per phase once the late echoes had their chance.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::probe::{Prober, HEADER_LEN};
use crate::{Error, Result};

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
}

/// Sent and lost probes of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub lost: u64,
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::default());
        let mut threads = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let targets: Vec<SocketAddrV4> = pods
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| SocketAddrV4::new(p.ip, port))
                .collect();
            let prober = Prober::new(&pod.netns, false)?;
            let (stop, live, phase) = (stop.clone(), live.clone(), phase.clone());
            threads.push(std::thread::spawn(move || {
                send_loop(prober, &targets, interval, &stop, &live, &phase)
            }));
        }
        Ok(Traffic {
            stop,
            live,
            threads,
        })
    }

    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Stop sending, wait `grace` for late echoes, and return the tallies
    /// per phase index.
    pub fn stop(self) -> Result<Vec<Tally>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut total: Vec<Tally> = Vec::new();
        for thread in self.threads {
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

/// Time allowed for the last echoes after the senders stop.
const GRACE: Duration = Duration::from_millis(500);

fn send_loop(
    mut prober: Prober,
    targets: &[SocketAddrV4],
    interval: Duration,
    stop: &AtomicBool,
    live: &Live,
    phase: &AtomicUsize,
) -> Result<Vec<Tally>> {
    let mut phase_of: HashMap<u64, usize> = HashMap::new();
    let mut tallies: Vec<Tally> = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now_phase = phase.load(Ordering::SeqCst);
        for to in targets {
            tally(&mut tallies, now_phase).sent += 1;
            live.sent.fetch_add(1, Ordering::Relaxed);
            match prober.send(*to, HEADER_LEN)? {
                Some(seq) => {
                    phase_of.insert(seq, now_phase);
                }
                None => tally(&mut tallies, now_phase).lost += 1,
            }
        }
        next += interval;
        let before = prober.stats().received;
        prober.recv_until(next, None)?;
        live.received
            .fetch_add(prober.stats().received - before, Ordering::Relaxed);
    }
    let before = prober.stats().received;
    prober.recv_until(Instant::now() + GRACE, None)?;
    live.received
        .fetch_add(prober.stats().received - before, Ordering::Relaxed);
    for seq in prober.pending() {
        if let Some(p) = phase_of.get(&seq) {
            tally(&mut tallies, *p).lost += 1;
        }
    }
    Ok(tallies)
}

fn tally(tallies: &mut Vec<Tally>, phase: usize) -> &mut Tally {
    if tallies.len() <= phase {
        tallies.resize(phase + 1, Tally::default());
    }
    &mut tallies[phase]
}
