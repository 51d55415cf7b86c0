//! `Vary` (RFC 9111 §4.1): a shared response reaches a waiter only if the waiter's request
//! has the same values as the leader's for every header the response names.

use http::header::VARY;
use http::{HeaderMap, HeaderName};

/// The request headers a response varies on, with the leader's values of them.
#[derive(Debug, Default)]
pub(crate) struct Selecting {
    fields: Vec<(HeaderName, Option<String>)>,
}

/// What the response's `Vary` says.
pub(crate) enum Vary {
    /// `Vary: *`: the response depends on more than the request's headers. Never shared.
    Any,
    /// The named headers (none when there is no `Vary`), with the leader's values.
    Fields(Selecting),
}

impl Vary {
    /// Reads `response`'s `Vary` and records `asked`'s (the leader's request's) values of the
    /// headers it names.
    pub(crate) fn of(response: &HeaderMap, asked: &HeaderMap) -> Self {
        let mut fields = Vec::new();
        for value in response.get_all(VARY) {
            // A value that is not text names no header we could compare: vary on everything.
            let Ok(value) = value.to_str() else {
                return Self::Any;
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Self::Any;
                }
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return Self::Any;
                };
                if !fields.iter().any(|(n, _)| *n == name) {
                    let value = normalized(asked, &name);
                    fields.push((name, value));
                }
            }
        }
        Self::Fields(Selecting { fields })
    }
}

/// Whether `response`'s `Vary` is `*` (or names something that is not a header).
pub(crate) fn any(response: &HeaderMap) -> bool {
    matches!(Vary::of(response, &HeaderMap::new()), Vary::Any)
}

impl Selecting {
    /// Whether a request with `headers` selects the same response: its values of every
    /// header named by `Vary` equal the leader's, after the normalisation RFC 9111 allows
    /// (several field lines combined, whitespace around commas dropped). A header absent
    /// from both matches.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        self.fields
            .iter()
            .all(|(name, value)| normalized(headers, name) == *value)
    }
}

/// A request header's field lines combined into one value, with whitespace around its
/// comma-separated members dropped; `None` when absent. A value that is not text keeps
/// its bytes as lossy text, so two different values never compare equal by accident
/// (both would need the same replacement characters in the same places).
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for value in values {
        for member in String::from_utf8_lossy(value.as_bytes()).split(',') {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member.trim());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn selecting(
        response: &[(&'static str, &'static str)],
        asked: &[(&'static str, &'static str)],
    ) -> Selecting {
        match Vary::of(&headers(response), &headers(asked)) {
            Vary::Fields(selecting) => selecting,
            Vary::Any => panic!("expected fields"),
        }
    }

    #[test]
    fn no_vary_matches_everyone() {
        let s = selecting(&[], &[("accept-language", "en")]);
        assert!(s.matches(&headers(&[("accept-language", "fr")])));
    }

    #[test]
    fn named_headers_must_match() {
        let s = selecting(
            &[("vary", "Accept-Language, accept-encoding")],
            &[("accept-language", "en"), ("accept-encoding", "gzip, br")],
        );
        assert!(s.matches(&headers(&[
            ("accept-language", "en"),
            ("accept-encoding", "gzip,br")
        ])));
        assert!(s.matches(&headers(&[
            ("accept-language", "en"),
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br")
        ])));
        assert!(!s.matches(&headers(&[
            ("accept-language", "fr"),
            ("accept-encoding", "gzip, br")
        ])));
        assert!(!s.matches(&headers(&[("accept-language", "en")])));
    }

    #[test]
    fn absent_in_both_matches_and_absent_in_one_does_not() {
        let s = selecting(&[("vary", "accept-language")], &[]);
        assert!(s.matches(&headers(&[])));
        assert!(!s.matches(&headers(&[("accept-language", "en")])));
    }

    #[test]
    fn star_and_bad_names_vary_on_everything() {
        for vary in ["*", "accept, *", "bad name"] {
            assert!(
                matches!(
                    Vary::of(&headers(&[("vary", vary)]), &HeaderMap::new()),
                    Vary::Any
                ),
                "{vary}"
            );
        }
    }
}
