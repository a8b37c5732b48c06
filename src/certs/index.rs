//! The immutable index the handshake path reads: exact names, one-label wildcards and the
//! server-wide certificate. A new index is built off the handshake path and published
//! whole; a handshake does one `ArcSwap::load` and at most two hash lookups, whatever the
//! size of the store.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::ResolvesServerCert;
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::load::Loaded;
use crate::names::{normalize, wildcard_parent, Pattern};

/// One servable certificate as the handshake sees it.
#[derive(Debug)]
pub struct Served {
    /// The entry it came from (`example.com.pem`, `live/example.com/`), for logs.
    pub id: Arc<str>,
    /// Hands rustls this certificate and key.
    pub resolver: Arc<dyn ResolvesServerCert>,
    /// Key algorithm, for the ECDSA-before-RSA preference.
    pub algorithm: SignatureAlgorithm,
    /// What the key can sign with, compared with the client's list.
    pub schemes: Box<[SignatureScheme]>,
    /// The leaf's notAfter (Unix seconds): the later one wins between equals.
    pub not_after: i64,
}

impl Served {
    fn fits(&self, client: &[SignatureScheme]) -> bool {
        self.schemes.iter().any(|s| client.contains(s))
    }

    /// ECDSA first (small, fast), then RSA, then the rest (Ed25519 is rarely accepted).
    fn rank(&self) -> u8 {
        match self.algorithm {
            SignatureAlgorithm::ECDSA => 0,
            SignatureAlgorithm::RSA => 1,
            _ => 2,
        }
    }
}

/// How the chosen certificate matched the name asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// A certificate names it.
    Exact,
    /// A `*.parent` certificate covers it.
    Wildcard,
    /// Nothing covers it (or no SNI was sent): the server-wide certificate.
    Fallback,
}

impl Match {
    /// The word used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Wildcard => "wildcard",
            Self::Fallback => "fallback",
        }
    }
}

/// Candidates for one name, best first.
type Candidates = Box<[Arc<Served>]>;

fn fitting<'a>(candidates: &'a Candidates, schemes: &[SignatureScheme]) -> Option<&'a Arc<Served>> {
    candidates.iter().find(|s| s.fits(schemes))
}

/// A snapshot of the store.
#[derive(Debug)]
pub struct Index {
    exact: HashMap<Box<str>, Candidates>,
    /// Keyed by the parent: `example.com` for `*.example.com`.
    wildcard: HashMap<Box<str>, Candidates>,
    fallback: Arc<Served>,
    entries: usize,
}

impl Index {
    /// Builds the index from loaded entries and the server-wide certificate.
    ///
    /// The server-wide certificate's own names are indexed after every entry, so that a
    /// client asking for the server's name matches (strict SNI accepts it) while an entry
    /// for the same name still wins.
    pub fn build(entries: &[Loaded], fallback: &Loaded) -> Self {
        let mut exact: HashMap<Box<str>, Vec<Arc<Served>>> = HashMap::with_capacity(entries.len());
        let mut wildcard: HashMap<Box<str>, Vec<Arc<Served>>> = HashMap::new();
        for (rank, entry) in entries.iter().map(|e| (0u8, e)).chain([(1u8, fallback)]) {
            for name in &entry.names {
                let (map, key) = match name {
                    Pattern::Exact(n) => (&mut exact, n),
                    Pattern::Wildcard(p) => (&mut wildcard, p),
                };
                let list = map.entry(key.clone()).or_default();
                if rank == 1 && !list.is_empty() {
                    continue;
                }
                list.push(Arc::clone(&entry.served));
            }
        }
        let finish = |map: HashMap<Box<str>, Vec<Arc<Served>>>| -> HashMap<Box<str>, Candidates> {
            map.into_iter()
                .map(|(k, mut v)| {
                    v.sort_by(|a, b| {
                        (a.rank(), b.not_after, &a.id).cmp(&(b.rank(), a.not_after, &b.id))
                    });
                    (k, v.into_boxed_slice())
                })
                .collect()
        };
        Self {
            exact: finish(exact),
            wildcard: finish(wildcard),
            fallback: Arc::clone(&fallback.served),
            entries: entries.len(),
        }
    }

    /// Picks the certificate for `sni` and a client that accepts `schemes`.
    ///
    /// Exact names beat wildcards; among a name's candidates the first the client can
    /// verify wins (ECDSA before RSA, then the later notAfter). When no candidate fits the
    /// client's schemes the best one is still returned: the name is right, and the client
    /// gets a clear handshake error rather than a wrong certificate.
    pub fn select(&self, sni: Option<&str>, schemes: &[SignatureScheme]) -> (&Arc<Served>, Match) {
        let Some(sni) = sni else {
            return (&self.fallback, Match::Fallback);
        };
        let name = normalize(sni);
        let exact = self.exact.get(name.as_ref());
        let wild = wildcard_parent(&name).and_then(|p| self.wildcard.get(p));
        if let Some(s) = exact.and_then(|c| fitting(c, schemes)) {
            return (s, Match::Exact);
        }
        if let Some(s) = wild.and_then(|c| fitting(c, schemes)) {
            return (s, Match::Wildcard);
        }
        if let Some(s) = exact.and_then(|c| c.first()) {
            return (s, Match::Exact);
        }
        if let Some(s) = wild.and_then(|c| c.first()) {
            return (s, Match::Wildcard);
        }
        (&self.fallback, Match::Fallback)
    }

    /// The server-wide certificate.
    pub fn fallback(&self) -> &Arc<Served> {
        &self.fallback
    }

    /// How many entries (not names) the index was built from.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// How many distinct exact names and wildcards it answers for.
    pub fn names(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}
