//! Large arguments an owner pushes ahead of (or just after) their task.
//!
//! An owner sends an argument larger than 64 KiB as a bulk stream
//! (`Message::Bulk`) beside the task that names it (`Arg::Pushed`). The two
//! travel on different QUIC streams, so either may arrive first: this
//! table keeps an argument until its task claims it, or the claim until
//! the argument arrives. Pure bookkeeping, time passed in.
//!
//! Bounded: an entry is at most one argument of a task its owner sent
//! here, and one left unclaimed (its task was cancelled, or its owner
//! died between the two sends) or unanswered is dropped after `patience`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::blob::Blob;

/// An argument's key: its owner and the owner's request number.
pub(crate) type Key = (u64, u64);

enum Slot {
    Arrived(Blob, Instant),
    Claimed(oneshot::Sender<Blob>, Instant),
}

/// Pushed arguments waiting for their task, and tasks waiting for theirs.
#[derive(Default)]
pub(crate) struct Pushed {
    slots: HashMap<Key, Slot>,
}

impl Pushed {
    /// The argument `key` has arrived.
    pub fn arrive(&mut self, key: Key, blob: Blob, now: Instant) {
        match self.slots.remove(&key) {
            Some(Slot::Claimed(tx, _)) => {
                let _ = tx.send(blob);
            }
            _ => {
                self.slots.insert(key, Slot::Arrived(blob, now));
            }
        }
    }

    /// The argument `key`, or a receiver that gets it when it arrives.
    pub fn claim(&mut self, key: Key, now: Instant) -> Result<Blob, oneshot::Receiver<Blob>> {
        match self.slots.remove(&key) {
            Some(Slot::Arrived(blob, _)) => Ok(blob),
            _ => {
                let (tx, rx) = oneshot::channel();
                self.slots.insert(key, Slot::Claimed(tx, now));
                Err(rx)
            }
        }
    }

    /// Drops entries older than `patience`: a claim's receiver then fails.
    pub fn expire(&mut self, now: Instant, patience: Duration) {
        self.slots.retain(|_, slot| {
            let (Slot::Arrived(_, since) | Slot::Claimed(_, since)) = slot;
            now.saturating_duration_since(*since) <= patience
        });
    }

    /// Arguments and claims waiting here.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::blob;

    #[test]
    fn either_order_delivers_once_and_leaves_nothing() {
        let t0 = Instant::now();
        let mut p = Pushed::default();
        p.arrive((1, 1), blob(vec![1, 2]), t0);
        assert_eq!(&p.claim((1, 1), t0).unwrap()[..], &[1, 2]);
        let Err(mut rx) = p.claim((1, 2), t0) else {
            panic!("not arrived yet")
        };
        assert!(rx.try_recv().is_err());
        p.arrive((1, 2), blob(vec![3]), t0);
        assert_eq!(&rx.try_recv().unwrap()[..], &[3]);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn what_is_never_claimed_or_never_arrives_expires() {
        let t0 = Instant::now();
        let mut p = Pushed::default();
        p.arrive((1, 1), blob(vec![1]), t0);
        let Err(mut rx) = p.claim((2, 1), t0) else {
            panic!("not arrived")
        };
        p.expire(t0 + Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(p.len(), 2);
        p.expire(t0 + Duration::from_secs(31), Duration::from_secs(30));
        assert_eq!(p.len(), 0);
        assert!(
            rx.try_recv().is_err(),
            "the claim fails: its sender is gone"
        );
    }
}
