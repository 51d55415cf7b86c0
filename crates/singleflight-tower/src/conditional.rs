//! Conditional and range requests: what a shared cache may answer for each caller from one
//! shared response (RFC 9110 §13 and §14, RFC 9111 §4.3).
//!
//! A flight runs its request without the four request headers a cache evaluates for its
//! clients, so the shared response is the one a plain request gets; each caller's answer
//! (`304`, `206`, `416` or the full response) is then computed from that response's head,
//! so no caller ever receives an answer to a question it did not ask.
//!
//! | request header | what the layer does |
//! |---|---|
//! | `If-None-Match`, `If-Modified-Since` | evaluated per caller against the shared `ETag` / `Last-Modified` |
//! | `Range`, `If-Range` | evaluated per caller against the shared `200` and its length |
//! | `If-Match`, `If-Unmodified-Since` | the request passes through: not a cache's to evaluate (RFC 9111 §4.3.2) |
//!
//! Under [`Conditional::Passthrough`] a request with any of the six passes through.
//!
//! The choices the RFCs leave open are documented on [`Conditional`], where users read
//! them.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, Entry, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// How the layer treats requests that carry precondition or range headers.
///
/// `If-Match` and `If-Unmodified-Since` always pass through: they ask about the state of
/// the origin, which a cache must not answer for it (RFC 9111 §4.3.2).
///
/// # The choices the layer makes
///
/// Every choice below is one an origin server is allowed to make; the reference origin of
/// this crate's tests makes the same ones, so a caller gets from the layer
/// exactly what the origin alone would have answered.
///
/// 1. **Which responses are evaluated.** Only a `200 OK`. A non-`2xx` response is the
///    full answer to everyone: a server ignores preconditions when the
///    unconditional answer is not `2xx` or `412` (RFC 9110 §13.2.1), and evaluates `Range`
///    only when the answer without it is `200` (§14.2), so the origin would have sent the
///    same response to the conditional request. A `2xx` other than `200` is the full answer
///    to a range request (same rule), but a caller with `If-None-Match` or a valid
///    `If-Modified-Since` runs its own request: the origin would have
///    evaluated the precondition on a response whose metadata we do not interpret.
/// 2. **Methods.** `GET` and `HEAD` only (§13.2.1: `If-None-Match` on other methods yields
///    `412`, `If-Modified-Since` and `Range` apply to `GET`/`HEAD` and `GET` only).
///    The layer sends any other method carrying one of the headers
///    straight to the inner service, and answers one that got
///    there by running the caller's own request.
/// 3. **Order** (§13.2.2): `If-None-Match`; else `If-Modified-Since`; then, unless the
///    answer is `304`, `Range` with `If-Range`.
/// 4. **`If-None-Match`** (§13.1.2): `*` matches any current representation, and a `200`
///    is one, so it gives `304` even without an `ETag`. A list of entity-tags (field lines
///    combined, empty list elements skipped as §5.6.1.2 asks, commas allowed inside quoted
///    tags) uses the weak comparison (§8.8.3.2) against the response's `ETag`: a match gives
///    `304`. No `ETag` on the response (or one that is not a single valid entity-tag), or an
///    `If-None-Match` that does not parse (or mixes `*` with tags): the caller runs its own
///    request, and the origin decides.
/// 5. **`If-Modified-Since`** (§13.1.3): ignored when `If-None-Match` is present, when it
///    has more than one field line, or when it is not a valid HTTP-date. Otherwise `304`
///    when `Last-Modified` is at or before it. No valid `Last-Modified`: own request (RFC
///    9111 §4.3.2 would let a cache fall back to `Date`; we leave that to the origin).
/// 6. **HTTP-dates** (§5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime formats
///    that a recipient should accept. Names are matched as the grammar spells them
///    (case-sensitive); the day name is not checked against the date; the day must exist
///    in its month, and a leap second (`:60`) is not accepted. A two-digit RFC 850 year is
///    the one within 50 years of the current year.
/// 7. **The `304`** (§15.4.5) has no body and, from the shared response, those of
///    `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`, `Vary` and
///    `Last-Modified` it has; `Last-Modified` guides cache updates when there
///    is no `ETag`, which §15.4.5 allows.
/// 8. **`Range`** (§14.1, §14.2): `GET` only, and only when the response does not refuse
///    ranges (an `Accept-Ranges` without `bytes`, such as `none`). One field line, unit
///    `bytes` (case-insensitive), exactly one range-spec once empty list elements are
///    skipped: `first-last`, `first-` or `-suffix`, decimal digits only. Anything else —
///    several ranges, another unit, a syntax error, `last < first` — is ignored and the
///    caller gets the full `200`, which §14.2 allows (a server MAY ignore `Range`). Numbers
///    too large for `u64` saturate (so a huge first position is unsatisfiable, a huge last
///    or suffix covers the rest).
/// 9. **Satisfiable** (§14.1.1): `first < length`, or a suffix longer than zero; a last
///    position past the end is cut to the last byte, a suffix longer than the
///    representation takes all of it. Unsatisfiable: `416` with `Content-Range: bytes
///    */length`. A non-zero suffix of an empty representation is satisfiable but has no byte
///    to send: the full (empty) `200`. The range is over the representation as sent, after
///    any `Content-Encoding` (§14.1.2), so an encoded body needs no special case; a
///    `Content-Range` on a `200` has no meaning (§14.4) and is ignored.
/// 10. **`If-Range`** (§13.1.5): ignored without `Range`. An entity-tag matches the
///     response's `ETag` only under the strong comparison (a weak tag on either side never
///     matches). An HTTP-date matches when it is the same instant as `Last-Modified` and
///     `Last-Modified` counts as strong: it does unless the response's `Date` is less than
///     one second after it (§8.8.2.2: it may have changed twice in that second). Anything
///     else (several field lines, no validator to compare with, a value that is neither) is
///     a false condition: the full `200`.
/// 11. **Length.** A `206` or `416` needs the length for `Content-Range`; until it is known
///     (a `Content-Length`, or the body has ended) the answer is
///     pending until then.
/// 12. **The `206`** is the shared response's head with status `206`, `Content-Range: bytes
///     start-end/length` and `Content-Length: end - start + 1` (§15.3.7), and those bytes.
///     **The `416`** has no body, `Content-Length: 0`, `Content-Range: bytes */length` and
///     the headers of a `304` (so its `ETag` and `Last-Modified`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Conditional {
    /// A request with `If-None-Match`, `If-Modified-Since`, `Range` or `If-Range` joins the
    /// flight of the plain request, which runs without them; the caller then gets its own
    /// `304`, `206`, `416` or full `200`, computed from the shared response.
    #[default]
    Evaluate,
    /// A request with any of those headers passes through, straight to the inner service.
    Passthrough,
}

/// The request headers a shared cache evaluates for its client.
const EVALUATED: [HeaderName; 4] = [IF_NONE_MATCH, IF_MODIFIED_SINCE, RANGE, IF_RANGE];

/// The response headers a `304` repeats from the `200` it stands for (RFC 9110 §15.4.5).
const METADATA: [HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    VARY,
    LAST_MODIFIED,
];

/// The headers a shared cache evaluates for its client (`If-None-Match`,
/// `If-Modified-Since`, `Range`, `If-Range`), taken out of a request.
#[derive(Debug, Default)]
pub(crate) struct Question {
    /// Every field line of the four headers, in their order.
    taken: HeaderMap,
}

/// A caller's answer, computed from the shared response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The shared response as it is.
    Full,
    /// `304 Not Modified` with these headers from the shared response (its [`metadata`]:
    /// RFC 9110 §15.4.5), and no body.
    NotModified(HeaderMap),
    /// `206 Partial Content` of bytes `start..=end` of `total`: the shared head with
    /// `Content-Range: bytes start-end/total` ([`Answer::content_range`]) and
    /// `Content-Length: end - start + 1`.
    Partial {
        /// The first byte sent.
        start: u64,
        /// The last byte sent (inclusive).
        end: u64,
        /// The length of the whole representation.
        total: u64,
    },
    /// `416 Range Not Satisfiable`: `Content-Range: bytes */total`, `Content-Length: 0`,
    /// the shared response's [`metadata`], and no body.
    Unsatisfiable {
        /// The length of the whole representation.
        total: u64,
    },
    /// The answer depends on the body's length, not known yet: ask again once it is.
    NeedLength,
    /// The caller runs its own request with its own headers
    /// [restored](Question::restore): it asked a question the shared response has no
    /// validator to answer.
    OwnRequest,
}

impl Answer {
    /// The `Content-Range` of a `206` or `416`; `None` for the other answers.
    pub(crate) fn content_range(&self) -> Option<HeaderValue> {
        let text = match *self {
            Self::Partial { start, end, total } => format!("bytes {start}-{end}/{total}"),
            Self::Unsatisfiable { total } => format!("bytes */{total}"),
            _ => return None,
        };
        Some(HeaderValue::try_from(text).expect("digits, spaces and punctuation are valid"))
    }
}

/// The headers a `304` (or a `416`) carries from the shared response: every field line of
/// `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`, `Vary` and
/// `Last-Modified` (RFC 9110 §15.4.5).
pub(crate) fn metadata(shared: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in METADATA {
        for value in shared.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

impl Question {
    /// Whether a request must pass through untouched: it carries `If-Match` or
    /// `If-Unmodified-Since` (not a cache's to evaluate, RFC 9111 §4.3.2); or it carries one
    /// of the four evaluated headers and either `mode` is
    /// [`Passthrough`](Conditional::Passthrough) or its method is neither `GET` nor `HEAD`
    /// (for which they are not evaluated).
    pub(crate) fn passes_through(method: &Method, headers: &HeaderMap, mode: Conditional) -> bool {
        if headers.contains_key(IF_MATCH) || headers.contains_key(IF_UNMODIFIED_SINCE) {
            return true;
        }
        let evaluated = EVALUATED.iter().any(|name| headers.contains_key(name));
        let other_method = method != Method::GET && method != Method::HEAD;
        evaluated && (mode == Conditional::Passthrough || other_method)
    }

    /// Removes `If-None-Match`, `If-Modified-Since`, `Range` and `If-Range` from `headers`
    /// (the shared flight runs without them) and returns them.
    pub(crate) fn take(headers: &mut HeaderMap) -> Self {
        let mut taken = HeaderMap::new();
        for name in EVALUATED {
            if let Entry::Occupied(entry) = headers.entry(name) {
                let (name, values) = entry.remove_entry_mult();
                for value in values {
                    taken.append(name.clone(), value);
                }
            }
        }
        Self { taken }
    }

    /// Puts them back (a caller that must run its own request runs it unchanged).
    pub(crate) fn restore(self, headers: &mut HeaderMap) {
        let mut name = None;
        for (next, value) in self.taken {
            // `HeaderMap`'s iterator names a header once, before the first of its values.
            if next.is_some() {
                name = next;
            }
            let name = name.clone().expect("the first value comes with its name");
            headers.append(name, value);
        }
    }

    /// Whether the request carried none of the four headers.
    pub(crate) fn is_plain(&self) -> bool {
        self.taken.is_empty()
    }

    /// This caller's answer from the shared response's head; `len` is the body length if
    /// known yet (`Content-Length`, or the body has ended).
    pub(crate) fn answer(&self, method: &Method, head: &Parts, len: Option<u64>) -> Answer {
        if self.is_plain() {
            return Answer::Full;
        }
        let get = method == Method::GET;
        if !get && method != Method::HEAD {
            return Answer::OwnRequest;
        }
        let precondition = self.precondition(&head.headers);
        if head.status != StatusCode::OK {
            // Rule 1: a range is ignored on anything but a `200`; a precondition is
            // ignored on a non-`2xx`, and left to the origin on another `2xx`.
            return match precondition {
                Precondition::Absent => Answer::Full,
                _ if head.status.is_success() => Answer::OwnRequest,
                _ => Answer::Full,
            };
        }
        match precondition {
            Precondition::Fails => return Answer::NotModified(metadata(&head.headers)),
            Precondition::Unknown => return Answer::OwnRequest,
            Precondition::Absent | Precondition::Holds => {}
        }
        if !get || !accepts_ranges(&head.headers) || !self.range_condition(&head.headers) {
            return Answer::Full;
        }
        let Some(range) = self.range() else {
            return Answer::Full;
        };
        match len {
            None => Answer::NeedLength,
            Some(total) => range.answer(total),
        }
    }

    /// The outcome of `If-None-Match`, else `If-Modified-Since` (RFC 9110 §13.2.2 steps 3
    /// and 4) against a response with `headers`.
    fn precondition(&self, headers: &HeaderMap) -> Precondition {
        if self.taken.contains_key(IF_NONE_MATCH) {
            let Some(tags) = if_none_match(&self.taken) else {
                return Precondition::Unknown;
            };
            let Some(current) = single(headers, &ETAG).and_then(entity_tag) else {
                return match tags {
                    Tags::Any => Precondition::Fails,
                    Tags::List(_) => Precondition::Unknown,
                };
            };
            let matches = match tags {
                Tags::Any => true,
                Tags::List(tags) => tags.iter().any(|tag| tag.weak_eq(&current)),
            };
            return if matches {
                Precondition::Fails
            } else {
                Precondition::Holds
            };
        }
        let Some(since) = single(&self.taken, &IF_MODIFIED_SINCE).and_then(date) else {
            return Precondition::Absent;
        };
        let Some(modified) = single(headers, &LAST_MODIFIED).and_then(date) else {
            return Precondition::Unknown;
        };
        if modified <= since {
            Precondition::Fails
        } else {
            Precondition::Holds
        }
    }

    /// Whether `If-Range` lets `Range` apply (true when absent): RFC 9110 §13.1.5.
    fn range_condition(&self, headers: &HeaderMap) -> bool {
        if !self.taken.contains_key(IF_RANGE) {
            return true;
        }
        let Some(value) = single(&self.taken, &IF_RANGE) else {
            return false;
        };
        let value = value.trim_ascii();
        if value.starts_with(b"\"") || value.starts_with(b"W/") {
            let Some(tag) = entity_tag(value) else {
                return false;
            };
            return single(headers, &ETAG)
                .and_then(entity_tag)
                .is_some_and(|current| tag.strong_eq(&current));
        }
        let (Some(asked), Some(modified)) =
            (date(value), single(headers, &LAST_MODIFIED).and_then(date))
        else {
            return false;
        };
        let strong = single(headers, &DATE)
            .and_then(date)
            .is_none_or(|sent| sent - modified >= 1);
        strong && asked == modified
    }

    /// The one byte range asked for, or `None` when `Range` is to be ignored.
    fn range(&self) -> Option<ByteRange> {
        let value = std::str::from_utf8(single(&self.taken, &RANGE)?).ok()?;
        let ows = [' ', '\t'];
        let (unit, set) = value.trim_matches(ows).split_once('=')?;
        if !unit.eq_ignore_ascii_case("bytes") {
            return None;
        }
        let mut specs = set
            .split(',')
            .map(|spec| spec.trim_matches(ows))
            .filter(|spec| !spec.is_empty());
        let (spec, None) = (specs.next()?, specs.next()) else {
            return None;
        };
        let (first, last) = spec.split_once('-')?;
        if first.is_empty() {
            return Some(ByteRange::Suffix(number(last)?));
        }
        let first = number(first)?;
        if last.is_empty() {
            return Some(ByteRange::From(first));
        }
        let last = number(last)?;
        (last >= first).then_some(ByteRange::Int(first, last))
    }
}

/// The outcome of the preconditions a cache evaluates.
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    /// Neither `If-None-Match` nor a valid `If-Modified-Since`.
    Absent,
    /// The condition is true: the request proceeds (to `Range`).
    Holds,
    /// The condition is false: `304`.
    Fails,
    /// The response has no validator to evaluate it with (or `If-None-Match` is invalid).
    Unknown,
}

/// One byte range (RFC 9110 §14.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// `first-last`.
    Int(u64, u64),
    /// `first-`.
    From(u64),
    /// `-suffix`: the last bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The answer for a representation of `total` bytes (RFC 9110 §14.1.1).
    fn answer(self, total: u64) -> Answer {
        let (start, end) = match self {
            Self::Int(first, _) | Self::From(first) if first >= total => {
                return Answer::Unsatisfiable { total };
            }
            Self::Int(first, last) => (first, last.min(total - 1)),
            Self::From(first) => (first, total - 1),
            Self::Suffix(0) => return Answer::Unsatisfiable { total },
            // Satisfiable, but there is no byte to send.
            Self::Suffix(_) if total == 0 => return Answer::Full,
            Self::Suffix(suffix) => (total - suffix.min(total), total - 1),
        };
        Answer::Partial { start, end, total }
    }
}

/// Whether a response with `headers` allows byte ranges: no `Accept-Ranges`, or one that
/// names `bytes` (RFC 9110 §14.3).
fn accepts_ranges(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(ACCEPT_RANGES).iter().peekable();
    values.peek().is_none()
        || values.any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|unit| unit.trim_ascii().eq_ignore_ascii_case(b"bytes"))
        })
}

/// A decimal number of one or more digits, saturating at `u64::MAX`.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

/// The value of a header that has exactly one field line.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        _ => None,
    }
}

/// An entity-tag (RFC 9110 §8.8.3): its weakness and its opaque-tag, without the quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// The weak comparison: the opaque-tags are equal, whatever their weakness.
    fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// The strong comparison: neither is weak and the opaque-tags are equal.
    fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// An entity-tag at the start of `input`, and what follows it.
fn leading_tag(input: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, input) = match input.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let input = input.strip_prefix(b"\"")?;
    // etagc: %x21 / %x23-7E / obs-text; no space, no quote, no control.
    let len = input
        .iter()
        .position(|&b| !(b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80))?;
    let rest = input[len..].strip_prefix(b"\"")?;
    Some((
        EntityTag {
            weak,
            opaque: &input[..len],
        },
        rest,
    ))
}

/// A field value that is one entity-tag, with optional whitespace around it.
fn entity_tag(value: &[u8]) -> Option<EntityTag<'_>> {
    match leading_tag(value.trim_ascii())? {
        (tag, []) => Some(tag),
        _ => None,
    }
}

/// What `If-None-Match` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Tags<'a> {
    /// `*`: any current representation.
    Any,
    /// One or more entity-tags.
    List(Vec<EntityTag<'a>>),
}

/// Every field line of `If-None-Match` in `headers`, as one list (RFC 9110 §13.1.2,
/// §5.6.1.2); `None` when it does not parse or mixes `*` with tags.
fn if_none_match(headers: &HeaderMap) -> Option<Tags<'_>> {
    let mut tags = Vec::new();
    let mut any = false;
    for value in headers.get_all(IF_NONE_MATCH) {
        let mut rest = value.as_bytes();
        loop {
            rest = rest.trim_ascii_start();
            match rest {
                [] => break,
                [b',', after @ ..] => {
                    rest = after;
                    continue;
                }
                [b'*', after @ ..] => {
                    any = true;
                    rest = after;
                }
                _ => {
                    let (tag, after) = leading_tag(rest)?;
                    tags.push(tag);
                    rest = after;
                }
            }
            // An element ends at a comma or at the end of the line.
            rest = rest.trim_ascii_start();
            if !(rest.is_empty() || rest.starts_with(b",")) {
                return None;
            }
        }
    }
    match (any, tags.is_empty()) {
        (true, true) => Some(Tags::Any),
        (false, false) => Some(Tags::List(tags)),
        _ => None,
    }
}

/// The day names of IMF-fixdate and asctime.
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
/// The day names of RFC 850 dates.
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
/// The month names, January first.
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP-date (RFC 9110 §5.6.7), in seconds since the Unix epoch.
/// An HTTP-date (any of the three formats) as seconds since the Unix epoch.
pub(crate) fn http_date(value: &[u8]) -> Option<i64> {
    date(value)
}

/// Now, as seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn date(value: &[u8]) -> Option<i64> {
    date_in(value, current_year())
}

/// An HTTP-date, reading a two-digit RFC 850 year as the one within 50 years of
/// `this_year`.
fn date_in(value: &[u8], this_year: i64) -> Option<i64> {
    let value = value.trim_ascii();
    imf_fixdate(value)
        .or_else(|| rfc850_date(value, this_year))
        .or_else(|| asctime_date(value))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn imf_fixdate(value: &[u8]) -> Option<i64> {
    let mut c = Cursor(value);
    c.name(&DAYS)?;
    c.literal(b", ")?;
    let day = c.digits(2)?;
    c.literal(b" ")?;
    let month = c.name(&MONTHS)?;
    c.literal(b" ")?;
    let year = c.digits(4)?;
    c.literal(b" ")?;
    let time = c.time()?;
    c.literal(b" GMT")?;
    c.end()?;
    seconds(year, month, day, time)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`.
fn rfc850_date(value: &[u8], this_year: i64) -> Option<i64> {
    let mut c = Cursor(value);
    c.name(&LONG_DAYS)?;
    c.literal(b", ")?;
    let day = c.digits(2)?;
    c.literal(b"-")?;
    let month = c.name(&MONTHS)?;
    c.literal(b"-")?;
    let yy = c.digits(2)?;
    c.literal(b" ")?;
    let time = c.time()?;
    c.literal(b" GMT")?;
    c.end()?;
    // The year ending in `yy` within (this_year - 50, this_year + 50].
    let mut year = this_year - this_year.rem_euclid(100) + yy;
    if year > this_year + 50 {
        year -= 100;
    } else if year <= this_year - 50 {
        year += 100;
    }
    seconds(year, month, day, time)
}

/// `Sun Nov  6 08:49:37 1994`.
fn asctime_date(value: &[u8]) -> Option<i64> {
    let mut c = Cursor(value);
    c.name(&DAYS)?;
    c.literal(b" ")?;
    let month = c.name(&MONTHS)?;
    c.literal(b" ")?;
    let day = match c.literal(b" ") {
        Some(()) => c.digits(1)?,
        None => c.digits(2)?,
    };
    c.literal(b" ")?;
    let time = c.time()?;
    c.literal(b" ")?;
    let year = c.digits(4)?;
    c.end()?;
    seconds(year, month, day, time)
}

/// Seconds since the Unix epoch of a date and a time of day; `None` if the day is not in
/// its month (`month` counts from 0).
fn seconds(year: i64, month: usize, day: i64, time: i64) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let length = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month];
    if !(1..=length).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month as i64 + 1, day) * 86_400 + time)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The current year (UTC), for two-digit years.
fn current_year() -> i64 {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400);
    // Count whole years from 1970 with `days_from_civil`: a few dozen steps.
    let days = i64::try_from(days).unwrap_or(i64::MAX);
    let mut year = 1970;
    while days_from_civil(year + 1, 1, 1) <= days {
        year += 1;
    }
    year
}

/// A reader of the fixed-width fields of an HTTP-date.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Consumes `literal`.
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(literal)?;
        Some(())
    }

    /// Consumes one of `names` (case-sensitive) and returns its index.
    fn name(&mut self, names: &[&str]) -> Option<usize> {
        let index = names
            .iter()
            .position(|name| self.0.starts_with(name.as_bytes()))?;
        self.0 = &self.0[names[index].len()..];
        Some(index)
    }

    /// Consumes exactly `n` decimal digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let digits = self.0.get(..n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(digits.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0')))
    }

    /// Consumes `hh:mm:ss` and returns the seconds since midnight.
    fn time(&mut self) -> Option<i64> {
        let hour = self.digits(2)?;
        self.literal(b":")?;
        let minute = self.digits(2)?;
        self.literal(b":")?;
        let second = self.digits(2)?;
        (hour < 24 && minute < 60 && second < 60).then_some(hour * 3600 + minute * 60 + second)
    }

    /// Succeeds at the end of the input.
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::Response;

    /// 1994-11-06T08:49:37Z, the RFC's example.
    const EXAMPLE: i64 = 784_111_777;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    fn question(pairs: &[(&str, &str)]) -> Question {
        Question::take(&mut headers(pairs))
    }

    fn head(status: u16, pairs: &[(&str, &str)]) -> Parts {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        *response.headers_mut() = headers(pairs);
        response.into_parts().0
    }

    /// A `200` with a strong `ETag` `"v1"` and a `Last-Modified`.
    fn ok() -> Parts {
        head(
            200,
            &[
                ("etag", "\"v1\""),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("content-type", "text/plain"),
                ("cache-control", "max-age=60"),
                ("vary", "accept-encoding"),
                ("vary", "accept-language"),
            ],
        )
    }

    fn get(question: &[(&str, &str)], head: &Parts, len: Option<u64>) -> Answer {
        self::question(question).answer(&Method::GET, head, len)
    }

    fn partial(start: u64, end: u64, total: u64) -> Answer {
        Answer::Partial { start, end, total }
    }

    // --- passing through, taking and restoring ---

    #[test]
    fn if_match_and_if_unmodified_since_always_pass_through() {
        for name in ["if-match", "if-unmodified-since"] {
            let h = headers(&[(name, "\"v1\"")]);
            for mode in [Conditional::Evaluate, Conditional::Passthrough] {
                assert!(Question::passes_through(&Method::GET, &h, mode), "{name}");
            }
        }
    }

    #[test]
    fn evaluated_headers_pass_through_only_under_passthrough() {
        for name in ["if-none-match", "if-modified-since", "range", "if-range"] {
            let h = headers(&[(name, "x")]);
            assert!(!Question::passes_through(
                &Method::GET,
                &h,
                Conditional::Evaluate
            ));
            assert!(!Question::passes_through(
                &Method::HEAD,
                &h,
                Conditional::Evaluate
            ));
            assert!(Question::passes_through(
                &Method::GET,
                &h,
                Conditional::Passthrough
            ));
            assert!(
                Question::passes_through(&Method::POST, &h, Conditional::Evaluate),
                "other methods: {name}"
            );
        }
        let plain = headers(&[("accept", "*/*")]);
        for mode in [Conditional::Evaluate, Conditional::Passthrough] {
            assert!(!Question::passes_through(&Method::GET, &plain, mode));
            assert!(!Question::passes_through(&Method::POST, &plain, mode));
        }
        assert_eq!(Conditional::default(), Conditional::Evaluate);
    }

    #[test]
    fn take_removes_the_four_and_restore_puts_every_line_back() {
        let original = headers(&[
            ("accept", "*/*"),
            ("if-none-match", "\"a\""),
            ("if-none-match", "\"b\", \"c\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("range", "bytes=0-4"),
            ("if-range", "\"a\""),
        ]);
        let mut h = original.clone();
        let q = Question::take(&mut h);
        assert!(!q.is_plain());
        assert_eq!(h, headers(&[("accept", "*/*")]));
        q.restore(&mut h);
        assert_eq!(h, original);
        let ines: Vec<_> = h.get_all("if-none-match").iter().collect();
        assert_eq!(ines, ["\"a\"", "\"b\", \"c\""]);
    }

    #[test]
    fn a_plain_request_is_answered_in_full() {
        let q = question(&[("accept", "*/*")]);
        assert!(q.is_plain());
        for status in [200, 204, 404, 500] {
            assert_eq!(
                q.answer(&Method::GET, &head(status, &[]), None),
                Answer::Full
            );
        }
        assert_eq!(q.answer(&Method::POST, &ok(), None), Answer::Full);
    }

    // --- status and method ---

    #[test]
    fn a_non_2xx_response_is_everyones() {
        for status in [301, 304, 404, 412, 500, 503] {
            for q in [
                &[("if-none-match", "\"v1\"")][..],
                &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
                &[("range", "bytes=0-4")],
                &[("if-none-match", "*"), ("range", "bytes=0-4")],
            ] {
                let h = head(status, &[("etag", "\"v1\"")]);
                assert_eq!(get(q, &h, Some(20)), Answer::Full, "{status} {q:?}");
            }
        }
    }

    #[test]
    fn another_2xx_leaves_preconditions_to_the_origin_and_ignores_ranges() {
        let h = head(203, &[("etag", "\"v1\"")]);
        assert_eq!(
            get(&[("if-none-match", "\"v1\"")], &h, None),
            Answer::OwnRequest
        );
        assert_eq!(
            get(
                &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
                &h,
                None
            ),
            Answer::OwnRequest
        );
        assert_eq!(get(&[("range", "bytes=0-4")], &h, Some(20)), Answer::Full);
        // An invalid If-Modified-Since is no precondition.
        assert_eq!(
            get(
                &[("if-modified-since", "yesterday"), ("range", "bytes=0-4")],
                &h,
                None
            ),
            Answer::Full
        );
    }

    #[test]
    fn other_methods_run_their_own_request() {
        let q = question(&[("if-none-match", "\"v1\"")]);
        assert_eq!(q.answer(&Method::POST, &ok(), Some(20)), Answer::OwnRequest);
    }

    // --- If-None-Match ---

    #[test]
    fn if_none_match_uses_the_weak_comparison() {
        for (asked, etag) in [
            ("\"v1\"", "\"v1\""),
            ("W/\"v1\"", "\"v1\""),
            ("\"v1\"", "W/\"v1\""),
            ("W/\"v1\"", "W/\"v1\""),
        ] {
            let h = head(200, &[("etag", etag)]);
            assert!(
                matches!(
                    get(&[("if-none-match", asked)], &h, None),
                    Answer::NotModified(_)
                ),
                "{asked} vs {etag}"
            );
        }
        for (asked, etag) in [
            ("\"v2\"", "\"v1\""),
            ("\"V1\"", "\"v1\""),
            ("\"v\"", "\"v1\""),
        ] {
            let h = head(200, &[("etag", etag)]);
            assert_eq!(get(&[("if-none-match", asked)], &h, None), Answer::Full);
        }
    }

    #[test]
    fn if_none_match_lists() {
        let h = head(200, &[("etag", "\"a,b\"")]);
        for asked in [
            "\"x\", \"a,b\"",
            "\"x\",\"a,b\"",
            "  \"x\" ,\t W/\"a,b\"  ",
            ", \"x\",, \"a,b\",",
            "\"a,b\"",
        ] {
            assert!(
                matches!(
                    get(&[("if-none-match", asked)], &h, None),
                    Answer::NotModified(_)
                ),
                "{asked}"
            );
        }
        // A comma inside quotes does not split a tag.
        for asked in ["\"a\", \"b\"", "\"a,b,c\"", "\"x\""] {
            assert_eq!(
                get(&[("if-none-match", asked)], &h, None),
                Answer::Full,
                "{asked}"
            );
        }
        // Several field lines form one list.
        let q = &[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")];
        assert!(matches!(get(q, &h, None), Answer::NotModified(_)));
    }

    #[test]
    fn if_none_match_star_matches_any_200() {
        assert!(matches!(
            get(&[("if-none-match", "*")], &ok(), None),
            Answer::NotModified(_)
        ));
        assert!(matches!(
            get(&[("if-none-match", " * ")], &head(200, &[]), None),
            Answer::NotModified(_)
        ));
        assert!(matches!(
            question(&[("if-none-match", "*")]).answer(&Method::HEAD, &ok(), None),
            Answer::NotModified(_)
        ));
    }

    #[test]
    fn invalid_if_none_match_runs_its_own_request() {
        for asked in [
            "v1",
            "\"v1",
            "\"v1\" \"v2\"",
            "w/\"v1\"",
            "*, \"v1\"",
            "\"v 1\"",
            "",
            ",",
            "**",
        ] {
            assert_eq!(
                get(
                    &[("if-none-match", asked), ("range", "bytes=0-1")],
                    &ok(),
                    Some(20)
                ),
                Answer::OwnRequest,
                "{asked:?}"
            );
        }
    }

    #[test]
    fn if_none_match_without_an_etag_runs_its_own_request() {
        let no_tag = head(200, &[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let bad_tag = head(200, &[("etag", "v1")]);
        let two_tags = head(200, &[("etag", "\"v1\""), ("etag", "\"v2\"")]);
        for h in [&no_tag, &bad_tag, &two_tags] {
            // If-Modified-Since is not looked at when If-None-Match is present.
            let q = &[
                ("if-none-match", "\"v1\""),
                ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ];
            assert_eq!(get(q, h, None), Answer::OwnRequest);
        }
    }

    #[test]
    fn a_matching_if_none_match_wins_over_if_modified_since() {
        // If-Modified-Since would say modified; If-None-Match decides.
        let q = &[
            ("if-none-match", "\"v1\""),
            ("if-modified-since", "Sat, 01 Jan 1994 00:00:00 GMT"),
        ];
        assert!(matches!(get(q, &ok(), None), Answer::NotModified(_)));
        // And the other way round: If-None-Match does not match, If-Modified-Since is ignored.
        let q = &[
            ("if-none-match", "\"v0\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ];
        assert_eq!(get(q, &ok(), None), Answer::Full);
    }

    // --- If-Modified-Since ---

    #[test]
    fn if_modified_since_compares_with_last_modified() {
        for (since, expected_304) in [
            ("Sun, 06 Nov 1994 08:49:37 GMT", true),
            ("Sun, 06 Nov 1994 08:49:38 GMT", true),
            ("Sunday, 06-Nov-94 08:49:37 GMT", true),
            ("Sun Nov  6 08:49:37 1994", true),
            ("Sun, 06 Nov 1994 08:49:36 GMT", false),
            ("Sat, 05 Nov 1994 08:49:37 GMT", false),
        ] {
            let answer = get(&[("if-modified-since", since)], &ok(), None);
            assert_eq!(
                matches!(answer, Answer::NotModified(_)),
                expected_304,
                "{since}"
            );
            if !expected_304 {
                assert_eq!(answer, Answer::Full);
            }
        }
    }

    #[test]
    fn invalid_or_repeated_if_modified_since_is_ignored() {
        for q in [
            &[("if-modified-since", "yesterday")][..],
            &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37")],
            &[("if-modified-since", "Sun, 31 Nov 1994 08:49:37 GMT")],
            &[
                ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        ] {
            assert_eq!(get(q, &ok(), None), Answer::Full, "{q:?}");
            // Even without a Last-Modified to compare with.
            assert_eq!(get(q, &head(200, &[]), None), Answer::Full, "{q:?}");
        }
    }

    #[test]
    fn if_modified_since_without_last_modified_runs_its_own_request() {
        let q = &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")];
        assert_eq!(
            get(q, &head(200, &[("etag", "\"v1\"")]), None),
            Answer::OwnRequest
        );
        let bad = head(200, &[("last-modified", "last tuesday")]);
        assert_eq!(get(q, &bad, None), Answer::OwnRequest);
    }

    #[test]
    fn a_304_keeps_the_metadata_a_200_would_have_sent() {
        let mut h = ok();
        h.headers
            .insert("date", "Mon, 07 Nov 1994 08:49:37 GMT".parse().unwrap());
        h.headers
            .insert("expires", "Mon, 07 Nov 1994 09:49:37 GMT".parse().unwrap());
        h.headers
            .insert("content-location", "/page.en".parse().unwrap());
        h.headers.insert("content-length", "20".parse().unwrap());
        h.headers.insert("x-custom", "1".parse().unwrap());
        let Answer::NotModified(kept) = get(&[("if-none-match", "\"v1\"")], &h, Some(20)) else {
            panic!("expected a 304");
        };
        assert_eq!(
            kept,
            headers(&[
                ("cache-control", "max-age=60"),
                ("content-location", "/page.en"),
                ("date", "Mon, 07 Nov 1994 08:49:37 GMT"),
                ("etag", "\"v1\""),
                ("expires", "Mon, 07 Nov 1994 09:49:37 GMT"),
                ("vary", "accept-encoding"),
                ("vary", "accept-language"),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ])
        );
    }

    // --- Range ---

    #[test]
    fn single_ranges() {
        let cases = [
            ("bytes=0-4", partial(0, 4, 20)),
            ("bytes=5-5", partial(5, 5, 20)),
            ("bytes=10-", partial(10, 19, 20)),
            ("bytes=0-", partial(0, 19, 20)),
            ("bytes=-5", partial(15, 19, 20)),
            ("bytes=-20", partial(0, 19, 20)),
            ("bytes=-500", partial(0, 19, 20)),
            ("bytes=15-100", partial(15, 19, 20)),
            ("bytes=19-19", partial(19, 19, 20)),
            ("BYTES=0-4", partial(0, 4, 20)),
            ("bytes=0-4,", partial(0, 4, 20)),
            ("bytes= 0-4 ", partial(0, 4, 20)),
            (" bytes=0-4", partial(0, 4, 20)),
            ("bytes=0-99999999999999999999999", partial(0, 19, 20)),
            ("bytes=-99999999999999999999999", partial(0, 19, 20)),
        ];
        for (range, expected) in cases {
            assert_eq!(
                get(&[("range", range)], &ok(), Some(20)),
                expected,
                "{range}"
            );
        }
    }

    #[test]
    fn unsatisfiable_ranges() {
        for range in [
            "bytes=20-",
            "bytes=20-30",
            "bytes=100-200",
            "bytes=-0",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(
                get(&[("range", range)], &ok(), Some(20)),
                Answer::Unsatisfiable { total: 20 },
                "{range}"
            );
        }
        // Nothing is satisfiable in an empty representation but a non-zero suffix, which
        // has no byte to send.
        assert_eq!(
            get(&[("range", "bytes=0-0")], &ok(), Some(0)),
            Answer::Unsatisfiable { total: 0 }
        );
        assert_eq!(
            get(&[("range", "bytes=-0")], &ok(), Some(0)),
            Answer::Unsatisfiable { total: 0 }
        );
        assert_eq!(get(&[("range", "bytes=-5")], &ok(), Some(0)), Answer::Full);
    }

    #[test]
    fn ignored_ranges_get_the_full_response() {
        for range in [
            "bytes=0-4,6-8",
            "bytes=0-4, 30-40",
            "bytes=5-4",
            "bytes=a-4",
            "bytes=0x1-4",
            "bytes=+1-4",
            "bytes=-",
            "bytes=",
            "bytes=,",
            "bytes 0-4",
            "bytes = 0-4",
            "items=0-4",
            "bytes=0-4-5",
            "bytes=1 -4",
            // Only spaces and tabs are whitespace in a field (RFC 9110 §5.6.3).
            "bytes=\u{a0}0-4",
            "",
        ] {
            assert_eq!(
                get(&[("range", range)], &ok(), Some(20)),
                Answer::Full,
                "{range:?}"
            );
        }
        let two_lines = &[("range", "bytes=0-4"), ("range", "bytes=0-4")];
        assert_eq!(get(two_lines, &ok(), Some(20)), Answer::Full);
    }

    #[test]
    fn ranges_need_the_length() {
        for range in [
            "bytes=0-4",
            "bytes=10-",
            "bytes=-5",
            "bytes=-0",
            "bytes=30-40",
        ] {
            assert_eq!(
                get(&[("range", range)], &ok(), None),
                Answer::NeedLength,
                "{range}"
            );
        }
        // But not to decide that there is no range to answer.
        assert_eq!(
            get(&[("range", "bytes=0-1,3-4")], &ok(), None),
            Answer::Full
        );
        assert_eq!(
            get(
                &[("range", "bytes=0-4"), ("if-range", "\"v0\"")],
                &ok(),
                None
            ),
            Answer::Full
        );
    }

    #[test]
    fn ranges_apply_to_a_200_for_a_get_only() {
        let q = question(&[("range", "bytes=0-4")]);
        assert_eq!(q.answer(&Method::HEAD, &ok(), Some(20)), Answer::Full);
        assert_eq!(
            q.answer(&Method::GET, &head(206, &[]), Some(20)),
            Answer::Full
        );
        assert_eq!(
            q.answer(&Method::GET, &head(404, &[]), Some(20)),
            Answer::Full
        );
    }

    #[test]
    fn accept_ranges_without_bytes_refuses_ranges() {
        for accept in ["none", "items", "none, items"] {
            let h = head(200, &[("accept-ranges", accept)]);
            assert_eq!(
                get(&[("range", "bytes=0-4")], &h, Some(20)),
                Answer::Full,
                "{accept}"
            );
        }
        for accept in ["bytes", "Bytes", "items, bytes"] {
            let h = head(200, &[("accept-ranges", accept)]);
            assert_eq!(
                get(&[("range", "bytes=0-4")], &h, Some(20)),
                partial(0, 4, 20),
                "{accept}"
            );
        }
    }

    #[test]
    fn encoded_responses_are_ranged_as_sent() {
        let h = head(
            200,
            &[
                ("content-encoding", "gzip"),
                ("content-range", "bytes 0-1/2"),
            ],
        );
        assert_eq!(
            get(&[("range", "bytes=0-4")], &h, Some(20)),
            partial(0, 4, 20)
        );
    }

    #[test]
    fn a_304_comes_before_the_range() {
        let q = &[("if-none-match", "\"v1\""), ("range", "bytes=0-4")];
        assert!(matches!(get(q, &ok(), Some(20)), Answer::NotModified(_)));
        let q = &[("if-none-match", "\"v0\""), ("range", "bytes=0-4")];
        assert_eq!(get(q, &ok(), Some(20)), partial(0, 4, 20));
        let q = &[
            ("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT"),
            ("range", "bytes=-5"),
        ];
        assert_eq!(get(q, &ok(), Some(20)), partial(15, 19, 20));
    }

    #[test]
    fn content_range_values() {
        assert_eq!(partial(0, 4, 20).content_range().unwrap(), "bytes 0-4/20");
        assert_eq!(
            Answer::Unsatisfiable { total: 20 }.content_range().unwrap(),
            "bytes */20"
        );
        assert_eq!(Answer::Full.content_range(), None);
        assert_eq!(Answer::NeedLength.content_range(), None);
    }

    // --- If-Range ---

    #[test]
    fn if_range_with_an_entity_tag_uses_the_strong_comparison() {
        let range = ("range", "bytes=0-4");
        assert_eq!(
            get(&[range, ("if-range", "\"v1\"")], &ok(), Some(20)),
            partial(0, 4, 20)
        );
        assert_eq!(
            get(&[range, ("if-range", " \"v1\" ")], &ok(), Some(20)),
            partial(0, 4, 20)
        );
        for (asked, etag) in [
            ("W/\"v1\"", "\"v1\""),
            ("\"v1\"", "W/\"v1\""),
            ("W/\"v1\"", "W/\"v1\""),
            ("\"v0\"", "\"v1\""),
            ("\"v1\", \"v2\"", "\"v1\""),
            ("\"v1", "\"v1\""),
        ] {
            let h = head(200, &[("etag", etag)]);
            assert_eq!(
                get(&[range, ("if-range", asked)], &h, Some(20)),
                Answer::Full,
                "{asked} vs {etag}"
            );
        }
        assert_eq!(
            get(&[range, ("if-range", "\"v1\"")], &head(200, &[]), Some(20)),
            Answer::Full
        );
    }

    #[test]
    fn if_range_with_a_date_must_equal_a_strong_last_modified() {
        let range = ("range", "bytes=0-4");
        for same in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                get(&[range, ("if-range", same)], &ok(), Some(20)),
                partial(0, 4, 20),
                "{same}"
            );
        }
        for other in [
            "Sun, 06 Nov 1994 08:49:38 GMT",
            "Sun, 06 Nov 1994 08:49:36 GMT",
            "yesterday",
            "",
        ] {
            assert_eq!(
                get(&[range, ("if-range", other)], &ok(), Some(20)),
                Answer::Full,
                "{other:?}"
            );
        }
        // A Date less than a second after Last-Modified makes it weak.
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        let weak = head(200, &[("last-modified", lm), ("date", lm)]);
        assert_eq!(
            get(&[range, ("if-range", lm)], &weak, Some(20)),
            Answer::Full
        );
        let strong = head(
            200,
            &[
                ("last-modified", lm),
                ("date", "Sun, 06 Nov 1994 08:49:38 GMT"),
            ],
        );
        assert_eq!(
            get(&[range, ("if-range", lm)], &strong, Some(20)),
            partial(0, 4, 20)
        );
        assert_eq!(
            get(&[range, ("if-range", lm)], &head(200, &[]), Some(20)),
            Answer::Full
        );
    }

    #[test]
    fn if_range_without_range_is_ignored() {
        assert_eq!(get(&[("if-range", "\"v0\"")], &ok(), None), Answer::Full);
        assert_eq!(
            get(
                &[("if-range", "\"v1\""), ("if-range", "\"v1\"")],
                &ok(),
                None
            ),
            Answer::Full
        );
    }

    // --- HTTP-dates and entity-tags ---

    #[test]
    fn the_three_date_formats() {
        let year = 2025;
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
            "  Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(date_in(value.as_bytes(), year), Some(EXAMPLE), "{value}");
        }
        assert_eq!(date_in(b"Thu, 01 Jan 1970 00:00:00 GMT", year), Some(0));
        assert_eq!(date_in(b"Wed, 31 Dec 1969 23:59:59 GMT", year), Some(-1));
        assert_eq!(
            date_in(b"Tue, 29 Feb 2000 12:00:00 GMT", year),
            Some(951_825_600)
        );
        assert_eq!(
            date_in(b"Fri, 31 Dec 9999 23:59:59 GMT", year),
            Some(253_402_300_799)
        );
    }

    #[test]
    fn invalid_dates() {
        for value in [
            "",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun,06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT x",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:60 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Tue, 29 Feb 1900 08:49:37 GMT",
            "Fri, 29 Feb 2019 08:49:37 GMT",
            "Sun, 31 Apr 2019 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun Nov  6 08:49:37 94",
            "1994-11-06T08:49:37Z",
            "784111777",
        ] {
            assert_eq!(date_in(value.as_bytes(), 2025), None, "{value:?}");
        }
        // The day name is not checked against the date.
        assert_eq!(
            date_in(b"Mon, 06 Nov 1994 08:49:37 GMT", 2025),
            Some(EXAMPLE)
        );
    }

    #[test]
    fn two_digit_years_are_within_fifty_years() {
        let at = |yy: &str, this_year| {
            let value = format!("Sunday, 01-Jan-{yy} 00:00:00 GMT");
            let seconds = date_in(value.as_bytes(), this_year).unwrap();
            1970 + seconds.div_euclid(86_400 * 365)
        };
        assert_eq!(at("94", 2025), 1994);
        assert_eq!(at("75", 2025), 2075);
        assert_eq!(at("76", 2025), 1976);
        assert_eq!(at("00", 2025), 2000);
        assert_eq!(at("00", 2090), 2100);
        assert_eq!(at("40", 2090), 2140);
        assert_eq!(at("41", 2090), 2041);
        assert!(current_year() >= 2024);
    }

    #[test]
    fn days_from_civil_round_trips_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(1600, 1, 1), -135_140);
    }

    #[test]
    fn entity_tags() {
        fn tag(s: &str) -> Option<EntityTag<'_>> {
            entity_tag(s.as_bytes())
        }
        assert_eq!(
            tag("\"abc\""),
            Some(EntityTag {
                weak: false,
                opaque: b"abc"
            })
        );
        assert_eq!(
            tag("W/\"abc\""),
            Some(EntityTag {
                weak: true,
                opaque: b"abc"
            })
        );
        assert_eq!(
            tag("\"\""),
            Some(EntityTag {
                weak: false,
                opaque: b""
            })
        );
        assert_eq!(
            tag(" \"a,b!#~\" "),
            Some(EntityTag {
                weak: false,
                opaque: b"a,b!#~"
            })
        );
        for bad in [
            "abc",
            "\"abc",
            "abc\"",
            "w/\"abc\"",
            "W/abc",
            "W/ \"abc\"",
            "\"a b\"",
            "\"a\"b",
        ] {
            assert_eq!(tag(bad), None, "{bad}");
        }
        // obs-text is allowed inside a tag.
        let obs = HeaderValue::from_bytes(b"\"caf\xe9\"").unwrap();
        assert_eq!(entity_tag(obs.as_bytes()).unwrap().opaque, b"caf\xe9");

        let strong = tag("\"x\"").unwrap();
        let weak = tag("W/\"x\"").unwrap();
        assert!(strong.strong_eq(&strong));
        assert!(!strong.strong_eq(&weak) && !weak.strong_eq(&strong) && !weak.strong_eq(&weak));
        assert!(strong.weak_eq(&weak) && weak.weak_eq(&weak) && weak.weak_eq(&strong));
    }
}
