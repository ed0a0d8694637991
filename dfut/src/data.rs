//! Values that can cross a process boundary.
//!
//! [`Data`] is implemented for every type rkyv can archive, validate and
//! deserialize; derive `rkyv::Archive, rkyv::Serialize, rkyv::Deserialize`
//! (re-exported as `dfut::rkyv`) on your own types. This module only encodes
//! and decodes; where bytes go is decided elsewhere.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::BoxedError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::{Error, Result};

/// A value that can be an argument or a result of a remote function.
///
/// Implemented for every type that rkyv can archive, validate and
/// deserialize: integers, floats, `bool`, `String`, `Vec<T>`, tuples,
/// `Option<T>`, `HashMap<K, V>`, and your own types with the rkyv derives.
///
/// ```
/// use dfut::Data;
///
/// #[derive(dfut::rkyv::Archive, dfut::rkyv::Serialize, dfut::rkyv::Deserialize, Debug, PartialEq)]
/// #[rkyv(crate = dfut::rkyv)]
/// struct Point { x: f64, y: f64 }
///
/// let bytes = Point { x: 1.0, y: 2.0 }.encode()?;
/// assert_eq!(Point::decode(&bytes)?, Point { x: 1.0, y: 2.0 });
/// assert!(Point::decode(b"nonsense").is_err());
/// # Ok::<(), dfut::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to or from a remote function",
    label = "not archivable with rkyv",
    note = "derive `rkyv::Archive`, `rkyv::Serialize` and `rkyv::Deserialize` for it (see `dfut::Data`)"
)]
pub trait Data: Sized + Send + 'static {
    /// Encodes the value.
    fn encode(&self) -> Result<Vec<u8>>;
    /// Decodes and validates bytes made by [`Data::encode`].
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl<T> Data for T
where
    T: Archive + Send + 'static,
    T: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, BoxedError>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    fn encode(&self) -> Result<Vec<u8>> {
        // Serialized straight into a `Vec`: no second copy. Its start is
        // aligned in practice (the allocator aligns to 16); `decode` copies
        // into an aligned buffer in the rare case it is not. Large values
        // start from the last size of their type: growing a multi-megabyte
        // buffer by doubling costs ten times the serialization itself.
        let hint = size_hint::<T>();
        // A large one takes a buffer kept from an earlier large value
        // (pages already faulted in), given back when its blob drops;
        // `take` reserves a small one plainly.
        let buf = dfut_net::buffers::take(hint).unwrap_or_default();
        let bytes = rkyv::api::high::to_bytes_in::<_, BoxedError>(self, buf)
            .map_err(|e| Error::Encode(dfut_net::Cause::new(e)))?;
        remember_size::<T>(bytes.len());
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let decode = |aligned: &[u8]| {
            rkyv::from_bytes::<T, BoxedError>(aligned)
                .map_err(|e| Error::Decode(dfut_net::Cause::new(e)))
        };
        if (bytes.as_ptr() as usize).is_multiple_of(16) {
            decode(bytes)
        } else {
            let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            decode(&aligned)
        }
    }
}

/// Encodings at least this large remember their size for the next one.
const HINT_FROM: usize = 64 * 1024;

thread_local! {
    static SIZE_HINTS: std::cell::RefCell<std::collections::HashMap<std::any::TypeId, usize>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn size_hint<T: 'static>() -> usize {
    SIZE_HINTS.with(|h| {
        h.borrow()
            .get(&std::any::TypeId::of::<T>())
            .copied()
            .unwrap_or(0)
    })
}

fn remember_size<T: 'static>(len: usize) {
    if len >= HINT_FROM {
        SIZE_HINTS.with(|h| {
            // A little headroom for values of the same type a bit larger.
            h.borrow_mut()
                .insert(std::any::TypeId::of::<T>(), len + len / 16);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_encoding_reuses_the_buffer_of_the_last_one_dropped() {
        // A size no other test encodes, so no other test takes its buffer.
        let v: Vec<u64> = (0..(600_000 + 17)).collect();
        drop(crate::blob::Bytes::from(v.encode().unwrap())); // the size is learnt
        let first = v.encode().unwrap();
        let at = first.as_ptr();
        drop(crate::blob::Bytes::from(first)); // given back, so still allocated:
        let other = vec![0u8; v.len() * 8 + 8];
        assert_ne!(other.as_ptr(), at, "the allocator had the buffer back");
        let second = v.encode().unwrap();
        assert_eq!(second.as_ptr(), at, "the same memory, not a fresh buffer");
        drop(other);
        assert_eq!(Vec::<u64>::decode(&second).unwrap(), v);
    }

    #[test]
    fn decodes_from_unaligned_bytes() {
        let v: Vec<u64> = (0..100).collect();
        let bytes = v.encode().unwrap();
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        assert_eq!(Vec::<u64>::decode(&shifted[1..]).unwrap(), v);
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let bytes = String::from("hello").encode().unwrap();
        assert!(matches!(Vec::<u64>::decode(&bytes), Err(Error::Decode(_))));
    }
}
