//! Large buffers kept for reuse: bulk payloads received, and (through
//! dfut) large values encoded.
//!
//! A bulk payload is read into one buffer of its whole length, and a large
//! value is encoded into one. Freshly
//! allocated, every page of it faults in and is zeroed by the kernel
//! before the bytes are copied in: on the 2-core VM the benchmarks run on,
//! zeroing a fresh 256 MiB took from 0.3 s to 2 s, longer than the whole
//! transfer of it. A buffer dropped after use is kept here instead, pages and
//! all, for the next payload of about its size.
//!
//! Bounds: only buffers of at least [`MIN_KEPT`] are kept, at most
//! [`MAX_KEPT_BYTES`] of them in all per process (the oldest go first),
//! and each for at most [`KEEP_FOR`] unused: a thread frees each when it
//! is due, running only while something is kept.
//!
//! A kept buffer is memory already backed, so a peer that announces a
//! large payload and then stalls pins that buffer for as long as its
//! stream stays open (a fresh reservation pins only address space);
//! peers are authenticated members, with at most 16 bulk streams open per
//! connection.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Smallest buffer kept: smaller ones fault in little and are cheap.
pub const MIN_KEPT: usize = 1 << 20;
/// Most bytes of unused buffers one process keeps.
pub const MAX_KEPT_BYTES: usize = 512 << 20;
/// How long an unused buffer is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(5);

/// The process's buffers.
static POOL: Pool = Pool::new(MAX_KEPT_BYTES, KEEP_FOR);

/// An empty buffer with room for at least `len` bytes: a kept one of at
/// most `len + len / 4` (so a long-lived value carries little unused
/// room), or a new reservation (`None` if that fails).
///
/// ```
/// let mut buf = dfut_net::buffers::take(4 << 20).unwrap();
/// assert!(buf.is_empty() && buf.capacity() >= 4 << 20);
/// buf.extend_from_slice(b"bytes");
/// dfut_net::buffers::give_back(buf); // kept for the next `take` of about 4 MiB
/// ```
pub fn take(len: usize) -> Option<Vec<u8>> {
    POOL.take(len)
}

/// Keeps `buf` for a later [`take`] if it holds at least [`MIN_KEPT`]
/// bytes and fits under [`MAX_KEPT_BYTES`] (the oldest kept are freed to
/// make room); otherwise frees it. Its contents are discarded.
pub fn give_back(buf: Vec<u8>) {
    POOL.give_back(buf);
}

/// Buffers given back and not yet taken or freed.
struct Pool {
    state: Mutex<Kept>,
    max_bytes: usize,
    keep_for: Duration,
}

/// Unused buffers, oldest first, with when each was given back.
struct Kept {
    buffers: Vec<(Vec<u8>, Instant)>,
    bytes: usize,
    /// Whether the thread that frees old buffers is running.
    trimming: bool,
}

impl Pool {
    const fn new(max_bytes: usize, keep_for: Duration) -> Self {
        Self {
            state: Mutex::new(Kept {
                buffers: Vec::new(),
                bytes: 0,
                trimming: false,
            }),
            max_bytes,
            keep_for,
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Every change is made whole while the lock is held and nothing
        // in it panics, so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, len: usize) -> Option<Vec<u8>> {
        if len >= MIN_KEPT {
            let mut k = self.kept();
            let best = k
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, (b, _))| (len..=len + len / 4).contains(&b.capacity()))
                .min_by_key(|(_, (b, _))| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let (buf, _) = k.buffers.remove(i);
                k.bytes -= buf.capacity();
                return Some(buf);
            }
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).ok()?;
        Some(buf)
    }

    /// Keeps `buf` if it is large and fits, freeing the oldest to make
    /// room; otherwise frees it.
    fn give_back(&'static self, mut buf: Vec<u8>) {
        let size = buf.capacity();
        if size < MIN_KEPT || size > self.max_bytes {
            return;
        }
        buf.clear();
        let mut freed = Vec::new(); // dropped after the lock is released
        let start_trimmer = {
            let mut k = self.kept();
            while k.bytes + size > self.max_bytes && !k.buffers.is_empty() {
                let (old, _) = k.buffers.remove(0);
                k.bytes -= old.capacity();
                freed.push(old);
            }
            k.bytes += size;
            k.buffers.push((buf, Instant::now()));
            !std::mem::replace(&mut k.trimming, true)
        };
        drop(freed);
        if start_trimmer {
            let started = std::thread::Builder::new()
                .name("dfut-buffers".into())
                .spawn(move || self.trim());
            if started.is_err() {
                // Nothing would free them later: keep nothing.
                let all = {
                    let mut k = self.kept();
                    k.bytes = 0;
                    k.trimming = false;
                    std::mem::take(&mut k.buffers)
                };
                drop(all);
            }
        }
    }

    /// Frees each buffer once it has been unused for `keep_for`, until
    /// none is kept.
    fn trim(&self) {
        let mut wait = self.keep_for;
        loop {
            std::thread::sleep(wait);
            let (old, next) = {
                let mut k = self.kept();
                let now = Instant::now();
                let keep_for = self.keep_for;
                let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut k.buffers)
                    .into_iter()
                    .partition(|(_, since)| now.duration_since(*since) >= keep_for);
                k.buffers = young;
                k.bytes = k.buffers.iter().map(|(b, _)| b.capacity()).sum();
                // The oldest left is due first (they are kept oldest first).
                let next = k.buffers.first().map(|(_, since)| *since + keep_for);
                k.trimming = next.is_some();
                (old, next)
            };
            drop(old);
            let Some(due) = next else { return };
            // Not less than a millisecond, so a clock at rest never spins.
            wait = due
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
        }
    }

    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.kept().bytes
    }
}

/// A received payload whose buffer goes back to the pool when dropped.
pub(crate) struct Reused {
    buf: Option<Vec<u8>>,
    pool: &'static Pool,
}

impl Reused {
    /// Wraps `buf` (from [`take`]) as the shared bytes of a payload.
    pub(crate) fn new(buf: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            buf: Some(buf),
            pool: &POOL,
        })
    }
}

impl AsRef<[u8]> for Reused {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

impl Drop for Reused {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is the failure report

    use super::*;

    fn pool(max_bytes: usize, keep_for: Duration) -> &'static Pool {
        Box::leak(Box::new(Pool::new(max_bytes, keep_for)))
    }

    fn filled(pool: &'static Pool, len: usize) -> Reused {
        let mut buf = pool.take(len).unwrap();
        buf.resize(len, 7);
        Reused {
            buf: Some(buf),
            pool,
        }
    }

    #[test]
    fn a_large_buffer_is_reused_for_a_payload_of_about_its_size() {
        let pool = pool(64 << 20, Duration::from_secs(60));
        let first = filled(pool, 4 << 20);
        let at = first.as_ref().as_ptr();
        drop(first);
        assert_eq!(pool.kept_bytes(), 4 << 20);
        // Much smaller: a fresh buffer; the large one stays kept.
        let small = pool.take(MIN_KEPT).unwrap();
        assert_ne!(small.as_ptr(), at);
        assert_eq!(pool.kept_bytes(), 4 << 20);
        // About the size (within a quarter): the same memory, empty.
        let again = pool.take(7 << 19).unwrap();
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty() && again.capacity() >= 7 << 19);
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn small_buffers_are_not_kept_and_the_total_is_bounded() {
        let pool = pool(10 << 20, Duration::from_secs(60));
        drop(filled(pool, MIN_KEPT / 2));
        assert_eq!(pool.kept_bytes(), 0, "small ones are freed");
        drop(filled(pool, 11 << 20));
        assert_eq!(pool.kept_bytes(), 0, "larger than the bound: freed");
        let a = filled(pool, 4 << 20);
        let b = filled(pool, 4 << 20);
        let c = filled(pool, 4 << 20);
        let c_at = c.as_ref().as_ptr();
        drop((a, b, c));
        // Three of 4 MiB do not fit in 10: the oldest was freed.
        assert_eq!(pool.kept_bytes(), 8 << 20);
        let newest = pool.take(4 << 20).unwrap();
        let other = pool.take(4 << 20).unwrap();
        assert!(newest.as_ptr() == c_at || other.as_ptr() == c_at);
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn unused_buffers_are_freed_after_a_while() {
        let keep_for = Duration::from_millis(100);
        let pool = pool(64 << 20, keep_for);
        drop(filled(pool, 2 << 20));
        assert_eq!(pool.kept_bytes(), 2 << 20);
        let limit = Instant::now() + Duration::from_secs(10);
        while pool.kept_bytes() > 0 {
            assert!(Instant::now() < limit, "never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!pool.kept().trimming, "the trimming thread ended");
        // And starts again for the next one.
        drop(filled(pool, 2 << 20));
        assert!(pool.kept().trimming);
    }
}
