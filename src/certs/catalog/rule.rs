//! The store's rule (DESIGN.md, "never make things worse"): whether a version that
//! serves badly is worth loading, what a refused version leaves for the report, and what
//! the passing of time changes (a version that expires while serving).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::look::{look, Look};
use super::{Catalog, Changes, Rejected};
use crate::certs::check::{self, Code, Finding};
use crate::certs::index::{Outranked, Served};
use crate::certs::load::{Leaf, LoadError, Loaded, Role};
use crate::names::Pattern;

/// A refused version, for the report.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) findings: Vec<Finding>,
    /// Why, when no finding says so.
    pub(super) reason: Option<String>,
    /// Its leaf, when it could be read.
    pub(super) leaf: Option<Box<Leaf>>,
}

impl From<&LoadError> for Refused {
    fn from(error: &LoadError) -> Self {
        match error {
            LoadError::Refused(findings, leaf) => Self {
                findings: findings.clone(),
                reason: None,
                leaf: leaf.clone(),
            },
            LoadError::Worse { findings, .. } => Self {
                findings: findings.clone(),
                reason: Some(error.to_string()),
                leaf: None,
            },
            other => Self {
                findings: Vec::new(),
                reason: Some(other.to_string()),
                leaf: None,
            },
        }
    }
}

/// The store's rule for a version that does not serve at its best (errors, or a chain
/// that leads to no trusted root): it is refused when each name it covers is served now
/// by a version that outranks it ([`Standing::better_than`]: fewer errors, or the same
/// errors and a trusted chain), so that it would help no client; the version serving the
/// first such name is returned, with why. Names are served by the entries that claim them,
/// an exact name also by those that claim its wildcard (an exact name would take it from
/// them), and the server's own names by the server-wide certificate too. A name nothing
/// else serves (the alternative is the server-wide certificate and a certain mismatch), or
/// served by versions no better, makes it worth loading.
pub(super) fn worse(
    claims: &HashMap<Pattern, Vec<Arc<Served>>>,
    fallback: &Loaded,
    loaded: &Loaded,
    now: i64,
) -> Option<(Arc<Served>, Outranked)> {
    let own = loaded.served.standing_at(now);
    if own.is_best() {
        return None;
    }
    let mut serving = None;
    for name in &loaded.names {
        let parent = name.wildcard();
        let mut better = None;
        for pattern in std::iter::once(name).chain(parent.as_ref()) {
            let claimed = claims.get(pattern).map(Vec::as_slice).unwrap_or_default();
            let server_wide = fallback.names.contains(pattern).then_some(&fallback.served);
            better = claimed
                .iter()
                .chain(server_wide)
                .find_map(|s| Some((s, s.standing_at(now).better_than(own)?)));
            if better.is_some() {
                break;
            }
        }
        let (better, why) = better?;
        serving.get_or_insert_with(|| (Arc::clone(better), why));
    }
    serving
}

impl Catalog {
    /// The server-wide certificate's files looked at again: a new version replaces the
    /// one serving unless that one outranks it (fewer errors, or a trusted chain).
    pub(super) fn refresh_fallback(&mut self, changes: &mut Changes) {
        // Its OCSP response may have come or gone since.
        self.fallback.source.ocsp = crate::certs::fallback::ocsp_of(&self.fallback.source.cert);
        let look = look(
            &self.fallback.source,
            Some(&self.fallback),
            &self.ctx,
            Role::ServerWide,
        );
        let (stamp, digest, result) = match look {
            Look::Same => return,
            Look::Restamped(stamp) => {
                self.fallback.stamp = *stamp;
                return;
            }
            Look::Changed(changed) => *changed,
        };
        self.fallback.stamp = stamp;
        self.fallback.digest = digest;
        let id = Arc::clone(&self.fallback.source.id);
        let now = check::now();
        let current = self.fallback().served.standing_at(now);
        let result =
            result.and_then(
                |loaded| match current.better_than(loaded.served.standing_at(now)) {
                    Some(why) => Err(LoadError::Worse {
                        findings: loaded.findings,
                        serving: Arc::clone(&id),
                        why,
                    }),
                    None => Ok(loaded),
                },
            );
        match result {
            Ok(mut loaded) => {
                self.fallback.codes = loaded.findings.iter().map(|f| f.code).collect();
                changes.note_findings(&mut loaded);
                let old = self.fallback().names.iter();
                let touched: Vec<Pattern> = loaded.names.iter().chain(old).cloned().collect();
                self.dirty.extend(touched);
                self.fallback.serving = Some(loaded);
                self.fallback.refused = None;
                changes.fallback_replaced = true;
            }
            Err(error) => {
                self.fallback.refused = Some(Box::new(Refused::from(&error)));
                changes.rejected.push(Rejected {
                    kept: Some(Arc::clone(&id)),
                    id,
                    error,
                });
            }
        }
    }

    /// Full rescans: the entries serving with errors are logged again, those that expired
    /// while serving said so, and names whose versions expired or became valid since they
    /// were ranked are ranked again (an expired version gives way to a valid one).
    pub(super) fn judge_dates(&mut self, changes: &mut Changes) {
        let now = check::now();
        let mut rerank = Vec::new();
        let just: HashSet<&Arc<str>> = changes.added.iter().chain(&changes.replaced).collect();
        let fallback = self.fallback.serving.as_ref();
        if let Some(loaded) = fallback.filter(|l| !l.served.problems.is_empty()) {
            if !changes.fallback_replaced {
                let id = Arc::clone(&loaded.source.id);
                changes.degraded.push((id, loaded.findings.clone()));
            }
        }
        let mut degraded = Vec::new();
        for (id, entry) in &mut self.entries {
            let Some(loaded) = &entry.serving else {
                continue;
            };
            let problems = loaded.served.problems_at(now);
            if !loaded.served.problems.is_empty() && !just.contains(id) {
                degraded.push((Arc::clone(id), loaded.findings.clone()));
            }
            if problems.codes().any(|c| c == Code::Expired)
                && !loaded.served.problems.codes().any(|c| c == Code::Expired)
            {
                changes
                    .expired
                    .push((Arc::clone(id), loaded.served.not_after));
            }
            if problems != entry.ranked {
                entry.ranked = problems;
                rerank.extend(loaded.names.iter().cloned());
            }
        }
        changes.degraded.extend(degraded);
        changes.reranked = !rerank.is_empty();
        self.dirty.extend(rerank);
    }
}
