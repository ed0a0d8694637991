//! The network layer of dfut: QUIC endpoints with mutual TLS, length-prefixed
//! frames, and the rkyv wire messages every dfut process speaks.
//!
//! This crate knows nothing of tasks beyond the messages that describe them:
//! it moves [`wire::Message`] values between authenticated peers and reports
//! every malformed, truncated or oversized frame as an error that closes that
//! one connection. Scheduling, ownership and execution live in `dfut`.
//!
//! ```
//! # fn main() -> Result<(), dfut_net::NetError> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! use dfut_net::{ClusterCredential, Endpoint, wire::Message};
//!
//! let credential = ClusterCredential::generate()?;
//! let loopback = "127.0.0.1:0".parse().unwrap();
//! let server = Endpoint::bind(loopback, &credential, Default::default())?;
//! let client = Endpoint::bind(loopback, &credential, Default::default())?;
//! let server_addr = server.local_addr()?;
//!
//! let accepted = tokio::spawn(async move {
//!     let incoming = server.accept().await.expect("endpoint open");
//!     let (_link, mut inbox) = incoming.establish().await?;
//!     inbox.recv().await.expect("one message")
//! });
//! let (link, _inbox) = client.connect(server_addr).await?;
//! link.send(Message::Subscribe)?;
//! assert!(matches!(accepted.await.unwrap()?, Message::Subscribe));
//! # Ok(()) })
//! # }
//! ```
#![warn(missing_docs)]

mod auth;
pub mod buffers;
mod cause;
mod endpoint;
mod error;
pub mod frame;
mod keyfile;
pub mod refusals;
// rkyv's archived twins of tuple variants have no doc slot of their own;
// every hand-written item in `wire` is documented.
#[allow(missing_docs)]
pub mod wire;

pub use auth::ClusterCredential;
pub use cause::Cause;
pub use endpoint::{
    Endpoint, EndpointOptions, Inbox, Incoming, Link, MAX_QUEUED_BYTES, PathStats, STALL,
};
pub use error::NetError;
pub use rkyv;
