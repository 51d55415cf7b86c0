//! A reference origin server for conditional and range requests: the test oracle.
//!
//! [`answer`] answers a request for one representation the way a conforming origin does
//! (RFC 9110 §13 and §14), making every choice the RFCs leave open the way the layer
//! documents it in `src/conditional.rs`, so that a client behind the layer must get exactly
//! what this function alone answers to its request. It is written apart from the layer's
//! code and calls none of it.

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

/// Answers `request` for the representation `body`, whose validators are `etag` (a
/// complete entity-tag such as `"v1"` or `W/"v1"`) and `last_modified` (an HTTP-date); an
/// empty string means the representation has no such validator and the header is not sent.
///
/// The answer is a `200` (with `ETag`, `Last-Modified`, `Accept-Ranges: bytes` and
/// `Content-Length`), a `304` (`ETag` and `Last-Modified` only, no body), a `206`
/// (`Content-Range: bytes first-last/length` and the `200`'s headers), a `416`
/// (`Content-Range: bytes */length`, `Content-Length: 0`, `ETag`, `Last-Modified`) or a
/// `412` (`Content-Length: 0`). A `HEAD` gets the `GET`'s headers without the body. No
/// `Date` is sent.
///
/// The choices it mirrors, as the layer documents them:
///
/// - **Order** (RFC 9110 §13.2.2): `If-Match`, else `If-Unmodified-Since` (`412` when
///   false); then `If-None-Match`, else `If-Modified-Since` (`304` for `GET`/`HEAD`, `412`
///   for other methods, when false); then `Range` with `If-Range`, for `GET` only (§14.2).
/// - **`If-None-Match`** (§13.1.2): `*` matches the (existing) representation even without
///   an `ETag`; a list (field lines combined, empty elements skipped, commas allowed inside
///   quotes) matches by the weak comparison (§8.8.3.2). A value that does not parse is
///   treated as not matching (the layer lets the origin decide such requests).
/// - **`If-Modified-Since`** (§13.1.3): only without `If-None-Match`, for `GET`/`HEAD`, with
///   exactly one field line holding a valid HTTP-date, and when there is a `Last-Modified`;
///   `304` when `Last-Modified` is at or before it.
/// - **`If-Match`** (§13.1.1): `*` holds; otherwise the strong comparison with the `ETag`.
///   **`If-Unmodified-Since`** (§13.1.4): like `If-Modified-Since`, `412` when
///   `Last-Modified` is after it. (The layer passes both through.)
/// - **HTTP-dates** (§5.6.7): IMF-fixdate, RFC 850 and asctime, names case-sensitive, the
///   day name not checked, the day within its month, no leap second; a two-digit year is
///   the one in the 100 years ending 50 years after the current year.
/// - **`Range`** (§14.1, §14.2): one field line, unit `bytes` in any case, exactly one
///   range once empty elements are skipped, digits only; otherwise ignored (the full `200`):
///   several ranges, another unit, a syntax error, `last < first`. Numbers too large for
///   `u64` count as `u64::MAX`.
/// - **Satisfiable** (§14.1.1): `first < length`, or a non-zero suffix; else `416`. A
///   non-zero suffix of an empty body is answered with the full (empty) `200`.
/// - **`If-Range`** (§13.1.5): an entity-tag matches only by the strong comparison; an
///   HTTP-date when it is the same instant as `Last-Modified` (strong: no `Date` is sent);
///   several field lines, a missing validator or a value that is neither: the full `200`.
pub fn answer(
    request: &http::request::Parts,
    body: &[u8],
    etag: &str,
    last_modified: &str,
) -> Response<Bytes> {
    let asked = &request.headers;
    let method = &request.method;
    let read = *method == Method::GET || *method == Method::HEAD;
    let tag = (!etag.is_empty()).then_some(etag);
    let modified = if last_modified.is_empty() {
        None
    } else {
        http_date(last_modified)
    };

    let mut validators = HeaderMap::new();
    if let Some(tag) = tag {
        validators.insert(ETAG, HeaderValue::from_str(tag).expect("a valid ETag"));
    }
    if !last_modified.is_empty() {
        validators.insert(
            LAST_MODIFIED,
            HeaderValue::from_str(last_modified).expect("a valid Last-Modified"),
        );
    }
    let length = body.len() as u64;

    // §13.2.2 step 1 and 2: the state of the resource, for methods that change it.
    let precondition_failed = if asked.contains_key(IF_MATCH) {
        !if_match(asked, tag)
    } else {
        match (one_date(asked, &IF_UNMODIFIED_SINCE), modified) {
            (Some(since), Some(modified)) => modified > since,
            _ => false,
        }
    };
    if precondition_failed {
        return respond(
            StatusCode::PRECONDITION_FAILED,
            HeaderMap::new(),
            0,
            Bytes::new(),
        );
    }

    // Steps 3 and 4: does the client already have it?
    let unchanged = if asked.contains_key(IF_NONE_MATCH) {
        if_none_match_matches(asked, tag)
    } else if read {
        match (one_date(asked, &IF_MODIFIED_SINCE), modified) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    } else {
        false
    };
    if unchanged {
        return if read {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = validators;
            response
        } else {
            respond(
                StatusCode::PRECONDITION_FAILED,
                HeaderMap::new(),
                0,
                Bytes::new(),
            )
        };
    }

    let mut headers = validators.clone();
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content = |bytes: Bytes| {
        if *method == Method::HEAD {
            Bytes::new()
        } else {
            bytes
        }
    };

    // Step 5: a range, if its condition holds.
    if *method == Method::GET && range_condition(asked, tag, modified) {
        match one_range(asked).map(|range| range.within(length)) {
            Some(Some(Some((first, last)))) => {
                let value = format!("bytes {first}-{last}/{length}");
                headers.insert(CONTENT_RANGE, HeaderValue::from_str(&value).unwrap());
                let part = Bytes::copy_from_slice(&body[first as usize..=last as usize]);
                return respond(StatusCode::PARTIAL_CONTENT, headers, last - first + 1, part);
            }
            Some(None) => {
                let mut headers = validators;
                let value = format!("bytes */{length}");
                headers.insert(CONTENT_RANGE, HeaderValue::from_str(&value).unwrap());
                return respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, 0, Bytes::new());
            }
            // Satisfiable without a byte to send, or no range to answer: the whole body.
            Some(Some(None)) | None => {}
        }
    }
    respond(
        StatusCode::OK,
        headers,
        length,
        content(Bytes::copy_from_slice(body)),
    )
}

/// A response with `headers` plus `Content-Length: length`, and `body`.
fn respond(status: StatusCode, headers: HeaderMap, length: u64, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// A field value without the spaces and tabs around it (RFC 9110 §5.5).
fn trimmed(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// The value of `name` if it has exactly one field line.
fn one_line<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let lines: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
    match lines[..] {
        [only] => Some(only.as_bytes()),
        _ => None,
    }
}

/// The HTTP-date of `name` if it has exactly one field line and it is valid.
fn one_date(headers: &HeaderMap, name: &HeaderName) -> Option<Instant> {
    http_date(std::str::from_utf8(one_line(headers, name)?).ok()?)
}

// --- entity-tags ---

/// An entity-tag split into its weakness and the bytes between its quotes.
struct Tag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// `element` as one entity-tag (RFC 9110 §8.8.3), or `None`.
fn tag_of(element: &[u8]) -> Option<Tag<'_>> {
    let (weak, quoted) = if element.len() >= 2 && &element[..2] == b"W/" {
        (true, &element[2..])
    } else {
        (false, element)
    };
    if quoted.len() < 2 || quoted[0] != b'"' || quoted[quoted.len() - 1] != b'"' {
        return None;
    }
    let opaque = &quoted[1..quoted.len() - 1];
    let etagc = |b: &u8| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80;
    opaque.iter().all(etagc).then_some(Tag { weak, opaque })
}

/// The elements of a list-valued header (all its field lines), split at the commas that
/// are outside quotes, trimmed, empty ones dropped.
fn elements(headers: &HeaderMap, name: &HeaderName) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in headers.get_all(name) {
        let mut current = Vec::new();
        let mut quoted = false;
        for &b in line.as_bytes() {
            match b {
                b'"' => {
                    quoted = !quoted;
                    current.push(b);
                }
                b',' if !quoted => out.push(std::mem::take(&mut current)),
                _ => current.push(b),
            }
        }
        out.push(current);
    }
    out.into_iter()
        .map(|element| trimmed(&element).to_vec())
        .filter(|element| !element.is_empty())
        .collect()
}

/// Whether `If-None-Match` names the current representation (weak comparison); an
/// invalid value names nothing.
fn if_none_match_matches(headers: &HeaderMap, current: Option<&str>) -> bool {
    let elements = elements(headers, &IF_NONE_MATCH);
    if elements.is_empty() {
        return false;
    }
    if elements.iter().any(|e| e == b"*") {
        // `*` (however often): the representation exists. Mixed with tags: invalid.
        return elements.iter().all(|e| e == b"*");
    }
    let Some(tags) = elements
        .iter()
        .map(|e| tag_of(e))
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let Some(current) = current.and_then(|c| tag_of(c.as_bytes())) else {
        return false;
    };
    tags.iter().any(|tag| tag.opaque == current.opaque)
}

/// Whether `If-Match` holds: `*`, or a tag equal to the current one by the strong
/// comparison.
fn if_match(headers: &HeaderMap, current: Option<&str>) -> bool {
    let elements = elements(headers, &IF_MATCH);
    if elements.len() == 1 && elements[0] == b"*" {
        return true;
    }
    let Some(current) = current.and_then(|c| tag_of(c.as_bytes())) else {
        return false;
    };
    elements
        .iter()
        .filter_map(|e| tag_of(e))
        .any(|tag| !tag.weak && !current.weak && tag.opaque == current.opaque)
}

/// Whether `If-Range` lets the `Range` apply: absent, or it names the current
/// representation (RFC 9110 §13.1.5).
fn range_condition(headers: &HeaderMap, current: Option<&str>, modified: Option<Instant>) -> bool {
    if !headers.contains_key(IF_RANGE) {
        return true;
    }
    let Some(value) = one_line(headers, &IF_RANGE).map(trimmed) else {
        return false;
    };
    if value.first() == Some(&b'"') || value.starts_with(b"W/") {
        return match (tag_of(value), current.and_then(|c| tag_of(c.as_bytes()))) {
            (Some(asked), Some(current)) => {
                !asked.weak && !current.weak && asked.opaque == current.opaque
            }
            _ => false,
        };
    }
    let asked = std::str::from_utf8(value).ok().and_then(http_date);
    asked.is_some() && asked == modified
}

// --- ranges ---

/// One byte range as asked.
enum Spec {
    /// `first-last`
    Closed(u64, u64),
    /// `first-`
    Open(u64),
    /// `-suffix`
    Last(u64),
}

impl Spec {
    /// In a body of `length` bytes: `None` if unsatisfiable, `Some(None)` if satisfiable
    /// with no byte to send, else the first and last byte.
    fn within(&self, length: u64) -> Option<Option<(u64, u64)>> {
        match *self {
            Spec::Closed(first, last) => {
                (first < length).then(|| Some((first, last.min(length - 1))))
            }
            Spec::Open(first) => (first < length).then(|| Some((first, length - 1))),
            Spec::Last(0) => None,
            Spec::Last(_) if length == 0 => Some(None),
            Spec::Last(suffix) => Some(Some((length.saturating_sub(suffix), length - 1))),
        }
    }
}

/// A run of decimal digits as a number, `u64::MAX` if it is larger.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.bytes().any(|b| !b.is_ascii_digit()) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 20 {
        return Some(u64::MAX);
    }
    let wide: u128 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    Some(u64::try_from(wide).unwrap_or(u64::MAX))
}

/// The single byte range `Range` asks for, or `None` when it is to be ignored.
fn one_range(headers: &HeaderMap) -> Option<Spec> {
    let value = std::str::from_utf8(trimmed(one_line(headers, &RANGE)?)).ok()?;
    let equals = value.find('=')?;
    if !value[..equals].eq_ignore_ascii_case("bytes") {
        return None;
    }
    let specs: Vec<&str> = value[equals + 1..]
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs[..] else {
        return None;
    };
    let dash = spec.find('-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (first.is_empty(), last.is_empty()) {
        (true, _) => Some(Spec::Last(decimal(last)?)),
        (false, true) => Some(Spec::Open(decimal(first)?)),
        (false, false) => {
            let (first, last) = (decimal(first)?, decimal(last)?);
            (first <= last).then_some(Spec::Closed(first, last))
        }
    }
}

// --- HTTP-dates ---

/// A point in time as (year, month 1-12, day, hour, minute, second): ordered as time is.
type Instant = (i64, u32, u32, u32, u32, u32);

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `text` as exactly `width` decimal digits.
fn fixed(text: &str, width: usize) -> Option<u32> {
    (text.len() == width && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// A month name as 1-12.
fn month(name: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

/// `hh:mm:ss`, each in range (no leap second).
fn clock(text: &str) -> Option<(u32, u32, u32)> {
    let parts: Vec<&str> = text.split(':').collect();
    let [h, m, s] = parts[..] else {
        return None;
    };
    let (h, m, s) = (fixed(h, 2)?, fixed(m, 2)?, fixed(s, 2)?);
    (h <= 23 && m <= 59 && s <= 59).then_some((h, m, s))
}

/// Whether `day` exists in `month` of `year`.
fn real_day(year: i64, month: u32, day: u32) -> bool {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days).contains(&day)
}

/// An HTTP-date in any of the three formats of RFC 9110 §5.6.7.
fn http_date(text: &str) -> Option<Instant> {
    let text = text.trim_matches([' ', '\t']);
    let words: Vec<&str> = text.split(' ').collect();
    let (year, month, day, time) = match words[..] {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        [name, day, mon, year, time, "GMT"]
            if name
                .strip_suffix(',')
                .is_some_and(|n| SHORT_DAYS.contains(&n)) =>
        {
            (
                i64::from(fixed(year, 4)?),
                month(mon)?,
                fixed(day, 2)?,
                clock(time)?,
            )
        }
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
        [name, date, time, "GMT"]
            if name
                .strip_suffix(',')
                .is_some_and(|n| LONG_DAYS.contains(&n)) =>
        {
            let fields: Vec<&str> = date.split('-').collect();
            let [day, mon, yy] = fields[..] else {
                return None;
            };
            (
                two_digit_year(fixed(yy, 2)?),
                month(mon)?,
                fixed(day, 2)?,
                clock(time)?,
            )
        }
        // asctime: `Sun Nov  6 08:49:37 1994` (a one-digit day after two spaces)
        [name, mon, "", day, time, year] if SHORT_DAYS.contains(&name) => (
            i64::from(fixed(year, 4)?),
            month(mon)?,
            fixed(day, 1)?,
            clock(time)?,
        ),
        [name, mon, day, time, year] if SHORT_DAYS.contains(&name) => (
            i64::from(fixed(year, 4)?),
            month(mon)?,
            fixed(day, 2)?,
            clock(time)?,
        ),
        _ => return None,
    };
    real_day(year, month, day).then_some((year, month, day, time.0, time.1, time.2))
}

/// The year ending in `yy` that is at most 50 years after the current one and less than 50
/// before it.
fn two_digit_year(yy: u32) -> i64 {
    let now = this_year();
    (now - 49..=now + 50)
        .find(|year| year.rem_euclid(100) == i64::from(yy))
        .expect("every two digits occur in a hundred years")
}

/// The current year (UTC).
fn this_year() -> i64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut days = (seconds / 86_400) as i64;
    let mut year = 1970;
    loop {
        let in_year = if real_day(year, 2, 29) { 366 } else { 365 };
        if days < in_year {
            return year;
        }
        days -= in_year;
        year += 1;
    }
}
