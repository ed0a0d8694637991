//! Objects fetched over the network once per host, however many processes
//! of the host read them.
//!
//! A process that fetches an object first looks in the host's index, the
//! directory `dfut-fetched` under the shared-memory root: a link named
//! after the object there points at a sealed copy another process of the
//! host fetched, which it maps in place. Otherwise it takes the object's
//! turn, an exclusive `flock` on `<name>.lock` in the index: the process
//! holding it fetches, seals what arrived over the network in its own
//! shared-memory directory and links it into the index; the others wait
//! for the link (or for the turn, should the fetcher fail or die) and map
//! it. Values offered through shared memory by a holder on this host are
//! mapped from the holder's file and not copied again.
//!
//! Bounds: each process keeps the copies it linked for [`KEEP`] after it
//! fetched them (its client checks 40 times a second), and
//! at most [`BUDGET`] bytes of them (the oldest go first); a copy's file lives in the fetcher's own directory, so it
//! goes with the process however it ends, and a reader's mapping outlives
//! it. A wait for another process's fetch ends when that fetch ends, and
//! after [`TURN_PATIENCE`] at the latest (then the reader fetches itself).
//! The index holds at most one link and one lock file per object kept.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dfut_net::wire::ObjectId;

use crate::blob::Blob;
use crate::lock;
use crate::shm::{Region, try_lock};

/// How long a fetched copy stays linked after it was fetched.
const KEEP: Duration = Duration::from_secs(10);
/// Bytes of linked copies one process keeps at most.
const BUDGET: u64 = 1 << 30;
/// How long a reader waits for another process's fetch of an object.
const TURN_PATIENCE: Duration = Duration::from_secs(60);
/// Between looks for another process's copy while waiting: from the
/// first to the last, doubling.
const POLL: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(50));
/// The index directory's name under the shared-memory root.
const INDEX: &str = "dfut-fetched";

/// One copy this process linked into the index.
struct Kept {
    id: ObjectId,
    blob: Blob,
    until: Instant,
}

/// This process's view of its host's index of fetched objects.
pub(crate) struct HostCache {
    index: PathBuf,
    region: Region,
    kept: Mutex<VecDeque<Kept>>,
}

/// What a fetch through the cache found.
pub(crate) enum Found {
    /// Another process of this host fetched it: mapped in place.
    Host(Blob),
    /// This process fetched it (and linked it for the others).
    Fetched(Blob),
}

impl HostCache {
    /// The index under `root` (created if need be), unless it is unusable:
    /// not a directory, or not this user's alone (mode 0700).
    pub(crate) fn open(root: &Path) -> Option<Self> {
        let index = root.join(INDEX);
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&index);
        let meta = std::fs::symlink_metadata(&index).ok()?;
        // SAFETY: `geteuid` has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(index = %index.display(), "not fetching once per host: the index directory is not this user's alone");
            return None;
        }
        let region = Region::create(root).ok()?.ahead_of_time();
        Some(Self {
            index,
            region,
            kept: Mutex::new(VecDeque::new()),
        })
    }

    /// Seals `bytes` in this process's own shared-memory directory (for a
    /// worker of this host to map); the file goes with the blob.
    pub(crate) fn seal(&self, id: ObjectId, bytes: &[u8]) -> std::io::Result<Blob> {
        self.region.seal(id, bytes)
    }

    fn link(&self, id: ObjectId) -> PathBuf {
        self.index.join(format!("{:x}-{:x}", id.owner, id.seq))
    }

    /// The copy of `id` another process of this host linked, mapped.
    fn lookup(&self, id: ObjectId) -> Option<Blob> {
        let target = std::fs::read_link(self.link(id)).ok()?;
        crate::shm::map_offered(&target).ok()
    }

    /// The object `id`: mapped from a copy of this host if one is linked,
    /// else fetched by `fetch` (by this process, or by the one whose turn
    /// it is, waited for) and linked for the others.
    pub(crate) async fn fetch<F>(&self, id: ObjectId, fetch: F) -> crate::Result<Found>
    where
        F: std::future::Future<Output = crate::Result<Blob>>,
    {
        self.expire(Instant::now());
        if let Some(b) = self.lookup(id) {
            return Ok(Found::Host(b));
        }
        let path = self.link(id).with_extension("lock");
        let turn = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let Ok(file) = turn else {
            return fetch.await.map(Found::Fetched);
        };
        let mut turn = Turn {
            file,
            path,
            linked: false,
        };
        let deadline = Instant::now() + TURN_PATIENCE;
        let mut poll = POLL.0;
        while !try_lock(&turn.file) {
            if let Some(b) = self.lookup(id) {
                return Ok(Found::Host(b));
            }
            if Instant::now() >= deadline {
                return fetch.await.map(Found::Fetched);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL.1);
        }
        // Our turn (released when `turn` closes): the previous turn may
        // have linked it just before letting go.
        if let Some(b) = self.lookup(id) {
            return Ok(Found::Host(b));
        }
        let blob = fetch.await?;
        if blob.len() <= crate::limits::LARGE || blob.is_mapped() {
            // Small, or mapped from this host's shared memory already.
            return Ok(Found::Fetched(blob));
        }
        let Ok(sealed) = self.region.seal(id, &blob) else {
            return Ok(Found::Fetched(blob));
        };
        let Some(file) = sealed.file() else {
            return Ok(Found::Fetched(blob));
        };
        let link = self.link(id);
        let _ = std::fs::remove_file(&link);
        if std::os::unix::fs::symlink(file, &link).is_ok() {
            turn.linked = true;
            self.keep(id, sealed.clone());
        }
        Ok(Found::Fetched(sealed))
    }

    /// Keeps `blob` linked as `id` for a while, within the budget.
    fn keep(&self, id: ObjectId, blob: Blob) {
        self.keep_within(id, blob, BUDGET);
    }

    /// Keeps `blob` linked as `id` for [`KEEP`], dropping the oldest copies
    /// while more than `budget` bytes are kept.
    fn keep_within(&self, id: ObjectId, blob: Blob, budget: u64) {
        let mut kept = lock(&self.kept);
        kept.push_back(Kept {
            id,
            blob,
            until: Instant::now() + KEEP,
        });
        let mut total: u64 = kept.iter().map(|k| k.blob.len() as u64).sum();
        while total > budget {
            let Some(old) = kept.pop_front() else { break };
            total -= old.blob.len() as u64;
            self.unlink(old.id);
        }
    }

    /// Drops the copies kept past their time.
    pub(crate) fn expire(&self, now: Instant) {
        let mut kept = lock(&self.kept);
        while kept.front().is_some_and(|k| k.until <= now) {
            if let Some(old) = kept.pop_front() {
                self.unlink(old.id);
            }
        }
    }

    fn unlink(&self, id: ObjectId) {
        let link = self.link(id);
        let _ = std::fs::remove_file(link.with_extension("lock"));
        let _ = std::fs::remove_file(link);
    }
}

impl Drop for HostCache {
    fn drop(&mut self) {
        for k in lock(&self.kept).drain(..) {
            self.unlink(k.id);
        }
    }
}

/// An object's turn file, open (and locked once it is this process's
/// turn); removed when done unless a copy was linked (it then goes with
/// the link).
struct Turn {
    file: File,
    path: PathBuf,
    linked: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.linked {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes links in the index under `root` whose copies are gone (their
/// process ended), and turn files no process holds with no link: called
/// by the shared-memory sweep.
pub(crate) fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join(INDEX)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let dangling = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
            && std::fs::metadata(&path).is_err();
        if dangling {
            let _ = std::fs::remove_file(path.with_extension("lock"));
            let _ = std::fs::remove_file(&path);
        } else if path.extension().is_some_and(|e| e == "lock")
            && std::fs::symlink_metadata(path.with_extension("")).is_err()
            && File::open(&path).is_ok_and(|f| try_lock(&f))
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> ObjectId {
        ObjectId { owner: 9, seq }
    }

    #[test]
    fn copies_are_kept_ten_seconds_within_a_budget_of_a_gibibyte() {
        assert_eq!((KEEP, BUDGET), (Duration::from_secs(10), 1 << 30));
        let root = crate::testing_dir("host-cache-bounds");
        let cache = HostCache::open(&root).unwrap();
        // Sealed and linked into the index, as a fetch does.
        let copy = |seq: u64| {
            let blob = cache.seal(id(seq), &[seq as u8; 40_000]).unwrap();
            let file = blob.file().expect("a sealed copy is a file");
            std::os::unix::fs::symlink(file, cache.link(id(seq))).unwrap();
            blob
        };
        // A budget of 100,000 bytes holds two copies of 40,000: the
        // oldest of three goes.
        for seq in 1..=3 {
            let blob = copy(seq);
            cache.keep_within(id(seq), blob, 100_000);
        }
        assert!(cache.lookup(id(1)).is_none(), "the oldest copy is unlinked");
        assert!(cache.lookup(id(2)).is_some() && cache.lookup(id(3)).is_some());
        // Nothing expires before its time; everything after.
        cache.expire(Instant::now());
        assert!(cache.lookup(id(3)).is_some());
        cache.expire(Instant::now() + KEEP);
        assert!(cache.lookup(id(2)).is_none() && cache.lookup(id(3)).is_none());
        assert!(lock(&cache.kept).is_empty());
        drop(cache);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_index_others_may_write_to_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let root = crate::testing_dir("host-cache-mode");
        assert!(
            HostCache::open(&root).is_some(),
            "a fresh 0700 index is used"
        );
        let index = root.join(INDEX);
        std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(HostCache::open(&root).is_none(), "a 0777 index is refused");
        std::fs::remove_dir_all(&index).unwrap();
        // A file planted where the index goes is refused too.
        std::fs::write(&index, b"planted").unwrap();
        assert!(HostCache::open(&root).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_second_process_maps_the_first_ones_copy_instead_of_fetching() {
        let root = crate::testing_dir("host-cache");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let first = HostCache::open(&root).unwrap();
        let second = HostCache::open(&root).unwrap();
        let value = vec![3u8; 100_000];
        let got = rt
            .block_on(first.fetch(id(1), async { Ok(crate::blob::blob(value.clone())) }))
            .unwrap();
        let Found::Fetched(copy) = got else {
            panic!("the first fetches")
        };
        assert!(copy.is_mapped(), "handed out as the sealed copy");
        let again = rt
            .block_on(second.fetch(id(1), async { panic!("the second never fetches") }))
            .unwrap();
        let Found::Host(mapped) = again else {
            panic!("mapped from the first one's copy")
        };
        assert_eq!(&mapped[..], &value[..]);
        // Small values are not linked.
        let small = rt
            .block_on(first.fetch(id(2), async { Ok(crate::blob::blob(vec![1; 10])) }))
            .unwrap();
        assert!(matches!(small, Found::Fetched(b) if !b.is_mapped()));
        assert!(second.lookup(id(2)).is_none());
        // The copy goes with its fetcher; the reader's mapping stays valid.
        drop(copy);
        drop(first);
        assert!(second.lookup(id(1)).is_none());
        assert_eq!(mapped[99_999], 3);
        sweep(&root);
        assert_eq!(
            std::fs::read_dir(root.join(INDEX)).unwrap().count(),
            0,
            "nothing left in the index"
        );
    }
}
