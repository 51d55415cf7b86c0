//! Which requests share a response: the methods that coalesce and the key of a request.

use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, HOST, PROXY_AUTHORIZATION};
use http::request::Parts;
use http::{HeaderName, Method, Uri};

/// `X-Api-Key`: the most common credential header after `Authorization`.
pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// A user's key function: the key of a request, or `None` to let it pass through.
type KeyFn = dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync;

/// How the key of a request is made.
#[derive(Clone)]
pub(crate) enum KeyPolicy {
    /// Method, the original URI (scheme, authority, path and query), and these headers (in
    /// this order).
    Headers(Vec<HeaderName>),
    /// The user's function.
    Custom(Arc<KeyFn>),
}

impl KeyPolicy {
    /// `Host`, so that two virtual hosts never share a path, and the credentials a request
    /// commonly carries (`Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key`), so
    /// that two principals never share a response unless a route says so.
    pub(crate) fn default_headers() -> Self {
        Self::Headers(default_key_headers())
    }

    pub(crate) fn custom(f: impl Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }

    /// Adds `name` to the headers of the key (a custom key function is replaced).
    pub(crate) fn add_header(&mut self, name: HeaderName) {
        match self {
            Self::Headers(names) if names.contains(&name) => {}
            Self::Headers(names) => names.push(name),
            Self::Custom(_) => *self = Self::Headers(vec![name]),
        }
    }

    /// Removes `name` from the headers of the key.
    pub(crate) fn remove_header(&mut self, name: &HeaderName) {
        if let Self::Headers(names) = self {
            names.retain(|n| n != name);
        }
    }

    /// The key of a request, or `None` if it must not coalesce.
    ///
    /// The default key is unambiguous: every field is length-prefixed, and a header that
    /// appears several times contributes every value in order, so no two different requests
    /// (say, a header value that contains the next field's separator) map to one key.
    pub(crate) fn key(&self, parts: &Parts) -> Option<Vec<u8>> {
        match self {
            Self::Custom(f) => f(parts),
            Self::Headers(names) => {
                let uri = original_uri(parts);
                let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
                let mut key = Vec::with_capacity(64 + target.len());
                push_field(&mut key, parts.method.as_str().as_bytes());
                push_field(&mut key, uri.scheme_str().unwrap_or("").as_bytes());
                push_field(
                    &mut key,
                    uri.authority().map_or("", |a| a.as_str()).as_bytes(),
                );
                push_field(&mut key, target.as_bytes());
                for name in names {
                    let mut values = parts.headers.get_all(name).iter();
                    match values.next() {
                        // An absent header and an empty one differ.
                        None => key.push(0),
                        Some(first) => {
                            key.push(1);
                            push_field(&mut key, first.as_bytes());
                            for value in values {
                                key.push(1);
                                push_field(&mut key, value.as_bytes());
                            }
                            key.push(0);
                        }
                    }
                }
                Some(key)
            }
        }
    }
}

/// The headers of the default key.
pub(crate) fn default_key_headers() -> Vec<HeaderName> {
    vec![HOST, AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, X_API_KEY]
}

/// The URI the client asked for: axum's `OriginalUri` where a router recorded one (a nested
/// router strips its prefix from the request's own URI), the request's URI otherwise.
pub(crate) fn original_uri(parts: &Parts) -> &Uri {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get() {
        return uri;
    }
    &parts.uri
}

fn push_field(key: &mut Vec<u8>, field: &[u8]) {
    key.extend_from_slice(&(field.len() as u32).to_le_bytes());
    key.extend_from_slice(field);
}

/// Splits the next length-prefixed field off `rest`.
fn next_field<'k>(rest: &mut &'k [u8]) -> Option<&'k [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    if tail.len() < len {
        return None;
    }
    let (field, tail) = tail.split_at(len);
    *rest = tail;
    Some(field)
}

/// The route of a key the [`KeyPolicy::Headers`] policy made: `METHOD path`, without the
/// scheme, the authority, the query or any header (the credentials are in those). `None`
/// for bytes that are not such a key.
pub(crate) fn route(key: &[u8]) -> Option<(&str, &str)> {
    let mut rest = key;
    let method = std::str::from_utf8(next_field(&mut rest)?).ok()?;
    let _scheme = next_field(&mut rest)?;
    let _authority = next_field(&mut rest)?;
    let target = std::str::from_utf8(next_field(&mut rest)?).ok()?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some((method, path))
}

/// Writes the route of a key made by the [`KeyPolicy::Headers`] policy (see [`route`]): the
/// group's key format when the layer offers routes to observers. Fails on other bytes, so
/// an observer falls back to the key's hash.
#[allow(
    clippy::ptr_arg,
    reason = "a group's key format takes its key type, `Vec<u8>`"
)]
pub(crate) fn write_route(key: &Vec<u8>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (method, path) = route(key).ok_or(fmt::Error)?;
    write!(f, "{method} {path}")
}

impl fmt::Debug for KeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Headers(names) => f.debug_tuple("Headers").field(names).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The methods that coalesce: GET and HEAD unless configured.
pub(crate) fn default_methods() -> Vec<Method> {
    vec![Method::GET, Method::HEAD]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(builder: http::request::Builder) -> Parts {
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn credentials_are_in_the_default_key() {
        let policy = KeyPolicy::default_headers();
        let a = policy.key(&parts(
            Request::get("/r?x=1").header("authorization", "Bearer a"),
        ));
        let b = policy.key(&parts(
            Request::get("/r?x=1").header("authorization", "Bearer b"),
        ));
        let none = policy.key(&parts(Request::get("/r?x=1")));
        let empty = policy.key(&parts(Request::get("/r?x=1").header("authorization", "")));
        let cookie = policy.key(&parts(Request::get("/r?x=1").header("cookie", "s=1")));
        for header in ["proxy-authorization", "x-api-key"] {
            assert_ne!(
                policy.key(&parts(Request::get("/r?x=1").header(header, "a"))),
                policy.key(&parts(Request::get("/r?x=1").header(header, "b"))),
                "{header}"
            );
        }
        assert_ne!(a, b);
        assert_ne!(none, empty);
        assert_ne!(none, cookie);
        assert_eq!(none, policy.key(&parts(Request::get("/r?x=1"))));
    }

    #[test]
    fn method_path_and_query_are_in_the_key() {
        let policy = KeyPolicy::default_headers();
        let get = policy.key(&parts(Request::get("/r?x=1")));
        assert_ne!(get, policy.key(&parts(Request::head("/r?x=1"))));
        assert_ne!(get, policy.key(&parts(Request::get("/r?x=2"))));
        assert_ne!(get, policy.key(&parts(Request::get("/s?x=1"))));
        // The authority: of an absolute-form (or HTTP/2) URI, and the `Host` header.
        assert_ne!(
            policy.key(&parts(Request::get("http://a.example/r?x=1"))),
            policy.key(&parts(Request::get("http://b.example/r?x=1")))
        );
        assert_ne!(
            policy.key(&parts(Request::get("/r?x=1").header("host", "a.example"))),
            policy.key(&parts(Request::get("/r?x=1").header("host", "b.example")))
        );
        // Headers outside the key don't split flights.
        assert_eq!(
            get,
            policy.key(&parts(Request::get("/r?x=1").header("accept", "a/b")))
        );
    }

    #[test]
    fn named_headers_join_the_key_and_repeated_values_all_count() {
        let mut policy = KeyPolicy::default_headers();
        policy.add_header(HeaderName::from_static("accept"));
        let json = policy.key(&parts(
            Request::get("/r").header("accept", "application/json"),
        ));
        let html = policy.key(&parts(Request::get("/r").header("accept", "text/html")));
        assert_ne!(json, html);
        let one = policy.key(&parts(Request::get("/r").header("accept", "a")));
        let two = policy.key(&parts(
            Request::get("/r")
                .header("accept", "a")
                .header("accept", "b"),
        ));
        assert_ne!(one, two);
        policy.remove_header(&AUTHORIZATION);
        assert_eq!(
            policy.key(&parts(Request::get("/r").header("authorization", "a"))),
            policy.key(&parts(Request::get("/r").header("authorization", "b")))
        );
    }

    #[test]
    fn the_route_of_a_key_is_its_method_and_path_alone() {
        let policy = KeyPolicy::default_headers();
        let key = policy
            .key(&parts(
                Request::get("https://api.example/users/42?token=s3cret")
                    .header(HOST, "api.example")
                    .header(AUTHORIZATION, "Bearer s3cret"),
            ))
            .unwrap();
        assert_eq!(route(&key), Some(("GET", "/users/42")));
        struct Route<'k>(&'k Vec<u8>);
        impl fmt::Display for Route<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_route(self.0, f)
            }
        }
        assert_eq!(Route(&key).to_string(), "GET /users/42");
        // Bytes of another layout are not taken for a route.
        assert_eq!(route(b"user:42"), None);
        assert_eq!(route(&[9, 0, 0, 0, b'G']), None);
    }

    #[test]
    fn a_key_function_decides_alone() {
        let policy = KeyPolicy::custom(|parts| {
            parts
                .headers
                .get("x-tenant")
                .map(|tenant| tenant.as_bytes().to_vec())
        });
        assert_eq!(policy.key(&parts(Request::get("/a"))), None);
        assert_eq!(
            policy.key(&parts(Request::get("/a").header("x-tenant", "t1"))),
            policy.key(&parts(Request::get("/b").header("x-tenant", "t1")))
        );
    }
}
