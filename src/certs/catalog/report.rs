//! The catalog's [`Report`]: built on demand from what serves, never from a second scan.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::{Catalog, Changes, Entry, Origin, Refused, Scope};
use crate::certs::check::{self, date, CertFacts, Severity};
use crate::certs::discover::{self, Layout};
use crate::certs::index::{rank, Served};
use crate::certs::load::{Loaded, Summary};
use crate::certs::report::{NameRow, NotEntry, OcspRow, Refusal, Report, Row, State};

impl Catalog {
    /// Records the files found not to be entries: each is reported once, and a full scan
    /// forgets those gone.
    pub(super) fn note_strays(
        &mut self,
        scope: &Scope,
        strays: Vec<discover::Stray>,
        changes: &mut Changes,
    ) {
        if *scope == Scope::All {
            let found: HashSet<&Path> = strays.iter().map(|s| s.path.as_path()).collect();
            self.strays.retain(|path, _| found.contains(path.as_path()));
        }
        for stray in strays {
            if !self.strays.contains_key(&stray.path) {
                self.strays.insert(stray.path.clone(), stray.reason.clone());
                changes.strays.push(stray);
            }
        }
    }

    /// How many entries serve, serve with errors, and are refused: the report's counts
    /// without its rows (the start's log line, at 100,000 entries).
    pub fn tally(&self) -> (usize, usize, usize) {
        let now = check::now();
        let (mut serving, mut degraded, mut refused) = (0, 0, 0);
        for entry in self.entries.values() {
            match &entry.serving {
                Some(l) if l.served.problems_at(now).is_empty() => serving += 1,
                Some(_) => degraded += 1,
                None => refused += 1,
            }
        }
        (serving, degraded, refused)
    }

    /// What the metrics say of the store: [`Catalog::tally`] and the notAfter of every
    /// certificate in use (of each entry by name with `per_entry`).
    pub fn summary(&self, per_entry: bool) -> crate::certs::StoreSummary {
        let mut not_afters = Vec::with_capacity(self.serving + 1);
        let mut entries = Vec::new();
        not_afters.push(self.fallback().served.not_after);
        for (id, entry) in &self.entries {
            if let Some(loaded) = &entry.serving {
                not_afters.push(loaded.served.not_after);
                if per_entry {
                    entries.push((Arc::clone(id), loaded.served.not_after));
                }
            }
        }
        not_afters.sort_unstable();
        crate::certs::StoreSummary {
            tally: self.tally(),
            not_afters: not_afters.into(),
            entries: entries.into(),
            ..Default::default()
        }
    }

    /// The report of what serves now.
    pub fn report(&self) -> Report {
        let now = check::now();
        let (names, serves) = self.names(now);
        let entries = self
            .entries
            .values()
            .map(|entry| {
                let serves = serves.contains(&entry.source.id);
                row(
                    entry,
                    now,
                    if serves {
                        None
                    } else {
                        Some(State::Superseded)
                    },
                )
            })
            .collect();
        let mut server_wide = row(&self.fallback, now, None);
        if self.origin == Origin::Absent {
            // Made in memory to load the store as `run` would; `run` makes its own.
            server_wide = Row {
                state: State::Absent,
                issuer: None,
                key: None,
                not_after: None,
                days_left: None,
                codes: Vec::new(),
                reason: Some("not there yet: `run` generates a self-signed one".into()),
                ..server_wide
            };
        }
        let not_entries = self
            .strays
            .iter()
            .map(|(path, reason)| NotEntry {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect();
        let trust_skipped = self
            .ctx
            .trust
            .skipped
            .iter()
            .map(|(path, reason)| NotEntry {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect();
        Report {
            store: self.root.clone(),
            server_wide,
            entries,
            names,
            not_entries,
            trust_skipped,
            unreadable: self.root_gone.clone(),
        }
    }

    /// The report's row of entry `id` alone (an install's answer), without the cost of
    /// the whole report.
    pub fn row_of(&self, id: &str) -> Option<Row> {
        let entry = self.entries.get(id)?;
        let now = check::now();
        let serves = entry.serving.as_ref().is_some_and(|loaded| {
            loaded.names.iter().any(|name| {
                let mut list = self.claims.get(name).cloned().unwrap_or_default();
                rank(name, &mut list, &mut Vec::new(), now);
                let (first, also) = serving(&list);
                *first.id == *id || also.is_some_and(|a| *a.id == *id)
            })
        });
        Some(row(entry, now, (!serves).then_some(State::Superseded)))
    }

    /// Which entry serves each name (ranked as the index ranks them), and the entries that
    /// serve at least one.
    fn names(&self, now: i64) -> (Vec<NameRow>, HashSet<Arc<str>>) {
        let mut claimed: Vec<_> = self.claims.iter().collect();
        claimed.sort_by_key(|(name, _)| name.to_string());
        let mut rows = Vec::with_capacity(claimed.len());
        let mut serves = HashSet::new();
        for (name, list) in claimed {
            let mut list = list.clone();
            rank(name, &mut list, &mut Vec::new(), now);
            let (first, also) = serving(&list);
            serves.insert(Arc::clone(&first.id));
            serves.extend(also.map(|a| Arc::clone(&a.id)));
            let superseded = list
                .iter()
                .filter(|s| !Arc::ptr_eq(s, first) && also.is_none_or(|a| !Arc::ptr_eq(s, a)))
                .map(|s| s.id.to_string())
                .collect();
            rows.push(NameRow {
                name: name.to_string(),
                serves: first.id.to_string(),
                also: also.map(|a| a.id.to_string()),
                superseded,
            });
        }
        (rows, serves)
    }
}

/// The versions of a ranked list that serve: the first, and the first of another key
/// type (RSA beside ECDSA) when there is one.
fn serving(list: &[Arc<Served>]) -> (&Arc<Served>, Option<&Arc<Served>>) {
    let first = &list[0];
    (first, list.iter().find(|s| s.algorithm != first.algorithm))
}

/// The row of `entry`; `state` overrides the state of a version that serves.
fn row(entry: &Entry, now: i64, state: Option<State>) -> Row {
    let source = &entry.source;
    let files = source.all_files();
    let layout = match source.layout {
        Layout::Single => "single",
        Layout::Pair => "pair",
        Layout::Certbot => "certbot",
        Layout::Kubernetes => "kubernetes",
        Layout::Content => "content",
    };
    let mut row = Row {
        entry: source.id.to_string(),
        layout,
        state: State::Refused,
        names: Vec::new(),
        issuer: None,
        key: None,
        not_after: None,
        days_left: None,
        source: "files",
        renews: None,
        ocsp: None,
        files,
        codes: Vec::new(),
        findings: Vec::new(),
        reason: None,
        refused_version: None,
    };
    match &entry.serving {
        Some(loaded) => serving_row(&mut row, entry, loaded, now, state),
        None => {
            if let Some(refused) = &entry.refused {
                let leaf = refused.leaf.as_deref();
                row.names = leaf.map(|l| l.names.clone()).unwrap_or_default();
                describe(&mut row, leaf.map(|l| &l.summary), now);
                let refusal = refusal(refused);
                (row.codes, row.findings, row.reason) =
                    (refusal.codes, refusal.findings, refusal.reason);
            }
        }
    }
    row
}

fn serving_row(row: &mut Row, entry: &Entry, loaded: &Loaded, now: i64, state: Option<State>) {
    let problems = loaded.served.problems_at(now);
    row.state = match state {
        Some(state) => state,
        None if problems.is_empty() => State::Serving,
        None => State::ServingWithErrors,
    };
    row.names = loaded.names.iter().map(ToString::to_string).collect();
    // Read from the certificate served, only when a report is made.
    let leaf = CertFacts::parse(&loaded.certified.cert[0]).ok();
    describe(row, leaf.as_ref().map(Summary::of).as_ref(), now);
    let mut codes: Vec<&'static str> = entry.codes.iter().map(|c| c.as_str()).collect();
    for dated in problems.codes().map(|c| c.as_str()) {
        if !codes.contains(&dated) {
            codes.push(dated);
        }
    }
    row.codes = codes;
    row.ocsp = loaded.ocsp.as_deref().map(|note| OcspRow {
        stapled: note.stapled,
        until: note.until.map(date),
        reason: note.reason.clone(),
    });
    row.findings.clone_from(&loaded.findings);
    row.refused_version = entry.refused.as_deref().map(refusal);
}

fn describe(row: &mut Row, summary: Option<&Summary>, now: i64) {
    let Some(summary) = summary else {
        return;
    };
    row.issuer = Some(summary.issuer.to_string());
    row.key = Some(summary.key.to_string());
    row.not_after = Some(date(summary.not_after));
    row.days_left = Some((summary.not_after - now).div_euclid(86_400));
    // The entry `acme/NAME/` (a directory's id ends with its slash).
    if let Some(name) = row.entry.strip_prefix("acme/") {
        let name = name.trim_end_matches('/');
        row.source = "acme";
        let due = crate::acme::renewal_due(name, summary.not_before, summary.not_after);
        row.renews = Some(date(due));
    }
}

fn refusal(refused: &Refused) -> Refusal {
    Refusal {
        codes: refused
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.code.as_str())
            .collect(),
        findings: refused.findings.clone(),
        reason: refused.reason.clone(),
    }
}
