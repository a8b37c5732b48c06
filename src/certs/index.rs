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

/// Two or more entries with the same key type claim one name; `winner` serves it.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The name claimed.
    pub name: Pattern,
    /// The entry that serves it (the later notAfter; then the first id).
    pub winner: Arc<str>,
    /// The entries that do not serve it.
    pub losers: Vec<Arc<str>>,
}

/// Orders each name's candidates best first and records same-type conflicts.
fn finish(
    map: HashMap<Box<str>, Vec<Arc<Served>>>,
    pattern: fn(Box<str>) -> Pattern,
    conflicts: &mut Vec<Conflict>,
) -> HashMap<Box<str>, Candidates> {
    let mut out = HashMap::with_capacity(map.len());
    for (key, mut list) in map {
        if list.len() > 1 {
            list.sort_by(|a, b| {
                (a.rank(), b.not_after, &a.id).cmp(&(b.rank(), a.not_after, &b.id))
            });
            for group in list.chunk_by(|a, b| a.rank() == b.rank()) {
                if let [winner, losers @ ..] = group {
                    if !losers.is_empty() {
                        conflicts.push(Conflict {
                            name: pattern(key.clone()),
                            winner: Arc::clone(&winner.id),
                            losers: losers.iter().map(|l| Arc::clone(&l.id)).collect(),
                        });
                    }
                }
            }
        }
        out.insert(key, list.into_boxed_slice());
    }
    out
}

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
    /// Builds the index from loaded entries and the server-wide certificate, and lists the
    /// names two entries of the same key type claim (the first listed serves).
    ///
    /// The server-wide certificate's own names are indexed after every entry, so that a
    /// client asking for the server's name matches (strict SNI accepts it) while an entry
    /// for the same name still wins.
    pub fn build<'a>(
        entries: impl IntoIterator<Item = &'a Loaded>,
        fallback: &'a Loaded,
    ) -> (Self, Vec<Conflict>) {
        let mut exact: HashMap<Box<str>, Vec<Arc<Served>>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<Arc<Served>>> = HashMap::new();
        let mut count = 0;
        for entry in entries {
            count += 1;
            for name in &entry.names {
                let (map, key) = match name {
                    Pattern::Exact(n) => (&mut exact, n),
                    Pattern::Wildcard(p) => (&mut wildcard, p),
                };
                map.entry(key.clone())
                    .or_default()
                    .push(Arc::clone(&entry.served));
            }
        }
        for name in &fallback.names {
            let (map, key) = match name {
                Pattern::Exact(n) => (&mut exact, n),
                Pattern::Wildcard(p) => (&mut wildcard, p),
            };
            map.entry(key.clone())
                .or_insert_with(|| vec![Arc::clone(&fallback.served)]);
        }
        let mut conflicts = Vec::new();
        let exact = finish(exact, Pattern::Exact, &mut conflicts);
        let wildcard = finish(wildcard, Pattern::Wildcard, &mut conflicts);
        let index = Self {
            exact,
            wildcard,
            fallback: Arc::clone(&fallback.served),
            entries: count,
        };
        (index, conflicts)
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
