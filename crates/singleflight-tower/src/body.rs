//! The response body the layer returns, and the rules that decide whether a response is
//! shared.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::stream::{BoxError, Piece, Tap};

pin_project! {
    /// The body of every response the layer returns: a caller's reading of a shared
    /// response (its bytes, or the range it asked for, as they arrive), or the inner
    /// service's own body, passed through.
    ///
    /// Its data are [`Bytes`] whatever the inner body's buffer type. Its error is boxed,
    /// as hyper and axum take them: the inner body's own error when it is passed through,
    /// or a [`BodyError`](crate::BodyError) when a shared body failed while the layer read
    /// it, or when this caller was cut off for reading too slowly for the layer's memory
    /// budget.
    pub struct CoalesceBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // A reading of a shared response.
        Shared { tap: Tap },
        // The inner service's body, untouched.
        Inner { #[pin] body: B },
        // No body.
        Empty,
    }
}

impl<B> CoalesceBody<B> {
    /// A reading of a shared response.
    pub(crate) fn shared(tap: Tap) -> Self {
        Self {
            kind: Kind::Shared { tap },
        }
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// The inner service's body.
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// Returns `true` if this is a reading of a shared response (one execution's body,
    /// read by every caller of its flight).
    pub fn is_shared_copy(&self) -> bool {
        matches!(self.kind, Kind::Shared { .. })
    }
}

impl<B> Body for CoalesceBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Shared { tap } => tap.poll_read(cx).map(|piece| match piece {
                Piece::Data(data) => Some(Ok(Frame::data(data))),
                Piece::Trailers(trailers) => Some(Ok(Frame::trailers(trailers))),
                Piece::End => None,
                Piece::Failed(error) => Some(Err(error.into())),
            }),
            KindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(into_bytes).map_err(Into::into))),
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Shared { tap } => tap.is_done(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Shared { tap } => tap
                .remaining()
                .map_or_else(SizeHint::new, SizeHint::with_exact),
            Kind::Inner { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> fmt::Debug for CoalesceBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Shared { tap } => f.debug_tuple("CoalesceBody::Shared").field(tap).finish(),
            Kind::Inner { .. } => f
                .debug_struct("CoalesceBody::Inner")
                .finish_non_exhaustive(),
            Kind::Empty => f.write_str("CoalesceBody::Empty"),
        }
    }
}

/// The rules that decide whether a response is shared.
#[derive(Clone, Debug)]
pub(crate) struct ShareRules {
    pub(crate) share_private: bool,
    pub(crate) share_set_cookie: bool,
}

impl ShareRules {
    /// Whether a response with these headers may be shared at all. Never: a
    /// `text/event-stream` (a stream with no end), a `Cache-Control: no-store` or `private`
    /// response (unless `share_private`), and one that sets a cookie (unless
    /// `share_set_cookie`). (`Vary: *` is decided with the other `Vary` rules.)
    pub(crate) fn shareable(&self, headers: &HeaderMap) -> bool {
        if headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            })
        {
            return false;
        }
        if !self.share_set_cookie && headers.contains_key(SET_COOKIE) {
            return false;
        }
        self.share_private
            || !headers.get_all(CACHE_CONTROL).iter().any(|value| {
                value.to_str().is_ok_and(|value| {
                    value.split(',').any(|directive| {
                        let name = directive.split('=').next().unwrap_or("").trim();
                        name.eq_ignore_ascii_case("no-store")
                            || name.eq_ignore_ascii_case("private")
                    })
                })
            })
    }
}

/// A response with `status` and no body.
pub(crate) fn status_response<B>(status: StatusCode) -> Response<CoalesceBody<B>> {
    let mut response = Response::new(CoalesceBody::empty());
    *response.status_mut() = status;
    response
}
