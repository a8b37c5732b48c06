//! The operator's commands that look at certificates rather than serve them.
//!
//! - [`check`]: `mailfront check FILE...`, the checks on files about to be installed.
//! - [`certs`]: `mailfront certs --config FILE`, the certificate in use for each name.
//! - [`config`]: `mailfront check-config --config FILE`, the config and the store judged.
//! - [`domains`]: `mailfront domains --config FILE`, DNS readiness of customer domains.

pub mod certs;
pub mod check;
pub mod config;
pub mod domains;

use std::io::Write;

use crate::certs::Report;

/// `[code, code]`, or nothing for no codes.
fn bracketed(codes: &[&str]) -> Option<String> {
    (!codes.is_empty()).then(|| format!("[{}]", codes.join(", ")))
}

/// The files of the store and of the trust directories that are not used, with why, each
/// line led by `lead`.
fn print_unused(report: &Report, out: &mut dyn Write, lead: &str) -> std::io::Result<()> {
    for not in &report.not_entries {
        let (path, reason) = (not.path.display(), &not.reason);
        writeln!(out, "{lead}not an entry: {path}: {reason}")?;
    }
    for not in &report.trust_skipped {
        let (path, reason) = (not.path.display(), &not.reason);
        writeln!(out, "{lead}not used for checks: {path}: {reason}")?;
    }
    Ok(())
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// For tools: one JSON document.
    Json,
}
