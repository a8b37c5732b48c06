//! `mailfront certs --config FILE`: the "certificate in use" view of a hosting panel,
//! printed from the store's own report (the catalog `run` would serve): one row per entry
//! (names, issuer, key, expiry, files, state), which entry serves each contested name, the
//! files that are not entries, and the names routes send traffic for that only the
//! server-wide certificate covers.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use super::{bracketed, print_unused, Format};
use crate::certs::{self, OcspRow, Report, Row, State};
use crate::config::Config;
use crate::names::Pattern;

/// The report, and the route names no entry covers.
#[derive(Debug, Serialize)]
pub struct View {
    #[serde(flatten)]
    pub report: Arc<Report>,
    /// Route names no entry covers: their clients get the server-wide certificate.
    pub uncovered_routes: Vec<String>,
}

/// Builds the view of the store `config` names.
pub fn view(config: &Config) -> Result<View, certs::CertError> {
    let report = certs::inspect(&config.certs, &config.server.name, &crate::tls::provider())?;
    Ok(view_of(config, Arc::new(report)))
}

/// The view of `report`, the store of `config` (a running proxy's, for the admin API).
pub fn view_of(config: &Config, report: Arc<Report>) -> View {
    let names: Vec<Pattern> = report
        .names
        .iter()
        .filter_map(|n| Pattern::parse(&n.name).ok())
        .collect();
    let uncovered_routes = config
        .listeners
        .iter()
        .flat_map(|l| &l.routes)
        .map(|r| &r.sni)
        .filter(|sni| !covered(sni, &names))
        .map(ToString::to_string)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    View {
        report,
        uncovered_routes,
    }
}

/// Whether an entry covers a route's name: an exact route by any entry, a wildcard route
/// only by the same wildcard.
fn covered(sni: &Pattern, names: &[Pattern]) -> bool {
    match sni {
        Pattern::Exact(name) => names.iter().any(|p| p.covers(name)),
        Pattern::Wildcard(_) => names.contains(sni),
    }
}

/// Prints the view.
pub fn print(view: &View, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, view).map_err(std::io::Error::from)?;
        return writeln!(out);
    }
    let report = &view.report;
    writeln!(out, "store {}\n", report.store.display())?;
    if let Some(reason) = &report.unreadable {
        writeln!(out, "the store cannot be read: {reason}\n")?;
    }
    writeln!(
        out,
        "{:<32} {:<19} {:<30} {:<22} {:<12} {:<10} {:>6}  FILES / PROBLEMS",
        "ENTRY", "STATE", "NAMES", "ISSUER", "KEY", "NOT AFTER", "DAYS"
    )?;
    print_row(out, report, &report.server_wide, "(server-wide)")?;
    for row in &report.entries {
        print_row(out, report, row, &row.entry)?;
    }
    let contested: Vec<_> = report
        .names
        .iter()
        .filter(|n| !n.superseded.is_empty())
        .collect();
    if !contested.is_empty() {
        writeln!(out, "\nnames claimed by several entries:")?;
        for n in contested {
            writeln!(
                out,
                "  {}: served by {}{}; superseded: {}",
                n.name,
                n.serves,
                n.also
                    .as_ref()
                    .map(|a| format!(" (and {a} for RSA-only clients)"))
                    .unwrap_or_default(),
                n.superseded.join(", ")
            )?;
        }
    }
    print_unused(report, out, "\n")?;
    for name in &view.uncovered_routes {
        writeln!(
            out,
            "\nroute {name}: no entry covers it; its clients get the server-wide certificate \
             (a name mismatch)"
        )?;
    }
    writeln!(
        out,
        "\n{} entries: {} serving, {} serving with errors, {} superseded, {} refused",
        report.entries.len(),
        report.count(State::Serving),
        report.count(State::ServingWithErrors),
        report.count(State::Superseded),
        report.count(State::Refused),
    )
}

fn print_row(out: &mut dyn Write, report: &Report, row: &Row, entry: &str) -> std::io::Result<()> {
    let dash = || "-".to_owned();
    // Entries' files relative to the store, as operators name them.
    let mut tail: Vec<String> = row
        .files
        .iter()
        .map(|f| {
            f.strip_prefix(&report.store)
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    tail.extend(bracketed(&row.codes));
    if let Some(renews) = &row.renews {
        tail.push(format!("[acme: renews {renews}]"));
    }
    match &row.ocsp {
        Some(OcspRow {
            stapled: true,
            until,
            ..
        }) => tail.push(format!(
            "[OCSP stapled until {}]",
            until.as_deref().unwrap_or("-")
        )),
        Some(OcspRow {
            reason: Some(reason),
            ..
        }) => tail.push(format!("[OCSP not stapled: {reason}]")),
        _ => {}
    }
    if let Some(reason) = &row.reason {
        tail.push(format!("[{reason}]"));
    }
    if let Some(refused) = &row.refused_version {
        let why = match (refused.codes.is_empty(), &refused.reason) {
            (false, _) => refused.codes.join(", "),
            (true, Some(reason)) => reason.clone(),
            (true, None) => "refused".to_owned(),
        };
        tail.push(format!("[refused: {why}; previous version serving]"));
    }
    writeln!(
        out,
        "{:<32} {:<19} {:<30} {:<22} {:<12} {:<10} {:>6}  {}",
        entry,
        row.state.as_str(),
        if row.names.is_empty() {
            dash()
        } else {
            row.names.join(",")
        },
        row.issuer.clone().unwrap_or_else(dash),
        row.key.clone().unwrap_or_else(dash),
        row.not_after.clone().unwrap_or_else(dash),
        row.days_left.map_or_else(dash, |d| d.to_string()),
        tail.join(" ")
    )
}
