//! Object files made ahead of time.
//!
//! Writing a large object into a new shared-memory file costs the kernel
//! a page allocation per 4 KiB as well as the copy: about half the time of
//! sealing 100 MB on the 2-core development machine (41 ms fresh against
//! 21 ms into a file whose pages were allocated beforehand). So once a
//! process has sealed an object of at least [`FROM`] in shared memory, a
//! thread of its own makes a spare file of about that size, its pages
//! allocated with `fallocate`, and the next object of about that size is
//! written into it and given its name.
//!
//! A spare is an unnamed file (`O_TMPFILE`) in the process's private
//! directory until it is used: no other process can open it, it is a new
//! file each time (never one a reader mapped, so a sealed object still
//! never changes), it is named with `linkat` (which never replaces a
//! file), and the kernel frees it when the process ends, however it ends.
//! Bounds: spares only for objects of at most [`MAX_BYTES`] / 2, at most
//! [`MAX_BYTES`] of them per directory (the oldest go first, before a new
//! one is allocated), each kept at most [`KEEP`] unused, one thread,
//! running only while a spare is wanted or kept.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Smallest object for which a spare is made.
pub(crate) const FROM: u64 = 8 << 20;
/// Most bytes of spares one directory keeps (a worker has two: its store
/// and its fetch cache; a driver one).
pub(crate) const MAX_BYTES: u64 = 512 << 20;
/// How long an unused spare is kept.
pub(crate) const KEEP: Duration = Duration::from_secs(5);
/// The spares of one process directory.
#[derive(Debug)]
pub(crate) struct Spares {
    dir: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    files: Vec<Spare>,
    bytes: u64,
    /// The size of the next spare to make.
    wanted: Option<u64>,
    /// Whether the thread runs.
    running: bool,
    /// The directory is gone: make nothing more.
    closed: bool,
}

#[derive(Debug)]
struct Spare {
    /// Unnamed until used; freed when closed.
    file: File,
    len: u64,
    since: Instant,
}

/// Whether a spare of `len` bytes suits an object of `n`: large enough,
/// and at most a quarter larger (the rest is cut off when it is used).
fn fits(len: u64, n: u64) -> bool {
    (n..=n + n / 4).contains(&len)
}

impl Spares {
    pub(crate) fn new(dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            dir,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        })
    }

    /// Writes `bytes` as the new file `path` through a spare that fits,
    /// if there is one (`Ok(false)` if not), and asks for a spare for the
    /// next object of about this size.
    pub(crate) fn write(self: &Arc<Self>, path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
        let n = bytes.len() as u64;
        if !(FROM..=MAX_BYTES / 2).contains(&n) {
            return Ok(false);
        }
        let spare = {
            let mut s = crate::lock(&self.state);
            let at = s.files.iter().position(|f| fits(f.len, n));
            let spare = at.map(|i| s.files.remove(i));
            if let Some(f) = &spare {
                s.bytes -= f.len;
            }
            // The next one a little larger, as values of a kind grow.
            s.wanted = Some(n + n / 16);
            if !std::mem::replace(&mut s.running, true) {
                let me = Arc::clone(self);
                if std::thread::Builder::new()
                    .name("dfut-spares".into())
                    .spawn(move || me.run())
                    .is_err()
                {
                    s.running = false;
                    s.wanted = None;
                }
            } else {
                self.wake.notify_one();
            }
            spare
        };
        let Some(spare) = spare else {
            return Ok(false);
        };
        spare.file.write_all_at(bytes, 0)?;
        spare.file.set_len(n)?;
        link(&spare.file, path)?;
        Ok(true)
    }

    /// Stops making spares (the directory is being removed).
    pub(crate) fn close(&self) {
        let mut s = crate::lock(&self.state);
        s.closed = true;
        s.wanted = None;
        self.wake.notify_one();
    }

    /// The thread: makes the spare wanted, frees those unused for
    /// [`KEEP`], and ends once nothing is wanted or kept.
    fn run(&self) {
        let mut s = crate::lock(&self.state);
        loop {
            if s.closed {
                let files = std::mem::take(&mut s.files);
                s.bytes = 0;
                s.running = false;
                drop(s);
                drop(files); // unnamed: closing frees them
                return;
            }
            if let Some(len) = s.wanted.take() {
                if s.files.iter().any(|f| fits(f.len, len)) {
                    continue;
                }
                // Room first, the oldest going, so the bound holds even
                // while the new one is allocated.
                let mut evicted = Vec::new();
                while s.bytes + len > MAX_BYTES && !s.files.is_empty() {
                    let f = s.files.remove(0);
                    s.bytes -= f.len;
                    evicted.push(f);
                }
                s.bytes += len; // reserved while it is made
                drop(s);
                drop(evicted);
                let made = make(&self.dir, len);
                s = crate::lock(&self.state);
                match made {
                    Ok(file) if !s.closed => s.files.push(Spare {
                        file,
                        len,
                        since: Instant::now(),
                    }),
                    Ok(_) => s.bytes -= len,
                    Err(e) => {
                        s.bytes -= len;
                        tracing::debug!(dir = %self.dir.display(), "no spare object file: {e}");
                    }
                }
                continue;
            }
            let now = Instant::now();
            let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut s.files)
                .into_iter()
                .partition(|f| now.duration_since(f.since) >= KEEP);
            s.files = young;
            s.bytes = s.files.iter().map(|f| f.len).sum();
            if !old.is_empty() {
                drop(s);
                drop(old);
                s = crate::lock(&self.state);
                continue;
            }
            let Some(due) = s.files.first().map(|f| f.since + KEEP) else {
                s.running = false;
                return;
            };
            let wait = due
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            s = self
                .wake
                .wait_timeout(s, wait)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, bool) {
        let s = crate::lock(&self.state);
        (s.files.len(), s.running)
    }
}

/// A new unnamed file in `dir` (mode 0400, open for writing) of `len`
/// bytes, its pages allocated.
fn make(dir: &Path, len: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .mode(0o400)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)?;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: `posix_fallocate` on a valid open descriptor; no memory of
    // ours is involved.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err));
    }
    Ok(file)
}

/// Gives the unnamed `file` the name `path`; fails rather than replace a
/// file of that name.
fn link(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let done = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is the failure report

    use super::*;

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let limit = Instant::now() + KEEP * 4;
        while !done() {
            assert!(Instant::now() < limit, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_large_object_is_written_into_a_spare_made_after_the_last_one() {
        let dir = crate::testing_dir("spares");
        let spares = Spares::new(dir.clone());
        let bytes = vec![3u8; FROM as usize];
        // The first: no spare yet, one is asked for.
        assert!(!spares.write(&dir.join("a"), &bytes).unwrap());
        wait_for("no spare made", || spares.kept().0 == 1);
        let names = || std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(names(), 0, "a spare has no name");
        // The second of about the size goes into it, cut to its length.
        let second = vec![4u8; FROM as usize + 100];
        assert!(spares.write(&dir.join("b"), &second).unwrap());
        assert_eq!(std::fs::read(dir.join("b")).unwrap(), second);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("b")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o400, "sealed");
        // Small ones never use spares, nor do ones past the bound.
        assert!(!spares.write(&dir.join("c"), &[1u8; 10]).unwrap());
        spares.close();
        wait_for("the thread ended", || !spares.kept().1);
        assert_eq!(spares.kept().0, 0, "closed: nothing kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_is_never_replaced() {
        let dir = crate::testing_dir("spares-noreplace");
        let file = make(&dir, 4096).unwrap();
        std::fs::write(dir.join("taken"), b"first").unwrap();
        assert!(link(&file, &dir.join("taken")).is_err());
        assert_eq!(std::fs::read(dir.join("taken")).unwrap(), b"first");
        link(&file, &dir.join("free")).unwrap();
        assert_eq!(std::fs::metadata(dir.join("free")).unwrap().len(), 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unused_spares_are_freed_and_the_thread_ends() {
        let dir = crate::testing_dir("spares-expire");
        let spares = Spares::new(dir.clone());
        spares
            .write(&dir.join("a"), &vec![0u8; FROM as usize])
            .unwrap();
        wait_for("no spare made", || spares.kept().0 == 1);
        wait_for("never freed", || spares.kept() == (0, false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
