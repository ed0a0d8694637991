//! The driver's shard manager: at most `capacity` shard indexes resident
//! in the cluster, least recently used evicted first.
//!
//! A shard is built by a task ([`super::rag_build_shard`]) and stays on
//! its worker for as long as the manager keeps its handle; evicting drops
//! the handle, and the worker frees it once no search still reads it.
//! Concurrent misses for one shard share one build (the handle is kept
//! from the moment the build is submitted). With capacity 0 nothing is
//! kept: every use builds afresh (the "no reuse" baseline).
//!
//! A demand use never waits for background work: a shard whose prefetch
//! build (low priority) has not finished, whether it waits behind other
//! background work (at the owner or on a worker's background lane) or
//! runs at the background lane's low priority, is built at normal
//! priority for the question instead (a miss, also counted in
//! [`Shards::promoted`]); the background build's handle is dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dfut::DistFuture;

use super::bm25::Shard;

/// Resident shards and their use order.
#[derive(Default)]
struct Lru {
    /// (shard, handle, built as background work), least recently used
    /// first; at most `capacity`.
    resident: VecDeque<(u32, DistFuture<Shard>, bool)>,
}

/// Shard indexes kept in the workers' memory; see the module docs.
pub struct Shards {
    docs: Vec<Vec<(u32, String)>>,
    capacity: Mutex<usize>,
    lru: Mutex<Lru>,
    /// Uses that found their shard resident.
    pub hits: AtomicU64,
    /// Uses that had to build it.
    pub misses: AtomicU64,
    /// Demand uses that found the shard's prefetch build unfinished and
    /// built it at normal priority instead (counted as misses too).
    pub promoted: AtomicU64,
}

impl Shards {
    /// A manager of the shards made of `docs` (each shard's `(chunk id,
    /// text)` documents), keeping at most `capacity` resident.
    pub fn new(docs: Vec<Vec<(u32, String)>>, capacity: usize) -> Self {
        Self {
            docs,
            capacity: Mutex::new(capacity),
            lru: Mutex::new(Lru::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            promoted: AtomicU64::new(0),
        }
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Shard `s`'s index: resident (a hit), or being built now (a miss).
    pub fn get(&self, s: u32) -> DistFuture<Shard> {
        self.use_shard(s, Use::Demand)
    }

    /// Like [`Shards::get`], without counting a hit or a miss (for
    /// warming).
    pub fn warm(&self, s: u32) -> DistFuture<Shard> {
        self.use_shard(s, Use::Warm)
    }

    /// Like [`Shards::warm`], a build as background work
    /// (`Priority::Low`): for prefetching.
    pub fn warm_low(&self, s: u32) -> DistFuture<Shard> {
        self.use_shard(s, Use::Prefetch)
    }

    fn use_shard(&self, s: u32, how: Use) -> DistFuture<Shard> {
        let capacity = *self.capacity.lock().unwrap_or_else(|p| p.into_inner());
        let mut lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        // A build that failed is not kept: it is built again.
        lru.resident
            .retain(|(id, h, _)| *id != s || h.status() != dfut::Status::Failed);
        if let Some(mut entry) = lru
            .resident
            .iter()
            .position(|(id, _, _)| *id == s)
            .and_then(|i| lru.resident.remove(i))
        {
            if how == Use::Demand {
                if entry.2 && entry.1.status() != dfut::Status::Finished {
                    // Demand must not wait for background work.
                    self.promoted.fetch_add(1, Ordering::Relaxed);
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    entry = (s, self.build(s, false), false);
                } else {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                }
            }
            let handle = entry.1.clone();
            lru.resident.push_back(entry);
            return handle;
        }
        if how == Use::Demand {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        let low = how == Use::Prefetch;
        let handle = self.build(s, low);
        if capacity > 0 {
            lru.resident.push_back((s, handle.clone(), low));
            while lru.resident.len() > capacity {
                lru.resident.pop_front();
            }
        }
        handle
    }

    /// Submits the build of shard `s`, as background work if `low`; built
    /// again elsewhere if its worker dies.
    fn build(&self, s: u32, low: bool) -> DistFuture<Shard> {
        let docs = self.docs.get(s as usize).cloned().unwrap_or_default();
        let priority = if low {
            dfut::Priority::Low
        } else {
            dfut::Priority::Normal
        };
        dfut::Options::new()
            .retries(super::RETRIES)
            .priority(priority)
            .call(|| super::rag_build_shard(docs))
    }

    /// Whether shard `s` is resident (or being built).
    pub fn is_resident(&self, s: u32) -> bool {
        let lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        lru.resident.iter().any(|(id, _, _)| *id == s)
    }

    /// The resident shards, least recently used first.
    pub fn resident(&self) -> Vec<u32> {
        let lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        lru.resident.iter().map(|(id, _, _)| *id).collect()
    }

    /// Keeps at most `capacity` from now on (evicting the least recently
    /// used); 0 keeps none.
    pub fn set_capacity(&self, capacity: usize) {
        *self.capacity.lock().unwrap_or_else(|p| p.into_inner()) = capacity;
        let mut lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        while lru.resident.len() > capacity {
            lru.resident.pop_front();
        }
    }

    /// Drops every resident shard and zeroes the counts.
    pub fn clear(&self) {
        self.lru
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resident
            .clear();
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
        self.promoted.store(0, Ordering::Relaxed);
    }
}

/// Why a shard is wanted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// By a question: counted as a hit or a miss.
    Demand,
    /// Warming ahead, at normal priority.
    Warm,
    /// Prefetching, as background work.
    Prefetch,
}
