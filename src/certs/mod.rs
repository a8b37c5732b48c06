//! The certificate store: entries found in `certs.dir`, loaded into an immutable index and
//! published so that handshakes read it without a lock while a reload builds the next one.
//!
//! The rest of the program sees it through a narrow API: [`open`] loads it (generating the
//! server-wide certificate if need be) and returns the [`Store`] handshakes read (the
//! [`Index`] in force and a generation counter) and the [`Reloader`] that keeps it in step
//! with the disk; [`inspect`] loads it the same way without serving, for `mailfront certs`
//! and `check-config`; both give the store's one [`Report`].
//!
//! Inside, privately:
//! - `discover`: which files form an entry, per layout.
//! - `load`: PEM to a rustls `CertifiedKey`, with its names, through [`check`].
//! - `catalog`: the entries, what changed on disk, the store's rule, the report.
//! - `index`: exact / wildcard / server-wide lookup.
//! - `resolver`: the only rustls-version-specific code.
//! - `fallback`: the server-wide certificate, generated when absent.
//! - `watch`: the reloader (inotify events and the periodic rescan), which also answers
//!   the report and the installs.
//! - [`install`]: the one way writers (uploads, ACME) put entries into the store.
//! - `limits`: how much of a file is read.

mod catalog;
pub mod check;
mod discover;
mod examine;
mod fallback;
mod index;
pub mod install;
pub(crate) mod limits;
mod load;
mod ocsp;
mod pieces;
mod report;
mod resolver;
mod store;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::crypto::CryptoProvider;
use tracing::{info, warn};

use crate::config::CertSettings;
use catalog::{log_conflicts, Catalog, Origin};
pub use check::now;
pub use examine::{canonical_pem, examine, open_pkcs12, ExamineError, Examined};
pub use index::{Index, Match, Outranked, Served, Standing};
pub use install::{InstallError, Installed, Installer, Parts};
pub use load::LoadError;
pub use report::{NameRow, NotEntry, OcspRow, Refusal, Report, Row, State};
pub use resolver::{signing_key, Fixed};
pub use store::{Refreshed, Store, StoreSummary};
pub use watch::{Reloader, Reports};

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

/// Loads the server-wide certificate (generating it if need be) and every entry, logs
/// what the load found, and returns the store to serve from and its reloader.
///
/// Only the server-wide certificate can fail this: a broken entry is reported and skipped,
/// and an unreadable store directory leaves the server-wide certificate serving alone.
pub fn open(
    settings: &CertSettings,
    server_name: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<Store>, Reloader), CertError> {
    let started = Instant::now();
    refuse_world_readable(&settings.default_key)?;
    let (mut catalog, changes) = load(settings, server_name, provider, true)?;
    changes.log();
    let (index, conflicts) = catalog.next_index(None);
    log_conflicts(&conflicts);
    release_free_memory();
    let (serving, serving_with_errors, refused) = catalog.tally();
    info!(
        dir = %settings.dir.display(),
        serving,
        serving_with_errors,
        refused,
        ms = started.elapsed().as_millis() as u64,
        "certificate store loaded"
    );
    let store = Arc::new(Store::new(index));
    let reloader = Reloader::new(catalog, Arc::clone(&store), settings.rescan_interval)
        .watching(settings.watch);
    Ok((store, reloader))
}

/// Loads the store as [`open`] does, without serving, writing or logging: the report of
/// what `run` would serve. A server-wide certificate still to be generated is made in
/// memory and reported as absent.
pub fn inspect(
    settings: &CertSettings,
    server_name: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Report, CertError> {
    let (catalog, _) = load(settings, server_name, provider, false)?;
    Ok(catalog.report())
}

/// [`inspect`]'s report, with the store `run` would serve from (the same catalog's index):
/// for whoever asks which names it covers (`mailfront domains`).
pub fn inspect_store(
    settings: &CertSettings,
    server_name: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<(Report, Arc<Store>), CertError> {
    let (mut catalog, _) = load(settings, server_name, provider, false)?;
    let report = catalog.report();
    let (index, _) = catalog.next_index(None);
    Ok((report, Arc::new(Store::new(index))))
}

/// The catalog of the store, loaded. `start`: for a start, which writes a server-wide
/// certificate to be generated and logs what it generated and skipped; otherwise for a
/// report, which writes and logs nothing (the report says it all).
fn load(
    settings: &CertSettings,
    server_name: &str,
    provider: &Arc<CryptoProvider>,
    start: bool,
) -> Result<(Catalog, catalog::Changes), CertError> {
    let ctx = Arc::new(context(settings, provider)?);
    let (cert, key) = (&settings.default_cert, &settings.default_key);
    let (fallback, origin) = fallback::load_or_generate(cert, key, server_name, &ctx, start)?;
    if origin == Origin::Generated {
        warn!(
            cert = %cert.display(),
            key = %key.display(),
            name = server_name,
            "generated a self-signed server-wide certificate; clients will warn until it is \
             replaced by one from a CA"
        );
    }
    if start {
        for (path, reason) in &ctx.trust.skipped {
            warn!(file = %path.display(), %reason, "not used for certificate checks");
        }
    }
    Ok(Catalog::open(settings.dir.clone(), ctx, fallback, origin))
}

/// The crypto provider and the trust the checks use, from `ca_bundle` (by default the
/// system bundle), `issuers_dir` and `crl_dir`.
fn context(
    settings: &CertSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<load::Context, CertError> {
    let trust = check::Trust::load(
        settings.ca_bundle.as_deref(),
        settings.issuers_dir.as_deref(),
        settings.crl_dir.as_deref(),
    )?;
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
fn release_free_memory() {
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

/// The loader's parts for the benches and fuzz targets, which time or feed one entry's
/// bytes without a store around it. Not an API: the program uses [`open`] and [`inspect`].
#[doc(hidden)]
pub mod testing {
    pub use super::discover::{Layout, Source};
    pub use super::load::{parse, Contents, Context, Role};
    pub use super::ocsp::{judge as judge_ocsp, Verdict};
}
