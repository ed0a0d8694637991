//! A worker's object store: results it computed, kept until their owner
//! frees them, and waiters for results not yet computed.
//!
//! Pure bookkeeping behind one lock: no I/O, and time only as a parameter.
//! The store keeps count of where its bytes are (the heap, this host's
//! shared memory, or spilled to disk) and, past its memory limit, names
//! the objects to spill (oldest first); the caller writes them to disk
//! outside the lock and hands the spilled copies back
//! ([`Store::spilled`]).
//! Waiters are oneshot channels, answered when the object is completed or
//! freed. A lookup may arrive before the task that computes the object (the
//! owner sent them on different connections); such a wait expires if the
//! task never comes, so no reader waits forever.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dfut_net::wire::{Failure, FailureKind, ObjectId, ObjectState};
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

/// Where an object's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Heap,
    Shared,
    Disk,
}

/// Bytes and objects in each place, for status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub heap: u64,
    pub shared: u64,
    pub disk: u64,
    pub disk_objects: u64,
}

/// What the store may hold in memory, and where it spills the rest.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limit {
    /// Bytes on the heap and in shared memory together (0: no limit).
    pub memory: u64,
    /// Files under this directory are spilled objects; `None`: no spilling.
    pub spill_dir: Option<PathBuf>,
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
    usage: Usage,
    limit: Limit,
    /// Objects held in memory, oldest first: the spilling order. Ids of
    /// objects since freed or spilled are skipped when met, and the queue
    /// is rebuilt when it holds more than twice the objects (so it is
    /// bounded by the objects held).
    in_memory: VecDeque<ObjectId>,
    /// Objects being written to disk now.
    spilling: HashSet<ObjectId>,
    /// Tasks cancelled while pending here; each leaves when its task is
    /// skipped or ends, so this holds at most the tasks pending here.
    cancelled: HashSet<ObjectId>,
}

fn freed(id: ObjectId) -> Failure {
    Failure {
        kind: FailureKind::NoSuchObject,
        message: format!("object {id} was freed"),
        location: String::new(),
        causes: Vec::new(),
        backtrace: String::new(),
    }
}

impl Store {
    /// A store that keeps at most `limit.memory` bytes in memory.
    pub fn with_limit(limit: Limit) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    fn place_of(&self, blob: &Blob) -> Place {
        match (blob.file(), &self.limit.spill_dir) {
            (None, _) => Place::Heap,
            (Some(f), Some(d)) if f.starts_with(d) => Place::Disk,
            (Some(_), _) => Place::Shared,
        }
    }

    fn count(&mut self, blob: &Blob, sign: i8) {
        let len = blob.len() as u64;
        let place = self.place_of(blob);
        let u = &mut self.usage;
        let (field, objects) = match place {
            Place::Heap => (&mut u.heap, None),
            Place::Shared => (&mut u.shared, None),
            Place::Disk => (&mut u.disk, Some(&mut u.disk_objects)),
        };
        if sign > 0 {
            *field += len;
            if let Some(o) = objects {
                *o += 1;
            }
        } else {
            *field = field.saturating_sub(len);
            if let Some(o) = objects {
                *o = o.saturating_sub(1);
            }
        }
    }

    /// Whether a result of `len` more bytes may be kept: always when the
    /// store can spill, else only within its memory limit.
    pub fn admits(&self, len: u64) -> bool {
        self.limit.memory == 0
            || self.limit.spill_dir.is_some()
            || self.usage.heap + self.usage.shared + len <= self.limit.memory
    }

    /// Objects to write to disk now to get back under the memory limit,
    /// oldest first; each is marked as being spilled until
    /// [`Store::spilled`] is called for it.
    pub fn take_spill_work(&mut self) -> Vec<(ObjectId, Blob)> {
        let mut out = Vec::new();
        if self.limit.memory == 0 || self.limit.spill_dir.is_none() {
            return out;
        }
        let mut pending: u64 = self
            .spilling
            .iter()
            .filter_map(|id| match self.entries.get(id) {
                Some(Entry::Ready(b)) => Some(b.len() as u64),
                _ => None,
            })
            .sum();
        while self.usage.heap + self.usage.shared - pending.min(self.usage.heap + self.usage.shared)
            > self.limit.memory
        {
            let Some(id) = self.in_memory.pop_front() else {
                break;
            };
            if self.spilling.contains(&id) {
                continue;
            }
            if let Some(Entry::Ready(blob)) = self.entries.get(&id)
                && self.place_of(blob) != Place::Disk
            {
                pending += blob.len() as u64;
                self.spilling.insert(id);
                out.push((id, blob.clone()));
            }
        }
        if self.in_memory.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.in_memory
                .retain(|id| matches!(entries.get(id), Some(Entry::Ready(_))));
        }
        out
    }

    /// Replaces `id`'s in-memory bytes `was` by their spilled copy (or,
    /// with `None`, gives up spilling it: it stays in memory). An object
    /// freed or recomputed meanwhile keeps its new state.
    pub fn spilled(&mut self, id: ObjectId, was: &Blob, copy: Option<Blob>) {
        self.spilling.remove(&id);
        let current = match self.entries.get(&id) {
            Some(Entry::Ready(b)) if std::sync::Arc::ptr_eq(b, was) => b.clone(),
            _ => return,
        };
        match copy {
            Some(copy) => {
                self.count(&current, -1);
                self.count(&copy, 1);
                self.entries.insert(id, Entry::Ready(copy));
            }
            None => self.in_memory.push_back(id),
        }
    }

    /// Where the store's bytes are.
    pub fn usage(&self) -> Usage {
        self.usage
    }

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
                let blob = blob.clone();
                *entry = Entry::Pending(Vec::new());
                self.count(&blob, -1);
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
        match outcome {
            Ok(blob) => {
                *entry = Entry::Ready(blob.clone());
                self.count(&blob, 1);
                if self.place_of(&blob) != Place::Disk {
                    self.in_memory.push_back(id);
                }
            }
            Err(f) => *entry = Entry::Failed(f),
        }
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
                        location: String::new(),
                        causes: Vec::new(),
                        backtrace: String::new(),
                    }));
                }
            }
        }
    }

    /// Drops `id`; its waiters learn it was freed.
    pub fn free(&mut self, id: ObjectId) {
        match self.entries.remove(&id) {
            Some(Entry::Ready(blob)) => self.count(&blob, -1),
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

    /// The `limit` largest objects held or computed here, largest first,
    /// with their sizes and states.
    pub fn largest(&self, limit: usize) -> Vec<(ObjectId, u64, ObjectState)> {
        let mut all: Vec<(ObjectId, u64, ObjectState)> = self
            .entries
            .iter()
            .map(|(id, e)| {
                let (bytes, state) = match e {
                    Entry::Ready(blob) => (
                        blob.len() as u64,
                        match self.place_of(blob) {
                            Place::Heap => ObjectState::Heap,
                            Place::Shared => ObjectState::Shared,
                            Place::Disk => ObjectState::Spilled,
                        },
                    ),
                    Entry::Failed(_) => (0, ObjectState::Failed),
                    Entry::Pending(_) | Entry::Awaited { .. } => (0, ObjectState::Computing),
                };
                (*id, bytes, state)
            })
            .collect();
        let by_size = |a: &(ObjectId, u64, ObjectState), b: &(ObjectId, u64, ObjectState)| {
            b.1.cmp(&a.1).then(a.0.seq.cmp(&b.0.seq))
        };
        if all.len() > limit && limit > 0 {
            all.select_nth_unstable_by(limit - 1, by_size);
        }
        all.truncate(limit);
        all.sort_unstable_by(by_size);
        all
    }

    /// Objects held or being computed here (not those only awaited).
    pub fn len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !matches!(e, Entry::Awaited { .. }))
            .count()
    }

    /// Bytes of the objects held, wherever they are.
    pub fn bytes(&self) -> u64 {
        self.usage.heap + self.usage.shared + self.usage.disk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::blob;

    fn id(owner: u64, seq: u64) -> ObjectId {
        ObjectId { owner, seq }
    }

    #[test]
    fn the_largest_objects_are_listed_largest_first() {
        let mut s = Store::default();
        for (seq, len) in [(1, 10), (2, 300), (3, 20), (4, 300)] {
            s.expect(id(1, seq));
            s.complete(id(1, seq), Ok(blob(vec![0; len])));
        }
        s.expect(id(1, 5));
        let listed = s.largest(3);
        assert_eq!(
            listed,
            vec![
                (id(1, 2), 300, ObjectState::Heap),
                (id(1, 4), 300, ObjectState::Heap),
                (id(1, 3), 20, ObjectState::Heap),
            ]
        );
        assert_eq!(s.largest(10).len(), 5);
        assert_eq!(s.largest(10)[4], (id(1, 5), 0, ObjectState::Computing));
    }

    #[test]
    fn waiters_get_the_value_once_completed() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        let Lookup::Wait(mut rx) = s.lookup(id(1, 1), Instant::now()) else {
            panic!("not computed yet")
        };
        assert!(rx.try_recv().is_err());
        assert!(s.complete(id(1, 1), Ok(blob(vec![7; 10]))));
        assert_eq!(rx.try_recv().unwrap().unwrap()[..], [7; 10]);
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
        s.complete(id(1, 1), Ok(blob(vec![0; 5])));
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
        s.complete(id(1, 2), Ok(blob(vec![1])));
        assert!(late.try_recv().unwrap().is_ok());
    }

    #[test]
    fn a_resubmitted_task_replaces_its_earlier_outcome() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        let lost = Failure {
            kind: FailureKind::WorkerLost,
            message: "argument lost".into(),
            location: String::new(),
            causes: Vec::new(),
            backtrace: String::new(),
        };
        s.complete(id(1, 1), Err(lost));
        s.expect(id(1, 1));
        let Lookup::Wait(mut rx) = s.lookup(id(1, 1), Instant::now()) else {
            panic!("the retry is pending again")
        };
        assert!(s.complete(id(1, 1), Ok(blob(vec![9; 3]))));
        assert_eq!(rx.try_recv().unwrap().unwrap()[..], [9; 3]);
        s.expect(id(1, 1));
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_result_freed_before_it_finished_is_dropped() {
        let mut s = Store::default();
        s.expect(id(1, 1));
        s.free(id(1, 1));
        assert!(!s.complete(id(1, 1), Ok(blob(vec![1]))));
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

    #[test]
    fn past_its_limit_the_store_names_the_oldest_to_spill_and_counts_the_copies() {
        let dir = crate::testing_dir("store-spill");
        let mut s = Store::with_limit(Limit {
            memory: 100,
            spill_dir: Some(dir.clone()),
        });
        for seq in 0..3 {
            s.expect(id(1, seq));
            assert!(s.admits(60));
            s.complete(id(1, seq), Ok(blob(vec![seq as u8; 60])));
        }
        // 180 bytes in memory, limit 100: the two oldest go.
        let out = s.take_spill_work();
        let ids: Vec<_> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![id(1, 0), id(1, 1)]);
        assert!(s.take_spill_work().is_empty(), "already being spilled");
        for (i, (oid, was)) in out.into_iter().enumerate() {
            let path = dir.join(format!("o{i}"));
            std::fs::write(&path, &was[..]).unwrap();
            let copy = std::sync::Arc::new(crate::blob::Bytes::mapped(path, true).unwrap());
            s.spilled(oid, &was, Some(copy));
        }
        let u = s.usage();
        assert_eq!((u.heap, u.disk, u.disk_objects), (60, 120, 2));
        assert_eq!(s.bytes(), 180);
        // Read back transparently, from disk.
        let Lookup::Settled(Ok(b)) = s.lookup(id(1, 1), Instant::now()) else {
            panic!("held")
        };
        assert_eq!(&b[..], &[1u8; 60][..]);
        drop(b);
        s.free(id(1, 1));
        assert!(!dir.join("o1").exists(), "freed: its file is gone");
        assert_eq!(s.usage().disk_objects, 1);
    }

    #[test]
    fn without_spilling_a_full_store_refuses_new_results() {
        let s = Store::with_limit(Limit {
            memory: 100,
            spill_dir: None,
        });
        assert!(s.admits(100));
        assert!(!s.admits(101));
    }
}
