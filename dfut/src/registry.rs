//! The table of remote functions linked into this binary.
//!
//! `#[dfut::remote]` submits one [`RemoteFn`] per function with `inventory`;
//! workers look functions up here by their registered name, which is the
//! function's full module path (`my_crate::module::name`), so two functions
//! of the same name in different modules never collide. This module neither
//! decodes arguments nor runs anything: the generated `invoke` does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dfut_net::wire::Failure;

/// The encoded bytes of one argument.
#[derive(Debug, Clone)]
pub enum ArgBytes {
    /// A single value.
    One(crate::object::Blob),
    /// The elements of a `Many<T>` argument.
    Many(Vec<crate::object::Blob>),
}

/// Encoded arguments handed to a generated invoker, in declaration order.
pub type Args = Vec<ArgBytes>;
/// What an invoker returns: the encoded result or why it failed.
pub type TaskResult = std::result::Result<crate::object::Blob, Failure>;
/// The future an async invoker returns.
pub type BoxTask = Pin<Box<dyn Future<Output = TaskResult> + Send>>;

/// How a worker calls a remote function.
#[derive(Clone, Copy)]
pub enum Invoke {
    /// A plain function, run on a blocking thread.
    Sync(fn(Args) -> TaskResult),
    /// An `async fn`, run on the worker's runtime.
    Async(fn(Args) -> BoxTask),
}

impl std::fmt::Debug for Invoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invoke::Sync(_) => "Invoke::Sync",
            Invoke::Async(_) => "Invoke::Async",
        })
    }
}

/// One registered remote function.
#[derive(Debug)]
pub struct RemoteFn {
    /// The registered name: the function's module path and name.
    pub name: &'static str,
    /// How to call it.
    pub invoke: Invoke,
    /// Whether it runs only on GPU workers (and may use their GPU).
    pub gpu: bool,
}

inventory::collect!(RemoteFn);

/// A registered function with the run times a worker has measured for it.
pub(crate) struct Entry {
    pub function: &'static RemoteFn,
    /// Exponentially weighted mean run time in nanoseconds; 0 until the
    /// first run has been measured.
    mean_ns: AtomicU64,
    /// A task of this function blocked (in a nested wait) or ran long on
    /// the inline path: it never runs inline again.
    blocks: AtomicBool,
}

impl Entry {
    /// The measured mean run time, if the function has run here.
    pub fn mean(&self) -> Option<Duration> {
        match self.mean_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Whether a task of it ever blocked or ran long inline.
    pub fn blocks(&self) -> bool {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Records that a task of it blocked or ran long inline.
    pub fn mark_blocking(&self) {
        self.blocks.store(true, Ordering::Relaxed);
    }

    /// Adds one measured run (weight 1/8).
    pub fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.mean_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        // Racing updates may drop a sample; the mean stays a fair estimate.
        self.mean_ns.store(new.max(1), Ordering::Relaxed);
    }
}

/// Finds a remote function by its registered name.
pub(crate) fn lookup(name: &str) -> Option<&'static Entry> {
    static TABLE: OnceLock<HashMap<&'static str, Entry>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            crate::matrix::link();
            crate::put::link();
            inventory::iter::<RemoteFn>
                .into_iter()
                .map(|f| {
                    let entry = Entry {
                        function: f,
                        mean_ns: AtomicU64::new(0),
                        blocks: AtomicBool::new(false),
                    };
                    (f.name, entry)
                })
                .collect()
        })
        .get(name)
}

/// The names of every remote function linked into this binary, sorted.
///
/// ```
/// // Functions defined with #[dfut::remote] anywhere in the binary appear here.
/// let names = dfut::registered_functions();
/// assert!(names.windows(2).all(|w| w[0] < w[1]));
/// ```
pub fn registered_functions() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<RemoteFn>
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_not_found() {
        assert!(lookup("no::such::function").is_none());
    }

    #[test]
    fn run_times_are_an_exponentially_weighted_mean() {
        static F: RemoteFn = RemoteFn {
            name: "t::f",
            invoke: Invoke::Sync(|_| Ok(crate::blob::blob(Vec::new()))),
            gpu: false,
        };
        let e = Entry {
            function: &F,
            mean_ns: AtomicU64::new(0),
            blocks: AtomicBool::new(false),
        };
        assert_eq!(e.mean(), None);
        e.record(Duration::from_micros(80));
        assert_eq!(e.mean(), Some(Duration::from_micros(80)));
        for _ in 0..50 {
            e.record(Duration::from_micros(8));
        }
        let mean = e.mean().unwrap();
        assert!(mean < Duration::from_micros(9), "{mean:?}");
    }
}
