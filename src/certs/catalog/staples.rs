//! When entries are to be loaded again for their OCSP responses: a stapled response stops
//! being current at its nextUpdate, and one dated ahead of this host's clock becomes
//! current at its thisUpdate, with no change on disk to say so.

use std::path::PathBuf;

use super::{Catalog, Stamp};

impl Catalog {
    /// The earliest time (seconds since the epoch) an entry's OCSP response is to be
    /// judged again.
    pub fn next_ocsp_check(&self) -> Option<i64> {
        self.entries
            .values()
            .chain([&self.fallback])
            .filter_map(|e| e.serving.as_ref()?.ocsp.as_ref()?.recheck)
            .min()
    }

    /// The certificate files of the entries (the server-wide one included) whose OCSP
    /// response is due to be judged again at `now`; those entries are marked to be read
    /// and loaded again although their files did not change. The reloader refreshes them
    /// as it would after an event on those files.
    pub fn ocsp_due(&mut self, now: i64) -> Vec<PathBuf> {
        let mut due = Vec::new();
        for entry in self.entries.values_mut().chain([&mut self.fallback]) {
            let Some(note) = entry.serving.as_mut().and_then(|l| l.ocsp.as_mut()) else {
                continue;
            };
            if note.recheck.is_none_or(|at| at > now) {
                continue;
            }
            // Once: the load that follows sets the next time, if any.
            note.recheck = None;
            entry.stamp = Stamp::default();
            entry.digest = None;
            due.push(entry.source.cert.clone());
        }
        due
    }
}
