//! Per-call options: override a remote function's deadline and retries for
//! the calls made inside one closure.
//!
//! `#[remote(timeout_ms = .., retries = .., retry_on_error)]` fixes a
//! function's defaults at compile time; [`Options::call`] overrides them
//! for every remote call its closure makes on this thread. The override is
//! a thread-local, so it needs no change to the generated functions and
//! works the same for every one of them (later options, such as resources,
//! extend this type).

use std::cell::Cell;
use std::time::Duration;

use crate::client::FnSpec;

/// Options for the remote calls made inside [`Options::call`]. Unset
/// fields keep the function's own defaults (from `#[dfut::remote(..)]`).
///
/// ```
/// use std::time::Duration;
///
/// #[dfut::remote]
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// let _ctx = rt.enter();
/// let sum = dfut::Options::new()
///     .timeout(Duration::from_secs(5))
///     .retries(3)
///     .retry_on_error(true)
///     .call(|| add(1, 2));
/// assert_eq!(sum.get()?, 3);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    timeout: Option<Duration>,
    retries: Option<u32>,
    retry_on_error: Option<bool>,
    priority: Option<Priority>,
}

/// How urgent a call is: background work (a prefetch, a warm-up) is
/// [`Priority::Low`] and never goes ahead of [`Priority::Normal`] work.
///
/// Low-priority tasks wait in their owner's backlog behind every normal
/// task waiting there. At a worker they never take a slot: they run on a
/// background lane of their own (as many at once as the worker's slots
/// less one, at least one), on Linux at the lowest priority (nice 19),
/// and start only while no normal task waits and a slot is idle. A normal
/// task arriving while background work runs takes a free slot at once,
/// and the kernel runs it ahead of the background thread. A running task
/// is never interrupted: a normal task waiting for the result of a
/// background task already running waits at that task's priority.
/// Threads a background task starts inherit its priority. `async` remote
/// functions hold no slot, so priority does not order them.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn warm(x: u64) -> u64 { x }
/// let later = dfut::Options::new()
///     .priority(dfut::Priority::Low)
///     .call(|| warm(1));
/// assert_eq!(later.get()?, 1);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Demand work (the default).
    #[default]
    Normal,
    /// Background work.
    Low,
}

impl Options {
    /// No overrides: every call keeps its function's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails a call that runs longer than `limit` with
    /// [`Error::Timeout`](crate::Error::Timeout); `Duration::ZERO` removes
    /// the function's deadline. Deadlines are whole milliseconds (rounded
    /// up), at most `u32::MAX` ms.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// How many times a call is re-run after its worker dies (and, with
    /// [`retry_on_error`](Self::retry_on_error), after it fails).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Whether a call that panics, returns `Err` or times out is re-run
    /// too, while retries are left (as Ray's `retry_exceptions`).
    pub fn retry_on_error(mut self, retry: bool) -> Self {
        self.retry_on_error = Some(retry);
        self
    }

    /// Sets the calls' priority (see [`Priority`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Clears this thread's options until the guard drops (a task run on a
    /// thread that another task's `call` is waiting on starts afresh).
    pub(crate) fn isolate() -> impl Drop {
        let previous = CURRENT.with(|c| c.replace(Options::new()));
        Restore(previous)
    }

    /// Runs `calls`; every remote call it makes on this thread uses these
    /// options. Nested `call`s override field by field, and the previous
    /// options come back when `calls` returns or panics.
    pub fn call<R>(self, calls: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.get());
        let merged = Options {
            timeout: self.timeout.or(previous.timeout),
            retries: self.retries.or(previous.retries),
            retry_on_error: self.retry_on_error.or(previous.retry_on_error),
            priority: self.priority.or(previous.priority),
        };
        CURRENT.with(|c| c.set(merged));
        let _restore = Restore(previous);
        calls()
    }
}

thread_local! {
    /// The options [`Options::call`] set on this thread.
    static CURRENT: Cell<Options> = const {
        Cell::new(Options { timeout: None, retries: None, retry_on_error: None, priority: None })
    };
}

/// Puts the previous options back, even if the closure panics.
struct Restore(Options);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// The options one call runs with: its function's defaults, overridden by
/// [`Options::call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallOptions {
    /// Deadline in milliseconds; 0 for none.
    pub timeout_ms: u32,
    pub retries: u32,
    pub retry_on_error: bool,
    pub low: bool,
}

impl CallOptions {
    /// The options for a call of `spec` made now on this thread.
    pub fn for_call(spec: &FnSpec) -> Self {
        let o = CURRENT.with(|c| c.get());
        Self {
            timeout_ms: o.timeout.map_or(spec.timeout_ms, millis),
            retries: o.retries.unwrap_or(spec.retries),
            retry_on_error: o.retry_on_error.unwrap_or(spec.retry_on_error),
            low: o.priority == Some(Priority::Low),
        }
    }
}

/// Whole milliseconds, rounded up, saturating at `u32::MAX`.
fn millis(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPEC: FnSpec = FnSpec {
        name: "t::f",
        signature: crate::__private::unchecked,
        retries: 2,
        gpu: false,
        cost: None,
        timeout_ms: 100,
        retry_on_error: false,
    };

    #[test]
    fn defaults_come_from_the_function() {
        let o = CallOptions::for_call(&SPEC);
        assert_eq!(
            o,
            CallOptions {
                timeout_ms: 100,
                retries: 2,
                retry_on_error: false,
                low: false,
            }
        );
        let low = Options::new()
            .priority(Priority::Low)
            .call(|| CallOptions::for_call(&SPEC));
        assert!(low.low);
    }

    #[test]
    fn call_overrides_inside_and_restores_after() {
        let inner = Options::new().retries(5).call(|| {
            Options::new()
                .timeout(Duration::from_micros(1500))
                .call(|| CallOptions::for_call(&SPEC))
        });
        assert_eq!(inner.retries, 5, "the outer override stays in force");
        assert_eq!(inner.timeout_ms, 2, "rounded up to whole milliseconds");
        assert_eq!(CallOptions::for_call(&SPEC).retries, 2);
        let zero = Options::new()
            .timeout(Duration::ZERO)
            .call(|| CallOptions::for_call(&SPEC));
        assert_eq!(zero.timeout_ms, 0);
    }

    #[test]
    fn a_panicking_closure_still_restores() {
        let r = std::panic::catch_unwind(|| {
            Options::new().retry_on_error(true).call(|| panic!("boom"))
        });
        assert!(r.is_err());
        assert!(!CallOptions::for_call(&SPEC).retry_on_error);
    }
}
