//! The certificate store: entries found in `certs.dir`, loaded into an immutable
//! [`Index`], and published through an [`ArcSwap`] so that handshakes read it without a
//! lock while a reload builds the next one.
//!
//! - [`discover`]: which files form an entry, per layout.
//! - [`load`]: PEM to a rustls `CertifiedKey`, with its names.
//! - [`index`]: exact / wildcard / server-wide lookup.
//! - [`resolver`]: the only rustls-version-specific code.
//! - [`fallback`]: the server-wide certificate, generated when absent.

pub mod discover;
pub mod fallback;
pub mod index;
pub mod load;
pub mod resolver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use tracing::{error, info, warn};

use crate::config::CertSettings;
pub use index::{Index, Match, Served};
pub use load::{LoadError, Loaded};

/// Errors that stop the proxy from starting: only the server-wide certificate can.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The server-wide certificate exists but cannot be served.
    #[error("the server-wide certificate cannot be used: {0}")]
    Fallback(#[source] LoadError),
    /// Generating the server-wide certificate failed.
    #[error("cannot generate the server-wide certificate at {path}: {reason}")]
    Generate { path: PathBuf, reason: String },
}

/// The published certificate index.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Index>,
}

impl Store {
    /// A store serving `index`.
    pub fn new(index: Index) -> Self {
        Self {
            current: ArcSwap::from_pointee(index),
        }
    }

    /// The index in force now: one atomic load, no lock.
    pub fn index(&self) -> arc_swap::Guard<Arc<Index>> {
        self.current.load()
    }

    /// Replaces the index for every handshake that starts from now on.
    pub fn publish(&self, index: Index) {
        self.current.store(Arc::new(index));
    }
}

/// What opening the store found, for logs and `check-config`.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Entries loaded.
    pub loaded: usize,
    /// Entries refused, with the reason.
    pub rejected: Vec<(Arc<str>, LoadError)>,
    /// Files that look like entries and are not.
    pub strays: Vec<discover::Stray>,
    /// The store directory could not be read.
    pub dir_error: Option<String>,
    /// The server-wide certificate was generated now.
    pub generated_fallback: bool,
    /// Time taken.
    pub elapsed: std::time::Duration,
}

/// Loads the server-wide certificate (generating it if need be) and every entry.
///
/// Only the server-wide certificate can fail this: a broken entry is reported and skipped,
/// and an unreadable store directory leaves the server-wide certificate serving alone.
pub fn open(
    settings: &CertSettings,
    server_name: &str,
    provider: &CryptoProvider,
) -> Result<(Index, OpenReport), CertError> {
    let started = Instant::now();
    let (fallback, generated) = fallback::load_or_generate(
        &settings.default_cert,
        &settings.default_key,
        server_name,
        provider,
    )?;
    let mut report = OpenReport {
        generated_fallback: generated,
        ..OpenReport::default()
    };
    let found = match discover::discover(&settings.dir) {
        Ok(found) => found,
        Err(e) => {
            report.dir_error = Some(format!("cannot read {}: {e}", settings.dir.display()));
            discover::Found::default()
        }
    };
    report.strays = found.strays;
    let mut entries = Vec::with_capacity(found.sources.len());
    for (source, result) in found
        .sources
        .iter()
        .zip(load::load_all(&found.sources, provider))
    {
        match result {
            Ok(loaded) => entries.push(loaded),
            Err(e) => report.rejected.push((Arc::clone(&source.id), e)),
        }
    }
    report.loaded = entries.len();
    let index = Index::build(&entries, &fallback);
    report.elapsed = started.elapsed();
    Ok((index, report))
}

/// Logs what [`open`] found: one line per problem, one summary line.
pub fn log_report(report: &OpenReport, settings: &CertSettings, server_name: &str) {
    if report.generated_fallback {
        warn!(
            cert = %settings.default_cert.display(),
            key = %settings.default_key.display(),
            name = server_name,
            "generated a self-signed server-wide certificate; clients will warn until it is \
             replaced by one from a CA"
        );
    }
    if let Some(e) = &report.dir_error {
        error!(dir = %settings.dir.display(), reason = %e, "certificate store unreadable; serving the server-wide certificate only");
    }
    for (id, e) in &report.rejected {
        warn!(cert = %id, reason = %e, "certificate entry skipped");
    }
    for stray in &report.strays {
        warn!(file = %stray.path.display(), reason = %stray.reason, "not a certificate entry");
    }
    info!(
        dir = %settings.dir.display(),
        loaded = report.loaded,
        rejected = report.rejected.len(),
        ms = report.elapsed.as_millis() as u64,
        "certificate store loaded"
    );
}
