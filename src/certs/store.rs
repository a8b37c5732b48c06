//! The store as the rest of the program sees it: the index in force, read by handshakes
//! with one atomic load, and a generation that counts the refreshes, for whoever must know
//! that a change on disk has been looked at (tests, the admin interface).

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use rustls::SignatureScheme;

use super::index::{Index, Match};

/// The last refresh the reloader completed.
#[derive(Debug, Clone, Copy)]
pub struct Refreshed {
    /// Refreshes completed since the store was opened; its load is the first.
    pub generation: u64,
    /// When that refresh started looking at the disk.
    pub started: Instant,
}

/// What the metrics say of the store, published by the reloader after each refresh that
/// changed or refused something (a scrape reads it; nothing is computed per scrape but
/// the dates against now).
#[derive(Debug, Default)]
pub struct StoreSummary {
    /// Entries serving without errors, serving with errors, refused.
    pub tally: (usize, usize, usize),
    /// The notAfter of every certificate in use (the server-wide one included), sorted.
    pub not_afters: Box<[i64]>,
    /// Each serving entry's notAfter, when per-entry metrics are on.
    pub entries: Box<[(Arc<str>, i64)]>,
    /// Refreshes that changed something, refused a version, or could not read the store.
    pub reloads: [u64; 3],
    /// Unix time of the last refresh.
    pub last_refresh: i64,
}

impl StoreSummary {
    /// `(state, entries)` for `store_entries{state}`.
    pub fn states(&self) -> [(&'static str, usize); 3] {
        let (serving, degraded, refused) = self.tally;
        [
            ("serving", serving),
            ("serving-with-errors", degraded),
            ("refused", refused),
        ]
    }

    /// `(result, refreshes)` for `store_reloads_total{result}`.
    pub fn reloads(&self) -> [(&'static str, u64); 3] {
        let [ok, rejected, error] = self.reloads;
        [("ok", ok), ("rejected", rejected), ("error", error)]
    }

    /// Unix time of the last refresh.
    pub fn last_refresh(&self) -> i64 {
        self.last_refresh
    }

    /// Certificates in use whose notAfter is before `when`.
    pub fn expiring_before(&self, when: i64) -> usize {
        self.not_afters.partition_point(|t| *t < when)
    }

    /// The earliest notAfter of the certificates in use.
    pub fn earliest_expiry(&self) -> i64 {
        self.not_afters.first().copied().unwrap_or(0)
    }

    /// Each serving entry with its notAfter (empty unless per-entry metrics are on).
    pub fn entries(&self) -> &[(Arc<str>, i64)] {
        &self.entries
    }
}

/// Two kinds of client, by the signatures they take: one that takes ECDSA (and RSA), one
/// that takes only RSA. Whoever must know what a name is served asks for both.
pub(super) const CLIENTS: [&[SignatureScheme]; 2] = [
    &[
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ],
    &[
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ],
];

/// The published certificate index.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Index>,
    refreshed: watch::Sender<Refreshed>,
    summary: ArcSwap<StoreSummary>,
}

impl Store {
    /// A store serving `index`, at generation 1.
    pub fn new(index: Index) -> Self {
        let (refreshed, _) = watch::channel(Refreshed {
            generation: 1,
            started: Instant::now(),
        });
        Self {
            current: ArcSwap::from_pointee(index),
            refreshed,
            summary: ArcSwap::from_pointee(StoreSummary::default()),
        }
    }

    /// The summary of the last refresh that changed or refused something.
    pub fn summary(&self) -> Arc<StoreSummary> {
        self.summary.load_full()
    }

    pub(super) fn set_summary(&self, summary: StoreSummary) {
        self.summary.store(Arc::new(summary));
    }

    /// The index in force now: one atomic load, no lock.
    pub fn index(&self) -> arc_swap::Guard<Arc<Index>> {
        self.current.load()
    }

    /// Refreshes completed so far (each looks at part of the store, or all of it, whether
    /// or not it changed anything).
    pub fn generation(&self) -> u64 {
        self.refreshed.borrow().generation
    }

    /// Waits until a refresh that started at `since` or later has completed, and returns
    /// it: everything on disk before `since` has then been looked at (if an event or a
    /// rescan led a refresh there), and its outcome is what handshakes get.
    pub async fn refreshed_since(&self, since: Instant) -> Refreshed {
        let mut updates = self.refreshed.subscribe();
        // The sender lives as long as `self`, so the wait ends only with a refresh.
        let seen = updates.wait_for(|r| r.started >= since).await.map(|r| *r);
        seen.expect("the store's sender outlives its receivers")
    }

    /// Whether entries other than `id` serve `name` to both kinds of client, each at its
    /// best (no errors, a chain to a trusted root) and valid `days` more days at least:
    /// what ACME asks before it renews a certificate that would not serve.
    pub fn served_well_by_others(&self, name: &str, id: &str, days: i64) -> bool {
        let index = self.index();
        let now = super::check::now();
        CLIENTS.iter().all(|schemes| {
            let (served, matched) = index.select(Some(name), schemes);
            matched != Match::Fallback
                && *served.id != *id
                && served.standing_at(now).is_best()
                && served.not_after - now >= days * 86_400
        })
    }

    /// Replaces the index for every handshake that starts from now on.
    pub(super) fn publish(&self, index: Index) {
        self.current.store(Arc::new(index));
    }

    /// Counts a refresh that started at `started`.
    pub(super) fn refreshed(&self, started: Instant) {
        self.refreshed.send_modify(|r| {
            r.generation += 1;
            r.started = started;
        });
    }
}
