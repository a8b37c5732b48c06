//! `mailfront check FILE...`: the certificate checks on files an operator is about to
//! install, every finding printed (not just the first), as text or JSON.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::Format;
use crate::certs::check::{self, date, now, Finding, Severity, Trust};
use crate::certs::{examine, ExamineError};

/// What `mailfront check` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The name the certificate must cover.
    pub domain: Option<String>,
    /// Roots; by default the system bundle.
    pub ca_bundle: Option<PathBuf>,
    pub issuers_dir: Option<PathBuf>,
    pub crl_dir: Option<PathBuf>,
    /// The key is not there yet: its absence is not an error.
    pub no_key: bool,
    /// The certificate, its chain and its key, in any order and form.
    pub files: Vec<PathBuf>,
}

/// A problem with the request itself (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Files(#[from] ExamineError),
    #[error(transparent)]
    Trust(#[from] check::TrustError),
}

/// The JSON document `--format json` prints.
#[derive(Serialize)]
struct Report<'a> {
    files: &'a [PathBuf],
    certificate: Option<Summary>,
    findings: &'a [Finding],
    errors: usize,
    warnings: usize,
}

/// The leaf, as the operator would recognise it.
#[derive(Serialize)]
struct Summary {
    subject: String,
    issuer: String,
    names: Vec<String>,
    key: String,
    not_after: String,
    days_left: i64,
    /// The OCSP response given, when it would be stapled: until its nextUpdate.
    #[serde(skip_serializing_if = "Option::is_none")]
    ocsp_stapled_until: Option<String>,
}

/// Runs the store's loader and checks on the files and prints the findings; `Ok(true)`
/// when there are errors.
pub fn run(req: &Request, format: Format, out: &mut dyn Write) -> Result<bool, UsageError> {
    let trust = Trust::load(
        req.ca_bundle.as_deref(),
        req.issuers_dir.as_deref(),
        req.crl_dir.as_deref(),
    )?;
    let examined = examine(&req.files, req.domain.clone(), trust, !req.no_key)?;
    let findings = examined.findings;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let now = now();
    let summary = examined.leaf.map(|leaf| Summary {
        subject: leaf.summary.subject.clone(),
        issuer: leaf.summary.issuer.clone(),
        names: leaf.names.clone(),
        key: leaf.summary.key.clone(),
        not_after: date(leaf.summary.not_after),
        days_left: (leaf.summary.not_after - now).div_euclid(86_400),
        ocsp_stapled_until: examined.stapled_until.map(date),
    });
    let written = match format {
        Format::Json => {
            let report = Report {
                files: &req.files,
                certificate: summary,
                findings: &findings,
                errors,
                warnings: findings.len() - errors,
            };
            serde_json::to_writer_pretty(&mut *out, &report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        }
        Format::Text => text(out, summary.as_ref(), &findings, errors),
    };
    // A closed stdout (`| head`) is not the certificate's problem.
    let _ = written;
    Ok(errors > 0)
}

fn text(
    out: &mut dyn Write,
    summary: Option<&Summary>,
    findings: &[Finding],
    errors: usize,
) -> std::io::Result<()> {
    if let Some(s) = summary {
        writeln!(out, "certificate: {}", s.subject)?;
        writeln!(out, "  names:     {}", s.names.join(", "))?;
        writeln!(out, "  issuer:    {}", s.issuer)?;
        writeln!(out, "  key:       {}", s.key)?;
        writeln!(out, "  expires:   {} ({} days)", s.not_after, s.days_left)?;
        if let Some(until) = &s.ocsp_stapled_until {
            writeln!(out, "  ocsp:      good, stapled until {until}")?;
        }
    }
    for f in findings {
        writeln!(out)?;
        writeln!(
            out,
            "{} {}: {}",
            f.severity.as_str(),
            f.code.as_str(),
            f.file.display()
        )?;
        writeln!(out, "  {}", f.message)?;
        writeln!(out, "  fix: {}", f.fix)?;
    }
    let warnings = findings.len() - errors;
    if findings.is_empty() {
        writeln!(out, "\nok: no problems found")
    } else {
        writeln!(out, "\n{errors} error(s), {warnings} warning(s)")
    }
}
