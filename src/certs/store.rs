//! The store as the rest of the program sees it: the index in force, read by handshakes
//! with one atomic load, and a generation that counts the refreshes, for whoever must know
//! that a change on disk has been looked at (tests, the admin interface).

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::index::Index;

/// The last refresh the reloader completed.
#[derive(Debug, Clone, Copy)]
pub struct Refreshed {
    /// Refreshes completed since the store was opened; its load is the first.
    pub generation: u64,
    /// When that refresh started looking at the disk.
    pub started: Instant,
}

/// The published certificate index.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Index>,
    refreshed: watch::Sender<Refreshed>,
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
        }
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
