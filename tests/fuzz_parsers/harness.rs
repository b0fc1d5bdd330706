//! The fuzz loop: proptest's `TestRunner` driven in batches until a time
//! budget is spent, with a printed seed, persisted failures, and a wall-time
//! limit per case.

use std::any::Any;
use std::fmt::Debug;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

/// Wall time one case may take before it counts as a hang.
pub const CASE_LIMIT: Duration = Duration::from_secs(2);

/// Cases per runner batch: the deadline is checked between batches.
const BATCH: u32 = 16;

/// Where proptest keeps the seeds of failed cases (replayed first next time).
const SOURCE: &str = "tests/fuzz_parsers.rs";

/// `PODROUTE_FUZZ_SECONDS` per target, 3 s by default.
pub fn budget() -> Duration {
    let seconds = std::env::var("PODROUTE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

/// `PODROUTE_FUZZ_SEED` to replay a run, else a fresh one.
fn seed() -> u64 {
    std::env::var("PODROUTE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        })
}

fn rng_for(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes(),
        );
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

fn config() -> Config {
    Config {
        cases: BATCH,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(SOURCE),
        // A hang shrinks slowly (every step waits CASE_LIMIT): bound it.
        max_shrink_time: 20_000,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// Runs `test` on values of `strategy` until the budget is spent; panics with
/// the shrunk input and the seed on the first failure.
pub fn fuzz<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let seed = seed();
    println!("fuzz {name}: seed {seed} (replay: PODROUTE_FUZZ_SEED={seed}), budget {budget:?}");
    let start = Instant::now();
    let mut rng = rng_for(seed);
    let mut cases = 0u64;
    // At least one batch, so a zero budget still replays the persisted seeds.
    loop {
        let mut runner = TestRunner::new_with_rng(config(), rng);
        match runner.run(&strategy, &test) {
            Ok(()) => cases += u64::from(BATCH),
            Err(TestError::Fail(reason, input)) => panic!(
                "fuzz {name}: {reason}\nminimal input: {}\nseed {seed} \
                 (replay: PODROUTE_FUZZ_SEED={seed} PODROUTE_FUZZ_SECONDS={})",
                shorten(&format!("{input:#?}"), 4000),
                start.elapsed().as_secs() + 1,
            ),
            Err(TestError::Abort(reason)) => panic!("fuzz {name}: aborted: {reason}"),
        }
        rng = runner.rng().clone();
        if start.elapsed() >= budget {
            break;
        }
    }
    println!("fuzz {name}: {cases} cases in {:.1?}", start.elapsed());
}

/// `text`, cut in the middle when it is longer than `max` bytes.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut head = max / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - max / 2;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} ...[{} bytes]... {}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// How the cases of a target came out, printed after the run: a check that
/// the generators reach past the first error.
#[derive(Default)]
pub struct Outcomes(std::cell::RefCell<std::collections::BTreeMap<String, u64>>);

impl Outcomes {
    pub fn note(&self, what: impl Into<String>) {
        *self.0.borrow_mut().entry(what.into()).or_default() += 1;
    }

    pub fn print(&self, name: &str) {
        let counts = self.0.borrow();
        let total: u64 = counts.values().sum();
        let line: Vec<String> = counts
            .iter()
            .map(|(k, n)| format!("{k} {:.1}%", 100.0 * *n as f64 / total.max(1) as f64))
            .collect();
        println!("fuzz {name}: outcomes: {}", line.join(", "));
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs cases on a worker thread so that a panic is caught and a hang is
/// reported after [`CASE_LIMIT`] instead of stalling the run. A worker that
/// hangs is abandoned (it ends with the process) and a new one started.
pub struct Watchdog {
    jobs: Option<mpsc::Sender<Job>>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new()
    }
}

impl Watchdog {
    pub fn new() -> Watchdog {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("fuzz-case".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawning the fuzz worker");
        Watchdog { jobs: Some(tx) }
    }

    /// `f()` within [`CASE_LIMIT`]; a panic or a hang is an error that says
    /// which, with the time taken.
    pub fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(T, Duration), String> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let start = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send((result, start.elapsed()));
        });
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            *self = Watchdog::new();
            return Err("the fuzz worker is gone".into());
        }
        match rx.recv_timeout(CASE_LIMIT) {
            Ok((Ok(value), took)) => Ok((value, took)),
            Ok((Err(payload), took)) => Err(format!(
                "panicked after {took:?}: {}",
                panic_message(payload.as_ref())
            )),
            Err(_) => {
                *self = Watchdog::new();
                Err(format!("no answer within {CASE_LIMIT:?} (hang)"))
            }
        }
    }
}

/// A `TestCaseError` from a message.
pub fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}
