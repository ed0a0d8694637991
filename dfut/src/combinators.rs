//! Combinators over [`DistFuture`]s: join, wait for the first k, completion
//! order, chaining and tree reduction.
//!
//! None of them moves a value through the caller unless asked to: chaining
//! and reduction submit remote tasks whose arguments are the futures
//! themselves, so values go from worker to worker. A failed input surfaces
//! as that input's error, and the other inputs are kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};

use crate::data::Data;
use crate::future::DistFuture;
use crate::object::{ObjectRef, Status};
use crate::{Error, Result};

/// Waits for every future and returns their results in the input order.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote]
/// fn half(x: u64) -> Result<u64, String> {
///     if x % 2 == 0 { Ok(x / 2) } else { Err(format!("{x} is odd")) }
/// }
///
/// let results = rt.block_on(dfut::join_all((2..6).map(half)));
/// assert_eq!(results[0], Ok(1));
/// assert!(results[1].is_err());          // 3 is odd: only that input fails
/// assert_eq!(results[2], Ok(2));
/// # Ok::<(), dfut::Error>(())
/// ```
pub async fn join_all<T: Data>(futures: impl IntoIterator<Item = DistFuture<T>>) -> Vec<Result<T>> {
    futures_util::future::join_all(futures).await
}

/// Blocking [`join_all`]: every result, in order.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn inc(x: u64) -> u64 { x + 1 }
/// let fs: Vec<_> = (0..3).map(inc).collect();
/// assert_eq!(dfut::get_all(&fs), vec![Ok(1), Ok(2), Ok(3)]);
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn get_all<T: Data>(futures: &[DistFuture<T>]) -> Vec<Result<T>> {
    futures.iter().map(DistFuture::get).collect()
}

/// A future that resolves once a [`DistFuture`] is finished or failed,
/// without fetching its value. See [`DistFuture::settled`].
#[derive(Debug)]
pub struct Settled {
    obj: Arc<ObjectRef>,
}

impl Future for Settled {
    type Output = Status;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Status> {
        match self.obj.cell.poll_settled(cx.waker()) {
            Some(_) => Poll::Ready(self.obj.cell.status()),
            None => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.cell.id)
    }
}

impl<T> DistFuture<T> {
    /// Resolves when the value is ready (or failed), without fetching it.
    pub fn settled(&self) -> Settled {
        Settled {
            obj: self.object().clone(),
        }
    }

    /// Chains a remote call onto this future: `f` receives the future itself
    /// (not its value), so the value goes straight to the worker running `f`.
    ///
    /// ```
    /// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
    /// # let _guard = rt.enter();
    /// #[dfut::remote] fn inc(x: u64) -> u64 { x + 1 }
    /// #[dfut::remote] fn square(x: u64) -> u64 { x * x }
    ///
    /// let y = inc(2).then(square).then(inc);
    /// assert_eq!(y.get()?, 10);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn then<U>(&self, f: impl FnOnce(DistFuture<T>) -> DistFuture<U>) -> DistFuture<U> {
        f(self.clone())
    }
}

/// Waits until `k` of `futures` are ready (finished or failed), or
/// `timeout` passes, like `ray.wait`. Returns `(ready, not_ready)`, each in
/// input order: at most `k` ready ones (the first in input order, when more
/// are), and the rest, ready or not. Never fetches values.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote]
/// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
///
/// let fs = vec![nap(0), nap(3000), nap(0)];
/// let (ready, not_ready) = dfut::wait(fs, 2, Some(std::time::Duration::from_secs(2)));
/// assert_eq!((ready.len(), not_ready.len()), (2, 1));
/// assert_eq!(not_ready[0].get_timeout(std::time::Duration::from_millis(1)).is_err(), true);
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn wait<T>(
    futures: Vec<DistFuture<T>>,
    k: usize,
    timeout: Option<Duration>,
) -> (Vec<DistFuture<T>>, Vec<DistFuture<T>>) {
    let client = futures.iter().find_map(|f| f.object().client.clone());
    let keep = futures.clone();
    match client.map(|c| c.block_on(wait_async(futures, k, timeout))) {
        Some(Ok(split)) => split,
        // No runtime (every future already failed), or inside a
        // current-thread runtime where nothing can be waited for.
        _ => first_ready(keep, k),
    }
}

/// Async [`wait`].
pub async fn wait_async<T>(
    futures: Vec<DistFuture<T>>,
    k: usize,
    timeout: Option<Duration>,
) -> (Vec<DistFuture<T>>, Vec<DistFuture<T>>) {
    let mut pending: FuturesUnordered<Settled> = futures
        .iter()
        .filter(|f| !f.is_ready())
        .map(DistFuture::settled)
        .collect();
    let already = futures.len() - pending.len();
    let mut need = k.min(futures.len()).saturating_sub(already);
    let collect = async {
        while need > 0 && pending.next().await.is_some() {
            need -= 1;
        }
    };
    match timeout {
        Some(t) => {
            let _ = tokio::time::timeout(t, collect).await;
        }
        None => collect.await,
    }
    first_ready(futures, k)
}

/// The first `k` ready futures (in input order), and the rest.
fn first_ready<T>(
    futures: Vec<DistFuture<T>>,
    k: usize,
) -> (Vec<DistFuture<T>>, Vec<DistFuture<T>>) {
    let mut ready = Vec::with_capacity(k.min(futures.len()));
    let mut rest = Vec::with_capacity(futures.len());
    for f in futures {
        if ready.len() < k && f.is_ready() {
            ready.push(f);
        } else {
            rest.push(f);
        }
    }
    (ready, rest)
}

/// The results of `futures` in the order they complete, as a `Stream` of
/// `(index, result)`; see [`as_completed`].
pub struct Completed<T> {
    inner: FuturesUnordered<Indexed<T>>,
}

struct Indexed<T> {
    index: usize,
    future: DistFuture<T>,
}

impl<T: Data> Future for Indexed<T> {
    type Output = (usize, Result<T>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        Pin::new(&mut self.future).poll(cx).map(|r| (index, r))
    }
}

impl<T: Data> Stream for Completed<T> {
    type Item = (usize, Result<T>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> std::fmt::Debug for Completed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Completed({} left)", self.inner.len())
    }
}

/// Yields each result as soon as it is ready, with its input index.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// use futures_util::StreamExt;
///
/// #[dfut::remote]
/// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
///
/// let order: Vec<usize> = rt.block_on(async {
///     dfut::as_completed(vec![nap(400), nap(0)]).map(|(i, _)| i).collect().await
/// });
/// assert_eq!(order, vec![1, 0]);
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn as_completed<T: Data>(futures: impl IntoIterator<Item = DistFuture<T>>) -> Completed<T> {
    Completed {
        inner: futures
            .into_iter()
            .enumerate()
            .map(|(index, future)| Indexed { index, future })
            .collect(),
    }
}

/// Reduces `inputs` with a tree of remote calls, `fan_in` inputs per call,
/// level by level. Each `reduce` call receives futures, so it runs next to
/// its inputs (the default policy places it where most of their bytes are)
/// and no value passes through the caller. An empty input fails.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote] fn value(x: u64) -> u64 { x }
/// #[dfut::remote] fn sum(parts: dfut::Many<u64>) -> u64 { parts.iter().sum() }
///
/// let total = dfut::tree_reduce((1..=100).map(value).collect(), 4, sum);
/// assert_eq!(total.get()?, 5050);
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn tree_reduce<T: Data>(
    inputs: Vec<DistFuture<T>>,
    fan_in: usize,
    mut reduce: impl FnMut(Vec<DistFuture<T>>) -> DistFuture<T>,
) -> DistFuture<T> {
    let fan_in = fan_in.max(2);
    let mut level = inputs;
    if level.is_empty() {
        return DistFuture::from_ref(Arc::new(ObjectRef::failed(
            "tree_reduce",
            Error::Config("tree_reduce of no inputs".into()),
        )));
    }
    while level.len() > 1 {
        level = level
            .chunks(fan_in)
            .map(|group| match group {
                [one] => one.clone(),
                many => reduce(many.to_vec()),
            })
            .collect();
    }
    level.swap_remove(0)
}

/// How many reduce calls [`tree_reduce`] makes for `n` inputs.
///
/// ```
/// assert_eq!(dfut::reduce_calls(64, 4), 16 + 4 + 1);
/// assert_eq!(dfut::reduce_calls(1, 4), 0);
/// ```
pub fn reduce_calls(n: usize, fan_in: usize) -> usize {
    let fan_in = fan_in.max(2);
    let (mut level, mut calls) = (n, 0);
    while level > 1 {
        let groups = level.div_ceil(fan_in);
        calls += level / fan_in + usize::from(level % fan_in > 1);
        level = groups;
    }
    calls
}
