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
//! one started, so a worker keeps at most twice that on disk. A worker
//! started by hand also echoes every line to the terminal it was started
//! from.
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

/// The captured output of this process.
pub(crate) struct Output {
    pending: Mutex<Pending>,
    file: Mutex<LogFile>,
    /// The terminal's standard error as it was before the capture, to
    /// echo lines to (a worker started by hand).
    echo: Option<Mutex<std::fs::File>>,
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
/// copies every line to the standard error the process had.
pub(crate) fn capture(echo: bool) -> std::io::Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let dir = log_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let path = dir.join(format!("worker-{}.log", std::process::id()));
    let file = open_log(&path)?;
    let echo = if echo {
        // SAFETY: dup of an open descriptor; the new one is owned here.
        let copy = unsafe { libc::dup(libc::STDERR_FILENO) };
        (copy >= 0).then(|| {
            // SAFETY: `copy` is a fresh descriptor nothing else owns.
            Mutex::new(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(copy) }))
        })
    } else {
        None
    };
    let output = Arc::new(Output {
        pending: Mutex::new(Pending::default()),
        file: Mutex::new(LogFile { file, written: 0 }),
        echo,
        path,
    });
    for (fd, stderr) in [(libc::STDOUT_FILENO, false), (libc::STDERR_FILENO, true)] {
        let reader = redirect(fd)?;
        let output = output.clone();
        std::thread::Builder::new()
            .name(if stderr { "dfut-stderr" } else { "dfut-stdout" }.into())
            .spawn(move || output.read_lines(reader, stderr))?;
    }
    let _ = INSTALLED.set(output);
    Ok(())
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Points descriptor `fd` at a new pipe; returns the pipe's reading end.
fn redirect(fd: libc::c_int) -> std::io::Result<std::fs::File> {
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: `ends` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both ends are fresh descriptors owned from here on.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: dup2 onto a standard descriptor this process has; the
    // writing end stays open as `fd` after `write` is dropped.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&write), fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(write);
    Ok(std::fs::File::from(read))
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
                let _ = writeln!(lock(echo), "{text}");
            }
            self.queue(LogLine { stderr, text });
        }
    }

    fn write_file(&self, text: &str) {
        let mut log = lock(&self.file);
        if log.written >= MAX_FILE_BYTES {
            let old = self.path.with_extension("log.1");
            if std::fs::rename(&self.path, &old).is_ok()
                && let Ok(fresh) = open_log(&self.path)
            {
                log.file = fresh;
                log.written = 0;
            }
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
/// the sync task running on the thread (its id and function) in front.
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
