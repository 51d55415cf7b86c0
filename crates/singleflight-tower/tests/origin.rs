//! The reference origin that the property test compares the layer with: checks that it
//! answers as RFC 9110 says, so the oracle itself is not what is wrong.

/// Code shared by the test files (`pub`, so that its `pub` items are reachable).
pub mod support {
    /// The reference origin.
    pub mod origin;
}

use http::{Method, Request, Response, StatusCode};
use support::origin::answer;

/// Twenty bytes.
const BODY: &[u8] = b"0123456789abcdefghij";
const ETAG: &str = "\"v1\"";
const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// The origin's answer to a request with `method` and these headers, for `body`.
fn ask_for(
    method: Method,
    headers: &[(&str, &str)],
    body: &[u8],
    etag: &str,
    last_modified: &str,
) -> Response<bytes::Bytes> {
    let mut request = Request::builder().method(method).uri("/file");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (parts, ()) = request.body(()).unwrap().into_parts();
    answer(&parts, body, etag, last_modified)
}

/// A GET of [`BODY`], validated by [`ETAG`] and [`MODIFIED`].
fn get(headers: &[(&str, &str)]) -> Response<bytes::Bytes> {
    ask_for(Method::GET, headers, BODY, ETAG, MODIFIED)
}

fn header<'a>(response: &'a Response<bytes::Bytes>, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn a_plain_get_is_the_whole_body() {
    let response = get(&[]);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_ref(), BODY);
    assert_eq!(header(&response, "etag"), Some(ETAG));
    assert_eq!(header(&response, "last-modified"), Some(MODIFIED));
    assert_eq!(header(&response, "content-length"), Some("20"));
    assert_eq!(header(&response, "content-range"), None);
}

#[test]
fn a_head_has_the_headers_without_the_body() {
    let response = ask_for(
        Method::HEAD,
        &[("range", "bytes=0-4")],
        BODY,
        ETAG,
        MODIFIED,
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.body().is_empty());
    assert_eq!(header(&response, "content-length"), Some("20"));
}

#[test]
fn a_matching_if_none_match_is_not_modified() {
    for value in ["\"v1\"", "W/\"v1\"", "\"x\", \"v1\"", "*"] {
        let response = get(&[("if-none-match", value)]);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
        assert!(response.body().is_empty());
        assert_eq!(header(&response, "etag"), Some(ETAG));
    }
    assert_eq!(get(&[("if-none-match", "\"v0\"")]).status(), StatusCode::OK);
}

#[test]
fn if_modified_since_in_each_date_format() {
    for value in [
        MODIFIED,
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Mon, 07 Nov 1994 00:00:00 GMT",
    ] {
        let response = get(&[("if-modified-since", value)]);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
    }
    for value in ["Sat, 05 Nov 1994 08:49:37 GMT", "yesterday"] {
        assert_eq!(
            get(&[("if-modified-since", value)]).status(),
            StatusCode::OK
        );
    }
    // If-None-Match decides when both are present.
    let response = get(&[("if-none-match", "\"v0\""), ("if-modified-since", MODIFIED)]);
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn a_range_is_partial_content() {
    let response = get(&[("range", "bytes=0-4")]);
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.body().as_ref(), b"01234");
    assert_eq!(header(&response, "content-range"), Some("bytes 0-4/20"));
    assert_eq!(header(&response, "content-length"), Some("5"));
    assert_eq!(header(&response, "etag"), Some(ETAG));

    let response = get(&[("range", "bytes=-3")]);
    assert_eq!(response.body().as_ref(), b"hij");
    assert_eq!(header(&response, "content-range"), Some("bytes 17-19/20"));
    let response = get(&[("range", "bytes=15-99")]);
    assert_eq!(response.body().as_ref(), b"fghij");
    assert_eq!(header(&response, "content-range"), Some("bytes 15-19/20"));
}

#[test]
fn an_unsatisfiable_range() {
    for value in ["bytes=20-", "bytes=-0"] {
        let response = get(&[("range", value)]);
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(response.body().is_empty());
        assert_eq!(header(&response, "content-range"), Some("bytes */20"));
        assert_eq!(header(&response, "etag"), Some(ETAG));
    }
    // A suffix of an empty body: satisfiable, nothing to send, the whole (empty) body.
    let response = ask_for(Method::GET, &[("range", "bytes=-5")], b"", ETAG, MODIFIED);
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn ignored_ranges_are_the_whole_body() {
    for value in ["bytes=0-4,6-8", "bytes=5-4", "items=0-4", "bytes=x"] {
        let response = get(&[("range", value)]);
        assert_eq!(response.status(), StatusCode::OK, "{value}");
        assert_eq!(response.body().as_ref(), BODY);
    }
}

#[test]
fn if_range_needs_a_strong_match() {
    let range = ("range", "bytes=0-4");
    for value in [ETAG, MODIFIED] {
        let response = get(&[range, ("if-range", value)]);
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{value}");
    }
    for value in ["\"v0\"", "W/\"v1\"", "Sat, 05 Nov 1994 08:49:37 GMT"] {
        let response = get(&[range, ("if-range", value)]);
        assert_eq!(response.status(), StatusCode::OK, "{value}");
        assert_eq!(response.body().as_ref(), BODY);
    }
}

#[test]
fn if_match_and_if_unmodified_since_can_fail() {
    assert_eq!(
        get(&[("if-match", "\"v0\"")]).status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(get(&[("if-match", "\"v1\"")]).status(), StatusCode::OK);
    assert_eq!(get(&[("if-match", "*")]).status(), StatusCode::OK);
    assert_eq!(
        get(&[("if-unmodified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]).status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        get(&[("if-unmodified-since", MODIFIED)]).status(),
        StatusCode::OK
    );
}

#[test]
fn without_validators() {
    let response = ask_for(Method::GET, &[("if-none-match", "\"v1\"")], BODY, "", "");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag"), None);
    assert_eq!(header(&response, "last-modified"), None);
    let response = ask_for(Method::GET, &[("if-none-match", "*")], BODY, "", "");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let response = ask_for(
        Method::GET,
        &[("if-modified-since", MODIFIED)],
        BODY,
        "",
        "",
    );
    assert_eq!(response.status(), StatusCode::OK);
}
