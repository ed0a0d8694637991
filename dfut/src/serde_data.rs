//! Values whose types only implement serde's traits, carried across a task
//! boundary in postcard's compact format inside an rkyv byte vector.
//!
//! This module only adapts serde to rkyv; [`crate::Data`] does the rest.

use std::ops::{Deref, DerefMut};

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// A value of any `serde` type, usable as an argument or result of a remote
/// function.
///
/// Your type needs only `serde::Serialize` and `serde::Deserialize`; the
/// wrapper encodes it with [postcard](https://docs.rs/postcard) (compact:
/// variable-length integers, no field names) into a byte vector that rkyv
/// carries. Needs the `serde` feature.
///
/// **Cost against rkyv's zero-copy path.** An rkyv type is read in place
/// (`Archived<T>` parameters borrow the received bytes) and decoding one is
/// a validation pass. A `Serde<T>` is always decoded into a fresh `T`: one
/// postcard pass that allocates every `String` and `Vec` inside, on top of
/// the byte vector's validation; encoding is one postcard pass and one
/// copy. Use it for types you cannot derive rkyv's traits on (types from
/// other crates) and for small or medium values; derive rkyv's traits for
/// large values on a hot path. Postcard has no recursion limit: a deeply
/// nested value of a recursive type can exhaust a worker's stack when
/// decoded (peers are members of the cluster). The `serde` bench (`cargo bench -p
/// dfut-benches --bench serde`) measures both on the same records.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// use dfut::Serde;
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Order { id: u64, items: Vec<String> }
///
/// #[dfut::remote]
/// fn count_items(order: Serde<Order>) -> Serde<(u64, usize)> {
///     Serde((order.id, order.items.len()))
/// }
///
/// let order = Order { id: 7, items: vec!["tea".into(), "milk".into()] };
/// assert_eq!(count_items(Serde(order)).get()?.into_inner(), (7, 2));
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(crate = rkyv)]
pub struct Serde<T>(#[rkyv(with = Postcard)] pub T);

impl<T> Serde<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Serde<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> Deref for Serde<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Serde<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The rkyv wrapper that stores a serde value as postcard bytes.
struct Postcard;

/// The encoded bytes' length, which rkyv asks for again when it resolves.
struct PostcardResolver {
    len: usize,
    bytes: VecResolver,
}

impl<T: serde::Serialize> ArchiveWith<T> for Postcard {
    type Archived = ArchivedVec<u8>;
    type Resolver = PostcardResolver;

    fn resolve_with(_: &T, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(resolver.len, resolver.bytes, out);
    }
}

impl<T, S> SerializeWith<T, S> for Postcard
where
    T: serde::Serialize,
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &T, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        let encoded = postcard::to_stdvec(field).map_err(S::Error::new)?;
        let bytes = ArchivedVec::<u8>::serialize_from_slice(&encoded, serializer)?;
        Ok(PostcardResolver {
            len: encoded.len(),
            bytes,
        })
    }
}

impl<T, D> DeserializeWith<ArchivedVec<u8>, T, D> for Postcard
where
    T: serde::de::DeserializeOwned,
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize_with(field: &ArchivedVec<u8>, _: &mut D) -> Result<T, D::Error> {
        postcard::from_bytes(field.as_slice()).map_err(D::Error::new)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::Data;

    use super::Serde;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Shape {
        Circle { r: f64 },
        Named(String, Vec<u32>),
    }

    #[test]
    fn serde_values_round_trip_through_the_wire_encoding() {
        let value = Serde((
            vec![
                Shape::Circle { r: 1.5 },
                Shape::Named("tri".into(), vec![3, 4, 5]),
            ],
            BTreeMap::from([("a".to_owned(), Some(1i64)), ("b".to_owned(), None)]),
        ));
        let bytes = value.encode().unwrap();
        assert_eq!(Serde::decode(&bytes).unwrap(), value);
    }

    #[test]
    fn bytes_that_are_not_the_type_are_an_error_not_a_panic() {
        let bytes = Serde("a string".to_owned()).encode().unwrap();
        assert!(Serde::<Vec<Shape>>::decode(&bytes).is_err());
        assert!(Serde::<String>::decode(b"garbage").is_err());
        // A length prefix announcing far more than there is.
        let huge = Serde(vec![0xffu8, 0xff, 0xff, 0xff, 0x0f])
            .encode()
            .unwrap();
        assert!(Serde::<Vec<u64>>::decode(&huge).is_err());
    }
}
