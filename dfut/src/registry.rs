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

use dfut_net::wire::{Failure, FailureKind};

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
    /// Where it is defined (`file:line`).
    pub location: &'static str,
    /// The hash of its argument and result types
    /// ([`crate::__private::signature`]).
    pub signature: fn() -> u64,
    /// How to call it.
    pub invoke: Invoke,
    /// Whether it runs only on GPU workers (and may use their GPU).
    pub gpu: bool,
}

inventory::collect!(RemoteFn);

/// A registered function with the run times a worker has measured for it.
pub(crate) struct Entry {
    pub function: &'static RemoteFn,
    /// `function.signature()`, computed once.
    signature: u64,
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

/// The functions linked into this binary by name, and every name
/// registered twice (with the second definition's location).
struct Table {
    by_name: HashMap<&'static str, Entry>,
    duplicates: Vec<&'static RemoteFn>,
}

impl Table {
    fn of(functions: impl IntoIterator<Item = &'static RemoteFn>) -> Self {
        let mut table = Table {
            by_name: HashMap::new(),
            duplicates: Vec::new(),
        };
        for f in functions {
            if table.by_name.contains_key(f.name) {
                table.duplicates.push(f);
                continue;
            }
            let entry = Entry {
                function: f,
                signature: (f.signature)(),
                mean_ns: AtomicU64::new(0),
                blocks: AtomicBool::new(false),
            };
            table.by_name.insert(f.name, entry);
        }
        table
    }

    /// An error naming both definitions of each duplicated name.
    fn check_unique(&self) -> crate::Result<()> {
        let clashes: Vec<String> = self
            .duplicates
            .iter()
            .map(|d| {
                let first = self
                    .by_name
                    .get(d.name)
                    .map_or("?", |e| e.function.location);
                format!("`{}` at {first} and at {}", d.name, d.location)
            })
            .collect();
        if clashes.is_empty() {
            return Ok(());
        }
        Err(crate::Error::Config(
            format!(
                "remote functions registered twice under one name (calls could reach \
             either): {}; rename one, or link only one version of its crate",
                clashes.join("; ")
            )
            .into(),
        ))
    }

    fn lookup(&self, name: &str, signature: u64) -> Result<&Entry, Failure> {
        let Some(entry) = self.by_name.get(name) else {
            return Err(Failure {
                kind: FailureKind::UnknownFunction,
                message: format!("no remote function `{name}` in this worker"),
                location: String::new(),
                causes: Vec::new(),
                backtrace: String::new(),
            });
        };
        if signature != 0 && entry.signature != 0 && signature != entry.signature {
            return Err(Failure {
                kind: FailureKind::SignatureMismatch,
                message: format!(
                    "the worker's `{name}` (defined at {}) takes or returns other types \
                     than the caller's: build the driver and the workers from the same \
                     source",
                    entry.function.location
                ),
                location: String::new(),
                causes: Vec::new(),
                backtrace: String::new(),
            });
        }
        Ok(entry)
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[cfg(feature = "matrix")]
        crate::matrix::link();
        crate::put::link();
        Table::of(inventory::iter::<RemoteFn>)
    })
}

/// Finds a remote function by its registered name, for a caller compiled
/// with `signature` (0: not checked).
pub(crate) fn lookup(name: &str, signature: u64) -> Result<&'static Entry, Failure> {
    table().lookup(name, signature)
}

/// Refuses a binary in which two remote functions share a name, naming
/// both definitions. Workers and drivers check this at start.
pub(crate) fn check_unique() -> crate::Result<()> {
    table().check_unique()
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

    fn nothing(_: Args) -> TaskResult {
        Ok(crate::blob::blob(Vec::new()))
    }

    static F: RemoteFn = RemoteFn {
        name: "t::f",
        location: "src/a.rs:1",
        signature: || 11,
        invoke: Invoke::Sync(nothing),
        gpu: false,
    };

    #[test]
    fn unknown_names_are_not_found() {
        let e = lookup("no::such::function", 0).err().map(|f| f.kind);
        assert_eq!(e, Some(FailureKind::UnknownFunction));
    }

    #[test]
    fn a_caller_built_with_other_types_is_refused_by_name() {
        let table = Table::of([&F]);
        assert!(table.lookup("t::f", 11).is_ok());
        assert!(table.lookup("t::f", 0).is_ok(), "0 is unchecked");
        let refused = table.lookup("t::f", 12).err().unwrap();
        assert_eq!(refused.kind, FailureKind::SignatureMismatch);
        assert!(refused.message.contains("`t::f`"), "{}", refused.message);
        assert!(
            refused.message.contains("src/a.rs:1"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_name_registered_twice_is_refused_with_both_locations() {
        static G: RemoteFn = RemoteFn {
            name: "t::f",
            location: "src/b.rs:9",
            signature: || 11,
            invoke: Invoke::Sync(nothing),
            gpu: false,
        };
        assert!(Table::of([&F]).check_unique().is_ok());
        let e = Table::of([&F, &G]).check_unique().unwrap_err().to_string();
        assert!(e.contains("`t::f` at src/a.rs:1 and at src/b.rs:9"), "{e}");
        // The binary's own table has no duplicates.
        check_unique().unwrap();
    }

    #[test]
    fn signatures_differ_by_type_and_order_and_are_never_zero() {
        use crate::__private::signature;
        let a = signature(&["u64", "alloc::string::String", "u64"]);
        assert_ne!(a, signature(&["alloc::string::String", "u64", "u64"]));
        assert_ne!(a, signature(&["u64", "alloc::string::String", "u32"]));
        assert_ne!(signature(&["ab", "c"]), signature(&["a", "bc"]));
        assert_ne!(signature(&[]), 0);
        assert_eq!(a, signature(&["u64", "alloc::string::String", "u64"]));
    }

    #[test]
    fn run_times_are_an_exponentially_weighted_mean() {
        let e = Entry {
            signature: 11,
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
