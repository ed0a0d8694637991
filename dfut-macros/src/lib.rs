//! The `#[remote]` attribute of dfut. Use it through `dfut::remote`. This
//! crate only parses, checks and generates glue: every piece of logic lives
//! in `dfut`.
#![warn(missing_docs)]

use proc_macro::TokenStream;

mod remote;

/// Turns a function into a remote function: calling it returns a
/// `dfut::DistFuture` at once while a worker computes the value.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// let x = add(1, 2);            // runs on a worker
/// let y = add(&x, 10);          // takes a value or a future of it
/// assert_eq!(y.get()?, 13);
/// assert_eq!(add_local(1, 2), 3); // the plain function, run here
/// # Ok::<(), dfut::Error>(())
/// ```
///
/// # What it generates
///
/// For `fn add(a: i64, b: i64) -> i64`, in the same module:
///
/// - `fn add_local(a: i64, b: i64) -> i64`: the function as written, under
///   the name `<name>_local`, callable as a plain function.
/// - `fn add(a: impl IntoArg<i64>, b: impl IntoArg<i64>) -> DistFuture<i64>`:
///   the stub. It encodes the arguments and submits the call through the
///   current runtime; it never blocks.
/// - A registration (with `inventory`) under the name
///   `module::path::add`, by which workers find the function. Functions
///   with the same name in different modules never collide.
///
/// # Signatures
///
/// - Plain and `async` functions. Arguments and results must implement
///   `dfut::Data` (anything rkyv can archive). A function returning
///   `Result<T, E>` (any type named `Result` with `T` first, `E: Display`)
///   gives a `DistFuture<T>`; an `Err` becomes `dfut::Error::TaskFailed`.
/// - Rejected at compile time, with the reason on the offending span:
///   generic parameters, `self`, reference, pointer, `impl Trait` and
///   trait-object types, `const`/`unsafe`/`extern` functions, and types
///   that cannot be archived.
///
/// # Options
///
/// - `#[remote(retries = N)]`: re-run the task up to `N` times if the
///   worker running it (or holding its result) dies.
/// - `#[remote(gpu)]`: run only on GPU workers, sharing their GPU with
///   the other tasks there (as many at once as the worker has slots).
/// - `#[remote(cpus = N, gpus = N, memory_mb = N, resources(name = N, ..))]`:
///   what each task holds on its worker while it runs (default: one CPU
///   and nothing else); `gpus = N` holds N GPUs exclusively. A worker's
///   CPUs are its slots; only workers declaring at least this much run
///   the task, and a worker starts it only once that much is free.
///   `memory_mb` is reserved, not enforced. `dfut::Options` overrides each
///   per call.
/// - `#[remote(cost = X)]`: the task's relative cost (1.0 typical), a hint
///   for placement policies.
/// - `#[remote(name = "...")]`: the name it is registered and called by
///   (default: its module path and name), to keep it stable across a
///   refactor. Two functions of one name in a binary stop it at start,
///   and a worker refuses a call whose argument and result types differ
///   from its own function's (`Error::SignatureMismatch`).
/// - `#[remote(crate = "path")]`: where the `dfut` crate is, if renamed.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote(retries = 3)]
/// async fn fetch_len(url: String) -> Result<usize, String> {
///     if url.is_empty() { Err("empty url".into()) } else { Ok(url.len()) }
/// }
///
/// assert_eq!(fetch_len("abc").get()?, 3);
/// assert!(matches!(fetch_len("").get(), Err(dfut::Error::TaskFailed { .. })));
/// # Ok::<(), dfut::Error>(())
/// ```
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    remote::expand(attr.into(), item.into()).into()
}
