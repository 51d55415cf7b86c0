//! What a call can end with besides its value.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::convert::Infallible;
use core::fmt;

/// Why a call did not produce a value.
///
/// `E` is the error type of fallible work (`try_call`); infallible calls use the default,
/// [`Infallible`], so `Error::Failed` cannot occur for them. `Error` alone (that is,
/// `Error<Infallible>`) is the *call error*: the reasons a call can end without a value
/// that have nothing to do with the work's own error type.
///
/// Every caller of a flight sees the same outcome: when the work fails, the leader gets
/// `Failed(e)` and each waiter gets `Failed(e.clone())`, never a default or a retry.
///
/// # Errors that are not `Clone`
///
/// Sharing the leader's error means cloning it for each waiter. For an error that is not
/// `Clone` (`std::io::Error`, most error enums that wrap one), use the `try_call_arc`
/// methods: the work returns its plain `Result<V, E>` and every caller gets the same error
/// behind an `Arc`, as `Error<Arc<E>>` (moka's `try_get_with` does the same). The group is
/// declared as `Group<K, Result<V, Arc<E>>>`.
///
/// # With `?`
///
/// * **Into `Box<dyn Error + Send + Sync>`** (or `anyhow::Error`): `Error<E>` implements
///   [`core::error::Error`] when `E` does, with [`source`](core::error::Error::source)
///   returning the work's error, so `?` works as is; `Error<Arc<E>>` too. For an `E`
///   that is not an error type (a `String`), convert with [`into_boxed`](Self::into_boxed):
///   `.map_err(Error::into_boxed)?` (into `Box<dyn Error>` or `Box<dyn Error + Send + Sync>`).
/// * **Into `std::io::Error`** (with `std`): `Error<io::Error>` and
///   `Error<Arc<io::Error>>` convert with `From`, keeping the work's error kind (and
///   `TimedOut` for [`Timeout`](Self::Timeout)).
/// * **Into the application's own error type**: write one `From` impl with
///   [`flatten_into`](Self::flatten_into), which needs `From<E>` (the application's own
///   errors) and `From<Error>` (the call errors):
///
/// ```
/// use singleflight_core::Error;
///
/// #[derive(Debug)]
/// struct DbError;
///
/// #[derive(Debug)]
/// enum AppError {
///     Db(DbError),
///     Coalescing(Error),
/// }
///
/// impl From<DbError> for AppError {
///     fn from(e: DbError) -> Self {
///         AppError::Db(e)
///     }
/// }
///
/// impl From<Error> for AppError {
///     fn from(e: Error) -> Self {
///         AppError::Coalescing(e)
///     }
/// }
///
/// // The one impl that lets `?` turn a call's error into the application's.
/// impl From<Error<DbError>> for AppError {
///     fn from(e: Error<DbError>) -> Self {
///         e.flatten_into()
///     }
/// }
///
/// fn handler(outcome: Result<u32, Error<DbError>>) -> Result<u32, AppError> {
///     Ok(outcome? + 1)
/// }
///
/// assert!(matches!(handler(Err(Error::Failed(DbError))), Err(AppError::Db(DbError))));
/// assert!(matches!(handler(Err(Error::Timeout)), Err(AppError::Coalescing(Error::Timeout))));
/// ```
///
/// For an HTTP service, [`http_status`](Self::http_status) picks a status code for each
/// call error.
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

    /// Separates the work's own error from the call errors: `Ok(e)` for
    /// [`Failed(e)`](Self::Failed), `Err` with the same error otherwise, now free of `E`.
    ///
    /// ```
    /// use singleflight_core::Error;
    ///
    /// assert_eq!(Error::Failed("db down").split_failed(), Ok("db down"));
    /// assert_eq!(Error::<&str>::Timeout.split_failed(), Err(Error::Timeout));
    /// ```
    pub fn split_failed(self) -> Result<E, Error> {
        match self {
            Self::Failed(e) => Ok(e),
            Self::Panicked(message) => Err(Error::Panicked(message)),
            Self::LeaderDropped => Err(Error::LeaderDropped),
            Self::Timeout => Err(Error::Timeout),
            Self::Reentrant => Err(Error::Reentrant),
        }
    }

    /// Converts into an application's error type `U` that has a `From` impl for the work's
    /// error and one for the call errors ([`Error`]). It is the body of the one
    /// `From<Error<E>> for U` impl that lets `?` convert a call's outcome: see the
    /// [type's docs](Error).
    pub fn flatten_into<U>(self) -> U
    where
        U: From<E> + From<Error>,
    {
        match self.split_failed() {
            Ok(e) => U::from(e),
            Err(error) => U::from(error),
        }
    }

    /// Boxes the work's error into a [`BoxedError`], an error type for any work error that
    /// converts into `Box<dyn Error + Send + Sync>`: error types, and also `String` and
    /// `&str`, which are not error types themselves (so `Error<String>` does not implement
    /// [`core::error::Error`] and `?` cannot box it). A `BoxedError` displays as this error
    /// does, and its [`source`](core::error::Error::source) is the work's error.
    ///
    /// ```
    /// use singleflight_core::Error;
    ///
    /// fn price(outcome: Result<f64, Error<String>>) -> Result<f64, Box<dyn std::error::Error>> {
    ///     Ok(outcome.map_err(Error::into_boxed)?)
    /// }
    ///
    /// let error = price(Err(Error::Failed("market closed".to_string()))).unwrap_err();
    /// assert_eq!(error.to_string(), "coalesced work failed: market closed");
    /// assert_eq!(error.source().unwrap().to_string(), "market closed");
    /// ```
    pub fn into_boxed(self) -> BoxedError
    where
        E: Into<Box<dyn core::error::Error + Send + Sync>>,
    {
        BoxedError(self.map_failed(Into::into))
    }

    /// An HTTP status code for this error, for services that coalesce behind a handler:
    /// `failed` picks the code for the work's own error, and the call errors map to
    ///
    /// | error | status |
    /// |---|---|
    /// | [`Timeout`](Self::Timeout) | 504 Gateway Timeout: the work did not answer in time |
    /// | [`LeaderDropped`](Self::LeaderDropped) | 503 Service Unavailable: transient, a retry starts a new flight |
    /// | [`Panicked`](Self::Panicked), [`Reentrant`](Self::Reentrant) | 500 Internal Server Error: a bug |
    ///
    /// It returns a plain `u16`, so no HTTP crate is needed here; `http::StatusCode::from_u16`
    /// takes it.
    ///
    /// ```
    /// use singleflight_core::Error;
    ///
    /// enum DbError { NotFound, Down }
    /// let status = |e: &DbError| match e {
    ///     DbError::NotFound => 404,
    ///     DbError::Down => 503,
    /// };
    /// assert_eq!(Error::Failed(DbError::NotFound).http_status(status), 404);
    /// assert_eq!(Error::<DbError>::Timeout.http_status(status), 504);
    /// ```
    pub fn http_status(&self, failed: impl FnOnce(&E) -> u16) -> u16 {
        match self {
            Self::Failed(e) => failed(e),
            Self::Timeout => 504,
            Self::LeaderDropped => 503,
            Self::Panicked(_) | Self::Reentrant => 500,
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

/// What `try_call` needs of the work's error: `Clone`, since every caller of a flight gets a
/// copy of the leader's error. Implemented for every `Clone` type; it exists so that an
/// error that is not `Clone` (`std::io::Error`) fails to compile with a message that names
/// the way out: the `try_call_arc` methods, which share the error as one `Arc<E>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `Clone`, so a flight cannot hand a copy of it to every caller: use `try_call_arc` (a group of `Result<V, Arc<{Self}>>`), which shares the error as one `Arc`",
    label = "the work's error type is not `Clone`"
)]
pub trait ShareableError: Clone {}

impl<E: Clone> ShareableError for E {}

/// An [`Error`] whose work error is boxed, so that it is an error type whatever the work's
/// error was (a `String` too): what [`Error::into_boxed`] returns. `?` converts it into
/// `Box<dyn Error>` (with or without `Send + Sync`) or any error type that takes a
/// `core::error::Error`.
pub struct BoxedError(Error<Box<dyn core::error::Error + Send + Sync>>);

impl BoxedError {
    /// The error, with the work's error boxed.
    pub fn into_inner(self) -> Error<Box<dyn core::error::Error + Send + Sync>> {
        self.0
    }

    /// The error, with the work's error boxed.
    pub fn get_ref(&self) -> &Error<Box<dyn core::error::Error + Send + Sync>> {
        &self.0
    }
}

impl fmt::Debug for BoxedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for BoxedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl core::error::Error for BoxedError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.0 {
            Error::Failed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// `?` from a call whose work fails with `std::io::Error` into `std::io::Error`: the work's
/// own error as it is, a timeout as [`TimedOut`](std::io::ErrorKind::TimedOut), any other
/// call error as [`Other`](std::io::ErrorKind::Other) with this error as its inner error.
#[cfg(feature = "std")]
impl From<Error<std::io::Error>> for std::io::Error {
    fn from(error: Error<std::io::Error>) -> Self {
        match error.split_failed() {
            Ok(e) => e,
            Err(error) => call_error_to_io(error),
        }
    }
}

/// `?` from a call whose work fails with `std::io::Error`, shared as `Arc<io::Error>` (the
/// `try_call_arc` methods), into `std::io::Error`: the work's error keeps its
/// [`kind`](std::io::Error::kind) and is the new error's inner error (its `Display` and
/// `source`); the call errors convert as from `Error<io::Error>`.
#[cfg(feature = "std")]
impl From<Error<Arc<std::io::Error>>> for std::io::Error {
    fn from(error: Error<Arc<std::io::Error>>) -> Self {
        match error.split_failed() {
            Ok(e) => std::io::Error::new(e.kind(), e),
            Err(error) => call_error_to_io(error),
        }
    }
}

#[cfg(feature = "std")]
fn call_error_to_io(error: Error) -> std::io::Error {
    let kind = match error {
        Error::Timeout => std::io::ErrorKind::TimedOut,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, error)
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
