//! What a call can end with besides its value.

use alloc::sync::Arc;
use core::convert::Infallible;
use core::fmt;

/// Why a call did not produce a value.
///
/// `E` is the error type of fallible work (`try_call`); infallible calls use the default,
/// [`Infallible`], so `Error::Failed` cannot occur for them.
///
/// Every caller of a flight sees the same outcome: when the work fails, the leader gets
/// `Failed(e)` and each waiter gets `Failed(e.clone())`, never a default or a retry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// The work returned this error (the leader's own error, shared with every waiter).
    Failed(E),
    /// The work panicked. Waiters get the panic message; the leader's own call resumes
    /// the original panic instead of returning this.
    Panicked(PanicMessage),
    /// The leader went away before finishing and the group's policy is
    /// [`LeaderDropPolicy::FailWaiters`](crate::LeaderDropPolicy::FailWaiters).
    LeaderDropped,
    /// This caller's timeout elapsed first. The flight goes on for everyone else.
    Timeout,
    /// The call was made from inside the work of the very flight it would join, which
    /// would wait for itself forever.
    Reentrant,
}

impl<E> Error<E> {
    /// Returns `true` if the work returned an error.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Returns `true` if the work panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// Returns `true` if the leader was dropped and the group fails its waiters.
    pub fn is_leader_dropped(&self) -> bool {
        matches!(self, Self::LeaderDropped)
    }

    /// Returns `true` if this caller's timeout elapsed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Returns `true` if the call would have waited for its own flight.
    pub fn is_reentrant(&self) -> bool {
        matches!(self, Self::Reentrant)
    }

    /// The work's own error, if that is what this is.
    pub fn into_failed(self) -> Option<E> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The panic message, if the work panicked.
    pub fn panic_message(&self) -> Option<&PanicMessage> {
        match self {
            Self::Panicked(message) => Some(message),
            _ => None,
        }
    }

    /// Maps the work's error, leaving the other variants alone.
    pub fn map_failed<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Self::Failed(e) => Error::Failed(f(e)),
            Self::Panicked(message) => Error::Panicked(message),
            Self::LeaderDropped => Error::LeaderDropped,
            Self::Timeout => Error::Timeout,
            Self::Reentrant => Error::Reentrant,
        }
    }
}

impl Error<Infallible> {
    /// Widens an error of infallible work to any work error type.
    pub fn widen<E>(self) -> Error<E> {
        self.map_failed(|never| match never {})
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "coalesced work failed: {e}"),
            Self::Panicked(message) => write!(f, "coalesced work panicked: {message}"),
            Self::LeaderDropped => f.write_str("the leading call was dropped before finishing"),
            Self::Timeout => f.write_str("timed out waiting for the coalesced work"),
            Self::Reentrant => {
                f.write_str("call for a key from inside that key's own work would wait for itself")
            }
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// The message of a panic in the work, shared by every waiter of the flight.
///
/// A `&str` or `String` payload is kept as is; any other payload reads `Box<dyn Any>`, as in
/// the standard library's panic hook.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PanicMessage(Arc<str>);

impl PanicMessage {
    /// Creates a message.
    pub fn new(message: &str) -> Self {
        Self(Arc::from(message))
    }

    /// The message text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the message out of a panic payload, as `std::panic::catch_unwind` returns it.
    #[cfg(feature = "std")]
    pub fn from_payload(payload: &(dyn core::any::Any + Send)) -> Self {
        if let Some(s) = payload.downcast_ref::<&'static str>() {
            Self::new(s)
        } else if let Some(s) = payload.downcast_ref::<alloc::string::String>() {
            Self::new(s)
        } else {
            Self::new("Box<dyn Any>")
        }
    }
}

impl fmt::Debug for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
