//! A shared response as it arrives: its head at once, its body as one copy of its chunks,
//! read by every caller at its own pace.
//!
//! # How it works
//!
//! The leader's work ends when the inner service's response *head* is ready: the flight
//! then hands every caller a [`Tap`] on one [`SharedResponse`], and a task of its own (the
//! *pump*) reads the body into a log of [`Bytes`] chunks. Each caller's body is a
//! [`Reader`] with a cursor into that log: it takes the chunks it has not had yet, shared
//! by reference count, never copied, so a thousand readers of a 2 MiB body hold one 2 MiB.
//!
//! Until the body ends, the response can still be joined from byte 0 (a request that
//! arrives after the head, while the body streams, joins it as it would have joined the
//! flight): the layer's table of responses in progress ([`Streams`]) finds it by key.
//!
//! # Pace and memory
//!
//! * The pump reads ahead of the *fastest* reader by at most [`READ_AHEAD`] bytes, so the
//!   backend is read at the pace of the fastest client, and no reader waits for a slower
//!   one.
//! * While the response can be joined, every byte from 0 is kept. Once it has kept more
//!   than the layer's memory budget allows, it can no longer be joined (later requests
//!   start a new flight), and bytes that every reader has had are dropped.
//! * Every byte is counted against the layer-wide [`Budget`]. When the layer holds more than
//!   its budget, a response whose slowest reader lags more than [`READ_AHEAD`] behind its
//!   fastest *cuts* that reader: its body ends with an error, so its connection is closed
//!   and its client sees a truncated transfer, never a silently short one. A response
//!   with a single reader (or readers that keep up) is never cut; its pump waits until the
//!   budget has room again.
//! * When no caller holds a tap any more, the pump stops and the rest of the body is never
//!   read (as when the one client of an uncoalesced response goes away).
//!
//! # Locks
//!
//! One lock per response guards its log ([`State`]); the table's lock is taken either
//! alone or before a response's lock, never after it. No user code runs under either:
//! the body is polled by the pump without a lock, and wakers are woken after the lock is
//! released.

use std::collections::{HashMap, VecDeque};
use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http::response::Parts;
use http_body::{Body, Frame};

use crate::fresh::{Fresh, Reuse};
use crate::vary::Selecting;

/// How far the pump reads ahead of the fastest reader, in bytes.
pub(crate) const READ_AHEAD: u64 = 256 * 1024;

/// A boxed error, as hyper and axum take them.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The bytes every shared response of one layer holds, against the layer's limit.
#[derive(Debug)]
pub(crate) struct Budget {
    held: AtomicUsize,
    limit: usize,
    // Pumps waiting for room.
    waiting: Mutex<Vec<Waker>>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.held() > self.limit
    }

    fn add(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        let wakers = std::mem::take(&mut *lock(&self.waiting));
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ready once the budget has room; registers `cx` otherwise.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.over() {
            return Poll::Ready(());
        }
        // Cloned before the lock: a waker is user code.
        let waker = cx.waker().clone();
        lock(&self.waiting).push(waker);
        // Released in between: look again, so the wake-up is never lost.
        if self.over() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// The responses of one layer whose bodies are still arriving, by key: a request for one of
/// them joins it from byte 0.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    live: Mutex<HashMap<Vec<u8>, Weak<SharedResponse>>>,
    // The table's size, read without its lock: most responses arrive whole and never
    // enter it, and then a request need not take the layer-wide lock to learn so.
    entries: AtomicUsize,
}

impl Streams {
    /// A tap on the response in progress for `key`, if there is one that can still be
    /// joined and whose `Vary` the request's `headers` select.
    pub(crate) fn join(&self, key: &[u8], headers: &HeaderMap) -> Option<Tap> {
        if self.entries.load(Ordering::Acquire) == 0 {
            return None;
        }
        let live = lock(&self.live);
        let shared = live.get(key)?.upgrade()?;
        drop(live);
        if !shared.selecting.matches(headers) {
            return None;
        }
        Tap::join(shared)
    }

    fn insert(&self, key: Vec<u8>, shared: &Arc<SharedResponse>) {
        let mut live = lock(&self.live);
        live.insert(key, Arc::downgrade(shared));
        self.entries.store(live.len(), Ordering::Release);
    }

    /// Removes `key`'s entry if it is still `shared`'s.
    fn remove(&self, key: &[u8], shared: *const SharedResponse) {
        let mut live = lock(&self.live);
        if live.get(key).is_some_and(|weak| weak.as_ptr() == shared) {
            live.remove(key);
        }
        // Entries of responses that are gone (dropped without ending) go as well, so the
        // table never outgrows the responses in progress.
        if live.len() > 16 && live.len().is_power_of_two() {
            live.retain(|_, weak| weak.strong_count() > 0);
        }
        self.entries.store(live.len(), Ordering::Release);
    }
}

/// A response shared by the callers of a flight.
pub(crate) struct SharedResponse {
    head: Parts,
    selecting: Selecting,
    state: Mutex<State>,
    budget: Arc<Budget>,
    streams: Arc<Streams>,
    key: Vec<u8>,
    // Where to store it once its body has ended, and for how long, if it may be reused.
    reuse: Option<(Arc<Fresh>, Reuse)>,
}

impl fmt::Debug for SharedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedResponse")
            .field("status", &self.head.status)
            .finish_non_exhaustive()
    }
}

/// How a body ended.
#[derive(Clone, Debug)]
enum End {
    /// It ended, with these trailers.
    Finished(Option<HeaderMap>),
    /// It failed while it was read.
    Failed(Arc<BoxError>),
    /// No caller wanted it any more.
    Stopped,
}

/// A response's log and readers.
#[derive(Debug)]
struct State {
    /// The chunks kept, from byte `base` on, with the offset of each.
    chunks: VecDeque<(u64, Bytes)>,
    base: u64,
    /// The bytes the pump has appended so far.
    position: u64,
    end: Option<End>,
    /// The taps alive: callers that hold the response or read its body.
    interest: usize,
    /// Listed in the table of responses in progress: a request joins it from byte 0.
    joinable: bool,
    /// Every byte from 0 is kept (for joiners, and for reuse once the body has ended).
    keep_all: bool,
    readers: Vec<Option<Cursor>>,
    pump: Option<Waker>,
}

/// A reader's place in the log.
#[derive(Debug)]
struct Cursor {
    at: u64,
    waker: Option<Waker>,
    cut: bool,
    /// It waits for the body's end (to learn its length): the pump reads on for it.
    wants_end: bool,
}

impl State {
    fn kept(&self) -> u64 {
        self.position - self.base
    }

    fn slowest(&self) -> Option<(usize, u64)> {
        self.readers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| !c.cut).map(|c| (i, c.at)))
            .min_by_key(|(_, at)| *at)
    }

    fn fastest(&self) -> Option<u64> {
        self.readers
            .iter()
            .flatten()
            .filter(|c| !c.cut)
            .map(|c| {
                if c.wants_end {
                    u64::MAX - READ_AHEAD
                } else {
                    c.at
                }
            })
            .max()
    }

    /// Takes a free cursor slot for a reader at byte `at`.
    fn register(&mut self, at: u64) -> usize {
        let cursor = Some(Cursor {
            at,
            waker: None,
            cut: false,
            wants_end: false,
        });
        self.interest += 1;
        match self.readers.iter().position(Option::is_none) {
            Some(free) => {
                self.readers[free] = cursor;
                free
            }
            None => {
                self.readers.push(cursor);
                self.readers.len() - 1
            }
        }
    }

    /// Takes out the chunks no reader needs (none while every byte is kept) into `out`, to
    /// be dropped after the lock (a chunk's owner may run user code when dropped); returns
    /// their bytes.
    fn trim(&mut self, out: &mut Vec<Bytes>) -> usize {
        if self.keep_all {
            return 0;
        }
        let keep_from = self.slowest().map_or(self.position, |(_, at)| at);
        let mut dropped = 0;
        while let Some((offset, chunk)) = self.chunks.front() {
            let end = offset + chunk.len() as u64;
            if end > keep_from {
                break;
            }
            dropped += chunk.len();
            self.base = end;
            out.extend(self.chunks.pop_front().map(|(_, chunk)| chunk));
        }
        dropped
    }

    fn wake_readers(&mut self, wakers: &mut Vec<Waker>) {
        for cursor in self.readers.iter_mut().flatten() {
            wakers.extend(cursor.waker.take());
        }
    }
}

impl SharedResponse {
    /// A shared response with `head`, whose body `body` a spawned pump reads; it can be
    /// joined through `streams` under `key` until its body ends.
    pub(crate) async fn start<B>(
        head: Parts,
        selecting: Selecting,
        body: B,
        budget: Arc<Budget>,
        streams: Arc<Streams>,
        key: Vec<u8>,
        reuse: Option<(Arc<Fresh>, Reuse)>,
    ) -> Tap
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let ended = body.is_end_stream();
        let shared = Arc::new(Self {
            head,
            selecting,
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                base: 0,
                position: 0,
                end: ended.then_some(End::Finished(None)),
                interest: 0,
                joinable: false,
                keep_all: true,
                readers: Vec::new(),
                pump: None,
            }),
            budget,
            streams,
            key,
            reuse,
        });
        let tap = Tap::register(shared.clone(), 0);
        if ended {
            shared.end(End::Finished(None));
            return tap;
        }
        // What the body has ready now is read here, in the leader's work: a body that is
        // all in memory (the common case) then needs no task of its own, and its flight
        // hands out a complete response.
        let mut body = Box::pin(body);
        let mut trailers = None;
        while shared.state().position < READ_AHEAD {
            let frame = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
            match frame {
                Poll::Pending => break,
                Poll::Ready(frame) => {
                    if let Some(end) = shared.take(frame, &mut trailers) {
                        shared.end(end);
                        return tap;
                    }
                }
            }
        }
        shared.state().joinable = true;
        shared.streams.insert(shared.key.clone(), &shared);
        tokio::spawn(pump(shared.clone(), body, trailers));
        tap
    }

    /// Takes a frame of the body (or its end) into the log; returns how the body ended,
    /// if it did.
    fn take<D: Buf, E: Into<BoxError>>(
        &self,
        frame: Option<Result<Frame<D>, E>>,
        trailers: &mut Option<HeaderMap>,
    ) -> Option<End> {
        match frame {
            None => Some(End::Finished(trailers.take())),
            Some(Err(error)) => Some(End::Failed(Arc::new(error.into()))),
            Some(Ok(frame)) => {
                match frame.into_data() {
                    Ok(mut data) => self.push(data.copy_to_bytes(data.remaining())),
                    Err(frame) => {
                        if let Ok(more) = frame.into_trailers() {
                            trailers.get_or_insert_with(HeaderMap::new).extend(more);
                        }
                    }
                }
                None
            }
        }
    }

    /// The response's status, version and headers.
    pub(crate) fn head(&self) -> &Parts {
        &self.head
    }

    /// Whether a waiter whose request has `headers` may have this response (`Vary`).
    pub(crate) fn selected_by(&self, headers: &HeaderMap) -> bool {
        self.selecting.matches(headers)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Ends the body (if it has not ended) and wakes everyone; leaves the table of
    /// responses in progress, and joins the table of reusable ones if it may.
    fn end(self: &Arc<Self>, end: End) {
        let (mut wakers, mut trimmed) = (Vec::new(), Vec::new());
        let released;
        let reuse;
        {
            let mut state = self.state();
            if state.end.is_none() {
                state.end = Some(end);
            }
            state.joinable = false;
            let finished = matches!(state.end, Some(End::Finished(_)));
            reuse = self.reuse.as_ref().filter(|_| finished && state.keep_all);
            if reuse.is_none() {
                state.keep_all = false;
            }
            released = state.trim(&mut trimmed);
            state.wake_readers(&mut wakers);
            wakers.extend(state.pump.take());
        }
        drop(trimmed);
        self.budget.release(released);
        self.streams.remove(&self.key, &**self);
        if let Some((fresh, reuse)) = reuse {
            fresh.insert(self.key.clone(), self.clone(), *reuse);
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Appends a chunk read by the pump; enforces the budget.
    fn push(&self, chunk: Bytes) {
        let len = chunk.len();
        if len == 0 {
            return;
        }
        self.budget.add(len);
        let (mut wakers, mut trimmed) = (Vec::new(), Vec::new());
        let mut released = 0;
        let mut left_table = false;
        {
            let mut state = self.state();
            let offset = state.position;
            state.position += len as u64;
            state.chunks.push_back((offset, chunk));
            if state.keep_all && state.kept() > self.budget.limit as u64 / 2 {
                // Too large to keep from byte 0, for late joiners or for reuse.
                state.keep_all = false;
                left_table = state.joinable;
                state.joinable = false;
            }
            released += state.trim(&mut trimmed);
            // Over the layer's budget: cut this response's laggards, slowest first.
            while self.budget.held().saturating_sub(released) > self.budget.limit {
                let (Some((slowest, at)), Some(fastest)) = (state.slowest(), state.fastest())
                else {
                    break;
                };
                if fastest.saturating_sub(at) <= READ_AHEAD {
                    break;
                }
                let cursor = state.readers[slowest].as_mut().expect("a live reader");
                cursor.cut = true;
                wakers.extend(cursor.waker.take());
                released += state.trim(&mut trimmed);
            }
            state.wake_readers(&mut wakers);
        }
        drop(trimmed);
        self.budget.release(released);
        if left_table {
            self.streams.remove(&self.key, self);
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ready when the pump may read more: `true` to read, `false` to stop (no caller wants
    /// the body any more).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        // The waker is cloned (user code) with no lock held, then the state looked at again.
        let mut waker = None;
        loop {
            let mut state = self.state();
            if state.interest == 0 || state.end.is_some() {
                return Poll::Ready(false);
            }
            let wanted = state.fastest().unwrap_or(0).saturating_add(READ_AHEAD);
            if state.position < wanted {
                break;
            }
            match waker.take() {
                Some(waker) => {
                    let old = state.pump.replace(waker);
                    drop(state);
                    drop(old);
                    return Poll::Pending;
                }
                None => {
                    drop(state);
                    waker = Some(cx.waker().clone());
                }
            }
        }
        self.budget.poll_room(cx).map(|()| true)
    }

    /// The body's length, once known: from `Content-Length`, or once it has ended.
    pub(crate) fn len(&self) -> Option<u64> {
        let state = self.state();
        if let Some(End::Finished(_)) = state.end {
            return Some(state.position);
        }
        drop(state);
        content_length(&self.head.headers)
    }
}

/// Reads `body` into `shared`'s log while any caller wants it.
async fn pump<B>(
    shared: Arc<SharedResponse>,
    mut body: Pin<Box<B>>,
    mut trailers: Option<HeaderMap>,
) where
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        let frame = poll_fn(|cx| match shared.poll_room(cx) {
            Poll::Ready(true) => body.as_mut().poll_frame(cx).map(Some),
            Poll::Ready(false) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let end = match frame {
            // Nobody wants the rest.
            None => Some(End::Stopped),
            Some(frame) => shared.take(frame, &mut trailers),
        };
        if let Some(end) = end {
            return shared.end(end);
        }
    }
}

/// A caller's hold on a shared response, and its body: bytes `at..to` of it, as they
/// arrive. While any tap lives, the body is read; a tap holds back the dropping of the bytes
/// from its place on until it has read them.
pub(crate) struct Tap {
    shared: Arc<SharedResponse>,
    // Its cursor's slot; `None` once it has read all it will.
    id: Option<usize>,
    at: u64,
    to: u64,
}

/// What a tap read next.
pub(crate) enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    Failed(BodyError),
}

impl Tap {
    fn register(shared: Arc<SharedResponse>, at: u64) -> Self {
        let id = shared.state().register(at);
        Self {
            shared,
            id: Some(id),
            at,
            to: u64::MAX,
        }
    }

    /// A new tap on a stored response, whole (its body has ended and every byte is kept).
    pub(crate) fn reuse(shared: Arc<SharedResponse>) -> Option<Self> {
        let mut state = shared.state();
        if !matches!(state.end, Some(End::Finished(_))) || !state.keep_all {
            return None;
        }
        let id = state.register(0);
        drop(state);
        Some(Self {
            shared,
            id: Some(id),
            at: 0,
            to: u64::MAX,
        })
    }

    /// A new tap on a response whose body can still be joined from byte 0.
    fn join(shared: Arc<SharedResponse>) -> Option<Self> {
        let mut state = shared.state();
        if !state.joinable || state.interest == 0 || state.base != 0 {
            return None;
        }
        let id = state.register(0);
        drop(state);
        Some(Self {
            shared,
            id: Some(id),
            at: 0,
            to: u64::MAX,
        })
    }

    /// The shared response.
    pub(crate) fn shared(&self) -> &SharedResponse {
        &self.shared
    }

    /// Reads bytes `from..to` only (`to` past the end reads to the end), moving forward.
    pub(crate) fn seek(&mut self, from: u64, to: u64) {
        debug_assert!(from >= self.at, "a tap only moves forward");
        self.at = from;
        self.to = to;
        if let Some(id) = self.id {
            let mut state = self.shared.state();
            let cursor = state.readers[id].as_mut().expect("a tap's cursor");
            cursor.at = from;
            cursor.wants_end = false;
        }
    }

    /// The next piece of this tap's bytes.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Piece> {
        // A waker is cloned (user code) with no lock held; the state is then looked at again.
        let mut waker = None;
        loop {
            match self.try_read(waker.take()) {
                Ok(piece) => return piece,
                Err(()) => waker = Some(cx.waker().clone()),
            }
        }
    }

    /// One look at the log: the next piece, or `Pending` with `waker` registered; `Err`
    /// when it would wait but has no waker to leave yet.
    fn try_read(&mut self, waker: Option<Waker>) -> Result<Poll<Piece>, ()> {
        let Some(id) = self.id else {
            return Ok(Poll::Ready(Piece::End));
        };
        let mut state = self.shared.state();
        let cursor = state.readers[id].as_mut().expect("a tap's cursor");
        if cursor.cut {
            drop(state);
            self.finish();
            return Ok(Poll::Ready(Piece::Failed(BodyError::cut())));
        }
        if self.at >= self.to {
            drop(state);
            self.finish();
            return Ok(Poll::Ready(Piece::End));
        }
        if self.at < state.position {
            // The chunk that holds byte `at` (kept: this tap's cursor held it back).
            let index = state
                .chunks
                .partition_point(|(offset, _)| *offset <= self.at)
                - 1;
            let (offset, chunk) = &state.chunks[index];
            let start = (self.at - offset) as usize;
            let end = (chunk.len() as u64).min(self.to - offset) as usize;
            let data = chunk.slice(start..end);
            self.at += data.len() as u64;
            let at = self.at;
            state.readers[id].as_mut().expect("a tap's cursor").at = at;
            // The fastest reader moved on: the pump may read more.
            let pump = (at.saturating_add(READ_AHEAD) > state.position)
                .then(|| state.pump.take())
                .flatten();
            drop(state);
            if let Some(pump) = pump {
                pump.wake();
            }
            return Ok(Poll::Ready(Piece::Data(data)));
        }
        match state.end.clone() {
            Some(End::Finished(trailers)) => {
                drop(state);
                self.finish();
                // A range ends where it ends; only the whole body has the trailers.
                let trailers = trailers.filter(|_| self.to == u64::MAX);
                Ok(Poll::Ready(trailers.map_or(Piece::End, Piece::Trailers)))
            }
            Some(End::Failed(error)) => {
                drop(state);
                self.finish();
                Ok(Poll::Ready(Piece::Failed(BodyError::shared(error))))
            }
            Some(End::Stopped) => {
                drop(state);
                self.finish();
                Ok(Poll::Ready(Piece::Failed(BodyError::cut())))
            }
            None => {
                let waker = waker.ok_or(())?;
                let old = state.readers[id]
                    .as_mut()
                    .expect("a tap's cursor")
                    .waker
                    .replace(waker);
                let pump = state.pump.take();
                drop(state);
                drop(old);
                if let Some(pump) = pump {
                    pump.wake();
                }
                Ok(Poll::Pending)
            }
        }
    }

    /// Ready with the body's whole length once it has ended (`None` if it did not end
    /// well); until then the pump reads on for this tap, and the tap keeps every byte from
    /// its place on.
    pub(crate) fn poll_length(&mut self, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        let Some(id) = self.id else {
            return Poll::Ready(None);
        };
        // As in `poll_read`: the waker is cloned with no lock held, then the state looked
        // at again.
        let mut waker = None;
        loop {
            let mut state = self.shared.state();
            match state.end {
                Some(End::Finished(_)) => return Poll::Ready(Some(state.position)),
                Some(_) => return Poll::Ready(None),
                None => {
                    let cursor = state.readers[id].as_mut().expect("a tap's cursor");
                    if cursor.cut {
                        return Poll::Ready(None);
                    }
                    let Some(waker) = waker.take() else {
                        drop(state);
                        waker = Some(cx.waker().clone());
                        continue;
                    };
                    let old = cursor.waker.replace(waker);
                    cursor.wants_end = true;
                    let pump = state.pump.take();
                    drop(state);
                    drop(old);
                    if let Some(pump) = pump {
                        pump.wake();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The bytes this tap has left to read, if known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        if self.id.is_none() {
            return Some(0);
        }
        let end = match self.shared.len() {
            Some(len) => len.min(self.to),
            None if self.to != u64::MAX => self.to,
            None => return None,
        };
        Some(end.saturating_sub(self.at))
    }

    /// Whether it has read all it will.
    pub(crate) fn is_done(&self) -> bool {
        self.id.is_none()
    }

    /// Gives up its cursor, so it holds back neither trimming nor the pump.
    fn finish(&mut self) {
        if let Some(id) = self.id.take() {
            // The cursor's waker and the trimmed chunks are dropped after the lock.
            let mut trimmed = Vec::new();
            let (cursor, released) = {
                let mut state = self.shared.state();
                let cursor = state.readers[id].take();
                (cursor, state.trim(&mut trimmed))
            };
            drop((cursor, trimmed));
            self.shared.budget.release(released);
        }
    }
}

impl Clone for Tap {
    /// A tap for another caller, at byte 0 (taps are cloned when the flight hands its
    /// response to its callers, before anyone reads).
    fn clone(&self) -> Self {
        let mut state = self.shared.state();
        let base = state.base;
        let id = state.register(base);
        // Taps are cloned while the first one still holds byte 0, so `base` is 0. Were it
        // not, this caller would miss the bytes before it: it is cut off (its connection
        // closes) rather than handed a silently short body.
        debug_assert_eq!(base, 0, "a tap cloned after the body's start was dropped");
        if base != 0 {
            state.readers[id].as_mut().expect("just registered").cut = true;
        }
        drop(state);
        Self {
            shared: self.shared.clone(),
            id: Some(id),
            at: base,
            to: u64::MAX,
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.finish();
        let pump = {
            let mut state = self.shared.state();
            state.interest -= 1;
            if state.interest > 0 {
                return;
            }
            state.joinable = false;
            state.pump.take()
        };
        // The last one: the pump stops at its next look.
        self.shared.streams.remove(&self.shared.key, &*self.shared);
        if let Some(pump) = pump {
            pump.wake();
        }
    }
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("status", &self.shared.head.status)
            .field("at", &self.at)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedResponse {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let kept: usize = state.chunks.iter().map(|(_, c)| c.len()).sum();
        self.budget.release(kept);
    }
}

/// The error of a shared body: it failed while the layer read it (the same error for
/// every caller), or this caller was cut off because it read too slowly for the layer's
/// memory budget (or no one read the body any more).
#[derive(Clone)]
pub struct BodyError {
    kind: ErrorKind,
}

#[derive(Clone)]
enum ErrorKind {
    Shared(Arc<BoxError>),
    Cut,
}

impl BodyError {
    fn shared(error: Arc<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Shared(error),
        }
    }

    fn cut() -> Self {
        Self {
            kind: ErrorKind::Cut,
        }
    }

    /// Returns `true` if this caller was cut off: it lagged too far behind the others for
    /// the layer's memory budget.
    pub fn is_cut(&self) -> bool {
        matches!(self.kind, ErrorKind::Cut)
    }
}

impl fmt::Debug for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Shared(error) => f.debug_tuple("BodyError::Shared").field(error).finish(),
            ErrorKind::Cut => f.write_str("BodyError::Cut"),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Shared(error) => write!(f, "the shared response's body failed: {error}"),
            ErrorKind::Cut => f.write_str(
                "the response was cut off: this client read too slowly for the layer's memory budget",
            ),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            ErrorKind::Shared(error) => Some(&***error),
            ErrorKind::Cut => None,
        }
    }
}

/// `Content-Length` as a number, if the response has one valid value.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
