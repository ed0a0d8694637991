//! The driver's shard manager: at most `capacity` shard indexes resident
//! in the cluster, least recently used evicted first.
//!
//! A shard is built by a task ([`super::rag_build_shard`]) and stays on
//! its worker for as long as the manager keeps its handle; evicting drops
//! the handle, and the worker frees it once no search still reads it.
//! Concurrent misses for one shard share one build (the handle is kept
//! from the moment the build is submitted). With capacity 0 nothing is
//! kept: every use builds afresh (the "no reuse" baseline).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dfut::DistFuture;

use super::bm25::Shard;

/// Resident shards and their use order.
#[derive(Default)]
struct Lru {
    /// (shard, handle), least recently used first; at most `capacity`.
    resident: VecDeque<(u32, DistFuture<Shard>)>,
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
        self.use_shard(s, true)
    }

    /// Like [`Shards::get`], without counting a hit or a miss (for
    /// warming).
    pub fn warm(&self, s: u32) -> DistFuture<Shard> {
        self.use_shard(s, false)
    }

    /// Like [`Shards::warm`], a build as background work
    /// (`Priority::Low`): for prefetching.
    pub fn warm_low(&self, s: u32) -> DistFuture<Shard> {
        dfut::Options::new()
            .priority(dfut::Priority::Low)
            .call(|| self.use_shard(s, false))
    }

    fn use_shard(&self, s: u32, count: bool) -> DistFuture<Shard> {
        let capacity = *self.capacity.lock().unwrap_or_else(|p| p.into_inner());
        let mut lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        // A build that failed is not kept: it is built again.
        lru.resident
            .retain(|(id, h)| *id != s || h.status() != dfut::Status::Failed);
        if let Some(entry) = lru
            .resident
            .iter()
            .position(|(id, _)| *id == s)
            .and_then(|i| lru.resident.remove(i))
        {
            let handle = entry.1.clone();
            lru.resident.push_back(entry);
            if count {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            return handle;
        }
        if count {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        let docs = self.docs.get(s as usize).cloned().unwrap_or_default();
        // Built again elsewhere if its worker dies.
        let handle = dfut::Options::new()
            .retries(super::RETRIES)
            .call(|| super::rag_build_shard(docs));
        if capacity > 0 {
            lru.resident.push_back((s, handle.clone()));
            while lru.resident.len() > capacity {
                lru.resident.pop_front();
            }
        }
        handle
    }

    /// Whether shard `s` is resident (or being built).
    pub fn is_resident(&self, s: u32) -> bool {
        let lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        lru.resident.iter().any(|(id, _)| *id == s)
    }

    /// The resident shards, least recently used first.
    pub fn resident(&self) -> Vec<u32> {
        let lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        lru.resident.iter().map(|(id, _)| *id).collect()
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
    }
}
