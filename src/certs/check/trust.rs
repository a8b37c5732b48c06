//! What chains are checked against: trusted roots (`ca_bundle`, by default the system
//! bundle), intermediates that may complete a short chain (`issuers_dir`), and
//! certificate revocation lists (`crl_dir`, DER or PEM).

use std::path::{Path, PathBuf};

use super::crl::Crl;
use super::der::name_contents;
use super::facts::CertFacts;
use crate::certs::limits;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor};

/// Where Debian, Ubuntu and their derivatives keep the system's roots.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the trust settings cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file or directory cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The bundle holds no usable root.
    #[error("{path}: no CA certificate could be read from it{reason}")]
    EmptyBundle { path: PathBuf, reason: String },
}

/// The files a [`Trust`] is loaded from: the bundle, and every file of `issuers_dir` and
/// `crl_dir`.
#[derive(Debug, Clone, Default)]
pub struct TrustFiles {
    pub bundle: Option<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

impl TrustFiles {
    /// The directories to watch: the bundle's, `issuers_dir` and `crl_dir`.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let bundle_dir = self.bundle.as_deref().and_then(Path::parent);
        let mut dirs: Vec<PathBuf> = bundle_dir.map(Path::to_owned).into_iter().collect();
        dirs.extend(self.dirs.iter().cloned());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether a change at `path` can change the trust: the bundle itself (or the `..data`
    /// of a Kubernetes volume holding it), `issuers_dir` or `crl_dir`, or a file in them.
    /// Other files beside the bundle (`/etc/ssl/certs` holds hundreds) do not.
    pub fn concerns(&self, path: &Path) -> bool {
        let in_dir = |dir: &PathBuf| path == dir || path.parent() == Some(dir.as_path());
        self.bundle
            .as_deref()
            .is_some_and(|b| is_or_beside(path, b))
            || self.dirs.iter().any(in_dir)
    }
}

/// Whether `path` is `file`, or the Kubernetes machinery beside it (`..data`,
/// `..2026_11_30_...`), whose swap replaces the file without an event naming it.
pub fn is_or_beside(path: &Path, file: &Path) -> bool {
    path == file
        || (path.parent() == file.parent()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("..")))
}

/// An intermediate from `issuers_dir`, with the file it came from.
#[derive(Debug)]
pub struct Issuer {
    pub der: CertificateDer<'static>,
    pub facts: CertFacts,
    pub path: PathBuf,
}

/// Roots, extra intermediates and CRLs, loaded once and shared by every check.
#[derive(Debug, Default)]
pub struct Trust {
    /// The bundle the roots came from; `None`: no trust store, chains are not judged.
    pub bundle: Option<PathBuf>,
    pub(super) roots: Vec<TrustAnchor<'static>>,
    pub(super) issuers: Vec<Issuer>,
    pub(super) crls: Vec<Crl>,
    /// Files in `issuers_dir` or `crl_dir` that could not be used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// What it was loaded from, to load it again when those files change (`None` for
    /// [`Trust::none`]).
    pub(super) sources: Option<Sources>,
    /// The files' metadata when loaded.
    pub(super) fingerprint: u64,
}

/// The settings a [`Trust`] was loaded from.
#[derive(Debug, Default, Clone)]
pub(super) struct Sources {
    bundle: Option<PathBuf>,
    issuers_dir: Option<PathBuf>,
    crl_dir: Option<PathBuf>,
}

impl Sources {
    /// The metadata (size, times, inode) of the bundle and of every file in the two
    /// directories: a new CRL, a renewed intermediate or an updated bundle changes it.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::MetadataExt;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let bundle = self
            .bundle
            .clone()
            .or_else(|| Some(PathBuf::from(SYSTEM_BUNDLE)));
        let dirs = [&self.issuers_dir, &self.crl_dir];
        let listed = dirs
            .into_iter()
            .flatten()
            .flat_map(|d| files_in(d).unwrap_or_default());
        for path in bundle.into_iter().chain(listed) {
            path.hash(&mut hasher);
            if let Ok(m) = std::fs::metadata(&path) {
                (m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ino()).hash(&mut hasher);
            }
        }
        hasher.finish()
    }
}

impl Trust {
    /// Loads the roots of `bundle` (or of the system bundle when `None` and present), the
    /// certificates in `issuers_dir` and the CRLs in `crl_dir`. Unusable files in the two
    /// directories are listed in `skipped`; an unreadable bundle or directory is an error.
    pub fn load(
        bundle: Option<&Path>,
        issuers_dir: Option<&Path>,
        crl_dir: Option<&Path>,
    ) -> Result<Self, TrustError> {
        let sources = Sources {
            bundle: bundle.map(Path::to_owned),
            issuers_dir: issuers_dir.map(Path::to_owned),
            crl_dir: crl_dir.map(Path::to_owned),
        };
        let mut trust = Trust {
            fingerprint: sources.fingerprint(),
            sources: Some(sources),
            ..Trust::default()
        };
        let bundle = match bundle {
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(SYSTEM_BUNDLE)).filter(|p| p.exists()),
        };
        if let Some(path) = bundle {
            trust.roots = roots_of(&path)?;
            trust.bundle = Some(path);
        }
        if let Some(dir) = issuers_dir {
            for path in files_in(dir)? {
                match certificates_in(&path, limits::ENTRY) {
                    Ok(certs) if !certs.is_empty() => {
                        for der in certs {
                            match CertFacts::parse(&der) {
                                Ok(facts) => trust.issuers.push(Issuer {
                                    der,
                                    facts,
                                    path: path.clone(),
                                }),
                                Err(e) => trust.skipped.push((path.clone(), e)),
                            }
                        }
                    }
                    Ok(_) => trust
                        .skipped
                        .push((path, "no certificate in it".to_owned())),
                    Err(e) => trust.skipped.push((path, e)),
                }
            }
        }
        if let Some(dir) = crl_dir {
            for path in files_in(dir)? {
                match crls_in(&path) {
                    Ok(crls) if !crls.is_empty() => trust.crls.extend(crls),
                    Ok(_) => trust.skipped.push((path, "no CRL in it".to_owned())),
                    Err(e) => trust.skipped.push((path, e)),
                }
            }
        }
        Ok(trust)
    }

    /// The same settings loaded again when their files changed since this was loaded
    /// (a new CRL, an intermediate added to `issuers_dir`, an updated bundle); `None`
    /// when nothing changed.
    pub fn reloaded(&self) -> Option<Result<Trust, TrustError>> {
        let s = self.sources.as_ref()?;
        if s.fingerprint() == self.fingerprint {
            return None;
        }
        Some(Trust::load(
            s.bundle.as_deref(),
            s.issuers_dir.as_deref(),
            s.crl_dir.as_deref(),
        ))
    }

    /// The files whose changes can change this trust, for the store's watcher.
    pub fn files(&self) -> TrustFiles {
        let Some(s) = &self.sources else {
            return TrustFiles::default();
        };
        let bundle = s
            .bundle
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_BUNDLE));
        let dirs = s.issuers_dir.iter().chain(&s.crl_dir).cloned().collect();
        TrustFiles {
            bundle: Some(bundle),
            dirs,
        }
    }

    /// The key (SubjectPublicKeyInfo contents) of the trusted root whose subject is
    /// `name_der`.
    pub(super) fn root_key_named(&self, name_der: &[u8]) -> Option<&[u8]> {
        // A trust anchor's subject is the Name's contents, without its SEQUENCE header.
        let name = name_contents(name_der)?;
        self.roots
            .iter()
            .find(|r| r.subject.as_ref() == name)
            .map(|r| r.subject_public_key_info.as_ref())
    }

    /// No roots, issuers or CRLs: chains are not judged.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether a root with the subject `issuer_der` is trusted.
    pub(super) fn has_root_named(&self, issuer_der: &[u8]) -> bool {
        self.root_key_named(issuer_der).is_some()
    }
}

fn roots_of(path: &Path) -> Result<Vec<TrustAnchor<'static>>, TrustError> {
    let certs =
        certificates_in(path, limits::BUNDLE).map_err(|reason| TrustError::EmptyBundle {
            path: path.to_owned(),
            reason: format!(": {reason}"),
        })?;
    let roots: Vec<_> = certs
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .map(|anchor| anchor.to_owned())
        .collect();
    if roots.is_empty() {
        return Err(TrustError::EmptyBundle {
            path: path.to_owned(),
            reason: String::new(),
        });
    }
    Ok(roots)
}

/// The regular files of `dir`, sorted, dot-files left out.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, TrustError> {
    let read = std::fs::read_dir(dir).map_err(|error| TrustError::Read {
        path: dir.to_owned(),
        error,
    })?;
    let mut files: Vec<PathBuf> = read
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Certificates in a PEM file, or the one certificate of a DER file.
fn certificates_in(path: &Path, limit: u64) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = limits::read(path, limit).map_err(|e| e.to_string())?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

/// CRLs in a PEM file, or the one CRL of a DER file.
fn crls_in(path: &Path) -> Result<Vec<Crl>, String> {
    let bytes = limits::read(path, limits::CRL).map_err(|e| e.to_string())?;
    let ders: Vec<Vec<u8>> = if bytes.first() == Some(&0x30) {
        vec![bytes]
    } else {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .map(|r| r.map(|d| d.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?
    };
    ders.iter()
        .map(|der| Crl::from_der(der, path.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bundle_is_an_error_and_the_system_one_loads() {
        let e = Trust::load(Some(Path::new("/nonexistent/ca.pem")), None, None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        if Path::new(SYSTEM_BUNDLE).exists() {
            let trust = Trust::load(None, None, None).unwrap();
            assert!(trust.roots.len() > 10);
        }
    }
}
