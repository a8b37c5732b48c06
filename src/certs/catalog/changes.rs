//! What one refresh changed, and the log lines that say so: one line per problem, each
//! with the entry, the file, the code and the fix.

use std::sync::Arc;

use tracing::{error, info, warn};

use crate::certs::check::{self, Finding, Severity};
use crate::certs::discover::Stray;
use crate::certs::index::Conflict;
use crate::certs::load::{LoadError, Loaded};

/// A version not loaded, with why, and what serves its names instead.
#[derive(Debug)]
pub struct Rejected {
    pub id: Arc<str>,
    pub error: LoadError,
    /// The entry that keeps serving its names: its own previous version (the same id),
    /// another entry (see [`LoadError::Worse`]), or none (they fall back).
    pub kept: Option<Arc<str>>,
}

/// What a refresh changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Entries serving for the first time.
    pub added: Vec<Arc<str>>,
    /// Entries now serving a new version.
    pub replaced: Vec<Arc<str>>,
    /// Entries gone from disk (their names fall back).
    pub removed: Vec<Arc<str>>,
    /// Versions that were not loaded.
    pub rejected: Vec<Rejected>,
    /// What the checks found in the versions that now serve: warnings, and the errors of
    /// a version serving with errors. Logged once.
    pub findings: Vec<(Arc<str>, Vec<Finding>)>,
    /// Full rescans only: the entries serving with errors, with them, logged as errors at
    /// every full rescan.
    pub degraded: Vec<(Arc<str>, Vec<Finding>)>,
    /// Full rescans only: entries that expired while serving (loaded without that error),
    /// with their notAfter; they keep serving while nothing better covers their names.
    pub expired: Vec<(Arc<str>, i64)>,
    /// Files that look like entries and are not, reported for the first time.
    pub strays: Vec<Stray>,
    /// The server-wide certificate was replaced.
    pub fallback_replaced: bool,
    /// A version expired or became valid since its names were ranked: ranked again.
    pub reranked: bool,
    /// The store directory could not be read, for the first time since it last could;
    /// nothing was removed.
    pub dir_error: Option<String>,
    /// The store directory can be read again after `dir_error`, and was rescanned.
    pub dir_back: bool,
    /// The trust files changed and every entry was checked again.
    pub trust_reloaded: bool,
    /// The trust files changed and cannot be used; the previous trust stays.
    pub trust_error: Option<String>,
}

impl Changes {
    /// Moves what the checks found in a version that now serves into the changes, to be
    /// logged once; the catalog keeps them only for a version serving with errors.
    pub(super) fn note_findings(&mut self, loaded: &mut Loaded) {
        let findings = std::mem::take(&mut loaded.findings);
        if !loaded.served.problems.is_empty() {
            loaded.findings.clone_from(&findings);
        }
        if !findings.is_empty() {
            self.findings
                .push((Arc::clone(&loaded.source.id), findings));
        }
    }

    /// Whether the index must be rebuilt.
    pub fn publishes(&self) -> bool {
        self.fallback_replaced
            || self.reranked
            || !self.added.is_empty()
            || !self.replaced.is_empty()
            || !self.removed.is_empty()
    }

    /// Logs the problems found: one line each.
    pub fn log(&self) {
        if self.trust_reloaded {
            info!("ca_bundle, issuers_dir or crl_dir changed; every entry was checked again");
        }
        if let Some(e) = &self.trust_error {
            error!(reason = %e, "ca_bundle, issuers_dir or crl_dir changed and cannot be used; keeping the previous ones");
        }
        if let Some(e) = &self.dir_error {
            error!(reason = %e, "certificate store unreadable; keeping the certificates already loaded until it can be read again");
        }
        if self.dir_back {
            info!("certificate store readable again; rescanned");
        }
        for rejected in &self.rejected {
            log_rejected(rejected);
        }
        for (id, findings) in self.findings.iter().chain(&self.degraded) {
            log_findings(id, findings);
        }
        for (id, not_after) in &self.expired {
            let days = (check::now() - not_after) / 86_400;
            error!(cert = %id, code = "expired", days, "the certificate has expired and still serves; renew it");
        }
        for stray in &self.strays {
            warn!(file = %stray.path.display(), reason = %stray.reason, "not a certificate entry");
        }
    }
}

fn log_rejected(r: &Rejected) {
    let outcome = match &r.kept {
        Some(kept) if *kept == r.id => {
            "certificate entry refused; the previous version keeps serving".to_owned()
        }
        Some(kept) => format!("certificate entry refused; {kept} keeps serving its names"),
        None => "certificate entry refused".to_owned(),
    };
    match &r.error {
        LoadError::Refused(findings, _) | LoadError::Worse { findings, .. } => {
            for f in findings.iter().filter(|f| f.severity == Severity::Error) {
                warn!(cert = %r.id, code = f.code.as_str(), file = %f.file.display(), reason = %f.message, fix = %f.fix, "{outcome}");
            }
        }
        other => warn!(cert = %r.id, reason = %other, "{outcome}"),
    }
}

/// Logs what the checks found in a certificate that serves: one line per finding.
pub fn log_findings(id: &str, findings: &[Finding]) {
    for f in findings {
        match f.severity {
            Severity::Error => {
                error!(cert = %id, code = f.code.as_str(), file = %f.file.display(), reason = %f.message, fix = %f.fix, "certificate serves with an error")
            }
            Severity::Warning => {
                warn!(cert = %id, code = f.code.as_str(), file = %f.file.display(), reason = %f.message, fix = %f.fix, "certificate warning")
            }
        }
    }
}

/// Logs which entry serves each contested name. The catalog reports conflicts only for
/// the names that changed, so a reload does not repeat the ones already logged.
pub fn log_conflicts(conflicts: &[Conflict]) {
    for c in conflicts {
        let losers: Vec<&str> = c.losers.iter().map(|l| &**l).collect();
        info!(
            name = %c.name, winner = %c.winner, over = %losers.join(", "),
            "several entries cover this name; the best serves (without errors, then the later notAfter)"
        );
    }
}
