//! `mailfront domains --config FILE [DOMAIN...]`: whether each customer domain's DNS points
//! at this host and the store covers its names, as a hosting panel shows it. The checks
//! are [`crate::onboarding::readiness`]'s, the ones the running proxy makes.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Format;
use crate::certs::{self, CertError};
use crate::config::Config;
use crate::names::{normalize, Pattern};
use crate::onboarding::readiness::{self, Checker, DomainReport, ReadinessError};

/// Why the domains cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum DomainsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Resolver(#[from] ReadinessError),
    /// An argument is not a domain name.
    #[error("{0:?} is not a domain name")]
    Domain(String),
}

/// Checks `domains` (every domain the store and routes know when empty) against `config`'s
/// host, asking `resolver` (the system's DNS servers when `None`); reports in the order
/// asked.
pub async fn check(
    config: &Config,
    domains: &[String],
    resolver: Option<SocketAddr>,
) -> Result<Vec<DomainReport>, DomainsError> {
    let mut asked = Vec::with_capacity(domains.len());
    for d in domains {
        match Pattern::parse(d) {
            Ok(Pattern::Exact(name)) if name.contains('.') => {
                asked.push(normalize(&name).into_owned())
            }
            _ => return Err(DomainsError::Domain(d.clone())),
        }
    }
    let (report, store) =
        certs::inspect_store(&config.certs, &config.server.name, &crate::tls::provider())?;
    if asked.is_empty() {
        asked = readiness::known_domains(&report, config);
    }
    let checker = Arc::new(Checker::new(config, resolver)?);
    let ours = Arc::new(checker.addresses().await);
    let mut reports: Vec<Option<DomainReport>> = vec![None; asked.len()];
    readiness::check_all(&checker, &asked, ours, &store, None, |at, report| {
        reports[at] = Some(report);
    })
    .await;
    Ok(reports.into_iter().flatten().collect())
}

/// Prints the reports: one line per domain and, under an invalid one, each reason with
/// what was found, what was expected and the fix.
pub fn print(reports: &[DomainReport], format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, reports).map_err(std::io::Error::from)?;
        return writeln!(out);
    }
    if reports.is_empty() {
        return writeln!(
            out,
            "no domains: name them, or put certificates in the store"
        );
    }
    for r in reports {
        writeln!(out, "{:<40} {}", r.domain, r.state.as_str())?;
        for reason in &r.reasons {
            writeln!(out, "  {:<22} {}", reason.code, reason.record)?;
            writeln!(out, "  {:<22} found:    {}", "", reason.found)?;
            writeln!(out, "  {:<22} expected: {}", "", reason.expected)?;
            writeln!(out, "  {:<22} fix:      {}", "", reason.fix)?;
        }
    }
    Ok(())
}
