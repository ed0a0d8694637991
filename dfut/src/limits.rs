//! How large one message may be, for the whole cluster.
//!
//! Values (arguments and results) travel whole, inside one message. A value
//! that would not fit fails its own call with a clear error before it is
//! sent, instead of being refused by the peer, which would close the
//! connection and take every other task on it along.

use std::sync::OnceLock;

use dfut_net::EndpointOptions;

/// Values larger than this are "large": pushed and fetched on streams of
/// their own, kept in shared memory, fetched once per host.
pub(crate) const LARGE: usize = 64 << 10;

/// Room left in a message for everything but the value itself.
const HEADROOM: usize = 64 << 10;

/// The largest message any process accepts: `DFUT_MAX_MESSAGE_BYTES` if set
/// (at least 1 MiB, below 4 GiB), else 1 GiB. Every process of a cluster must use the
/// same limit; a local cluster's workers inherit the driver's environment.
pub(crate) fn max_message() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("DFUT_MAX_MESSAGE_BYTES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            // Frames carry a 32-bit length.
            .map(|n| n.clamp(1 << 20, u32::MAX as usize - HEADROOM))
            .unwrap_or(dfut_net::frame::DEFAULT_MAX_FRAME)
    })
}

/// The largest value (an argument or a result) that fits in one message.
pub(crate) fn max_value() -> usize {
    max_message().saturating_sub(HEADROOM)
}

/// Endpoint settings with this cluster's message limit.
pub(crate) fn endpoint_options() -> EndpointOptions {
    let mut options = EndpointOptions::default();
    options.max_frame = max_message();
    options
}

/// The error for a value of `bytes` that does not fit.
pub(crate) fn too_large(what: &str, bytes: usize) -> String {
    format!(
        "{what} is {bytes} bytes, more than the {} one message carries \
         (DFUT_MAX_MESSAGE_BYTES={}); values this large are not streamed yet: \
         split it, or raise the limit on every process",
        max_value(),
        max_message()
    )
}
