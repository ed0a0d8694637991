//! The cause kept inside dfut's errors: another library's error (or a
//! message), shared so errors stay cheap to clone, and reachable through
//! `std::error::Error::source`.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error underneath a dfut error: `source()` of the error holding it
/// returns it, and its own `source()` goes on down the chain.
///
/// Clones share the error. Two causes are equal when their messages are
/// (errors from other libraries rarely compare).
///
/// ```
/// use dfut_net::Cause;
///
/// let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
/// let cause = Cause::context("bind 127.0.0.1:1", io);
/// assert!(cause.to_string().starts_with("bind 127.0.0.1:1: "));
/// let found = cause.find::<std::io::Error>().map(|e| e.kind());
/// assert_eq!(found, Some(std::io::ErrorKind::AddrInUse));
/// ```
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// A cause that is only a message (no error underneath).
    pub fn msg(message: impl Into<String>) -> Self {
        Self(Arc::new(Message(message.into())))
    }

    /// `error`, with what was being done: displayed as
    /// `"{context}: {error}"`, with `error` as its source.
    pub fn context(context: impl Into<String>, error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(Context {
            context: context.into(),
            source: Box::new(error),
        }))
    }

    /// A chain of messages as a cause, outermost first: its `source()` is
    /// the second message, and so on (how a remote error's sources come
    /// back across the wire). `None` for no messages.
    ///
    /// ```
    /// use std::error::Error as _;
    /// let cause = dfut_net::Cause::chain(&["parse config".into(), "line 3: bad digit".into()]).unwrap();
    /// assert_eq!(cause.to_string(), "parse config");
    /// assert_eq!(cause.source().unwrap().to_string(), "line 3: bad digit");
    /// ```
    /// Each message is one level of nesting: callers bound the count
    /// (dfut keeps at most 64 from a peer).
    pub fn chain(messages: &[String]) -> Option<Self> {
        let mut inner: Option<Box<Chained>> = None;
        for message in messages.iter().rev() {
            inner = Some(Box::new(Chained {
                message: message.clone(),
                source: inner,
            }));
        }
        inner.map(|c| Self(Arc::new(*c)))
    }

    /// The messages of this cause and of everything below it, outermost
    /// first.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(&*self.0);
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }

    /// The first error of type `T` in this cause's chain.
    pub fn find<T: Error + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn Error + 'static)> = Some(&*self.0);
        while let Some(e) = next {
            if let Some(t) = e.downcast_ref::<T>() {
                return Some(t);
            }
            next = e.source();
        }
        None
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::msg(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::msg(message)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// One message of a chain that came across the wire.
#[derive(Debug)]
struct Chained {
    message: String,
    source: Option<Box<Chained>>,
}

impl fmt::Display for Chained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Chained {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn Error + 'static))
    }
}

/// A cause that is only text.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

/// An error with what was being done when it happened.
#[derive(Debug)]
struct Context {
    context: String,
    source: Box<dyn Error + Send + Sync + 'static>,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}
