//! The immutable index the handshake path reads: exact names, one-label wildcards and the
//! server-wide certificate. A new index is built off the handshake path and published
//! whole; a handshake does one `ArcSwap::load` and at most two hash lookups, whatever the
//! size of the store.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::ResolvesServerCert;
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::check::Problems;
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
    /// The leaf's validity (Unix seconds): the later notAfter wins between equals.
    pub not_before: i64,
    pub not_after: i64,
    /// The errors it serves with ([`Problems`]): a version without any ranks first.
    pub problems: Problems,
    /// Whether its chain leads to a root of the trust store (not self-signed, not
    /// `untrusted-issuer`, not `chain-incomplete`): among versions with the same errors,
    /// a trusted one ranks first, whatever the dates.
    pub trusted: bool,
}

impl Served {
    /// Its problems at `now`, the dates' included (a version expires while it serves).
    pub fn problems_at(&self, now: i64) -> Problems {
        self.problems.at(self.not_before, self.not_after, now)
    }

    /// How well it serves at `now`, for the store's rule and the ranking.
    pub fn standing_at(&self, now: i64) -> Standing {
        Standing {
            problems: self.problems_at(now),
            trusted: self.trusted,
        }
    }

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

/// How well a version serves its names, as the store's rule compares versions
/// (DESIGN.md, "the store's rule"): by the errors it serves with first, then by whether
/// its chain leads to a trusted root. Dates (a later notAfter) only order versions of
/// equal standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The errors it serves with, the dates' included.
    pub problems: Problems,
    /// Whether its chain leads to a root of the trust store.
    pub trusted: bool,
}

/// Why one version outranks another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outranked {
    /// It has some of the other's errors and none besides.
    Errors,
    /// Same errors, and its chain leads to a trusted root while the other's does not.
    Trust,
}

impl Standing {
    /// A version serving without errors whose chain leads to a trusted root: nothing
    /// outranks it but a later one.
    pub fn is_best(self) -> bool {
        self.problems.is_empty() && self.trusted
    }

    /// Why `self` is strictly better than `other`, if it is: fewer errors (some of the
    /// other's and no more), or the same errors and a trusted chain against an untrusted
    /// one. Versions neither is better than are ranked by date.
    pub fn better_than(self, other: Self) -> Option<Outranked> {
        if self.problems.fewer_than(other.problems) {
            return Some(Outranked::Errors);
        }
        (self.problems == other.problems && self.trusted && !other.trusted)
            .then_some(Outranked::Trust)
    }

    /// The sort key of the ranking: without errors first, then trusted.
    fn key(self) -> (bool, bool) {
        (!self.problems.is_empty(), !self.trusted)
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

/// How many shards the index is split into. A change copies only the shards holding the
/// names it touches (about 1/256 of the store each), not the whole index.
const SHARDS: usize = 256;

/// Names whose key hashes to one shard.
#[derive(Debug, Default, Clone)]
struct Shard {
    exact: HashMap<Box<str>, Candidates>,
    /// Keyed by the parent: `example.com` for `*.example.com`.
    wildcard: HashMap<Box<str>, Candidates>,
}

/// FNV-1a: cheap, and independent of the maps' random seeds, so a name always lives in
/// the same shard.
fn shard_of(key: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

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

/// Orders one name's candidates best first (a version serving without errors, then one
/// whose chain leads to a trusted root, then ECDSA, RSA, others; then the later
/// notAfter; then the entry id) and records conflicts among those of one key type. `now`
/// dates the problems: a version that expired while serving ranks below one that did not.
pub fn rank(name: &Pattern, list: &mut [Arc<Served>], conflicts: &mut Vec<Conflict>, now: i64) {
    if list.len() < 2 {
        return;
    }
    let key = |s: &Arc<Served>| (s.standing_at(now).key(), s.rank());
    list.sort_by(|a, b| (key(a), b.not_after, &a.id).cmp(&(key(b), a.not_after, &b.id)));
    for kind in 0..=2 {
        let mut same = list.iter().filter(|s| s.rank() == kind);
        let Some(winner) = same.next() else { continue };
        let losers: Vec<Arc<str>> = same.map(|l| Arc::clone(&l.id)).collect();
        if !losers.is_empty() {
            conflicts.push(Conflict {
                name: name.clone(),
                winner: Arc::clone(&winner.id),
                losers,
            });
        }
    }
}

fn fitting<'a>(candidates: &'a Candidates, schemes: &[SignatureScheme]) -> Option<&'a Arc<Served>> {
    candidates.iter().find(|s| s.fits(schemes))
}

/// A snapshot of the store.
#[derive(Debug)]
pub struct Index {
    shards: Box<[Arc<Shard>]>,
    fallback: Arc<Served>,
    entries: usize,
}

impl Index {
    /// An index with no entries: every name gets `fallback`.
    pub fn empty(fallback: Arc<Served>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            fallback,
            entries: 0,
        }
    }

    /// A copy with each name in `updates` given its new candidates (ranked; empty removes
    /// the name). Shards no update touches are shared with `self`, so a one-entry change
    /// costs a copy of one or two shards whatever the size of the store.
    pub fn with_updates(
        &self,
        fallback: Arc<Served>,
        entries: usize,
        updates: Vec<(Pattern, Vec<Arc<Served>>)>,
    ) -> Self {
        let mut shards = self.shards.to_vec();
        for (pattern, candidates) in updates {
            let (key, wildcard) = match pattern {
                Pattern::Exact(key) => (key, false),
                Pattern::Wildcard(key) => (key, true),
            };
            // Copies the shard on its first update here; later updates reuse the copy.
            let shard = Arc::make_mut(&mut shards[shard_of(&key)]);
            let map = if wildcard {
                &mut shard.wildcard
            } else {
                &mut shard.exact
            };
            if candidates.is_empty() {
                map.remove(&key);
            } else {
                map.insert(key, candidates.into_boxed_slice());
            }
        }
        Self {
            shards: shards.into_boxed_slice(),
            fallback,
            entries,
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
        let exact = self.shards[shard_of(&name)].exact.get(name.as_ref());
        let wild = wildcard_parent(&name).and_then(|p| self.shards[shard_of(p)].wildcard.get(p));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::check::Code;

    #[derive(Debug)]
    struct NoCert;

    impl ResolvesServerCert for NoCert {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    fn served(id: &str, algorithm: SignatureAlgorithm, not_after: i64) -> Arc<Served> {
        let scheme = match algorithm {
            SignatureAlgorithm::ECDSA => SignatureScheme::ECDSA_NISTP256_SHA256,
            _ => SignatureScheme::RSA_PSS_SHA256,
        };
        Arc::new(Served {
            id: id.into(),
            resolver: Arc::new(NoCert),
            algorithm,
            schemes: Box::new([scheme]),
            not_before: 0,
            not_after,
            problems: Problems::default(),
            trusted: true,
        })
    }

    fn index(updates: Vec<(Pattern, Vec<Arc<Served>>)>) -> (Index, Vec<Conflict>) {
        index_at(updates, 0)
    }

    fn index_at(updates: Vec<(Pattern, Vec<Arc<Served>>)>, now: i64) -> (Index, Vec<Conflict>) {
        let mut conflicts = Vec::new();
        let updates = updates
            .into_iter()
            .map(|(name, mut list)| {
                rank(&name, &mut list, &mut conflicts, now);
                (name, list)
            })
            .collect();
        let fallback = served("fallback", SignatureAlgorithm::ECDSA, 0);
        let index = Index::empty(Arc::clone(&fallback)).with_updates(fallback, 3, updates);
        (index, conflicts)
    }

    const ECDSA_AND_RSA: &[SignatureScheme] = &[
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
    ];

    #[test]
    fn later_not_after_wins_and_the_conflict_is_reported() {
        let name = Pattern::Exact("mail.example.com".into());
        let (index, conflicts) = index(vec![(
            name.clone(),
            vec![
                served("a-old.pem", SignatureAlgorithm::ECDSA, 100),
                served("z-new.pem", SignatureAlgorithm::ECDSA, 200),
                served("rsa.pem", SignatureAlgorithm::RSA, 300),
            ],
        )]);
        let (chosen, how) = index.select(Some("mail.example.com"), ECDSA_AND_RSA);
        assert_eq!((&*chosen.id, how), ("z-new.pem", Match::Exact));
        let (chosen, _) =
            index.select(Some("mail.example.com"), &[SignatureScheme::RSA_PSS_SHA256]);
        assert_eq!(&*chosen.id, "rsa.pem");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(&*conflicts[0].winner, "z-new.pem");
        assert_eq!(conflicts[0].losers, vec![Arc::<str>::from("a-old.pem")]);
    }

    /// A version serving with errors ranks below every version without: an RSA one serves
    /// ECDSA clients too rather than an expired ECDSA one; among ECDSA versions the clean
    /// one wins over a later but incomplete one.
    #[test]
    fn versions_without_problems_rank_first() {
        let degraded = |id: &str, algorithm, not_after, code| {
            let mut s = Arc::into_inner(served(id, algorithm, not_after)).unwrap();
            s.problems = Problems::of([code]);
            Arc::new(s)
        };
        let name = Pattern::Exact("mail.example.com".into());
        let (index, _) = index(vec![(
            name,
            vec![
                degraded(
                    "ecdsa-late.pem",
                    SignatureAlgorithm::ECDSA,
                    900,
                    Code::ChainIncomplete,
                ),
                served("rsa.pem", SignatureAlgorithm::RSA, 300),
            ],
        )]);
        assert_eq!(
            &*index.select(Some("mail.example.com"), ECDSA_AND_RSA).0.id,
            "rsa.pem"
        );
        let (index, conflicts) = index_at(
            vec![(
                Pattern::Exact("mail.example.com".into()),
                vec![
                    served("expires.pem", SignatureAlgorithm::ECDSA, 100),
                    served("valid.pem", SignatureAlgorithm::ECDSA, 50),
                ],
            )],
            75,
        );
        assert_eq!(
            &*index.select(Some("mail.example.com"), ECDSA_AND_RSA).0.id,
            "expires.pem",
            "both valid at 75"
        );
        assert_eq!(&*conflicts[0].winner, "expires.pem");
        let (index, _) = index_at(
            vec![(
                Pattern::Exact("mail.example.com".into()),
                vec![
                    served("expired.pem", SignatureAlgorithm::ECDSA, 100),
                    served("rsa.pem", SignatureAlgorithm::RSA, 200),
                ],
            )],
            150,
        );
        assert_eq!(
            &*index.select(Some("mail.example.com"), ECDSA_AND_RSA).0.id,
            "rsa.pem",
            "the ECDSA one expired at 100"
        );
    }

    #[test]
    fn exact_beats_wildcard_and_updates_share_untouched_shards() {
        let (index, _) = index(vec![
            (
                Pattern::Wildcard("example.com".into()),
                vec![served("wild", SignatureAlgorithm::ECDSA, 900)],
            ),
            (
                Pattern::Exact("a.example.com".into()),
                vec![served("exact", SignatureAlgorithm::ECDSA, 1)],
            ),
        ]);
        assert_eq!(
            &*index.select(Some("a.example.com"), ECDSA_AND_RSA).0.id,
            "exact"
        );
        assert_eq!(
            &*index.select(Some("b.example.com"), ECDSA_AND_RSA).0.id,
            "wild"
        );
        assert_eq!(
            index.select(Some("example.com"), ECDSA_AND_RSA).1,
            Match::Fallback
        );
        let fallback = Arc::clone(index.fallback());
        let next = index.with_updates(
            fallback,
            2,
            vec![(Pattern::Exact("a.example.com".into()), vec![])],
        );
        assert_eq!(
            &*next.select(Some("a.example.com"), ECDSA_AND_RSA).0.id,
            "wild"
        );
        let shared = index
            .shards
            .iter()
            .zip(next.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, SHARDS - 1, "only the touched shard is copied");
    }
}
