//! Wall-clock times for listings and timelines, from monotonic instants.
//!
//! A process reads the wall clock once, at its first use; every later
//! instant is turned into microseconds since the Unix epoch by adding its
//! monotonic distance from that first reading. Taking instants on hot
//! paths then costs what `Instant::now` costs, and a step of the wall
//! clock (NTP) cannot reorder the events of one process.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

/// The process's first reading: a monotonic instant and the wall clock
/// then, in microseconds since the Unix epoch.
fn origin() -> (Instant, u64) {
    static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        (Instant::now(), wall)
    })
}

/// `at` in microseconds since the Unix epoch, by this process's clock.
pub(crate) fn unix_us(at: Instant) -> u64 {
    let (start, wall) = origin();
    match at.checked_duration_since(start) {
        Some(after) => wall.saturating_add(micros(after)),
        None => wall.saturating_sub(micros(start.duration_since(at))),
    }
}

/// `d` in whole microseconds, saturating.
pub(crate) fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_keep_their_order_and_distance_around_the_first_reading() {
        let before = Instant::now();
        let first = unix_us(Instant::now());
        let after = Instant::now() + Duration::from_millis(5);
        let (b, a) = (unix_us(before), unix_us(after));
        assert!(b <= first && first < a);
        assert!((a - b).abs_diff(5_000) < 1_000, "{}", a - b);
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(first.abs_diff(wall) < 60_000_000, "{first} vs {wall}");
    }
}
