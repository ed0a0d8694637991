//! `dfut::put`: a value stored in the cluster once, to pass by reference
//! to many tasks.
//!
//! A put is an ordinary task of a built-in function that returns its
//! argument's bytes: the value travels to one worker (chosen by the
//! placement policy), lives in its store like any result, and every task
//! that takes the handle reads it there (or fetches it from there) instead
//! of receiving its own copy from the driver.

use crate::IntoArg;
use crate::client::FnSpec;
use crate::data::Data;
use crate::future::DistFuture;
use crate::registry::{ArgBytes, Args, Invoke, RemoteFn, TaskResult};
use dfut_net::wire::{Failure, FailureKind};

/// The registered name of the built-in put function.
const NAME: &str = "dfut::put";

static SPEC: FnSpec = FnSpec {
    name: NAME,
    // Any value: the result is the argument's bytes.
    signature: crate::__private::unchecked,
    retries: 0,
    cpus: 1,
    gpu: false,
    gpus: 0,
    memory_mb: 0,
    resources: &[],
    cost: None,
    timeout_ms: 0,
    retry_on_error: false,
};

inventory::submit! {
    RemoteFn {
        name: NAME,
        location: concat!(file!(), ":", line!()),
        signature: crate::__private::unchecked,
        invoke: Invoke::Sync(stored),
        gpu: false,
    }
}

/// The worker's side: the result is the argument's bytes as they are (both
/// are the archive of the same value), with no copy: a file its owner
/// sealed in shared memory stays a mapping of that file, which the store
/// then links as its own.
fn stored(args: Args) -> TaskResult {
    let mut args = args.into_iter();
    match (args.next(), args.next()) {
        (Some(ArgBytes::One(bytes)), None) => Ok(bytes),
        _ => Err(Failure {
            kind: FailureKind::Decode,
            message: "put takes exactly one value".into(),
            location: String::new(),
            causes: Vec::new(),
            backtrace: String::new(),
        }),
    }
}

/// Keeps the built-in put function linked into every binary that uses
/// dfut (registration is by a static constructor in this object file).
#[inline(never)]
pub(crate) fn link() -> usize {
    std::hint::black_box(stored as fn(Args) -> TaskResult as usize)
}

/// Stores `value` on a worker once and returns its handle at once; pass
/// the handle (or `&handle`) to as many calls as need the value, and none
/// of them sends it again (a value of 64 KiB or less comes back to the
/// driver too and travels inline with each call, as any small result).
///
/// The value is lost with its worker unless the put has retries (for
/// example `dfut::Options::new().retries(1).call(|| dfut::put(v))`), in
/// which case the driver keeps its bytes to place it again.
///
/// ```
/// #[dfut::remote]
/// fn nth(table: Vec<u64>, i: u64) -> u64 {
///     table[i as usize]
/// }
///
/// let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// let _ctx = rt.enter();
/// let table = dfut::put((0..100_000u64).map(|x| x * 2).collect::<Vec<u64>>());
/// let picks: Vec<_> = (0..10).map(|i| nth(&table, i * 1000)).collect();
/// for (i, p) in picks.iter().enumerate() {
///     assert_eq!(p.get()?, i as u64 * 2000);
/// }
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn put<T: Data>(value: T) -> DistFuture<T> {
    crate::__private::submit::<T>(&SPEC, vec![IntoArg::<T>::into_arg(value)])
}
