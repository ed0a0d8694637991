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
    /// Objects being written to disk now, with the value being written
    /// (an object freed and computed again meanwhile has a new one).
    spilling: HashMap<ObjectId, Blob>,
    /// Tasks cancelled while pending here; each leaves when its task is
    /// skipped or ends, so this holds at most the tasks pending here.
    cancelled: HashSet<ObjectId>,
    /// Entries awaited whose task has not arrived (`Entry::Awaited`): at
    /// most [`MAX_AWAITED`], each for at most the worker's patience.
    awaited: usize,
}

/// The most objects awaited at once before their task arrives (a reader
/// racing its producer's task). Past it, a lookup of an unknown id is
/// answered at once: not here. Bounds the entries fetches of made-up ids
/// leave; the fetches themselves are bounded by `exec::MAX_FETCHES`.
pub(crate) const MAX_AWAITED: usize = 16_384;

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
        // Pruned whether or not this store spills: the queue stays bounded
        // by the objects held.
        if self.in_memory.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.in_memory
                .retain(|id| matches!(entries.get(id), Some(Entry::Ready(_))));
        }
        if self.limit.memory == 0 || self.limit.spill_dir.is_none() {
            return out;
        }
        let mut pending: u64 = self
            .spilling
            .iter()
            .filter_map(|(id, was)| match self.entries.get(id) {
                Some(Entry::Ready(b)) if std::sync::Arc::ptr_eq(b, was) => Some(b.len() as u64),
                _ => None,
            })
            .sum();
        // Newer values of objects whose older value is still being written:
        // spilled once that write ends, so back to the queue's front.
        let mut later = Vec::new();
        while self.usage.heap + self.usage.shared - pending.min(self.usage.heap + self.usage.shared)
            > self.limit.memory
        {
            let Some(id) = self.in_memory.pop_front() else {
                break;
            };
            let Some(Entry::Ready(blob)) = self.entries.get(&id) else {
                continue;
            };
            if self.place_of(blob) == Place::Disk {
                continue;
            }
            match self.spilling.get(&id) {
                // Counted in `pending`; back in the queue if it fails.
                Some(was) if std::sync::Arc::ptr_eq(was, blob) => continue,
                Some(_) => {
                    later.push(id);
                    continue;
                }
                None => {}
            }
            pending += blob.len() as u64;
            self.spilling.insert(id, blob.clone());
            out.push((id, blob.clone()));
        }
        for id in later.into_iter().rev() {
            self.in_memory.push_front(id);
        }
        out
    }

    /// Replaces `id`'s in-memory bytes `was` by their spilled copy (or,
    /// with `None`, gives up spilling it: it stays in memory). An object
    /// freed or recomputed meanwhile keeps its new state.
    pub fn spilled(&mut self, id: ObjectId, was: &Blob, copy: Option<Blob>) {
        if self
            .spilling
            .get(&id)
            .is_some_and(|b| std::sync::Arc::ptr_eq(b, was))
        {
            self.spilling.remove(&id);
        }
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
            Entry::Awaited { waiters, .. } => {
                *entry = Entry::Pending(std::mem::take(waiters));
                self.awaited -= 1;
            }
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
        if !self.entries.contains_key(&id) {
            if self.awaited >= MAX_AWAITED {
                return Lookup::Settled(Err(Failure {
                    kind: FailureKind::NoSuchObject,
                    message: format!(
                        "object {id} is not here, and {MAX_AWAITED} objects are awaited already"
                    ),
                    location: String::new(),
                    causes: Vec::new(),
                    backtrace: String::new(),
                }));
            }
            self.awaited += 1;
        }
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
                self.awaited -= 1;
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
        let entry = self.entries.remove(&id);
        if matches!(entry, Some(Entry::Awaited { .. })) {
            self.awaited -= 1;
        }
        match entry {
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
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::TestRng as Rng;
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

    /// What the model holds for one object (waiters by index).
    enum Held {
        Pending(Vec<usize>),
        Awaited { waiters: Vec<usize>, since: Instant },
        Ready(Blob),
        Failed(String),
    }

    /// What a waiter is owed once the store has answered it.
    enum Due {
        Value(Blob),
        Failure(FailureKind, String),
    }

    /// A reader waiting on a lookup: its receiver until answered (or until
    /// it gives up), and what the model says it is owed.
    struct Waiter {
        rx: Option<oneshot::Receiver<Settled>>,
        due: Option<Due>,
    }

    /// Which of the store's promises a run checks beyond its accounting.
    #[derive(Clone, Copy, Default)]
    struct Checks {
        /// The queue of objects in memory stays within twice the objects
        /// held (plus 16), whatever the limit.
        queue_bounded_without_spilling: bool,
        /// Past the limit, every object in memory is being spilled.
        spills_enough: bool,
    }

    /// How often the interesting cases came up, over a whole run.
    #[derive(Default, Debug)]
    struct Seen {
        answered: u32,
        expired: u32,
        skipped: u32,
        spilled: u32,
        spill_given_up: u32,
        spill_outdated: u32,
        refused: u32,
    }

    const OWNERS: u64 = 3;
    const SEQS: u64 = 6;
    const PATIENCE: Duration = Duration::from_millis(100);

    /// A store and a model of what it should hold, with the tasks, readers
    /// and spills in progress around it.
    struct Harness {
        s: Store,
        model: BTreeMap<ObjectId, Held>,
        waiters: Vec<Waiter>,
        /// Tasks that arrived and have not ended: (object, started).
        tasks: Vec<(ObjectId, bool)>,
        /// Objects whose task the model has marked cancelled.
        marks: BTreeSet<ObjectId>,
        /// Spill work handed out and not yet given back.
        spilling: Vec<(ObjectId, Blob)>,
        files: u64,
        checks: Checks,
        seen: Seen,
        at: String,
    }

    impl Harness {
        fn place(&self, b: &Blob) -> Place {
            match (b.file(), &self.s.limit.spill_dir) {
                (None, _) => Place::Heap,
                (Some(f), Some(d)) if f.starts_with(d) => Place::Disk,
                (Some(_), _) => Place::Shared,
            }
        }

        /// A blob mapped from a new file in `dir`, removed with it.
        fn file_blob(&mut self, dir: PathBuf, bytes: &[u8]) -> Blob {
            self.files += 1;
            let path = dir.join(format!("f{}", self.files));
            std::fs::write(&path, bytes).unwrap();
            std::sync::Arc::new(crate::blob::Bytes::mapped(path, true).unwrap())
        }

        fn answer(&mut self, waiters: Vec<usize>, due: impl Fn() -> Due) {
            for i in waiters {
                if self.waiters[i].rx.is_some() {
                    assert!(self.waiters[i].due.is_none(), "{}: answered twice", self.at);
                    self.waiters[i].due = Some(due());
                }
            }
        }

        /// Bytes and objects in each place, from the model.
        fn usage(&self) -> Usage {
            let mut u = Usage::default();
            for held in self.model.values() {
                if let Held::Ready(b) = held {
                    let len = b.len() as u64;
                    match self.place(b) {
                        Place::Heap => u.heap += len,
                        Place::Shared => u.shared += len,
                        Place::Disk => {
                            u.disk += len;
                            u.disk_objects += 1;
                        }
                    }
                }
            }
            u
        }

        fn expect(&mut self, id: ObjectId) {
            self.s.expect(id);
            let held = match self.model.remove(&id) {
                Some(Held::Pending(w) | Held::Awaited { waiters: w, .. }) => Held::Pending(w),
                _ => Held::Pending(Vec::new()),
            };
            self.model.insert(id, held);
            self.tasks.push((id, false));
        }

        /// Ends a task of `id` with `outcome`, as `exec::finish` does:
        /// complete, then take the spill work that makes.
        fn complete(&mut self, id: ObjectId, outcome: Settled) {
            let want = matches!(self.model.get(&id), Some(Held::Pending(_)));
            let held = match &outcome {
                Ok(b) => Held::Ready(b.clone()),
                Err(f) => Held::Failed(f.message.clone()),
            };
            let kept = self.s.complete(id, outcome);
            assert_eq!(kept, want, "{}: complete {id} kept", self.at);
            self.marks.remove(&id);
            if want && let Some(Held::Pending(w)) = self.model.remove(&id) {
                self.seen.answered += w.len() as u32;
                self.answer(w, || match &held {
                    Held::Ready(b) => Due::Value(b.clone()),
                    Held::Failed(m) => Due::Failure(FailureKind::Other, m.clone()),
                    _ => unreachable!("a completion is a value or a failure"),
                });
                self.model.insert(id, held);
            }
            self.take_spill();
        }

        fn lookup(&mut self, id: ObjectId, now: Instant) {
            let got = self.s.lookup(id, now);
            let at = &self.at;
            match (got, self.model.get_mut(&id)) {
                (Lookup::Settled(Ok(b)), Some(Held::Ready(m))) => {
                    assert!(
                        std::sync::Arc::ptr_eq(&b, m),
                        "{at}: {id} read another value"
                    );
                }
                (Lookup::Settled(Err(f)), Some(Held::Failed(m))) => {
                    assert_eq!(&f.message, m, "{at}: {id} failed otherwise");
                }
                (Lookup::Wait(rx), Some(Held::Pending(w) | Held::Awaited { waiters: w, .. })) => {
                    w.push(self.waiters.len());
                    self.waiters.push(Waiter {
                        rx: Some(rx),
                        due: None,
                    });
                }
                (Lookup::Wait(rx), None) => {
                    self.model.insert(
                        id,
                        Held::Awaited {
                            waiters: vec![self.waiters.len()],
                            since: now,
                        },
                    );
                    self.waiters.push(Waiter {
                        rx: Some(rx),
                        due: None,
                    });
                }
                (Lookup::Settled(_), _) => panic!("{at}: {id} settled, not in the model"),
                (Lookup::Wait(_), _) => panic!("{at}: {id} awaited though settled"),
            }
        }

        fn free(&mut self, id: ObjectId) {
            self.s.free(id);
            self.forget(id);
        }

        fn cancel(&mut self, id: ObjectId) {
            if matches!(self.model.get(&id), Some(Held::Pending(_))) {
                self.marks.insert(id);
            }
            self.s.cancel(id);
            self.forget(id);
        }

        /// A free, in the model: the object goes, its readers learn so.
        fn forget(&mut self, id: ObjectId) {
            if let Some(Held::Pending(w) | Held::Awaited { waiters: w, .. }) =
                self.model.remove(&id)
            {
                let m = format!("object {id} was freed");
                self.answer(w, || Due::Failure(FailureKind::NoSuchObject, m.clone()));
            }
        }

        fn expire(&mut self, now: Instant) {
            self.s.expire(now, PATIENCE);
            let stale: Vec<ObjectId> = self
                .model
                .iter()
                .filter(|(_, h)| {
                    matches!(h, Held::Awaited { since, .. } if now.saturating_duration_since(*since) > PATIENCE)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                if let Some(Held::Awaited { waiters, .. }) = self.model.remove(&id) {
                    self.seen.expired += 1;
                    let m = format!("object {id} was never computed here");
                    self.answer(waiters, || {
                        Due::Failure(FailureKind::NoSuchObject, m.clone())
                    });
                }
            }
        }

        /// Takes spill work and checks it: only objects held in memory,
        /// none named twice, no more than needed and (with
        /// `spills_enough`) enough to get back under the limit.
        fn take_spill(&mut self) {
            let out = self.s.take_spill_work();
            let at = self.at.clone();
            let limit = self.s.limit.memory;
            let spill_on = limit > 0 && self.s.limit.spill_dir.is_some();
            assert!(
                spill_on || out.is_empty(),
                "{at}: spills without a limit or a directory"
            );
            for (k, (id, b)) in out.iter().enumerate() {
                assert!(
                    !out[..k].iter().any(|(i, _)| i == id)
                        && !self.spilling.iter().any(|(i, _)| i == id),
                    "{at}: {id} named twice"
                );
                match self.model.get(id) {
                    Some(Held::Ready(m)) if std::sync::Arc::ptr_eq(m, b) => {}
                    _ => panic!("{at}: named {id}, not held"),
                }
                assert_ne!(
                    self.place(b),
                    Place::Disk,
                    "{at}: named {id}, already on disk"
                );
            }
            let last = out.last().map(|(_, b)| b.len() as u64);
            self.spilling.extend(out);
            if spill_on || self.checks.queue_bounded_without_spilling {
                assert!(
                    self.s.in_memory.len() <= 2 * self.s.entries.len() + 16,
                    "{at}: the spill queue holds {} ids for {} objects",
                    self.s.in_memory.len(),
                    self.s.entries.len()
                );
            }
            if !spill_on {
                return;
            }
            let u = self.usage();
            let memory = u.heap + u.shared;
            // Bytes whose spilling is under way (of the value still held).
            let pending: u64 = self
                .spilling
                .iter()
                .filter(|(id, b)| {
                    matches!(self.model.get(id), Some(Held::Ready(m)) if std::sync::Arc::ptr_eq(m, b))
                })
                .map(|(_, b)| b.len() as u64)
                .sum();
            if let Some(last) = last {
                assert!(
                    memory - (pending - last) > limit,
                    "{at}: spilled more than needed"
                );
            }
            if self.checks.spills_enough && memory - pending > limit {
                for (id, held) in &self.model {
                    if let Held::Ready(b) = held
                        && self.place(b) != Place::Disk
                    {
                        let stale = self.spilling.iter().any(|(i, _)| i == id);
                        assert!(
                            self.spilling
                                .iter()
                                .any(|(i, w)| i == id && std::sync::Arc::ptr_eq(w, b)),
                            "{at}: {} bytes in memory past the limit of {limit}, \
                             yet {id} ({} bytes) is not being spilled{}",
                            memory - pending,
                            b.len(),
                            if stale {
                                " (an earlier value of it is)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }

        /// Gives back spill work `k`: written (a copy on disk) or not.
        fn spilled(&mut self, k: usize, write: bool) {
            let (id, was) = self.spilling.swap_remove(k);
            let copy = match (&self.s.limit.spill_dir, write) {
                (Some(dir), true) => Some(self.file_blob(dir.clone(), &was[..])),
                _ => None,
            };
            match self.model.get_mut(&id) {
                Some(Held::Ready(b)) if std::sync::Arc::ptr_eq(b, &was) => match &copy {
                    Some(c) => {
                        *b = c.clone();
                        self.seen.spilled += 1;
                    }
                    None => self.seen.spill_given_up += 1,
                },
                _ => self.seen.spill_outdated += 1,
            }
            self.s.spilled(id, &was, copy);
        }

        /// Every invariant, after an operation.
        fn check(&mut self, largest: usize, admit: u64) {
            let at = self.at.clone();
            let u = self.usage();
            assert_eq!(self.s.usage(), u, "{at}: usage");
            assert_eq!(self.s.bytes(), u.heap + u.shared + u.disk, "{at}: bytes");
            let held = self
                .model
                .values()
                .filter(|h| !matches!(h, Held::Awaited { .. }))
                .count();
            assert_eq!(self.s.len(), held, "{at}: objects");
            for owner in 1..=OWNERS {
                let mut ids = self.s.ids_of(owner);
                ids.sort();
                let want: Vec<ObjectId> = self
                    .model
                    .keys()
                    .filter(|i| i.owner == owner)
                    .copied()
                    .collect();
                assert_eq!(ids, want, "{at}: objects of owner {owner}");
                for seq in 0..SEQS {
                    let i = id(owner, seq);
                    assert_eq!(
                        self.s.is_cancelled(i),
                        self.marks.contains(&i),
                        "{at}: cancelled {i}"
                    );
                    let waited =
                        matches!(self.model.get(&i), Some(Held::Pending(w)) if !w.is_empty());
                    assert_eq!(self.s.has_waiters(i), waited, "{at}: waiters of {i}");
                }
            }
            for m in &self.marks {
                assert!(
                    self.tasks.iter().any(|(i, _)| i == m),
                    "{at}: {m} marked cancelled with no task left"
                );
            }
            let mut spilling: Vec<ObjectId> = self.spilling.iter().map(|(i, _)| *i).collect();
            spilling.sort();
            let mut theirs: Vec<ObjectId> = self.s.spilling.keys().copied().collect();
            theirs.sort();
            assert_eq!(theirs, spilling, "{at}: being spilled");
            let awaited = (self.s.entries.values())
                .filter(|e| matches!(e, Entry::Awaited { .. }))
                .count();
            assert_eq!(self.s.awaited, awaited, "{at}: awaited count");
            let limit = &self.s.limit;
            assert_eq!(
                self.s.admits(admit),
                limit.memory == 0
                    || limit.spill_dir.is_some()
                    || u.heap + u.shared + admit <= limit.memory,
                "{at}: admits {admit}"
            );
            self.seen.refused += u32::from(!self.s.admits(admit));
            // The largest objects: as many as asked, largest first, and
            // none left out larger than one listed.
            let listed = self.s.largest(largest);
            assert_eq!(listed.len(), largest.min(self.model.len()), "{at}: listed");
            assert!(
                listed.windows(2).all(|w| w[0].1 >= w[1].1),
                "{at}: largest first"
            );
            let size = |h: &Held| match h {
                Held::Ready(b) => b.len() as u64,
                _ => 0,
            };
            for (i, bytes, state) in &listed {
                let h = &self.model[i];
                assert_eq!(*bytes, size(h), "{at}: size of {i}");
                let want = match h {
                    Held::Ready(b) => match self.place(b) {
                        Place::Heap => ObjectState::Heap,
                        Place::Shared => ObjectState::Shared,
                        Place::Disk => ObjectState::Spilled,
                    },
                    Held::Failed(_) => ObjectState::Failed,
                    _ => ObjectState::Computing,
                };
                assert_eq!(*state, want, "{at}: state of {i}");
            }
            if let Some(smallest) = listed.last().map(|l| l.1) {
                assert!(
                    self.model
                        .iter()
                        .filter(|(i, _)| !listed.iter().any(|l| l.0 == **i))
                        .all(|(_, h)| size(h) <= smallest),
                    "{at}: a larger object left out"
                );
            }
            // Readers get exactly what they are owed, once, when owed.
            for (k, w) in self.waiters.iter_mut().enumerate() {
                let Some(rx) = &mut w.rx else { continue };
                match (rx.try_recv(), w.due.take()) {
                    (Ok(Ok(b)), Some(Due::Value(d))) => {
                        assert!(
                            std::sync::Arc::ptr_eq(&b, &d),
                            "{at}: waiter {k} got another value"
                        );
                    }
                    (Ok(Err(f)), Some(Due::Failure(kind, m))) => {
                        assert_eq!((f.kind, &f.message), (kind, &m), "{at}: waiter {k}");
                    }
                    (Err(oneshot::error::TryRecvError::Empty), None) => continue,
                    (Err(oneshot::error::TryRecvError::Closed), _) => {
                        panic!("{at}: waiter {k} dropped unanswered")
                    }
                    (Ok(_), None) => panic!("{at}: waiter {k} answered, owed nothing"),
                    (Ok(_), Some(_)) => panic!("{at}: waiter {k} got the wrong answer"),
                    (Err(_), Some(_)) => panic!("{at}: waiter {k} owed an answer, got none"),
                }
                w.rx = None;
            }
        }
    }

    /// Runs random operation sequences on stores with each limit
    /// (`(memory, spilling)`), checking every invariant after every
    /// operation, then drains each store and checks it ends empty.
    fn random_store_sequences(
        tag: &str,
        limits: &[(u64, bool)],
        seeds: std::ops::RangeInclusive<u64>,
        checks: Checks,
    ) -> Seen {
        let mut seen = Seen::default();
        for (c, &(memory, spilling)) in limits.iter().enumerate() {
            for seed in seeds.clone() {
                let spill_dir = crate::testing_dir(&format!("{tag}-{c}-{seed}-spill"));
                let shm_dir = crate::testing_dir(&format!("{tag}-{c}-{seed}-shm"));
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15
                    ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
                    ^ (c as u64 + 1).wrapping_mul(0x1000_0000_01b3));
                let mut h = Harness {
                    s: Store::with_limit(Limit {
                        memory,
                        spill_dir: spilling.then(|| spill_dir.clone()),
                    }),
                    model: BTreeMap::new(),
                    waiters: Vec::new(),
                    tasks: Vec::new(),
                    marks: BTreeSet::new(),
                    spilling: Vec::new(),
                    files: 0,
                    checks,
                    seen,
                    at: String::new(),
                };
                let mut now = Instant::now();
                for step in 0..2_000 {
                    h.at = format!("limit {memory} spilling {spilling}, seed {seed}, step {step}");
                    now += Duration::from_millis(rng.below(20));
                    let oid = id(1 + rng.below(OWNERS), rng.below(SEQS));
                    match rng.below(24) {
                        0..=2 => h.expect(oid),
                        3..=5 => {
                            // A queued task starts, unless it was cancelled:
                            // then it is skipped and reported failed.
                            let queued: Vec<usize> =
                                (0..h.tasks.len()).filter(|&k| !h.tasks[k].1).collect();
                            if let Some(&k) =
                                queued.get(rng.below(queued.len().max(1) as u64) as usize)
                            {
                                let tid = h.tasks[k].0;
                                let skip = h.s.take_cancelled(tid);
                                assert_eq!(skip, h.marks.remove(&tid), "{}: skip {tid}", h.at);
                                if skip {
                                    h.seen.skipped += 1;
                                    h.tasks.swap_remove(k);
                                    let f = Failure {
                                        kind: FailureKind::Other,
                                        message: "cancelled before it started".into(),
                                        location: String::new(),
                                        causes: Vec::new(),
                                        backtrace: String::new(),
                                    };
                                    h.complete(tid, Err(f));
                                } else {
                                    h.tasks[k].1 = true;
                                }
                            }
                        }
                        6..=10 => {
                            // A running task ends: a value on the heap or in
                            // shared memory, or a failure.
                            let running: Vec<usize> =
                                (0..h.tasks.len()).filter(|&k| h.tasks[k].1).collect();
                            if let Some(&k) =
                                running.get(rng.below(running.len().max(1) as u64) as usize)
                            {
                                let (tid, _) = h.tasks.swap_remove(k);
                                let len = rng.below(91) as usize;
                                let outcome = match rng.below(4) {
                                    0 | 1 => Ok(blob(vec![step as u8; len])),
                                    2 => {
                                        Ok(h.file_blob(shm_dir.clone(), &vec![step as u8; len + 1]))
                                    }
                                    _ => Err(Failure {
                                        kind: FailureKind::Other,
                                        message: format!("task of {tid} failed at {step}"),
                                        location: String::new(),
                                        causes: Vec::new(),
                                        backtrace: String::new(),
                                    }),
                                };
                                h.complete(tid, outcome);
                            }
                        }
                        11..=12 => h.lookup(oid, now),
                        13 => h.free(oid),
                        14 => h.cancel(oid),
                        15 if rng.below(3) == 0 => {
                            // Its owner left for good: its objects and
                            // tasks go.
                            let owner = oid.owner;
                            for i in h.s.ids_of(owner) {
                                h.cancel(i);
                            }
                        }
                        16 => h.expire(now),
                        17..=20 if !h.spilling.is_empty() => {
                            let k = rng.below(h.spilling.len() as u64) as usize;
                            let write = rng.below(4) > 0;
                            h.spilled(k, write);
                        }
                        21 => h.take_spill(),
                        22 => {
                            // A reader gives up.
                            let k = rng.below(h.waiters.len().max(1) as u64) as usize;
                            if let Some(w) = h.waiters.get_mut(k) {
                                w.rx = None;
                                w.due = None;
                            }
                        }
                        _ => {}
                    }
                    let largest = 1 + rng.below(2 * (OWNERS * SEQS)) as usize;
                    h.check(largest, rng.below(150));
                }
                // Every task ends, every spill is written, and the owners
                // free everything: nothing is left, nobody waits.
                h.at = format!("limit {memory} spilling {spilling}, seed {seed}, draining");
                while let Some((tid, _)) = h.tasks.pop() {
                    h.complete(tid, Ok(blob(vec![1; 50])));
                }
                let during = std::mem::take(&mut h.seen);
                while !h.spilling.is_empty() {
                    h.spilled(0, true);
                    h.take_spill();
                }
                for owner in 1..=OWNERS {
                    for i in h.s.ids_of(owner) {
                        h.free(i);
                    }
                }
                h.check(OWNERS as usize * SEQS as usize, 0);
                assert_eq!((h.s.len(), h.s.bytes()), (0, 0), "{}", h.at);
                assert_eq!(h.s.usage(), Usage::default(), "{}", h.at);
                assert!(
                    h.s.entries.is_empty() && h.s.spilling.is_empty() && h.s.cancelled.is_empty()
                );
                assert!(
                    h.waiters.iter().all(|w| w.rx.is_none()),
                    "{}: every reader was answered",
                    h.at
                );
                seen = during;
                drop(h);
                // The store let go of every value: no file is left.
                for dir in [&spill_dir, &shm_dir] {
                    let left = std::fs::read_dir(dir).unwrap().count();
                    assert_eq!(left, 0, "files left in {}", dir.display());
                    std::fs::remove_dir_all(dir).unwrap();
                }
            }
        }
        seen
    }

    /// Random sequences of what a worker does to its store (tasks arriving,
    /// starting or skipped when cancelled, ending with values on the heap
    /// or in shared memory or with failures; lookups, frees, cancels,
    /// owners leaving, expiries, spill work taken and given back written
    /// or not, readers giving up), under a small memory limit with and
    /// without spilling and without a limit, checked after every operation
    /// against a model of what it holds: byte and object counts per place
    /// equal the model's (nothing counted twice or lost), `len`, `ids_of`,
    /// `largest`, `has_waiters`, `is_cancelled` and `admits` agree with it,
    /// a cancel mark never outlives its tasks, every reader is answered
    /// exactly once, with what it is owed, when it is owed; spill work
    /// names only objects held in memory, never one twice, and no more than
    /// needed, and a store that spills keeps its spill queue bounded. Once
    /// every task ends and everything is freed, every count is back to 0,
    /// no reader waits and no file is left.
    #[test]
    fn random_operation_sequences_keep_the_store_accounting_exact() {
        let seen = random_store_sequences(
            "store-random",
            &[(100, true), (100, false), (0, true), (0, false)],
            1..=3,
            Checks::default(),
        );
        assert!(
            seen.answered > 100
                && seen.expired > 20
                && seen.skipped > 20
                && seen.spilled > 100
                && seen.spill_given_up > 20
                && seen.spill_outdated > 5
                && seen.refused > 100,
            "the sequences reach every case: {seen:?}"
        );
    }

    /// The same sequences past a small limit with spilling on, checking that
    /// enough is always named to spill. Regression: an object freed and
    /// computed again while its old value was still being written was counted
    /// as being spilled and dropped from the queue, and never spilled (seed 21
    /// found it); the store now keeps the value being written and spills the
    /// new one once that write ends.
    #[test]
    fn random_sequences_past_the_limit_always_spill_enough() {
        random_store_sequences(
            "store-random-enough",
            &[(100, true)],
            1..=30,
            Checks {
                spills_enough: true,
                ..Checks::default()
            },
        );
    }

    /// The smallest case of that regression: an object freed and computed
    /// again while its old value is being written is named to spill once the
    /// old write ends, not left past the limit.
    #[test]
    fn an_object_computed_again_while_its_old_value_is_spilled_is_spilled_too() {
        let dir = crate::testing_dir("store-respill");
        let mut s = Store::with_limit(Limit {
            memory: 100,
            spill_dir: Some(dir.clone()),
        });
        for seq in 0..2 {
            s.expect(id(1, seq));
            s.complete(id(1, seq), Ok(blob(vec![0; 60])));
        }
        let out = s.take_spill_work();
        assert_eq!(out.len(), 1, "(1, 0) goes");
        // While its value is being written, (1, 0) is freed and computed
        // again.
        s.free(id(1, 0));
        s.expect(id(1, 0));
        s.complete(id(1, 0), Ok(blob(vec![1; 90])));
        assert_eq!(s.usage().heap, 150);
        // 150 bytes in memory, limit 100, and the only spill under way is
        // of a value already freed: something must go.
        let more = s.take_spill_work();
        drop(out);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            !more.is_empty(),
            "150 bytes in memory past a limit of 100, nothing named to spill"
        );
    }

    /// The same sequences in stores that cannot spill, checking that the spill
    /// queue stays bounded by the objects held. Regression: it grew by one id
    /// per result forever, since only a spilling store pruned it.
    #[test]
    fn random_sequences_keep_the_spill_queue_bounded_without_spilling() {
        random_store_sequences(
            "store-random-queue",
            &[(100, false), (0, true), (0, false)],
            1..=3,
            Checks {
                queue_bounded_without_spilling: true,
                ..Checks::default()
            },
        );
    }

    /// The smallest case of that regression.
    #[test]
    fn without_spilling_the_spill_queue_stays_bounded_by_the_objects_held() {
        let mut s = Store::default();
        for seq in 0..100 {
            s.expect(id(1, seq));
            s.complete(id(1, seq), Ok(blob(vec![0; 10])));
            assert!(s.take_spill_work().is_empty());
            s.free(id(1, seq));
        }
        assert_eq!(s.len(), 0);
        assert!(
            s.in_memory.len() <= 16,
            "{} ids queued for no object held",
            s.in_memory.len()
        );
    }

    #[test]
    fn lookups_of_unknown_ids_past_the_cap_are_answered_at_once() {
        let mut s = Store::default();
        let now = Instant::now();
        let mut waits = Vec::new();
        for seq in 0..MAX_AWAITED as u64 {
            match s.lookup(id(9, seq), now) {
                Lookup::Wait(rx) => waits.push(rx),
                Lookup::Settled(_) => panic!("{seq}: within the cap, awaited"),
            }
        }
        // One more unknown id: not here, at once; a known one still waits.
        assert!(matches!(
            s.lookup(id(9, u64::MAX), now),
            Lookup::Settled(Err(f)) if f.kind == FailureKind::NoSuchObject
        ));
        assert!(matches!(s.lookup(id(9, 0), now), Lookup::Wait(_)));
        // Their task arriving, expiry and frees give the room back.
        s.expect(id(9, 0));
        s.free(id(9, 1));
        s.expire(now + Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(s.awaited, 0);
        assert!(matches!(s.lookup(id(9, u64::MAX), now), Lookup::Wait(_)));
    }
}
