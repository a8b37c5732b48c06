//! `mailfront certs --config FILE`: the "certificate in use" view of a hosting panel. One
//! row per entry (names, issuer, key, expiry, files, state), which entry serves each name,
//! and the names routes send traffic for that only the server-wide certificate covers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::Format;
use crate::certs::check::{date, now, CertFacts, Finding, Severity};
use crate::certs::discover::{self, Source};
use crate::certs::load::{self, Contents, LoadError, Loaded, Role};
use crate::certs::{self, index, Served};
use crate::config::Config;
use crate::names::Pattern;

/// One entry as the view shows it.
#[derive(Debug, Serialize)]
pub struct Row {
    pub entry: String,
    /// `serving`, `superseded` (every name it covers is served by another entry) or
    /// `refused`.
    pub state: &'static str,
    pub names: Vec<String>,
    pub issuer: Option<String>,
    pub key: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub files: Vec<PathBuf>,
    /// Codes of the findings: errors for a refused entry, warnings for the others.
    pub codes: Vec<&'static str>,
    pub findings: Vec<Finding>,
    /// Why it is refused when no check finding says so (unreadable, no key...).
    pub reason: Option<String>,
}

/// Which entry serves a name, and the entries that also claim it.
#[derive(Debug, Serialize)]
pub struct NameRow {
    pub name: String,
    pub serves: String,
    /// An entry with another key type also serves it (RSA beside ECDSA) to clients that
    /// cannot use the first.
    pub also: Option<String>,
    pub superseded: Vec<String>,
}

/// The whole view.
#[derive(Debug, Serialize)]
pub struct View {
    /// The store directory.
    pub store: PathBuf,
    pub server_wide: Row,
    pub entries: Vec<Row>,
    pub names: Vec<NameRow>,
    /// Route names no entry covers: their clients get the server-wide certificate.
    pub uncovered_routes: Vec<String>,
}

/// Builds the view of the store `config` names.
pub fn view(config: &Config) -> Result<View, certs::CertError> {
    let c = &config.certs;
    let ctx = certs::context(c, &crate::tls::provider())?;
    let now = now();
    let server_wide = match certs::fallback::load_existing(&c.default_cert, &c.default_key, &ctx)? {
        Some(loaded) => row_of(&loaded.source, Ok(&loaded), now),
        None => Row {
            entry: "server-wide".into(),
            state: "refused",
            names: Vec::new(),
            issuer: None,
            key: None,
            not_after: None,
            days_left: None,
            files: vec![c.default_cert.clone(), c.default_key.clone()],
            codes: Vec::new(),
            findings: Vec::new(),
            reason: Some("not there yet: `run` generates a self-signed one".into()),
        },
    };
    let found = discover::discover(&c.dir).unwrap_or_default();
    let results = load::parallel_map(&found.sources, |s| load::load(s, &ctx, Role::Entry));
    let mut claims: BTreeMap<Pattern, Vec<Arc<Served>>> = BTreeMap::new();
    for loaded in results.iter().flatten() {
        for name in &loaded.names {
            claims
                .entry(name.clone())
                .or_default()
                .push(Arc::clone(&loaded.served));
        }
    }
    let mut names = Vec::new();
    let mut serving: std::collections::HashSet<Arc<str>> = Default::default();
    for (name, list) in &mut claims {
        index::rank(name, list, &mut Vec::new());
        let first = &list[0];
        let also = list.iter().find(|s| s.algorithm != first.algorithm);
        serving.insert(Arc::clone(&first.id));
        if let Some(a) = also {
            serving.insert(Arc::clone(&a.id));
        }
        let superseded = list
            .iter()
            .filter(|s| !Arc::ptr_eq(s, first) && also.is_none_or(|a| !Arc::ptr_eq(s, a)))
            .map(|s| s.id.to_string())
            .collect();
        names.push(NameRow {
            name: name.to_string(),
            serves: first.id.to_string(),
            also: also.map(|a| a.id.to_string()),
            superseded,
        });
    }
    let entries = found
        .sources
        .iter()
        .zip(&results)
        .map(|(source, result)| {
            let mut row = row_of(source, result.as_ref(), now);
            if row.state == "serving" && !serving.contains(&source.id) {
                row.state = "superseded";
            }
            row
        })
        .collect();
    let uncovered_routes = config
        .listeners
        .iter()
        .flat_map(|l| &l.routes)
        .map(|r| &r.sni)
        .filter(|sni| !covered(sni, &claims))
        .map(ToString::to_string)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(View {
        store: c.dir.clone(),
        server_wide,
        entries,
        names,
        uncovered_routes,
    })
}

/// Whether an entry covers a route's name: an exact route by any entry, a wildcard route
/// only by the same wildcard.
fn covered(sni: &Pattern, claims: &BTreeMap<Pattern, Vec<Arc<Served>>>) -> bool {
    match sni {
        Pattern::Exact(name) => claims.keys().any(|p| p.covers(name)),
        Pattern::Wildcard(_) => claims.contains_key(sni),
    }
}

fn row_of(source: &Source, result: Result<&Loaded, &LoadError>, now: i64) -> Row {
    let files: Vec<PathBuf> = std::iter::once(source.cert.clone())
        .chain(source.key.clone())
        .collect();
    let leaf = Contents::read(source).ok().and_then(|c| {
        let der = CertificateDer::pem_slice_iter(&c.cert).next()?.ok()?;
        CertFacts::parse(&der).ok()
    });
    let (state, findings, reason) = match result {
        Ok(loaded) => ("serving", loaded.findings.clone(), None),
        Err(LoadError::Refused(findings)) => ("refused", findings.clone(), None),
        Err(other) => ("refused", Vec::new(), Some(other.to_string())),
    };
    let codes = findings
        .iter()
        .filter(|f| state != "refused" || f.severity == Severity::Error)
        .map(|f| f.code.as_str())
        .collect();
    Row {
        entry: source.id.to_string(),
        state,
        names: leaf
            .as_ref()
            .map(|l| l.dns_names.clone())
            .unwrap_or_default(),
        issuer: leaf.as_ref().map(CertFacts::issuer_label),
        key: leaf.as_ref().map(|l| l.key.clone()),
        not_after: leaf.as_ref().map(|l| date(l.not_after)),
        days_left: leaf
            .as_ref()
            .map(|l| (l.not_after - now).div_euclid(86_400)),
        files,
        codes,
        findings,
        reason,
    }
}

/// Prints the view.
pub fn print(view: &View, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, view).map_err(std::io::Error::from)?;
        return writeln!(out);
    }
    writeln!(out, "store {}\n", view.store.display())?;
    writeln!(
        out,
        "{:<32} {:<10} {:<30} {:<22} {:<12} {:<10} {:>6}  FILES / PROBLEMS",
        "ENTRY", "STATE", "NAMES", "ISSUER", "KEY", "NOT AFTER", "DAYS"
    )?;
    for row in std::iter::once(&view.server_wide).chain(&view.entries) {
        let dash = || "-".to_owned();
        let entry = if std::ptr::eq(row, &view.server_wide) {
            "(server-wide)".to_owned()
        } else {
            row.entry.clone()
        };
        // Entries' files relative to the store, as operators name them.
        let mut tail: Vec<String> = row
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(&view.store)
                    .unwrap_or(f)
                    .display()
                    .to_string()
            })
            .collect();
        if !row.codes.is_empty() {
            tail.push(format!("[{}]", row.codes.join(", ")));
        }
        if let Some(reason) = &row.reason {
            tail.push(format!("[{reason}]"));
        }
        writeln!(
            out,
            "{:<32} {:<10} {:<30} {:<22} {:<12} {:<10} {:>6}  {}",
            entry,
            row.state,
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
        )?;
    }
    let contested: Vec<&NameRow> = view
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
    for name in &view.uncovered_routes {
        writeln!(
            out,
            "\nroute {name}: no entry covers it; its clients get the server-wide certificate \
             (a name mismatch)"
        )?;
    }
    let refused = view.entries.iter().filter(|r| r.state == "refused").count();
    writeln!(
        out,
        "\n{} entries: {} serving, {} superseded, {refused} refused",
        view.entries.len(),
        view.entries.iter().filter(|r| r.state == "serving").count(),
        view.entries
            .iter()
            .filter(|r| r.state == "superseded")
            .count(),
    )
}
