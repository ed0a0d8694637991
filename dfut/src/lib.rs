//! # dfut: distributed futures for Rust
//!
//! Annotate a function with [`#[dfut::remote]`](remote), call it, and get a
//! [`DistFuture`] back at once: a handle to a value being computed on a
//! worker process somewhere in the cluster. Handles can be awaited, waited
//! on, polled, and passed as arguments to other remote calls; the value then
//! moves from the worker holding it straight to the worker that needs it.
//!
//! ```
//! # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
//! # let _guard = rt.enter();
//! #[dfut::remote]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! // In a real program: `let _rt = dfut::init()?;` starts a local cluster.
//! let x = add(1, 2);              // DistFuture<i64>, returns immediately
//! let y = add(x.clone(), 10);     // a future as an argument
//! assert_eq!(y.get()?, 13);
//! # Ok::<(), dfut::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` in the repository for how the pieces fit.
//!
//! ## Features
//!
//! The default build is the core alone: `#[remote]`, `DistFuture`, the
//! combinators, workers, the scheduler and the QUIC transport. Optional:
//!
//! - `cli`: the `dfut` tool and `WorkerConfig::parse` (flags as
//!   well as environment variables);
//! - `progress`: a progress bar on the driver's terminal for [`Progress`];
//! - `matrix`: `dfut::matrix`, dense matrices on faer and the tiled product;
//! - `gpu`: the matrix module's wgpu path (implies `matrix`);
//! - `serde`: `dfut::Serde<T>`, any serde type as an argument or result.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Lets `#[dfut::remote]` functions inside this crate name it `::dfut`.
extern crate self as dfut;

/// Logs why a peer's connection ended: at debug when it simply went away
/// (a tool's query done, a driver exiting), else as a warning.
pub(crate) fn log_connection_end(peer: std::net::SocketAddr, e: &dfut_net::NetError) {
    if matches!(e, dfut_net::NetError::ConnectionLost { .. }) {
        tracing::debug!(%peer, "connection ended: {e}");
    } else {
        tracing::warn!(%peer, "dropping connection: {e}");
    }
}

/// Locks `m`, carrying on past a poisoned lock: every critical section in
/// this crate leaves its data consistent before anything that can panic.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod archived;
mod arg;
mod backoff;
mod blob;
mod client;
mod clock;
mod combinators;
mod context;
mod data;
mod error;
mod future;
mod host_cache;
pub mod inspect;
mod limits;
mod local;
mod mapreduce;
#[cfg(feature = "matrix")]
#[cfg_attr(docsrs, doc(cfg(feature = "matrix")))]
pub mod matrix;
mod object;
mod options;
mod progress;
mod put;
mod registry;
mod runtime;
pub mod scheduler;
#[cfg(feature = "serde")]
mod serde_data;
mod shm;
pub mod worker;

#[doc(hidden)]
pub mod __private;

pub use archived::Archived;
pub use arg::{IntoArg, Many};
pub use client::{Client, ClientStats, Speculation};
pub use combinators::{
    Completed, Settled, as_completed, get_all, join_all, reduce_calls, tree_reduce, wait,
    wait_async,
};
pub use context::EnterGuard;
pub use data::Data;
pub use dfut_macros::remote;
pub use dfut_net::{Cause, ClusterCredential, NetError};
pub use error::{Error, Result};
pub use future::DistFuture;
pub use mapreduce::{Job, MapReduce};
pub use object::Status;
pub use options::{Options, Priority, Strategy};
pub use progress::Progress;
pub use put::put;
pub use registry::registered_functions;
pub use runtime::{Builder, Runtime, WorkerOptions, init, init_async};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use serde_data::Serde;
pub use worker::cancelled;

/// The rkyv crate dfut uses; derive its traits on your own argument and
/// result types (with `#[rkyv(crate = dfut::rkyv)]` if you do not depend on
/// rkyv yourself).
pub use rkyv;

/// Installs a `tracing` subscriber printing to stderr, filtered by
/// `DFUT_LOG` (default `warn`). Called by worker processes, the `dfut`
/// tool and [`init`]; does nothing if a subscriber is set (install yours
/// before calling [`init`] to keep it).
///
/// ```
/// dfut::init_tracing();
/// ```
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DFUT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A tiny deterministic generator (xorshift) for the randomized unit
/// tests: they need no dependency.
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A fresh, empty directory for one unit test.
#[cfg(test)]
pub(crate) fn testing_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dfut-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}
