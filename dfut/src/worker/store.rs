//! A worker's object store: results it computed, kept until their owner
//! frees them, and waiters for results not yet computed.
//!
//! Pure bookkeeping behind one lock: no I/O, and time only as a parameter.
//! Waiters are oneshot channels, answered when the object is completed or
//! freed. A lookup may arrive before the task that computes the object (the
//! owner sent them on different connections); such a wait expires if the
//! task never comes, so no reader waits forever.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dfut_net::wire::{Failure, FailureKind, ObjectId};
use tokio::sync::oneshot;

use crate::object::Blob;

/// What a waiter receives.
pub(crate) type Settled = Result<Blob, Failure>;

enum Entry {
    /// Its task is here; the result is coming.
    Pending(Vec<oneshot::Sender<Settled>>),
    /// Readers are waiting for an object whose task has not arrived (yet).
    Awaited {
        waiters: Vec<oneshot::Sender<Settled>>,
        since: Instant,
    },
    Ready(Blob),
    Failed(Failure),
}

/// The answer to a lookup.
pub(crate) enum Lookup {
    /// Here it is (or here is why it failed).
    Settled(Settled),
    /// Not computed yet; the receiver gets it when it is.
    Wait(oneshot::Receiver<Settled>),
}

/// Objects held by one worker.
#[derive(Default)]
pub(crate) struct Store {
    entries: HashMap<ObjectId, Entry>,
    bytes: u64,
    /// Tasks cancelled while pending here; each leaves when its task is
    /// skipped or ends, so this holds at most the tasks pending here.
    cancelled: HashSet<ObjectId>,
}

fn freed(id: ObjectId) -> Failure {
    Failure {
        kind: FailureKind::NoSuchObject,
        message: format!("object {id} was freed"),
    }
}

impl Store {
    /// Records that `id` will be computed here. A result already held (a
    /// failure, or a value the owner has lost track of) is dropped: the
    /// owner is computing it again.
    pub fn expect(&mut self, id: ObjectId) {
        let entry = self
            .entries
            .entry(id)
            .or_insert_with(|| Entry::Pending(Vec::new()));
        match entry {
            Entry::Pending(_) => {}
            Entry::Awaited { waiters, .. } => *entry = Entry::Pending(std::mem::take(waiters)),
            Entry::Ready(blob) => {
                self.bytes -= blob.len() as u64;
                *entry = Entry::Pending(Vec::new());
            }
            Entry::Failed(_) => *entry = Entry::Pending(Vec::new()),
        }
    }

    /// Whether a reader waits for `id` (completing it will wake one).
    pub fn has_waiters(&self, id: ObjectId) -> bool {
        matches!(self.entries.get(&id), Some(Entry::Pending(w)) if !w.is_empty())
    }

    /// Stores the outcome of `id` and answers its waiters. Returns whether it
    /// was kept: an object freed before it finished is dropped.
    pub fn complete(&mut self, id: ObjectId, outcome: Settled) -> bool {
        self.cancelled.remove(&id);
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        let Entry::Pending(waiters) = entry else {
            return false;
        };
        for w in waiters.drain(..) {
            let _ = w.send(outcome.clone());
        }
        *entry = match outcome {
            Ok(blob) => {
                self.bytes += blob.len() as u64;
                Entry::Ready(blob)
            }
            Err(f) => Entry::Failed(f),
        };
        true
    }

    /// The object, or a receiver that gets it once computed. An unknown id
    /// is awaited from `now`: its task may not have arrived yet.
    pub fn lookup(&mut self, id: ObjectId, now: Instant) -> Lookup {
        match self.entries.entry(id).or_insert_with(|| Entry::Awaited {
            waiters: Vec::new(),
            since: now,
        }) {
            Entry::Ready(blob) => Lookup::Settled(Ok(blob.clone())),
            Entry::Failed(f) => Lookup::Settled(Err(f.clone())),
            Entry::Pending(waiters) | Entry::Awaited { waiters, .. } => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Lookup::Wait(rx)
            }
        }
    }

    /// Gives up on objects awaited for longer than `patience` whose task
    /// never arrived; their readers learn the object is not here.
    pub fn expire(&mut self, now: Instant, patience: Duration) {
        let stale: Vec<ObjectId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e, Entry::Awaited { since, .. } if now.saturating_duration_since(*since) > patience)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(Entry::Awaited { waiters, .. }) = self.entries.remove(&id) {
                for w in waiters {
                    let _ = w.send(Err(Failure {
                        kind: FailureKind::NoSuchObject,
                        message: format!("object {id} was never computed here"),
                    }));
                }
            }
        }
    }

    /// Drops `id`; its waiters learn it was freed.
    pub fn free(&mut self, id: ObjectId) {
        match self.entries.remove(&id) {
            Some(Entry::Ready(blob)) => self.bytes -= blob.len() as u64,
            Some(Entry::Pending(waiters) | Entry::Awaited { waiters, .. }) => {
                for w in waiters {
                    let _ = w.send(Err(freed(id)));
                }
            }
            _ => {}
        }
    }

    /// Cancels the task computing `id` if it is pending here (see
    /// [`Store::take_cancelled`]), and frees the object either way.
    pub fn cancel(&mut self, id: ObjectId) {
        if matches!(self.entries.get(&id), Some(Entry::Pending(_))) {
            self.cancelled.insert(id);
        }
        self.free(id);
    }

    /// Whether the task computing `id` was cancelled.
    pub fn is_cancelled(&self, id: ObjectId) -> bool {
        self.cancelled.contains(&id)
    }

    /// Whether the task computing `id` was cancelled before it started;
    /// forgets the mark, since the task is then skipped.
    pub fn take_cancelled(&mut self, id: ObjectId) -> bool {
        self.cancelled.remove(&id)
    }

    /// The objects of `owner` held, computed or expected here.
    pub fn ids_of(&self, owner: u64) -> Vec<ObjectId> {
        self.entries
            .keys()
            .filter(|id| id.owner == owner)
            .copied()
            .collect()
    }

    /// Objects held or being computed here (not those only awaited).
    pub fn len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !matches!(e, Entry::Awaited { .. }))
            .count()
    }

    /// Bytes of the objects held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn id(owner: u64, seq: u64) -> ObjectId {
        ObjectId { owner, seq }
    }

    #[test]
    fn waiters_get_the_value_once_completed() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        let Lookup::Wait(mut rx) = s.lookup(id(1, 1), Instant::now()) else {
            panic!("not computed yet")
        };
        assert!(rx.try_recv().is_err());
        assert!(s.complete(id(1, 1), Ok(Arc::new(vec![7; 10]))));
        assert_eq!(rx.try_recv().unwrap().unwrap().as_slice(), &[7; 10]);
        assert_eq!(s.bytes(), 10);
        assert!(matches!(
            s.lookup(id(1, 1), Instant::now()),
            Lookup::Settled(Ok(_))
        ));
    }

    #[test]
    fn freeing_answers_waiters_and_returns_to_zero() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        s.complete(id(1, 1), Ok(Arc::new(vec![0; 5])));
        let Lookup::Wait(mut rx) = s.lookup(id(1, 2), Instant::now()) else {
            panic!("unknown ids are expected")
        };
        s.free(id(1, 2));
        assert_eq!(
            rx.try_recv().unwrap().unwrap_err().kind,
            FailureKind::NoSuchObject
        );
        s.free(id(1, 1));
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn a_wait_for_a_task_that_never_comes_expires() {
        let mut s = Store::default();
        let t0 = Instant::now();
        let Lookup::Wait(mut early) = s.lookup(id(1, 1), t0) else {
            panic!("unknown ids are awaited")
        };
        let Lookup::Wait(mut late) = s.lookup(id(1, 2), t0) else {
            panic!("unknown ids are awaited")
        };
        assert_eq!(s.len(), 0, "awaited objects are not held");
        // The task of (1, 2) arrives: its readers keep waiting for it.
        s.expect(id(1, 2));
        s.expire(t0 + Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(
            early.try_recv().unwrap().unwrap_err().kind,
            FailureKind::NoSuchObject
        );
        assert!(late.try_recv().is_err(), "still pending");
        s.complete(id(1, 2), Ok(Arc::new(vec![1])));
        assert!(late.try_recv().unwrap().is_ok());
    }

    #[test]
    fn a_resubmitted_task_replaces_its_earlier_outcome() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        let lost = Failure {
            kind: FailureKind::WorkerLost,
            message: "argument lost".into(),
        };
        s.complete(id(1, 1), Err(lost));
        s.expect(id(1, 1));
        let Lookup::Wait(mut rx) = s.lookup(id(1, 1), Instant::now()) else {
            panic!("the retry is pending again")
        };
        assert!(s.complete(id(1, 1), Ok(Arc::new(vec![9; 3]))));
        assert_eq!(rx.try_recv().unwrap().unwrap().as_slice(), &[9; 3]);
        s.expect(id(1, 1));
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_result_freed_before_it_finished_is_dropped() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        s.free(id(1, 1));
        assert!(!s.complete(id(1, 1), Ok(Arc::new(vec![1]))));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn an_owner_that_left_loses_its_objects_and_queued_tasks() {
        let mut s = Store::default();
        for seq in 0..3 {
            s.expect(id(1, seq));
            s.expect(id(2, seq));
        }
        let mut gone = s.ids_of(1);
        gone.sort();
        assert_eq!(gone, vec![id(1, 0), id(1, 1), id(1, 2)]);
        for i in gone {
            s.cancel(i);
        }
        assert_eq!(s.len(), 3);
        assert!(s.take_cancelled(id(1, 0)), "its queued task is skipped");
        assert!(!s.take_cancelled(id(2, 0)));
    }
}
