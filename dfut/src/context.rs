//! Which client a remote call on this thread uses, and the task slot a
//! worker thread holds while it runs a task.
//!
//! A call uses the thread's current client (set by [`Runtime::enter`] and on
//! every runtime thread), else the process default (set by `dfut::init()`
//! and by a worker for the tasks it runs).
//!
//! [`Runtime::enter`]: crate::Runtime::enter

use std::cell::RefCell;
use std::sync::RwLock;

use crate::client::Client;

static DEFAULT: RwLock<Option<Client>> = RwLock::new(None);

thread_local! {
    static CURRENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// The client remote calls on this thread use, if any.
pub(crate) fn current() -> Option<Client> {
    CURRENT
        .with(|c| c.borrow().clone())
        .or_else(|| DEFAULT.read().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Sets the process default client.
pub(crate) fn set_default(client: Option<Client>) {
    *DEFAULT.write().unwrap_or_else(|p| p.into_inner()) = client;
}

/// Clears the process default if it is `client`.
pub(crate) fn clear_default(client: &Client) {
    let mut d = DEFAULT.write().unwrap_or_else(|p| p.into_inner());
    if d.as_ref().is_some_and(|c| c.node_id() == client.node_id()) {
        *d = None;
    }
}

/// Makes `client` current on this thread until the guard is dropped.
pub(crate) fn enter(client: Client) -> EnterGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(client));
    EnterGuard {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

/// Restores the previous current client when dropped. Returned by
/// [`Runtime::enter`](crate::Runtime::enter).
#[must_use = "the runtime is current only while the guard lives"]
pub struct EnterGuard {
    previous: Option<Client>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for EnterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnterGuard")
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Makes `client` the process default unless one is set.
pub(crate) fn set_default_if_unset(client: &Client) {
    let mut d = DEFAULT.write().unwrap_or_else(|p| p.into_inner());
    if d.is_none() {
        *d = Some(client.clone());
    }
}

/// A future that polls its inner future with a client current, so remote
/// calls made by an async task go through its worker's client.
pub(crate) struct WithClient<F> {
    client: Client,
    /// The task this future runs (its id and function), named in the log
    /// lines it prints.
    task: Option<(dfut_net::wire::ObjectId, &'static str)>,
    inner: std::pin::Pin<Box<F>>,
}

impl<F> WithClient<F> {
    pub fn new(client: Client, inner: F) -> Self {
        Self {
            client,
            task: None,
            inner: Box::pin(inner),
        }
    }

    /// The same, running task `id` of `function`.
    pub fn for_task(
        client: Client,
        id: dfut_net::wire::ObjectId,
        function: &'static str,
        inner: F,
    ) -> Self {
        Self {
            task: Some((id, function)),
            ..Self::new(client, inner)
        }
    }
}

thread_local! {
    /// The async task being polled on this thread, if any.
    static ASYNC_TASK: std::cell::Cell<Option<(dfut_net::wire::ObjectId, &'static str)>> =
        const { std::cell::Cell::new(None) };
}

/// The async task being polled on this thread, if any: its id and
/// function.
pub(crate) fn current_async_task() -> Option<(dfut_net::wire::ObjectId, &'static str)> {
    ASYNC_TASK.try_with(std::cell::Cell::get).ok().flatten()
}

impl<F: std::future::Future> std::future::Future for WithClient<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _current = enter(self.client.clone());
        let outer = ASYNC_TASK.with(|t| t.replace(self.task));
        let polled = self.inner.as_mut().poll(cx);
        ASYNC_TASK.with(|t| t.set(outer));
        polled
    }
}

thread_local! {
    static GPU_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is running a `#[remote(gpu)]` task.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(crate) fn in_gpu_task() -> bool {
    GPU_TASK.with(std::cell::Cell::get)
}

/// Runs `f` marked as (or not as) a GPU task.
pub(crate) fn as_gpu_task<R>(gpu: bool, f: impl FnOnce() -> R) -> R {
    let previous = GPU_TASK.with(|g| g.replace(gpu));
    let r = f();
    GPU_TASK.with(|g| g.set(previous));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gpu_task_mark_is_scoped() {
        assert!(!in_gpu_task());
        let inside = as_gpu_task(true, || (in_gpu_task(), as_gpu_task(false, in_gpu_task)));
        assert_eq!(inside, (true, false));
        assert!(!in_gpu_task());
    }
}
