//! The one error type of the network layer.
//!
//! Every failure a peer can cause (bad frames, failed authentication, lost
//! connections) becomes a [`NetError`]; nothing here panics on network input.

use std::net::SocketAddr;

use crate::Cause;
use crate::frame::FrameError;

/// What went wrong while talking to a peer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The peer could not prove it belongs to the cluster, or we could not
    /// prove it to the peer: the TLS handshake was refused.
    #[error("authentication with {peer} failed: {reason}")]
    Auth {
        /// The peer's address.
        peer: SocketAddr,
        /// Why the handshake failed.
        reason: String,
    },
    /// The cluster credential could not be created or read.
    #[error("invalid cluster credential: {0}")]
    Credential(#[source] Cause),
    /// A frame on the connection was malformed, truncated or too large; the
    /// connection has been closed.
    #[error("bad frame from {peer}: {source}")]
    Frame {
        /// The peer's address.
        peer: SocketAddr,
        /// What was wrong with the frame.
        source: FrameError,
    },
    /// The connection is gone (closed by either side, timed out, or reset).
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer's address.
        peer: SocketAddr,
        /// Why it was lost.
        reason: String,
        /// The transport's error, where there is one.
        source: Option<Cause>,
    },
    /// The endpoint could not be created or could not start a connection.
    #[error("endpoint error: {0}")]
    Endpoint(#[source] Cause),
    /// A message could not be encoded.
    #[error("could not encode message: {0}")]
    Encode(#[source] Cause),
}
