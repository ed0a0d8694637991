//! Objects in this host's shared memory.
//!
//! Each process that keeps objects (a worker) owns one directory under the
//! shared-memory root (`/dev/shm`, or `DFUT_SHM_DIR`): `dfut-<pid>-<nonce>`,
//! mode 0700. An object is one file in it, written once and then sealed
//! (mode 0400, never written again), and mapped read-only by every reader:
//! the holder itself, and any process of the same host and user that
//! fetches it (it gets the path instead of the bytes, and reads the
//! archive in place). The file is removed when the holder's store frees
//! the object and its last local reader is done; mappings already made
//! stay valid.
//!
//! Crashes: the directory's owner holds an exclusive `flock` on its `lock`
//! file for its whole life, and the kernel releases it when the process
//! dies however it dies. [`sweep`] removes every directory whose lock it
//! can take; workers sweep when they start and every few seconds, and a
//! local cluster sweeps when it stops. A directory is created under a
//! temporary name and renamed once locked, so a sweep never sees one
//! unlocked while alive.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dfut_net::wire::ObjectId;

use crate::blob::{Blob, Bytes};

mod spares;

/// Prefix of every process directory.
const PREFIX: &str = "dfut-store-";

/// Where shared-memory objects live, unless shared memory is off
/// (`DFUT_SHM=0`): `DFUT_SHM_DIR`, else `/dev/shm` when it is a writable
/// directory.
pub(crate) fn root() -> Option<PathBuf> {
    if matches!(
        std::env::var("DFUT_SHM").as_deref(),
        Ok("0" | "off" | "false" | "no")
    ) {
        return None;
    }
    let root = std::env::var_os("DFUT_SHM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let meta = std::fs::metadata(&root).ok()?;
    (meta.is_dir() && !meta.permissions().readonly()).then_some(root)
}

/// The directories of this process's live regions, removed by
/// [`remove_own`] when the process exits without dropping them.
static OWN: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes this process's directories now: for exits that skip
/// destructors (`std::process::exit`).
pub(crate) fn remove_own() {
    for dir in crate::lock(&OWN).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Sweeps the shared-memory root and the default spill root.
pub(crate) fn sweep_all() {
    if let Some(root) = root() {
        sweep(&root);
    }
    let spill = std::env::var_os("DFUT_SPILL_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    sweep(&spill);
}

/// Whether `path` names an object file in a process directory
/// (`…/dfut-store-*/<file>`, no `..`): the only paths a fetcher maps when
/// a peer offers them, never an arbitrary file. (The root is not checked:
/// a driver and its workers may be given different `DFUT_SHM_DIR`s.)
pub(crate) fn is_object_path(path: &Path) -> bool {
    let plain = path.is_absolute()
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
    plain
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX))
        && path.file_name().is_some_and(|n| n != "lock")
}

/// Maps, read-only, an object file another process offers (a peer's
/// answer, an argument, a link of this host's index): only a path
/// [`is_object_path`] accepts, in a directory only this user can enter
/// (owned by it, mode 0700, not a link), itself a regular file of this
/// user opened without following a link. Never an arbitrary file: a peer
/// cannot make this process read what it could not read itself.
pub(crate) fn map_offered(path: &Path) -> std::io::Result<Blob> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: &str| {
        Err(std::io::Error::other(format!(
            "{} is not a shared-memory object file: {why}",
            path.display()
        )))
    };
    if !is_object_path(path) {
        return refuse("not in a process directory");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = std::fs::symlink_metadata(path.parent().unwrap_or(path))?;
    if !dir.is_dir() || dir.uid() != me || dir.mode() & 0o077 != 0 {
        return refuse("its directory is not a private one of this user");
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != me {
        return refuse("not a regular file of this user");
    }
    Ok(Arc::new(Bytes::map_file(file, path.to_owned(), false)?))
}

/// Tries to take an exclusive lock on `file` without waiting.
pub(crate) fn try_lock(file: &File) -> bool {
    // SAFETY: `flock` on a valid open descriptor; no memory is involved.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// This process's directory of shared-memory objects; removed on drop.
#[derive(Debug)]
pub(crate) struct Region {
    dir: PathBuf,
    /// Locked for the process's life (released by the kernel at its death).
    _lock: File,
    next: AtomicU64,
    /// Files made ahead of time for large objects (shared-memory regions
    /// only: see [`Region::ahead_of_time`]).
    spares: Option<Arc<spares::Spares>>,
}

impl Region {
    /// Creates this process's directory under `root`, after sweeping the
    /// directories of dead processes.
    pub(crate) fn create(root: &Path) -> std::io::Result<Self> {
        sweep(root);
        let name = format!(
            "{PREFIX}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let tmp = root.join(format!(".{name}"));
        std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp.join("lock"))?;
        if !try_lock(&lock) {
            return Err(std::io::Error::other(
                "cannot lock a new shared-memory directory",
            ));
        }
        let dir = root.join(name);
        std::fs::rename(&tmp, &dir)?;
        crate::lock(&OWN).push(dir.clone());
        Ok(Self {
            spares: None,
            dir,
            _lock: lock,
            next: AtomicU64::new(0),
        })
    }

    /// Makes files for large objects ahead of time (`spares`): for a
    /// region in shared memory, where allocating pages is what it saves;
    /// not for one on disk.
    pub(crate) fn ahead_of_time(mut self) -> Self {
        self.spares = Some(spares::Spares::new(self.dir.clone()));
        self
    }

    /// This region's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` as the sealed object `id` and maps it; the file goes
    /// with the returned blob's last holder.
    pub(crate) fn seal(&self, id: ObjectId, bytes: &[u8]) -> std::io::Result<Blob> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{:x}-{}-{n}", id.owner, id.seq));
        // A large one goes into a file made ahead of time when one fits.
        let spared = self.spares.as_ref().map(|s| s.write(&path, bytes));
        if let Some(Err(e)) = &spared {
            tracing::debug!(path = %path.display(), "not written through a spare: {e}");
        }
        if !matches!(spared, Some(Ok(true))) {
            write_sealed(&path, bytes)?;
        }
        match Bytes::mapped(path.clone(), true) {
            Ok(b) => Ok(Arc::new(b)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

impl Region {
    /// Links the sealed file `blob` is mapped from (another process's)
    /// into this region as object `id`, without copying (or copies it, if
    /// it is on another file system), and maps it; the link goes with the
    /// returned blob's last holder.
    pub(crate) fn adopt(&self, id: ObjectId, blob: &Blob) -> std::io::Result<Blob> {
        let file = blob
            .file()
            .ok_or_else(|| std::io::Error::other("not a file"))?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{:x}-{}-{n}", id.owner, id.seq));
        if std::fs::hard_link(file, &path).is_err() {
            return self.seal(id, blob);
        }
        match Bytes::mapped(path.clone(), true) {
            Ok(b) => Ok(Arc::new(b)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

/// Creates `path` (never following or replacing an existing file) with
/// mode 0400 and writes `bytes` to it.
pub(crate) fn write_sealed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .and_then(|mut f| f.write_all(bytes));
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(spares) = &self.spares {
            spares.close();
        }
        crate::lock(&OWN).retain(|d| *d != self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the directories of processes that are gone (their lock is
/// free); returns how many. Never touches a live process's directory.
pub(crate) fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        // Held while removing, so the name cannot be reused meanwhile.
        let lock = match File::open(dir.join("lock")) {
            Ok(lock) => lock,
            // A directory is renamed to its name only once locked, and
            // loses its lock only when being removed: one without is what
            // an interrupted removal left.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::remove_dir_all(&dir).is_ok() {
                    removed += 1;
                }
                continue;
            }
            Err(_) => continue,
        };
        if try_lock(&lock) && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    crate::host_cache::sweep(root);
    if removed > 0 {
        tracing::info!(removed, root = %root.display(), "removed the shared memory of dead processes");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_sealed_mapped_and_removed_with_their_last_holder() {
        let root = crate::testing_dir("shm-seal");
        let region = Region::create(&root).unwrap();
        let id = ObjectId { owner: 1, seq: 2 };
        let blob = region.seal(id, &[5u8; 100]).unwrap();
        let path = blob.file().unwrap().to_owned();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o400, "sealed");
        // Another reader maps the same file by its path.
        let reader = Bytes::mapped(path.clone(), false).unwrap();
        assert_eq!(&reader[..], &[5u8; 100]);
        drop(blob);
        assert!(!path.exists());
        assert_eq!(reader[99], 5, "a mapping outlives the file");
        drop(region);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        assert!(!is_object_path(Path::new("/etc/shadow")));

        assert!(!is_object_path(Path::new(
            "/dev/shm/dfut-store-1-x/../../etc/shadow"
        )));
    }

    #[test]
    fn only_private_object_files_are_mapped_when_offered() {
        use std::os::unix::fs::PermissionsExt;
        let root = crate::testing_dir("shm-offered");
        let region = Region::create(&root).unwrap();
        let blob = region
            .seal(ObjectId { owner: 1, seq: 1 }, b"sealed")
            .unwrap();
        let path = blob.file().unwrap().to_owned();
        assert_eq!(&map_offered(&path).unwrap()[..], b"sealed");
        // A link in a process directory, to a file elsewhere: refused.
        let secret = root.join("secret");
        std::fs::write(&secret, b"not an object").unwrap();
        let link = region.dir().join("9-9-0");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(map_offered(&link).is_err(), "a link is not followed");
        // A directory that looks like a process's but others can enter.
        let open = root.join(format!("{PREFIX}1-open"));
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(open.join("1-1-0"), b"planted").unwrap();
        let err = map_offered(&open.join("1-1-0")).unwrap_err();
        assert!(err.to_string().contains("private"), "{err}");
        // A linked directory: refused too.
        let linked = root.join(format!("{PREFIX}2-linked"));
        std::os::unix::fs::symlink(region.dir(), &linked).unwrap();
        let through = linked.join(path.file_name().unwrap());
        assert!(map_offered(&through).is_err(), "a linked directory");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&linked).unwrap();
        drop(blob);
        drop(region);
    }

    #[test]
    fn a_sweep_removes_only_the_directories_of_dead_processes() {
        let root = crate::testing_dir("shm-sweep");
        let live = Region::create(&root).unwrap();
        // A dead process's directory: the same layout, its lock free.
        let dead = root.join(format!("{PREFIX}1-dead"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("lock"), b"").unwrap();
        std::fs::write(dead.join("1-1-0"), b"left behind").unwrap();
        // And what an interrupted removal left: no lock file at all.
        let emptied = root.join(format!("{PREFIX}2-emptied"));
        std::fs::create_dir(&emptied).unwrap();
        assert_eq!(sweep(&root), 2);
        assert!(!dead.exists() && !emptied.exists());
        assert!(live.dir().exists(), "a live process keeps its directory");
        drop(live);
    }
}
