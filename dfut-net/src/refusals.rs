//! Logging refused connections without letting a flood of them flood the
//! log: at most one line per second, which says how many were refused
//! since the last one.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One process-wide log budget: a line per [`EVERY`].
const EVERY: Duration = Duration::from_secs(1);

struct Budget {
    last: Option<Instant>,
    /// Refusals not logged since the last line.
    quiet: u64,
}

static BUDGET: Mutex<Budget> = Mutex::new(Budget {
    last: None,
    quiet: 0,
});

/// Logs that a connection from `peer` was refused because of `why`, unless
/// a line was logged less than a second ago (then it is counted, and the
/// next line reports the count).
///
/// ```
/// dfut_net::refusals::refused("127.0.0.1:9".parse().unwrap(), &"wrong credential");
/// ```
pub fn refused(peer: SocketAddr, why: &dyn std::fmt::Display) {
    if let Some(quiet) = take_turn(Instant::now()) {
        if quiet > 0 {
            tracing::warn!(%peer, also_refused = quiet, "refused a connection: {why}");
        } else {
            tracing::warn!(%peer, "refused a connection: {why}");
        }
    }
}

/// Whether a line may be logged at `now`: if so, how many refusals went
/// unlogged before it.
fn take_turn(now: Instant) -> Option<u64> {
    // Nothing panics while holding it: a poisoned lock's data is fine.
    let mut b = BUDGET.lock().unwrap_or_else(|p| p.into_inner());
    match b.last {
        Some(t) if now.saturating_duration_since(t) < EVERY => {
            b.quiet += 1;
            None
        }
        _ => {
            b.last = Some(now);
            Some(std::mem::take(&mut b.quiet))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_line_a_second_with_the_count() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        assert!(take_turn(t0).is_some());
        for i in 1..1000 {
            assert_eq!(take_turn(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(take_turn(t0 + EVERY), Some(999));
        assert_eq!(take_turn(t0 + EVERY * 2), Some(0));
    }
}
