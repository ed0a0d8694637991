//! Pacing for reconnect attempts: 100 ms, doubling, at most 2 s.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const MOST: Duration = Duration::from_secs(2);

/// The wait before the next attempt.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Self(FIRST)
    }

    /// An attempt succeeded: the next failure waits the shortest again.
    pub fn reset(&mut self) {
        self.0 = FIRST;
    }

    /// Waits after a failed attempt; the next wait is twice as long.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.advance()).await;
    }

    /// This wait; doubles the next.
    fn advance(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(MOST);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_most_and_reset() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..7).map(|_| b.advance().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.advance(), FIRST);
    }
}
