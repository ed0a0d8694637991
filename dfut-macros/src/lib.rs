//! The `#[remote]` attribute of dfut. Use it through `dfut::remote`; see
//! that item for the user documentation. This crate only parses, checks and
//! generates glue: every piece of logic lives in `dfut`.
#![warn(missing_docs)]

use proc_macro::TokenStream;

mod remote;

/// Turns a function into a remote function. Documented in `dfut`, which
/// re-exports it.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    remote::expand(attr.into(), item.into()).into()
}
