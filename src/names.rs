//! DNS names as mailfront compares them: ASCII case-insensitive, one trailing dot ignored,
//! and `*.` wildcards that cover exactly one label (RFC 6125 §6.4.3).
//!
//! Both the certificate index and the route table use these rules, so that a name a
//! certificate serves and a name a route sends to a backend are matched the same way.

use std::borrow::Cow;
use std::fmt;

/// Lower-cases `name` and strips one trailing dot, borrowing when nothing changes.
///
/// rustls already hands us SNI in this form; this keeps the index correct for every
/// other caller (routes, the checks, tests) without an allocation in the common case.
pub fn normalize(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The part of `name` a one-label wildcard would have to cover: `b.example.com` for
/// `a.b.example.com`. `None` for a single-label name, which no wildcard covers.
pub fn wildcard_parent(name: &str) -> Option<&str> {
    let (_, parent) = name.split_once('.')?;
    (!parent.is_empty()).then_some(parent)
}

/// The host of an HTTP `Host` value (or a request-target's authority): without its port,
/// and an IPv6 literal without its brackets.
pub fn host_of(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match value.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => value,
    }
}

/// A name as written in a certificate's SAN or a route's `sni`: exact, or `*.parent`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Matches this one name only.
    Exact(Box<str>),
    /// `*.parent`: matches `x.parent` for any single label `x`, never `parent` itself.
    Wildcard(Box<str>),
}

impl Pattern {
    /// Parses and normalises a pattern, refusing what no client would match.
    ///
    /// Partial-label wildcards (`f*.example.com`), wildcards not in the leftmost label and
    /// wildcards directly over a top-level label (`*.com`) are refused, as browsers do.
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let name = normalize(raw.trim());
        let invalid = |why: &'static str| PatternError {
            name: raw.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if name.len() > 253 {
            return Err(invalid("the name is longer than 253 characters"));
        }
        let (wildcard, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_ref()),
        };
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(invalid("the name has an empty label"));
            }
            if label.len() > 63 {
                return Err(invalid("a label is longer than 63 characters"));
            }
            if label.contains('*') {
                return Err(invalid(
                    "a wildcard must be the whole leftmost label, as in *.example.com",
                ));
            }
            let ok = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(invalid(
                    "the name has a character outside a-z, 0-9, '-', '_'",
                ));
            }
        }
        if wildcard {
            if !rest.contains('.') {
                return Err(invalid("a wildcard must sit above at least two labels"));
            }
            Ok(Self::Wildcard(rest.into()))
        } else {
            Ok(Self::Exact(rest.into()))
        }
    }

    /// The wildcard that covers this exact name (`*.example.com` for
    /// `mail.example.com`); `None` for a wildcard, or a name of one label.
    pub fn wildcard(&self) -> Option<Self> {
        match self {
            Self::Exact(name) => wildcard_parent(name).map(|p| Self::Wildcard(p.into())),
            Self::Wildcard(_) => None,
        }
    }

    /// Whether this pattern covers `name` (already normalised).
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => **exact == *name,
            Self::Wildcard(parent) => wildcard_parent(name) == Some(parent),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// A name that cannot be served or routed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS name {name:?}: {why}")]
pub struct PatternError {
    /// The name as it was written.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_strips_one_dot() {
        assert_eq!(normalize("Mail.Example.COM."), "mail.example.com");
        assert_eq!(normalize("mail.example.com"), "mail.example.com");
        assert!(matches!(normalize("mail.example.com"), Cow::Borrowed(_)));
        assert_eq!(normalize("a.."), "a.");
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let p = Pattern::parse("*.Example.com").unwrap();
        assert_eq!(p, Pattern::Wildcard("example.com".into()));
        assert!(p.covers("mail.example.com"));
        assert!(!p.covers("example.com"));
        assert!(!p.covers("a.b.example.com"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "f*.example.com",
            "a.*.example.com",
            "*.com",
            "a..b",
            "exa mple.com",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn parent_of_single_label_is_none() {
        assert_eq!(wildcard_parent("localhost"), None);
        assert_eq!(wildcard_parent("a.b.c"), Some("b.c"));
    }
}
