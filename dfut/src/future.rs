//! [`DistFuture`]: the handle a remote call returns.
//!
//! A handle is cheap to clone and can be sent anywhere in the process. It
//! can be awaited, waited on with [`DistFuture::get`], polled for its
//! [`Status`], or passed as an argument to another remote call, in which case
//! the value goes from the worker that holds it straight to the worker that
//! needs it. This module only reads objects; the owning client changes them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::data::Data;
use crate::object::{Blob, ObjectRef, Phase, Status};
use crate::{Error, Result};

type Fetching = Pin<Box<dyn Future<Output = Result<Blob>> + Send>>;

/// A value being computed, or already computed, somewhere in the cluster.
///
/// Returned at once by every call of a `#[dfut::remote]` function. The call
/// runs whether or not the handle is kept: dropping every handle detaches it
/// (its result is freed when it finishes); [`DistFuture::cancel`] stops it.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote]
/// fn square(x: u64) -> u64 { x * x }
///
/// let a = square(3);                  // DistFuture<u64>, returns at once
/// let b = square(a.clone());          // a future as an argument
/// assert_eq!(b.get()?, 81);           // blocking wait
/// assert_eq!(rt.block_on(a)?, 9);     // or .await it in async code
/// # Ok::<(), dfut::Error>(())
/// ```
#[must_use = "the call runs anyway; dropping the handle only discards its result (use `cancel()` to stop it)"]
pub struct DistFuture<T> {
    obj: Arc<ObjectRef>,
    fetching: Mutex<Option<Fetching>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for DistFuture<T> {
    fn clone(&self) -> Self {
        Self::from_ref(self.obj.clone())
    }
}

impl<T> std::fmt::Debug for DistFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistFuture")
            .field("id", &self.obj.cell.id)
            .field("function", &self.obj.cell.function)
            .field("status", &self.status())
            .finish()
    }
}

impl<T> DistFuture<T> {
    pub(crate) fn from_ref(obj: Arc<ObjectRef>) -> Self {
        Self {
            obj,
            fetching: Mutex::new(None),
            _type: PhantomData,
        }
    }

    pub(crate) fn object(&self) -> &Arc<ObjectRef> {
        &self.obj
    }

    /// Where the task stands now. Never blocks.
    pub fn status(&self) -> Status {
        self.obj.cell.status()
    }

    /// Whether the value (or its error) is available now. Never blocks.
    pub fn is_ready(&self) -> bool {
        matches!(self.status(), Status::Finished | Status::Failed)
    }

    /// Cancels the call: if it has not started it never runs; a running
    /// async task is dropped at its next await; a running sync task runs
    /// on, sees [`dfut::cancelled()`](crate::cancelled) return `true`, and
    /// its result is discarded. Every handle to it then returns
    /// [`Error::Cancelled`]. A call that already finished is not affected.
    ///
    /// ```
    /// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// # let _guard = rt.enter();
    /// #[dfut::remote]
    /// fn slow() -> u8 { std::thread::sleep(std::time::Duration::from_secs(5)); 1 }
    ///
    /// let f = slow();
    /// f.cancel();
    /// assert!(matches!(f.get(), Err(dfut::Error::Cancelled { .. })));
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn cancel(&self) {
        if let Some(client) = &self.obj.client {
            client.cancel(&self.obj.cell);
        }
    }

    /// The registered name of the function computing this value.
    pub fn function(&self) -> &'static str {
        self.obj.cell.function
    }

    /// The object's cluster-wide id, as `dfut objects` lists it (its
    /// owner's node id and a sequence number).
    ///
    /// ```
    /// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// # let _guard = rt.enter();
    /// # #[dfut::remote] fn one() -> u8 { 1 }
    /// let f = one();
    /// assert_eq!(f.id().owner, rt.client().node_id());
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn id(&self) -> crate::scheduler::ObjectId {
        self.obj.cell.id
    }
}

impl<T: Data> DistFuture<T> {
    /// Waits for the value and returns it, blocking this thread.
    ///
    /// Inside async code, `.await` the future instead.
    pub fn get(&self) -> Result<T> {
        T::decode(&self.wait(None)?)
    }

    /// Waits for the value and returns its archived form, read in place
    /// instead of decoded: from this host's shared memory when the value
    /// lives on a worker of this host (no copy at all), else from the bytes
    /// fetched. Blocks this thread.
    ///
    /// ```
    /// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// # let _guard = rt.enter();
    /// #[dfut::remote]
    /// fn squares(n: u64) -> Vec<u64> { (0..n).map(|i| i * i).collect() }
    ///
    /// let v = squares(100_000).get_archived()?;
    /// assert_eq!(v.len(), 100_000);
    /// assert_eq!(v[3].to_native(), 9);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn get_archived(&self) -> Result<crate::Archived<T>>
    where
        T: rkyv::Archive,
        T::Archived: rkyv::Portable
            + for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::BoxedError>,
            >,
    {
        crate::Archived::new(self.wait(None)?)
    }

    /// Like [`DistFuture::get`], but gives up with [`Error::Timeout`] after
    /// `timeout`. The task itself goes on.
    ///
    /// ```
    /// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// # let _guard = rt.enter();
    /// #[dfut::remote]
    /// fn slow() -> u8 { std::thread::sleep(std::time::Duration::from_secs(2)); 1 }
    ///
    /// let f = slow();
    /// let short = std::time::Duration::from_millis(10);
    /// assert!(matches!(f.get_timeout(short), Err(dfut::Error::Timeout(_))));
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        T::decode(&self.wait(Some(timeout))?)
    }

    /// The value's bytes, once it is ready.
    fn wait(&self, timeout: Option<Duration>) -> Result<Blob> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timed_out = || Error::Timeout(timeout.unwrap_or_default());
        let cell = &self.obj.cell;
        let phase = match &self.obj.client {
            Some(client) => client.wait_settled(cell, deadline)?,
            None => cell.wait_settled(deadline),
        }
        .ok_or_else(timed_out)?;
        let blob = match phase {
            Phase::Finished {
                inline: Some(blob), ..
            } => blob,
            Phase::Failed(e) => return Err(e),
            _ => {
                let client = self.obj.client.as_ref().ok_or(Error::NoRuntime)?;
                if client.is_closed() {
                    return Err(Error::NoRuntime);
                }
                let fetch = client.clone().resolve(self.obj.clone());
                let fetch = async move {
                    match deadline {
                        None => fetch.await,
                        Some(d) => tokio::time::timeout_at(d.into(), fetch)
                            .await
                            .unwrap_or_else(|_| Err(timed_out())),
                    }
                };
                client.block_on(fetch)??
            }
        };
        Ok(blob)
    }
}

impl<T: Data> Future for DistFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut slot = this.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            match this.obj.cell.poll_settled(cx.waker()) {
                None => return Poll::Pending,
                Some(Phase::Failed(e)) => return Poll::Ready(Err(e)),
                Some(Phase::Finished {
                    inline: Some(blob), ..
                }) => return Poll::Ready(T::decode(&blob)),
                Some(_) => {
                    let Some(client) = this.obj.client.clone() else {
                        return Poll::Ready(Err(Error::NoRuntime));
                    };
                    *slot = Some(Box::pin(client.resolve(this.obj.clone())));
                }
            }
        }
        let Some(fetching) = slot.as_mut() else {
            return Poll::Pending;
        };
        match fetching.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                *slot = None;
                Poll::Ready(r.and_then(|blob| T::decode(&blob)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<X: Send + Sync + Clone>() {}

    #[test]
    fn handles_are_send_sync_and_clone() {
        assert_send_sync_clone::<DistFuture<u64>>();
        assert_send_sync_clone::<DistFuture<String>>();
    }

    #[test]
    fn a_failed_handle_reports_its_error_without_a_runtime() {
        let f: DistFuture<u64> =
            DistFuture::from_ref(Arc::new(ObjectRef::failed("m::f", Error::NoRuntime)));
        assert_eq!(f.status(), Status::Failed);
        assert!(f.is_ready());
        assert_eq!(f.get(), Err(Error::NoRuntime));
    }
}
