//! What a remote function's parameters accept: a value of the declared type,
//! or a [`DistFuture`] of it.

use std::sync::Arc;

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
        Ok(RawArg(ArgSource::Value(Arc::new(self.encode()?))))
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
        self.to_owned().into_arg()
    }
}
