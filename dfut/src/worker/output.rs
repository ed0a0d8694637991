//! What a worker process prints, captured: its standard output and error
//! (what tasks `print!` and `eprint!`, and its `tracing` events) go to a
//! log file of its own and to the drivers that asked for them
//! (`Message::WantLogs`), which print each line prefixed with the worker.
//!
//! Only a worker *process* captures ([`capture`], from `worker::run` and
//! the local cluster's worker processes); in-process workers share their
//! driver's terminal. The log file is `worker-<pid>.log` in
//! `DFUT_LOG_DIR` (default `dfut-logs` under the system's temporary
//! directory), mode 0600 in a 0700 directory; past [`MAX_FILE_BYTES`] it
//! is renamed to `worker-<pid>.log.1` (replacing an older one) and a new
//! one started, so a worker keeps at most twice that on disk; a worker
//! starting removes the files of gone processes beyond the newest
//! [`KEPT_LOGS`]. An existing directory that is not a private one of
//! this user is refused (the output then stays on the terminal). A
//! worker started by hand also echoes every line to the terminal it was
//! started from.
//!
//! Bounds: lines longer than [`MAX_LINE`] bytes are cut; at most
//! [`MAX_PENDING_BYTES`] of lines wait to be sent to drivers (past it new
//! lines are counted as dropped, and the count is sent); a flush sends
//! them every [`FLUSH_EVERY`].

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dfut_net::wire::LogLine;

use crate::lock;

/// Longest line kept; the rest of a longer one is cut.
pub(crate) const MAX_LINE: usize = 8 << 10;
/// Bytes of lines waiting to be sent to drivers.
pub(crate) const MAX_PENDING_BYTES: usize = 1 << 20;
/// How often waiting lines are sent.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Size past which the log file is rotated.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;
/// Log files of processes that are gone kept per directory (the newest).
pub(crate) const KEPT_LOGS: usize = 64;

/// The captured output of this process.
pub(crate) struct Output {
    pending: Mutex<Pending>,
    file: Mutex<LogFile>,
    /// The terminal's standard output and error as they were before the
    /// capture, to echo lines to (a worker started by hand).
    echo: Option<[Mutex<std::fs::File>; 2]>,
    path: PathBuf,
}

#[derive(Default)]
struct Pending {
    lines: VecDeque<LogLine>,
    bytes: usize,
    dropped: u64,
}

struct LogFile {
    file: std::fs::File,
    written: u64,
}

static INSTALLED: OnceLock<Arc<Output>> = OnceLock::new();

/// The capture of this process, if it captures.
pub(crate) fn installed() -> Option<Arc<Output>> {
    INSTALLED.get().cloned()
}

/// The directory worker processes write their log files to
/// (`worker-<pid>.log`): `DFUT_LOG_DIR`, else `dfut-logs` under the
/// system's temporary directory.
///
/// ```
/// let dir = dfut::worker::log_dir();
/// assert!(std::env::var_os("DFUT_LOG_DIR").is_some() || dir.ends_with("dfut-logs"));
/// ```
pub fn log_dir() -> PathBuf {
    std::env::var_os("DFUT_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("dfut-logs"))
}

/// Captures this process's standard output and error (once; later calls
/// do nothing): into the log file, and for the drivers; `echo` also
/// copies every line to the stream it was printed to as it was before.
pub(crate) fn capture(echo: bool) -> std::io::Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let dir = log_dir();
    private_dir(&dir)?;
    sweep(&dir);
    let path = dir.join(format!("worker-{}.log", std::process::id()));
    let file = open_log(&path)?;
    let echo = if echo {
        Some([
            Mutex::new(duplicate(libc::STDOUT_FILENO)?),
            Mutex::new(duplicate(libc::STDERR_FILENO)?),
        ])
    } else {
        None
    };
    let written = file.metadata().map_or(0, |m| m.len());
    let output = Arc::new(Output {
        pending: Mutex::new(Pending::default()),
        file: Mutex::new(LogFile { file, written }),
        echo,
        path,
    });
    for (fd, stderr) in [(libc::STDOUT_FILENO, false), (libc::STDERR_FILENO, true)] {
        let reader = redirect(fd)?;
        let output = output.clone();
        std::thread::Builder::new()
            .name(if stderr { "dfut-stderr" } else { "dfut-stdout" }.into())
            .spawn(move || {
                output.read_lines(reader, stderr);
                // The pipe broke: later writes go nowhere rather than
                // block on a pipe nobody reads.
                if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                    // SAFETY: dup2 onto a standard descriptor of this process.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
                }
            })?;
    }
    let _ = INSTALLED.set(output);
    Ok(())
}

/// Makes `dir` (mode 0700) unless it exists; refuses one that is not a
/// private directory of this user (a shared temporary directory could
/// hold one planted by someone else, to read what tasks print).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?,
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of this user (mode 0700); \
             set DFUT_LOG_DIR to one",
            dir.display()
        )));
    }
    Ok(())
}

/// Log files of processes that are gone, beyond the newest [`KEPT_LOGS`],
/// are removed: a host keeps a bounded number of them.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut gone: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: u32 = name
                .strip_prefix("worker-")?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            let modified = e.metadata().ok()?.modified().ok()?;
            (!alive).then(|| (modified, e.path()))
        })
        .collect();
    gone.sort_by_key(|g| std::cmp::Reverse(g.0));
    for (_, path) in gone.into_iter().skip(KEPT_LOGS) {
        let _ = std::fs::remove_file(path);
    }
}

/// A copy of descriptor `fd`, numbered above the standard ones and closed
/// on exec.
fn duplicate(fd: libc::c_int) -> std::io::Result<std::fs::File> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor (or fails).
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor nothing else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(copy) }))
}

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if !meta.is_file() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file of this user",
            path.display()
        )));
    }
    Ok(file)
}

/// Points descriptor `fd` at a new pipe; returns the pipe's reading end.
/// Both ends are numbered above the standard descriptors, so a process
/// started with one of them closed cannot have them collide.
fn redirect(fd: libc::c_int) -> std::io::Result<std::fs::File> {
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: `ends` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both ends are fresh descriptors owned from here on.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    let (read, write) = (
        duplicate(std::os::fd::AsRawFd::as_raw_fd(&read))?,
        duplicate(std::os::fd::AsRawFd::as_raw_fd(&write))?,
    );
    // SAFETY: dup2 onto a standard descriptor; the writing end stays open
    // as `fd` after `write` is dropped.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&write), fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(write);
    Ok(read)
}

impl Output {
    /// Reads lines from `pipe` until it closes (never, while the process
    /// lives): each goes to the file, the echo, and the drivers' queue.
    fn read_lines(&self, pipe: std::fs::File, stderr: bool) {
        let mut reader = std::io::BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // At most MAX_LINE bytes of a line are kept; the rest is read
            // and thrown away.
            match std::io::Read::take(&mut reader, MAX_LINE as u64).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if buf.last() != Some(&b'\n') && buf.len() >= MAX_LINE {
                skip_line(&mut reader);
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            self.write_file(&text);
            if let Some(echo) = &self.echo {
                let _ = writeln!(lock(&echo[usize::from(stderr)]), "{text}");
            }
            self.queue(LogLine { stderr, text });
        }
    }

    fn write_file(&self, text: &str) {
        let mut log = lock(&self.file);
        if log.written >= MAX_FILE_BYTES {
            let old = self.path.with_extension("log.1");
            let fresh = std::fs::rename(&self.path, &old).and_then(|()| open_log(&self.path));
            match fresh {
                Ok(fresh) => log.file = fresh,
                // Not rotated: lines go on to the drivers only, rather than
                // past the bound.
                Err(_) => return,
            }
            log.written = 0;
        }
        if writeln!(log.file, "{text}").is_ok() {
            log.written += text.len() as u64 + 1;
        }
    }

    fn queue(&self, line: LogLine) {
        let mut p = lock(&self.pending);
        let size = line.text.len() + 16;
        if p.bytes + size > MAX_PENDING_BYTES {
            p.dropped += 1;
            return;
        }
        p.bytes += size;
        p.lines.push_back(line);
    }

    /// The lines waiting to be sent, and how many were dropped since the
    /// last call.
    pub fn take(&self) -> (Vec<LogLine>, u64) {
        let mut p = lock(&self.pending);
        let lines = p.lines.drain(..).collect();
        p.bytes = 0;
        (lines, std::mem::take(&mut p.dropped))
    }
}

/// Reads past the end of the current line, keeping nothing.
fn skip_line(reader: &mut impl BufRead) {
    loop {
        let Ok(chunk) = reader.fill_buf() else { return };
        if chunk.is_empty() {
            return;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return;
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// A `tracing` event format for worker processes: the default one, with
/// the task running on the thread (its id and function) in front.
pub(crate) struct TaskFormat<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for TaskFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some((id, function)) = super::exec::current_task() {
            write!(writer, "[task {id} {function}] ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the worker's `tracing` subscriber (`DFUT_LOG`, default `warn`,
/// to standard error, tasks named, no colour codes: the lines go to a
/// file and to drivers), unless the program installed one.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DFUT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let format = TaskFormat(tracing_subscriber::fmt::format::Format::default());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(format)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_directory_is_refused_and_old_logs_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testing_dir("output-dir");
        let logs = dir.join("logs");
        private_dir(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&logs).is_err(), "a world-writable directory");
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Files of processes that are gone (no such pids), and one of this
        // live process: the live one and the newest KEPT_LOGS stay.
        for i in 0..KEPT_LOGS + 5 {
            std::fs::write(logs.join(format!("worker-{}.log", 4_100_000 + i)), b"x").unwrap();
        }
        let mine = logs.join(format!("worker-{}.log", std::process::id()));
        std::fs::write(&mine, b"x").unwrap();
        std::fs::write(logs.join("notes.txt"), b"x").unwrap();
        sweep(&logs);
        let left = std::fs::read_dir(&logs).unwrap().count();
        assert_eq!(
            left,
            KEPT_LOGS + 2,
            "the kept ones, this process's, and others' files"
        );
        assert!(mine.exists());
    }

    #[test]
    fn waiting_lines_are_bounded_and_drops_counted() {
        let dir = crate::testing_dir("output");
        let path = dir.join("w.log");
        let output = Output {
            pending: Mutex::new(Pending::default()),
            file: Mutex::new(LogFile {
                file: open_log(&path).unwrap(),
                written: 0,
            }),
            echo: None,
            path: path.clone(),
        };
        let line = "x".repeat(1000);
        let fits = MAX_PENDING_BYTES / (line.len() + 16);
        for _ in 0..fits + 10 {
            output.queue(LogLine {
                stderr: false,
                text: line.clone(),
            });
        }
        let (lines, dropped) = output.take();
        assert_eq!((lines.len(), dropped), (fits, 10));
        assert_eq!(output.take(), (Vec::new(), 0), "taken once");
        output.write_file("first");
        lock(&output.file).written = MAX_FILE_BYTES;
        output.write_file("second");
        let old = std::fs::read_to_string(path.with_extension("log.1")).unwrap();
        assert_eq!(old, "first\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
    }
}
