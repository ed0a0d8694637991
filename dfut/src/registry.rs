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

use dfut_net::wire::Failure;

/// Encoded arguments handed to a generated invoker, in declaration order.
pub type Args = Vec<crate::object::Blob>;
/// What an invoker returns: the encoded result or why it failed.
pub type TaskResult = std::result::Result<Vec<u8>, Failure>;
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
}

inventory::collect!(RemoteFn);

/// Finds a remote function by its registered name.
pub fn lookup(name: &str) -> Option<&'static RemoteFn> {
    static TABLE: OnceLock<HashMap<&'static str, &'static RemoteFn>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            inventory::iter::<RemoteFn>
                .into_iter()
                .map(|f| (f.name, f))
                .collect()
        })
        .get(name)
        .copied()
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
