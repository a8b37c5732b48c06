//! The certificate store: entries found in `certs.dir`, loaded into an immutable
//! [`Index`], and published through an [`ArcSwap`] so that handshakes read it without a
//! lock while a reload builds the next one.
//!
//! - [`discover`]: which files form an entry, per layout.
//! - [`load`]: PEM to a rustls `CertifiedKey`, with its names.
//! - [`index`]: exact / wildcard / server-wide lookup.
//! - [`resolver`]: the only rustls-version-specific code.
//! - [`fallback`]: the server-wide certificate, generated when absent.

pub mod catalog;
pub mod check;
pub mod discover;
pub mod fallback;
pub mod index;
pub mod limits;
pub mod load;
pub mod resolver;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use tracing::{error, info, warn};

use crate::config::CertSettings;
pub use catalog::{Catalog, Changes, Scope};
use check::Severity;
pub use index::{Conflict, Index, Match, Served};
pub use load::{LoadError, Loaded};

/// Errors that stop the proxy from starting: only the server-wide certificate can.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The server-wide certificate exists but cannot be served.
    #[error("the server-wide certificate cannot be used: {0}")]
    Fallback(LoadError),
    /// `ca_bundle`, `issuers_dir` or `crl_dir` cannot be used.
    #[error("certificate checks: {0}")]
    Trust(check::TrustError),
    /// The server-wide key can be read by every user of the machine.
    #[error(
        "the server-wide key {} can be read by every user (mode {mode:o}): \
         chmod 600 it (or 640, with a group such as ssl-cert that mailfront's user is in)",
        path.display()
    )]
    KeyReadableByAll { path: PathBuf, mode: u32 },
    /// Generating the server-wide certificate failed.
    #[error("cannot generate the server-wide certificate at {path}: {reason}")]
    Generate { path: PathBuf, reason: String },
}

/// Each error says its cause in its message, and so has no `source()`: a cause returned
/// as well would be printed twice by anything that prints the chain (`anyhow`'s `{:#}`).
impl From<check::TrustError> for CertError {
    fn from(e: check::TrustError) -> Self {
        Self::Trust(e)
    }
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

/// Loads the server-wide certificate (generating it if need be) and every entry.
///
/// Only the server-wide certificate can fail this: a broken entry is reported (in the
/// returned [`Changes`] and the log) and skipped, and an unreadable store directory leaves
/// the server-wide certificate serving alone.
pub fn open(
    settings: &CertSettings,
    server_name: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<(Catalog, Index, Changes), CertError> {
    let started = Instant::now();
    refuse_world_readable(&settings.default_key)?;
    let ctx = Arc::new(context(settings, provider)?);
    let (fallback, generated) = fallback::load_or_generate(
        &settings.default_cert,
        &settings.default_key,
        server_name,
        &ctx,
    )?;
    if generated {
        warn!(
            cert = %settings.default_cert.display(),
            key = %settings.default_key.display(),
            name = server_name,
            "generated a self-signed server-wide certificate; clients will warn until it is \
             replaced by one from a CA"
        );
    }
    log_findings(&fallback.source.id, &fallback.findings);
    let catalog_fallback = Arc::clone(&fallback.served);
    let mut catalog = Catalog::new(settings.dir.clone(), ctx, fallback);
    let changes = catalog.refresh(&Scope::All);
    let empty = Index::empty(Arc::clone(&catalog_fallback));
    let (index, conflicts) = catalog.next_index(&empty);
    log_problems(&changes);
    log_conflicts(&conflicts);
    release_free_memory();
    info!(
        dir = %settings.dir.display(),
        loaded = changes.added.len(),
        rejected = changes.rejected.len(),
        ms = started.elapsed().as_millis() as u64,
        "certificate store loaded"
    );
    Ok((catalog, index, changes))
}

/// The crypto provider and the trust the checks use, from `ca_bundle` (by default the
/// system bundle), `issuers_dir` and `crl_dir`.
pub fn context(
    settings: &CertSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<load::Context, CertError> {
    let trust = check::Trust::load(
        settings.ca_bundle.as_deref(),
        settings.issuers_dir.as_deref(),
        settings.crl_dir.as_deref(),
    )?;
    for (path, reason) in &trust.skipped {
        warn!(file = %path.display(), %reason, "not used for certificate checks");
    }
    Ok(load::Context {
        provider: Arc::clone(provider),
        trust,
    })
}

/// The server-wide key serves every name nothing else covers: one readable by any local
/// user (a webmail PHP process, a customer's shell) is refused, not merely warned about
/// as an entry's would be. A key that does not exist yet is generated with mode 0600.
fn refuse_world_readable(key: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(key) {
        Ok(meta) if meta.permissions().mode() & 0o004 != 0 => Err(CertError::KeyReadableByAll {
            path: key.to_owned(),
            mode: meta.permissions().mode() & 0o777,
        }),
        _ => Ok(()),
    }
}

/// Hands the heap's free pages back to the system after a full load or scan.
///
/// A scan of the whole store allocates a few hundred bytes per file for a moment (paths,
/// the listing) on up to 16 loader threads, each with its own malloc arena; glibc keeps
/// that memory afterwards and resident memory creeps up at each periodic rescan (+8 MiB
/// at 10,000 entries after the first one). `malloc_trim` returns it, whichever arena
/// holds it.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and locks each arena itself; it is
        // safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Logs the problems a refresh found: one line each.
pub fn log_problems(changes: &Changes) {
    if changes.trust_reloaded {
        info!("ca_bundle, issuers_dir or crl_dir changed; every entry was checked again");
    }
    if let Some(e) = &changes.trust_error {
        error!(reason = %e, "ca_bundle, issuers_dir or crl_dir changed and cannot be used; keeping the previous ones");
    }
    if let Some(e) = &changes.dir_error {
        error!(reason = %e, "certificate store unreadable; keeping the certificates already loaded until it can be read again");
    }
    if changes.dir_back {
        info!("certificate store readable again; rescanned");
    }
    for (id, e, kept) in &changes.rejected {
        let outcome = if *kept {
            "certificate entry refused; the previous version keeps serving"
        } else {
            "certificate entry refused"
        };
        match e {
            LoadError::Refused(findings) => {
                for f in findings.iter().filter(|f| f.severity == Severity::Error) {
                    warn!(cert = %id, code = f.code.as_str(), file = %f.file.display(), reason = %f.message, fix = %f.fix, "{outcome}");
                }
            }
            other => warn!(cert = %id, reason = %other, "{outcome}"),
        }
    }
    for (id, findings) in &changes.findings {
        log_findings(id, findings);
    }
    for (id, not_after) in &changes.expired {
        let days = (check::now() - not_after) / 86_400;
        error!(cert = %id, code = "expired", days, "the certificate has expired and still serves; renew it");
    }
    for stray in &changes.strays {
        warn!(file = %stray.path.display(), reason = %stray.reason, "not a certificate entry");
    }
}

/// Logs what the checks found in a certificate that serves: one line per finding.
pub fn log_findings(id: &str, findings: &[check::Finding]) {
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

/// Logs which entry serves each contested name. [`Catalog::next_index`] reports conflicts
/// only for the names that changed, so a reload does not repeat the ones already logged.
pub fn log_conflicts(conflicts: &[Conflict]) {
    for c in conflicts {
        let losers: Vec<&str> = c.losers.iter().map(|l| &**l).collect();
        info!(
            name = %c.name, winner = %c.winner, over = %losers.join(", "),
            "several entries cover this name; the later notAfter serves"
        );
    }
}
