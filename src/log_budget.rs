//! Log lines about what the cloud sends are rate-limited: a provider that
//! floods the log with junk or forged records must not flood the daemon's
//! log (or fill its disk). Each budget allows a few lines per minute, then
//! says how many it left out when the next minute opens.

use std::time::{Duration, Instant};

use crate::locks::{Mutex, lock};

const WINDOW: Duration = Duration::from_secs(60);

pub struct LogBudget {
    what: &'static str,
    per_window: u32,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_window` lines a minute about `what`.
    pub const fn new(what: &'static str, per_window: u32) -> Self {
        Self {
            what,
            per_window,
            state: Mutex::new(Window {
                start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether one more line may be written now.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut w = lock(&self.state);
        if w.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            if w.suppressed > 0 {
                tracing::warn!(
                    suppressed = w.suppressed,
                    "{} more lines about {} were left out of the log",
                    w.suppressed,
                    self.what
                );
            }
            *w = Window {
                start: Some(now),
                used: 0,
                suppressed: 0,
            };
        }
        if w.used < self.per_window {
            w.used += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_a_few_lines_a_minute() {
        let budget = LogBudget::new("records", 3);
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| budget.allow_at(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(lock(&budget.state).suppressed, 997);
        assert!(budget.allow_at(t0 + WINDOW));
        assert_eq!(lock(&budget.state).suppressed, 0);
    }
}
