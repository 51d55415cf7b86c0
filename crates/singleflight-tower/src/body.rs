//! The response body the layer returns, and the buffering of a shared response.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::vary::{Selecting, Vary};

pin_project! {
    /// The body of every response the layer returns: a copy of a shared (buffered)
    /// response, or the inner service's own body, passed through.
    ///
    /// Its data are [`Bytes`] whatever the inner body's buffer type, and its error is the
    /// inner body's error (a buffered copy never fails).
    pub struct CoalesceBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // A copy of a buffered response: its data, then its trailers.
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        // The inner service's body, untouched.
        Inner { #[pin] body: B },
        // The rest of the inner service's body after `prefix`, what was read of it before
        // it proved too large to share (boxed: it was pinned while it was read).
        Rest { prefix: Option<Bytes>, body: Pin<Box<B>> },
    }
}

impl<B> CoalesceBody<B> {
    /// A body of these bytes (none if empty) and trailers.
    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Buffered { data, trailers },
        }
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self::buffered(Bytes::new(), None)
    }

    /// The inner service's body.
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// The rest of the inner service's body, after `prefix`.
    fn rest(prefix: Bytes, body: Pin<Box<B>>) -> Self {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Self {
            kind: Kind::Rest { prefix, body },
        }
    }

    /// Returns `true` if this is a copy of a shared response.
    pub fn is_shared_copy(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B> Body for CoalesceBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    Poll::Ready(Some(Ok(Frame::data(data))))
                } else {
                    Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
                }
            }
            KindProj::Inner { body } => body.poll_frame(cx).map_ok(into_bytes),
            KindProj::Rest { prefix, body } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                body.as_mut().poll_frame(cx).map_ok(into_bytes)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Rest { prefix, body } => prefix.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Rest { prefix, body } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let hint = body.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower().saturating_add(extra));
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper.saturating_add(extra));
                }
                out
            }
        }
    }
}

fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> fmt::Debug for CoalesceBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Buffered { data, trailers } => f
                .debug_struct("CoalesceBody::Buffered")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .field("trailers", &trailers.is_some())
                .finish(),
            Kind::Inner { .. } => f
                .debug_struct("CoalesceBody::Inner")
                .finish_non_exhaustive(),
            Kind::Rest { prefix, .. } => f
                .debug_struct("CoalesceBody::Rest")
                .field("prefix", &prefix.as_ref().map_or(0, Bytes::len))
                .finish_non_exhaustive(),
        }
    }
}

/// A response read to its end once, copied for every caller of its flight.
#[derive(Debug)]
pub(crate) struct Buffered {
    head: http::response::Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
    selecting: Selecting,
}

impl Buffered {
    /// Whether a waiter whose request has `headers` may have this response: its values of
    /// the headers the response's `Vary` names equal the leader's.
    pub(crate) fn selected_by(&self, headers: &HeaderMap) -> bool {
        self.selecting.matches(headers)
    }

    /// The response itself, for the last caller to hold it: nothing is copied.
    pub(crate) fn into_response<B>(self) -> Response<CoalesceBody<B>> {
        Response::from_parts(self.head, CoalesceBody::buffered(self.data, self.trailers))
    }

    /// A caller's own copy: the same status, version, headers (extensions are not copied:
    /// they are not `Clone`), body and trailers.
    pub(crate) fn to_response<B>(&self) -> Response<CoalesceBody<B>> {
        let mut response = Response::new(CoalesceBody::buffered(
            self.data.clone(),
            self.trailers.clone(),
        ));
        *response.status_mut() = self.head.status;
        *response.version_mut() = self.head.version;
        *response.headers_mut() = self.head.headers.clone();
        response
    }
}

/// What became of the leader's response.
pub(crate) enum Read<B: Body> {
    /// Read to its end, within the limit, and shareable.
    Shared(Buffered),
    /// Not shareable (too large, streaming, or private): handed to the leader as it is, with
    /// whatever was read of it first.
    Unshared(Response<CoalesceBody<B>>),
    /// Its body failed while it was read.
    Failed(B::Error),
}

/// A body read to its end, or as far as the limit.
enum Collected<B: Body> {
    All(Bytes, Option<HeaderMap>),
    TooLong(Bytes, Pin<Box<B>>),
    Failed(B::Error),
}

/// The rules that decide whether a response is shared.
#[derive(Clone, Debug)]
pub(crate) struct ShareRules {
    pub(crate) limit: usize,
    pub(crate) share_private: bool,
    pub(crate) share_set_cookie: bool,
}

impl ShareRules {
    /// Reads `response` into a buffer if it may be shared, or gives it back as it is.
    ///
    /// Not shared, and not read at all: a `text/event-stream` (a stream with no end), a
    /// `Cache-Control: no-store` or `private` response (unless `share_private`), one that
    /// sets a cookie (unless `share_set_cookie`), one with `Vary: *`, and a body that says
    /// it is longer than the limit. Any other body is read frame by frame; once it passes
    /// the limit, what was read goes back in front of the rest and the leader gets it all,
    /// unbuffered. `asked` is the leader's request's headers, for `Vary`.
    pub(crate) async fn read<B>(&self, response: Response<B>, asked: &HeaderMap) -> Read<B>
    where
        B: Body,
    {
        let (head, body) = response.into_parts();
        let vary = Vary::of(&head.headers, asked);
        let selecting = match vary {
            Vary::Fields(selecting) if self.shareable(&head.headers) => Some(selecting),
            _ => None,
        };
        let (Some(selecting), false) = (selecting, body.size_hint().lower() > self.limit as u64)
        else {
            return Read::Unshared(Response::from_parts(head, CoalesceBody::inner(body)));
        };
        match self.collect(Box::pin(body)).await {
            Collected::All(data, trailers) => Read::Shared(Buffered {
                head,
                data,
                trailers,
                selecting,
            }),
            Collected::TooLong(prefix, rest) => {
                Read::Unshared(Response::from_parts(head, CoalesceBody::rest(prefix, rest)))
            }
            Collected::Failed(error) => Read::Failed(error),
        }
    }

    /// Reads `body` to its end, or until it passes the limit.
    async fn collect<B: Body>(&self, mut body: Pin<Box<B>>) -> Collected<B> {
        let mut chunks = Chunks::default();
        let mut trailers: Option<HeaderMap> = None;
        while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => return Collected::Failed(error),
            };
            match frame.into_data() {
                Ok(mut data) => {
                    chunks.push(data.copy_to_bytes(data.remaining()));
                    if chunks.len > self.limit {
                        return Collected::TooLong(chunks.into_bytes(), body);
                    }
                }
                Err(frame) => {
                    if let Ok(more) = frame.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(more);
                    }
                }
            }
        }
        Collected::All(chunks.into_bytes(), trailers)
    }

    fn shareable(&self, headers: &HeaderMap) -> bool {
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

/// The chunks of a body read so far: the first (often the only one) is kept as it is, and
/// only a second one makes a list.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    more: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.more.push(chunk);
        }
    }

    fn into_bytes(self) -> Bytes {
        let Some(first) = self.first else {
            return Bytes::new();
        };
        if self.more.is_empty() {
            return first;
        }
        let mut all = BytesMut::with_capacity(self.len);
        all.extend_from_slice(&first);
        for chunk in self.more {
            all.extend_from_slice(&chunk);
        }
        all.freeze()
    }
}

/// A response with `status` and no body.
pub(crate) fn status_response<B>(status: StatusCode) -> Response<CoalesceBody<B>> {
    let mut response = Response::new(CoalesceBody::empty());
    *response.status_mut() = status;
    response
}
