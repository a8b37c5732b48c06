//! When entries are to be loaded again for their OCSP responses: a stapled response stops
//! being current at its nextUpdate, and one dated ahead of this host's clock becomes
//! current at its thisUpdate, with no change on disk to say so.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Catalog, Scope, Stamp};
use crate::certs::discover;

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

    /// The parts of the store holding the entries whose OCSP response is due to be judged
    /// again at `now`; those entries are marked to be read and loaded again even though
    /// their files did not change.
    pub fn ocsp_due(&mut self, now: i64) -> HashSet<Scope> {
        let mut scopes = HashSet::new();
        let fallback = std::iter::once((None, &mut self.fallback));
        let entries = self.entries.iter_mut().map(|(id, e)| (Some(id), e));
        for (id, entry) in entries.chain(fallback) {
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
            scopes.insert(id.map_or(Scope::Fallback, |id| scope_of_entry(id)));
        }
        scopes
    }
}

/// The narrowest refresh that reads entry `id` again.
fn scope_of_entry(id: &str) -> Scope {
    if let Some(dir) = id.strip_suffix('/') {
        return Scope::Dir(PathBuf::from(dir));
    }
    match id.rsplit_once('/') {
        Some((dir, _)) => Scope::Dir(PathBuf::from(dir)),
        None => match discover::stem_of(id) {
            Some(stem) => Scope::Stem(stem.to_owned()),
            None => Scope::Top,
        },
    }
}
