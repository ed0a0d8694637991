//! Progress of a job of many tasks: counts for code, and a progress bar on
//! the driver's terminal.
//!
//! A [`Progress`] counts tasks done out of a total. Tracking a future adds
//! a tiny waiter task on the runtime that counts it when it settles; values
//! are never fetched for this. The bar (indicatif: done / total, rate, ETA)
//! is drawn only with the `progress` feature, when stderr is a terminal, and
//! never when `DFUT_PROGRESS=0`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::future::DistFuture;
use crate::object::Status;

/// Counts of a job's tasks, shared by every clone.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn inc(x: u64) -> u64 { x + 1 }
/// let progress = dfut::Progress::new(3, "demo", false);
/// let fs: Vec<_> = (0..3).map(inc).collect();
/// for f in &fs {
///     progress.track(f);
/// }
/// progress.wait();
/// assert_eq!((progress.done(), progress.total(), progress.failed()), (3, 3, 0));
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    total: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    started: Instant,
    bar: Option<bar::Bar>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Progress({}/{})", self.done(), self.total())
    }
}

/// Whether to draw a bar: asked for, stderr a terminal, and
/// `DFUT_PROGRESS` (`env`) not `0`.
fn bar_wanted(show: bool, terminal: bool, env: Option<&str>) -> bool {
    show && terminal && env != Some("0")
}

impl Progress {
    /// A counter for `total` tasks. With `show`, a progress bar labelled
    /// `label` is drawn on stderr if it is a terminal, `DFUT_PROGRESS` is
    /// not `0` and dfut was built with its `progress` feature.
    pub fn new(total: u64, label: &str, show: bool) -> Self {
        let wanted = bar_wanted(
            show,
            std::io::stderr().is_terminal(),
            std::env::var("DFUT_PROGRESS").ok().as_deref(),
        );
        let bar = if wanted { bar::new(total, label) } else { None };
        Self {
            inner: Arc::new(Inner {
                total: AtomicU64::new(total),
                done: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                started: Instant::now(),
                bar,
            }),
        }
    }

    /// Counts `future` when it settles (finished or failed).
    pub fn track<T>(&self, future: &DistFuture<T>) {
        let settled = future.settled();
        let progress = self.clone();
        let count = move |status: Status| progress.count(status == Status::Failed);
        match future.object().client.as_ref() {
            Some(client) => {
                client.handle().spawn(async move { count(settled.await) });
            }
            None => count(future.status()),
        }
    }

    fn count(&self, failed: bool) {
        if failed {
            self.inner.failed.fetch_add(1, Ordering::Relaxed);
        }
        let done = self.inner.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.inner.bar {
            bar.set_position(done);
            if done >= self.total() {
                bar.finish();
            }
        }
    }

    /// Tasks settled so far (failed ones included).
    pub fn done(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    /// Tasks failed so far.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Tasks in the job.
    pub fn total(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Tasks settled per second since the start.
    pub fn rate(&self) -> f64 {
        self.done() as f64 / self.inner.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Estimated time to finish at the current rate (`None` before the
    /// first task settles).
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (self.done() > 0 && rate > 0.0).then(|| {
            Duration::from_secs_f64(self.total().saturating_sub(self.done()) as f64 / rate)
        })
    }

    /// Whether every task has settled.
    pub fn is_complete(&self) -> bool {
        self.done() >= self.total()
    }

    /// Blocks until every task has settled.
    pub fn wait(&self) {
        while !self.is_complete() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The terminal bar: indicatif's with the `progress` feature, else none.
#[cfg(feature = "progress")]
mod bar {
    use std::time::Duration;

    pub(super) type Bar = indicatif::ProgressBar;

    pub(super) fn new(total: u64, label: &str) -> Option<Bar> {
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} tasks, {per_sec}, eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

/// The terminal bar: indicatif's with the `progress` feature, else none.
#[cfg(not(feature = "progress"))]
mod bar {
    /// Never made: there is no bar without the `progress` feature.
    pub(super) enum Bar {}

    pub(super) fn new(_total: u64, _label: &str) -> Option<Bar> {
        None
    }

    impl Bar {
        pub(super) fn set_position(&self, _done: u64) {
            match *self {}
        }

        pub(super) fn finish(&self) {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bar_needs_asking_a_terminal_and_no_dfut_progress_0() {
        use super::bar_wanted;
        assert!(bar_wanted(true, true, None));
        assert!(bar_wanted(true, true, Some("1")));
        assert!(!bar_wanted(true, true, Some("0")));
        assert!(!bar_wanted(true, false, None), "not a terminal");
        assert!(!bar_wanted(false, true, None), "`.progress(false)`");
    }
}
