//! The error every dfut operation returns.
//!
//! One enum for the facade, so a user matches on what went wrong without
//! knowing which layer saw it. Remote failures carry the remote message.
//! This module only describes errors; it decides nothing about retries.

use std::time::Duration;

use dfut_net::wire::{Failure, FailureKind};
use dfut_net::{Cause, NetError};

/// The result type of dfut operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
///
/// ```
/// # use dfut::Error;
/// let e = Error::UnknownFunction { name: "app::missing".into() };
/// assert_eq!(e.to_string(), "no worker has a remote function named `app::missing`");
/// ```
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The remote function panicked; the worker survived.
    #[error(
        "remote function `{function}` panicked on worker {worker} at {location} \
         (attempt {attempt}): {message}"
    )]
    TaskPanicked {
        /// The function's registered name.
        function: String,
        /// The panic message.
        message: String,
        /// The address of the worker it ran on.
        worker: String,
        /// Where it panicked, `file:line:column` (`unknown` if the worker
        /// could not tell).
        location: String,
        /// Which run of the task this was, from 1 (retries and re-runs
        /// after a lost worker count; so do speculative copies).
        attempt: u32,
        /// The panic's backtrace, when the worker captured one (run it
        /// with `RUST_BACKTRACE=1`).
        backtrace: Option<Box<str>>,
    },
    /// The remote function returned an error.
    #[error(
        "remote function `{function}` failed on worker {worker} (attempt {attempt}): {message}"
    )]
    TaskFailed {
        /// The function's registered name.
        function: String,
        /// The error's `Display` text.
        message: String,
        /// The address of the worker it ran on.
        worker: String,
        /// Which run of the task this was, from 1.
        attempt: u32,
        /// The error's own sources, when its type implements
        /// `std::error::Error`: `source()` walks them as they were on the
        /// worker (as text).
        source: Option<Cause>,
    },
    /// The worker holding or computing the value died (and retries, if any,
    /// are used up).
    #[error("worker {worker} was lost: {reason}")]
    WorkerLost {
        /// The lost worker's address.
        worker: String,
        /// How the loss was noticed.
        reason: String,
    },
    /// Workers kept dying while this task ran on them (at least
    /// `deaths` times, the owner's crash-loop limit of 3): it most likely
    /// crashes its worker (for example with `std::process::abort`), so it
    /// is not retried further.
    #[error(
        "remote function `{function}` was running on {deaths} workers when they died; \
         it most likely crashes them, so it is not retried again"
    )]
    CrashLoop {
        /// The function's registered name.
        function: String,
        /// Worker deaths while it ran.
        deaths: u32,
    },
    /// The value was not ready in time, or the task ran past its deadline
    /// (`#[remote(timeout_ms = ..)]` or [`Options::timeout`](crate::Options::timeout)).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A worker could not keep a result: its object store was full and the
    /// object could not be spilled to disk.
    #[error("object store full: {0}")]
    StoreFull(String),
    /// No live worker can run the task.
    #[error("no eligible worker: {0}")]
    NoEligibleWorker(String),
    /// The worker has no remote function of this name (it runs a different
    /// binary, or the crate defining it is not linked into the worker).
    #[error("no worker has a remote function named `{name}`")]
    UnknownFunction {
        /// The name asked for.
        name: String,
    },
    /// The worker's function of this name takes or returns other types
    /// than the caller's: the driver and the worker were built from
    /// different sources.
    #[error("signature mismatch for `{function}`: {message}")]
    SignatureMismatch {
        /// The function called.
        function: String,
        /// What differs and where the worker's function is defined.
        message: String,
    },
    /// A system call failed: starting a process, a thread or a runtime,
    /// reading a pipe. `source()` is the I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error (`Cause::find::<std::io::Error>`).
        #[source]
        source: Cause,
    },
    /// A value could not be encoded; the cause is rkyv's error or dfut's
    /// reason.
    #[error("could not encode a value: {0}")]
    Encode(#[source] Cause),
    /// Bytes could not be decoded as the expected type; the cause is
    /// rkyv's error or dfut's reason.
    #[error("could not decode a value: {0}")]
    Decode(#[source] Cause),
    /// The cluster credential could not be made, read or used; `source()`
    /// is the network layer's error.
    #[error("{0}")]
    Credential(#[source] NetError),
    /// The network failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The network layer failed (a connection lost, a malformed frame, an
    /// endpoint that could not start); `source()` is its error, and
    /// through it the frame error where there is one.
    #[error("transport error: {0}")]
    Net(#[source] NetError),
    /// A peer failed to authenticate, or refused us.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The object was freed or is unknown to the worker asked for it.
    #[error("object {0} is not available")]
    ObjectUnavailable(String),
    /// No dfut runtime is active on this thread (call `dfut::init()` first),
    /// or the runtime that made this handle has been shut down.
    #[error("no dfut runtime: call dfut::init() before calling remote functions")]
    NoRuntime,
    /// The call was cancelled with [`DistFuture::cancel`](crate::DistFuture::cancel).
    #[error("remote call `{function}` was cancelled")]
    Cancelled {
        /// The function's registered name.
        function: String,
    },
    /// Bad configuration; the cause is the setting's parse error where
    /// there is one, else dfut's reason.
    #[error("configuration error: {0}")]
    Config(#[source] Cause),
    /// Matrix shapes that do not fit the operation.
    #[error("cannot {op} a {}x{} matrix and a {}x{} matrix", left.0, left.1, right.0, right.1)]
    Shape {
        /// The operation.
        op: String,
        /// The left operand's `(rows, cols)`.
        left: (usize, usize),
        /// The right operand's `(rows, cols)`.
        right: (usize, usize),
    },
    /// The GPU could not be used; the cause is wgpu's error where there is
    /// one.
    #[error("gpu error: {0}")]
    Gpu(#[source] Cause),
    /// Starting or managing a local process failed.
    #[error("process error: {0}")]
    Process(String),
}

/// The most causes of a remote error kept, whatever a peer sends (each
/// `Chained` level is one frame of recursion when the chain drops).
pub(crate) const MAX_CAUSES: usize = 64;
/// The most bytes of one cause's message kept.
const MAX_CAUSE: usize = 4096;
/// The most bytes of a remote backtrace kept.
pub(crate) const MAX_BACKTRACE: usize = 16 * 1024;

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Error {
    /// Wraps an I/O error with what was being done, for `map_err`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |e| Error::Io {
            context,
            source: Cause::new(e),
        }
    }
}

impl From<NetError> for Error {
    fn from(e: NetError) -> Self {
        match e {
            // Its reason is text already: nothing below it to keep.
            NetError::Auth { .. } => Error::Auth(e.to_string()),
            NetError::Credential(_) => Error::Credential(e),
            other => Error::Net(other),
        }
    }
}

impl Error {
    /// Rebuilds the error a remote process reported.
    pub(crate) fn from_failure(function: &str, worker: &str, f: &Failure) -> Self {
        let function = function.to_owned();
        let message = f.message.clone();
        match f.kind {
            FailureKind::Panicked => Error::TaskPanicked {
                function,
                message,
                worker: worker.to_owned(),
                location: if f.location.is_empty() {
                    "unknown".to_owned()
                } else {
                    f.location.clone()
                },
                attempt: 1,
                backtrace: (!f.backtrace.is_empty())
                    .then(|| clip(&f.backtrace, MAX_BACKTRACE).into()),
            },
            FailureKind::Returned | FailureKind::Other | FailureKind::ArgumentFailed => {
                Error::TaskFailed {
                    function,
                    message,
                    worker: worker.to_owned(),
                    attempt: 1,
                    source: Cause::chain(
                        &f.causes
                            .iter()
                            .take(MAX_CAUSES)
                            .map(|c| clip(c, MAX_CAUSE).to_owned())
                            .collect::<Vec<_>>(),
                    ),
                }
            }
            FailureKind::UnknownFunction => Error::UnknownFunction { name: function },
            FailureKind::SignatureMismatch => Error::SignatureMismatch { function, message },
            FailureKind::Decode => Error::Decode(Cause::msg(format!("{function}: {message}"))),
            FailureKind::Encode => Error::Encode(Cause::msg(format!("{function}: {message}"))),
            FailureKind::NoSuchObject | FailureKind::SharedUnmappable => {
                Error::ObjectUnavailable(message)
            }
            FailureKind::WorkerLost => Error::WorkerLost {
                worker: worker.to_owned(),
                reason: message,
            },
            FailureKind::StoreFull => {
                Error::StoreFull(format!("{function} on {worker}: {message}"))
            }
            FailureKind::TimedOut => {
                Error::Timeout(Duration::from_millis(message.parse().unwrap_or(0)))
            }
        }
    }

    /// The failure to send to another process for this error.
    pub(crate) fn to_failure(&self) -> Failure {
        let kind = match self {
            Error::TaskPanicked { .. } => FailureKind::Panicked,
            Error::TaskFailed { .. } => FailureKind::Returned,
            Error::UnknownFunction { .. } => FailureKind::UnknownFunction,
            Error::SignatureMismatch { .. } => FailureKind::SignatureMismatch,
            Error::Decode(_) => FailureKind::Decode,
            Error::Encode(_) => FailureKind::Encode,
            Error::ObjectUnavailable(_) => FailureKind::NoSuchObject,
            Error::WorkerLost { .. } => FailureKind::WorkerLost,
            Error::Timeout(_) => FailureKind::TimedOut,
            Error::StoreFull(_) => FailureKind::StoreFull,
            _ => FailureKind::Other,
        };
        let message = match self {
            Error::TaskPanicked { message, .. }
            | Error::TaskFailed { message, .. }
            | Error::SignatureMismatch { message, .. } => message.clone(),
            Error::Timeout(limit) => limit.as_millis().to_string(),
            other => other.to_string(),
        };
        let location = match self {
            Error::TaskPanicked { location, .. } if location != "unknown" => location.clone(),
            _ => String::new(),
        };
        let causes = match self {
            Error::TaskFailed {
                source: Some(c), ..
            } => c.messages(),
            _ => Vec::new(),
        };
        let backtrace = match self {
            Error::TaskPanicked {
                backtrace: Some(b), ..
            } => b.to_string(),
            _ => String::new(),
        };
        Failure {
            kind,
            message,
            location,
            causes,
            backtrace,
        }
    }

    /// The same error, saying it came from run `attempt` of its task.
    pub(crate) fn at_attempt(mut self, n: u32) -> Self {
        if let Error::TaskPanicked { attempt, .. } | Error::TaskFailed { attempt, .. } = &mut self {
            *attempt = n.max(1);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_round_trip_through_the_wire_form() {
        let cases = [
            Error::TaskPanicked {
                function: "m::f".into(),
                message: "boom".into(),
                worker: "w".into(),
                location: "src/lib.rs:3:5".into(),
                attempt: 1,
                backtrace: Some("0: m::f\n1: main".into()),
            },
            Error::TaskFailed {
                function: "m::f".into(),
                message: "bad input".into(),
                worker: "w".into(),
                attempt: 1,
                source: Cause::chain(&["bad input".into(), "line 3".into()]),
            },
            Error::UnknownFunction {
                name: "m::f".into(),
            },
            Error::SignatureMismatch {
                function: "m::f".into(),
                message: "the worker's `m::f` takes other types".into(),
            },
            Error::Timeout(Duration::from_millis(250)),
        ];
        for e in cases {
            assert_eq!(Error::from_failure("m::f", "w", &e.to_failure()), e);
        }
    }

    #[test]
    fn auth_failures_stay_auth_failures() {
        let e: Error = NetError::Auth {
            peer: "127.0.0.1:1".parse().unwrap(),
            reason: "bad certificate".into(),
        }
        .into();
        assert!(matches!(e, Error::Auth(m) if m.contains("bad certificate")));
    }

    #[test]
    fn a_peers_causes_and_backtrace_are_bounded() {
        use std::error::Error as _;
        let f = Failure {
            kind: FailureKind::Returned,
            message: "outer".into(),
            location: String::new(),
            causes: std::iter::once("c".repeat(1 << 20))
                .chain(std::iter::repeat_n("c".to_owned(), 100_000))
                .collect(),
            backtrace: "é".repeat(1 << 20),
        };
        let e = Error::from_failure("m::f", "w", &f);
        let mut depth = 0;
        let mut next = e.source();
        while let Some(s) = next {
            assert!(s.to_string().len() <= MAX_CAUSE);
            depth += 1;
            next = s.source();
        }
        assert_eq!(depth, MAX_CAUSES);
        drop(e); // 64 levels: no deep recursion
        let p = Error::from_failure(
            "m::f",
            "w",
            &Failure {
                kind: FailureKind::Panicked,
                ..f
            },
        );
        let Error::TaskPanicked {
            backtrace: Some(b), ..
        } = p
        else {
            panic!("{p:?}")
        };
        assert!(b.len() <= MAX_BACKTRACE, "{}", b.len());
    }

    #[test]
    fn io_and_decode_errors_keep_their_causes() {
        use std::error::Error as _;
        let e = Error::io("cannot start worker")(std::io::ErrorKind::NotFound.into());
        assert!(e.to_string().starts_with("cannot start worker: "), "{e}");
        let cause = e.source().and_then(|s| s.downcast_ref::<Cause>()).unwrap();
        let io = cause.find::<std::io::Error>().map(std::io::Error::kind);
        assert_eq!(io, Some(std::io::ErrorKind::NotFound));
        let bad = <Vec<u64> as crate::Data>::decode(b"not an archive").unwrap_err();
        assert!(matches!(bad, Error::Decode(_)), "{bad:?}");
        assert!(bad.source().is_some(), "rkyv's error is kept");
        let credential = Error::from(NetError::Credential(Cause::msg("no private key")));
        assert!(credential.source().is_some(), "{credential:?}");
    }

    #[test]
    fn a_network_error_keeps_its_source_chain() {
        use std::error::Error as _;
        let frame = dfut_net::frame::FrameError::TooLarge { len: 10, max: 1 };
        let e: Error = NetError::Frame {
            peer: "127.0.0.1:1".parse().unwrap(),
            source: frame.clone(),
        }
        .into();
        let net = e.source().and_then(|s| s.downcast_ref::<NetError>());
        assert!(matches!(net, Some(NetError::Frame { .. })), "{e:?}");
        let below = net.and_then(|n| n.source()).and_then(|s| s.downcast_ref());
        assert_eq!(below, Some(&frame));
    }
}
