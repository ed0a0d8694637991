//! Zero-copy parameters: [`Archived<T>`] gives a remote function the
//! archived form of its argument, read in place from the bytes the worker
//! already holds, instead of a deserialized copy.
//!
//! The bytes are validated once when the argument is decoded; afterwards
//! every access is a pointer computation. Use it for large arguments a task
//! only reads (matrices, tables).

use std::marker::PhantomData;

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable};

use crate::object::Blob;
use crate::{Error, Result};

/// A remote function parameter read in place: declare `x: Archived<T>` and
/// pass a `T`, a `DistFuture<T>` or a `&DistFuture<T>`; the function sees
/// `T::Archived` (through `Deref`) without a copy.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// use dfut::Archived;
///
/// #[dfut::remote]
/// fn total(values: Archived<Vec<u64>>) -> u64 {
///     values.iter().map(|v| v.to_native()).sum()   // reads the worker's bytes in place
/// }
///
/// #[dfut::remote]
/// fn numbers(n: u64) -> Vec<u64> { (0..n).collect() }
///
/// assert_eq!(total(numbers(100_000)).get()?, 4_999_950_000);
/// # Ok::<(), dfut::Error>(())
/// ```
pub struct Archived<T> {
    bytes: Bytes,
    _type: PhantomData<fn() -> T>,
}

enum Bytes {
    /// The worker's own buffer, already aligned.
    Shared(Blob),
    /// A copy, made only when the buffer was not aligned.
    Aligned(AlignedVec<16>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Shared(b) => b,
            Bytes::Aligned(v) => v,
        }
    }
}

impl<T> std::fmt::Debug for Archived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archived({} bytes)", self.bytes.as_slice().len())
    }
}

impl<T> Archived<T>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
{
    /// Validates `blob` as an archived `T`.
    pub(crate) fn new(blob: Blob) -> Result<Self> {
        let bytes = if (blob.as_ptr() as usize).is_multiple_of(16) {
            Bytes::Shared(blob)
        } else {
            let mut v = AlignedVec::<16>::with_capacity(blob.len());
            v.extend_from_slice(&blob);
            Bytes::Aligned(v)
        };
        rkyv::access::<T::Archived, BoxedError>(bytes.as_slice())
            .map_err(|e| Error::Decode(dfut_net::Cause::new(e)))?;
        Ok(Self {
            bytes,
            _type: PhantomData,
        })
    }

    /// The archived value.
    pub fn get(&self) -> &T::Archived {
        // SAFETY: the bytes were validated as a `T::Archived` by `new`, are
        // aligned (checked or copied there), and never change afterwards:
        // `Blob` is an immutable shared buffer and `Aligned` is owned here.
        unsafe { rkyv::access_unchecked::<T::Archived>(self.bytes.as_slice()) }
    }
}

impl<T> std::ops::Deref for Archived<T>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
{
    type Target = T::Archived;

    fn deref(&self) -> &T::Archived {
        self.get()
    }
}
