//! What a remote function's parameters accept: a value of the declared type,
//! or a [`DistFuture`] of it.

use crate::Result;
use crate::data::Data;
use crate::future::DistFuture;
use crate::object::ArgSource;

/// A value usable as an argument of type `T` of a remote function: `T`
/// itself, a `DistFuture<T>`, or a `&DistFuture<T>`.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote]
/// fn len(s: String) -> usize { s.len() }
///
/// #[dfut::remote]
/// fn greet(name: String) -> String { format!("hello {name}") }
///
/// let by_value = len("four".to_string());
/// let from_str = len("four");
/// let from_future = len(greet("ann"));
/// let g = greet("bob");
/// let by_ref = len(&g);
/// assert_eq!((by_value.get()?, from_str.get()?, from_future.get()?, by_ref.get()?), (4, 4, 9, 9));
/// # Ok::<(), dfut::Error>(())
/// ```
pub trait IntoArg<T> {
    /// Converts into the argument form. Hidden: called by generated code.
    #[doc(hidden)]
    fn into_arg(self) -> Result<RawArg>;
}

/// An argument ready to submit. Only generated code makes these.
#[doc(hidden)]
pub struct RawArg(pub(crate) ArgSource);

impl<T: Data> IntoArg<T> for T {
    fn into_arg(self) -> Result<RawArg> {
        Ok(RawArg(ArgSource::Value(crate::blob::blob(self.encode()?))))
    }
}

impl<T: Data> IntoArg<T> for DistFuture<T> {
    fn into_arg(self) -> Result<RawArg> {
        Ok(RawArg(ArgSource::Future(self.object().clone())))
    }
}

impl<T: Data> IntoArg<T> for &DistFuture<T> {
    fn into_arg(self) -> Result<RawArg> {
        Ok(RawArg(ArgSource::Future(self.object().clone())))
    }
}

impl IntoArg<String> for &str {
    fn into_arg(self) -> Result<RawArg> {
        IntoArg::<String>::into_arg(self.to_owned())
    }
}

/// A parameter that takes a list of values, each given as a value or as a
/// `DistFuture`. The worker gathers every element (fetching those held by
/// other workers concurrently) before the call: use it for reductions.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// use dfut::Many;
///
/// #[dfut::remote]
/// fn total(parts: Many<u64>) -> u64 { parts.iter().sum() }
///
/// #[dfut::remote]
/// fn double(x: u64) -> u64 { 2 * x }
///
/// let parts: Vec<_> = (1..=4).map(double).collect();
/// assert_eq!(total(parts).get()?, 20);        // futures
/// assert_eq!(total(vec![1u64, 2, 3]).get()?, 6); // plain values
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Many<T>(pub Vec<T>);

impl<T> Many<T> {
    /// The elements.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T> std::ops::Deref for Many<T> {
    type Target = Vec<T>;

    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> IntoIterator for Many<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

fn list<'a, T: Data>(futures: impl Iterator<Item = &'a DistFuture<T>>) -> Result<RawArg> {
    Ok(RawArg(ArgSource::List(
        futures
            .map(|f| ArgSource::Future(f.object().clone()))
            .collect(),
    )))
}

fn values<T: Data>(values: &[T]) -> Result<RawArg> {
    Ok(RawArg(ArgSource::List(
        values
            .iter()
            .map(|v| Ok(ArgSource::Value(crate::blob::blob(v.encode()?))))
            .collect::<Result<_>>()?,
    )))
}

impl<T: Data> IntoArg<Many<T>> for Vec<DistFuture<T>> {
    fn into_arg(self) -> Result<RawArg> {
        list(self.iter())
    }
}

impl<T: Data> IntoArg<Many<T>> for &[DistFuture<T>] {
    fn into_arg(self) -> Result<RawArg> {
        list(self.iter())
    }
}

impl<T: Data> IntoArg<Many<T>> for &Vec<DistFuture<T>> {
    fn into_arg(self) -> Result<RawArg> {
        list(self.iter())
    }
}

impl<T: Data> IntoArg<Many<T>> for Vec<T> {
    fn into_arg(self) -> Result<RawArg> {
        values(&self)
    }
}

impl<T: Data> IntoArg<Many<T>> for Many<T> {
    fn into_arg(self) -> Result<RawArg> {
        values(&self.0)
    }
}

impl<T: Data> IntoArg<crate::Archived<T>> for T {
    fn into_arg(self) -> Result<RawArg> {
        IntoArg::<T>::into_arg(self)
    }
}

impl<T: Data> IntoArg<crate::Archived<T>> for DistFuture<T> {
    fn into_arg(self) -> Result<RawArg> {
        IntoArg::<T>::into_arg(self)
    }
}

impl<T: Data> IntoArg<crate::Archived<T>> for &DistFuture<T> {
    fn into_arg(self) -> Result<RawArg> {
        IntoArg::<T>::into_arg(self)
    }
}
