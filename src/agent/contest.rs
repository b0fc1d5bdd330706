//! When another controller keeps writing the node's NetworkUnavailable
//! condition, the agent stops fighting: it restores what it wrote a few
//! times, then backs off for a while, longer each time the fight resumes.
//! Pure: the caller passes the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Overwrites within [`WINDOW`] that make a contest.
pub const OVERWRITES: usize = 3;
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5 * 60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

#[derive(Debug)]
pub struct Contest {
    overwrites: VecDeque<Instant>,
    /// The next back-off's length.
    backoff: Duration,
    until: Option<Instant>,
}

impl Default for Contest {
    fn default() -> Self {
        Contest {
            overwrites: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            until: None,
        }
    }
}

impl Contest {
    /// Someone changed what the agent had written. Returns the back-off
    /// this overwrite starts, if it makes a contest.
    pub fn overwritten(&mut self, now: Instant) -> Option<Duration> {
        let quiet_since = self.overwrites.back().copied().max(self.until);
        if quiet_since.is_some_and(|t| now.saturating_duration_since(t) > MAX_BACKOFF) {
            self.backoff = FIRST_BACKOFF; // a quiet hour: forgiven
        }
        self.overwrites.push_back(now);
        while self
            .overwrites
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
        {
            self.overwrites.pop_front();
        }
        if self.overwrites.len() < OVERWRITES || self.holding_off(now) {
            return None;
        }
        let backoff = self.backoff;
        self.until = Some(now + backoff);
        self.backoff = (backoff * 2).min(MAX_BACKOFF);
        Some(backoff)
    }

    /// While true, the agent leaves the condition to the other writer.
    pub fn holding_off(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_overwrites_in_ten_minutes_back_off_longer_each_time() {
        let t0 = Instant::now();
        let mut c = Contest::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(c.overwritten(at(0)), None);
        assert_eq!(c.overwritten(at(10)), None);
        assert!(!c.holding_off(at(11)));
        assert_eq!(c.overwritten(at(20)), Some(FIRST_BACKOFF));
        assert!(c.holding_off(at(21)));
        assert!(c.holding_off(at(20 + 299)));
        assert!(!c.holding_off(at(20 + 300)));
        // The fight resumes right after: twice as long.
        assert_eq!(c.overwritten(at(330)), Some(FIRST_BACKOFF * 2));
        assert_eq!(c.overwritten(at(340)), None, "already backing off");
    }

    #[test]
    fn spread_out_overwrites_are_restored_every_time() {
        let t0 = Instant::now();
        let mut c = Contest::default();
        for i in 0..10u64 {
            let now = t0 + Duration::from_secs(i * 301);
            assert_eq!(c.overwritten(now), None, "overwrite {i}");
            assert!(!c.holding_off(now));
        }
    }

    #[test]
    fn the_back_off_is_capped_and_forgiven_after_a_quiet_hour() {
        let t0 = Instant::now();
        let mut c = Contest::default();
        let mut now = t0;
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            for _ in 0..OVERWRITES {
                now += Duration::from_secs(1);
                if let Some(b) = c.overwritten(now) {
                    last = b;
                    now += b;
                }
            }
        }
        assert_eq!(last, MAX_BACKOFF);
        now += MAX_BACKOFF + Duration::from_secs(1);
        for _ in 0..OVERWRITES - 1 {
            assert_eq!(c.overwritten(now), None);
        }
        assert_eq!(c.overwritten(now), Some(FIRST_BACKOFF));
    }
}
