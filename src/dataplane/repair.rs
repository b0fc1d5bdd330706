//! Drift repair of the one object a kernel event names, against the plan
//! the last converge verified: no dump, one write. Whatever it cannot
//! settle alone goes to a full pass (`None`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{routes, Dataplane};
use crate::plan::{self, Repair, Step, Touched};
use crate::Result;

/// The same write for a changed object this often within `LOOP_WINDOW`
/// means the kernel keeps disagreeing with the plan's copy of it: stop, do
/// a full pass (the diff is the judge).
const LOOP_WRITES: usize = 3;
const LOOP_WINDOW: Duration = Duration::from_secs(1);

/// Recent repair writes, to stop a loop.
#[derive(Default)]
pub struct Recent(VecDeque<(String, Instant)>);

impl Recent {
    /// Note `write`; true when it was already made `LOOP_WRITES` times.
    fn looping(&mut self, write: String) -> bool {
        let now = Instant::now();
        while self
            .0
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > LOOP_WINDOW)
        {
            self.0.pop_front();
        }
        let seen = self.0.iter().filter(|(w, _)| *w == write).count();
        self.0.push_back((write, now));
        seen >= LOOP_WRITES
    }
}

impl Dataplane {
    /// Put back what `touched` names. `Ok(Some(writes))` when settled alone
    /// (0: an echo of our own write), `Ok(None)` when a full pass must.
    pub async fn repair(&mut self, touched: &Touched) -> Result<Option<usize>> {
        let Some(desired) = &self.last_desired else {
            return Ok(None);
        };
        let fix = plan::repair(desired, touched);
        let write = match &fix {
            Repair::Nothing => return Ok(Some(0)),
            Repair::Restore(route) => format!("route add {route}"),
            Repair::Write(op) => op.to_string(),
        };
        // A deletion is someone's act, however often; a change could be
        // the echo of our own write that the plan's copy disagrees with.
        if !touched.deleted() && self.recent_repairs.looping(write) {
            return Ok(None);
        }
        match fix {
            Repair::Nothing => Ok(Some(0)),
            Repair::Restore(route) => {
                let oif = match route.dev.as_str() {
                    "" => None,
                    dev => Some(self.index(dev)?),
                };
                self.count(1);
                // Someone's route took the key: the full pass says so.
                if !routes::add(&self.handle, &route, oif).await? {
                    return Ok(None);
                }
                tracing::info!(why = %touched, "route add {route}");
                Ok(Some(1))
            }
            Repair::Write(op) => {
                let why = touched.to_string();
                self.run(&Step { op, why }).await?;
                Ok(Some(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_write_a_fourth_time_within_a_second_is_a_loop() {
        let mut recent = Recent::default();
        for _ in 0..LOOP_WRITES {
            assert!(!recent.looping("route replace a".into()));
            assert!(!recent.looping("route replace b".into()));
        }
        assert!(recent.looping("route replace a".into()));
        assert!(!recent.looping("route replace c".into()));
    }
}
