//! `mailfront check FILE...`: the certificate checks on files an operator is about to
//! install, every finding printed (not just the first), as text or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use super::Format;
use crate::certs::check::{
    self, date, now, CertFacts, Code, Depth, Domain, Finding, Severity, Trust,
};
use crate::certs::limits::{self, ReadError};
use crate::certs::signing_key;

/// What `mailfront check` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The name the certificate must cover.
    pub domain: Option<String>,
    /// Roots; by default the system bundle.
    pub ca_bundle: Option<PathBuf>,
    pub issuers_dir: Option<PathBuf>,
    pub crl_dir: Option<PathBuf>,
    /// A chain and its key in either order, or one file with both.
    pub files: Vec<PathBuf>,
}

/// A problem with the request itself (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no certificate in {0}: give the certificate (or chain) file, and its key")]
    NoCertificate(String),
    #[error("more than one private key: in {0} and {1}; give the key of this certificate only")]
    TwoKeys(PathBuf, PathBuf),
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
}

/// Runs the checks and prints the findings; `Ok(true)` when there are errors.
pub fn run(req: &Request, format: Format, out: &mut dyn Write) -> Result<bool, UsageError> {
    let trust = Trust::load(
        req.ca_bundle.as_deref(),
        req.issuers_dir.as_deref(),
        req.crl_dir.as_deref(),
    )?;
    let mut findings = Vec::new();
    let mut chain = Vec::new();
    let mut cert_file: Option<&Path> = None;
    let mut key: Option<(PathBuf, PrivateKeyDer<'static>)> = None;
    for path in &req.files {
        let bytes = match limits::read(path, limits::ENTRY) {
            Ok(bytes) => bytes,
            Err(ReadError::Io(error)) => {
                return Err(UsageError::Read {
                    path: path.clone(),
                    error,
                })
            }
            Err(too_large) => {
                findings.push(Finding {
                    code: Code::BadCertificate,
                    severity: Severity::Error,
                    file: path.clone(),
                    message: format!("{}: {too_large}", path.display()),
                    fix: "give the certificate, chain and key files your certificate \
                          authority issued"
                        .into(),
                });
                continue;
            }
        };
        match blocks(&bytes) {
            Ok((certs, keys)) => {
                if !certs.is_empty() {
                    cert_file.get_or_insert(path);
                    chain.extend(certs);
                }
                for k in keys {
                    if let Some((first, _)) = &key {
                        return Err(UsageError::TwoKeys(first.clone(), path.clone()));
                    }
                    key = Some((path.clone(), k));
                }
            }
            Err(reason) => findings.push(Finding {
                code: Code::BadCertificate,
                severity: Severity::Error,
                file: path.clone(),
                message: reason,
                fix: "write the file again in full from what your certificate authority issued"
                    .into(),
            }),
        }
    }
    let now = now();
    let mut leaf = None;
    match cert_file {
        Some(cert_path) => {
            let key_path = key
                .as_ref()
                .map_or(cert_path.to_owned(), |(p, _)| p.clone());
            let signing = key.map(|(path, der)| {
                signing_key(der, &crate::tls::provider()).map_err(|e| (path, e))
            });
            let subject = check::Subject {
                cert_path,
                key_path: &key_path,
                chain: &chain,
                key: signing
                    .as_ref()
                    .and_then(|s| s.as_ref().ok())
                    .map(|k| k.as_ref()),
                domain: req.domain.clone().map(|name| Domain {
                    name,
                    explicit: true,
                }),
            };
            let outcome = check::check(&subject, &trust, now, Depth::Full);
            let weak = outcome.findings.iter().any(|f| f.code == Code::WeakKey);
            findings.extend(outcome.findings);
            if let (Some(Err((path, e))), false) = (&signing, weak) {
                findings.push(Finding {
                    code: Code::WeakKey,
                    severity: Severity::Error,
                    file: path.clone(),
                    message: format!("the private key cannot be used: {e}"),
                    fix: "use an ECDSA P-256/P-384 or RSA (2048 bits or more) key".into(),
                });
            }
            leaf = outcome.leaf;
        }
        None if findings.is_empty() => {
            let files: Vec<String> = req.files.iter().map(|f| f.display().to_string()).collect();
            return Err(UsageError::NoCertificate(files.join(", ")));
        }
        None => {}
    }
    findings.sort_by_key(|f| f.severity);
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let summary = leaf.map(|l| summary(&l, now));
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

/// The certificates and keys of one file, in order; `Err` names a malformed PEM.
fn blocks(
    bytes: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, Vec<PrivateKeyDer<'static>>), String> {
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|e| crate::certs::describe_pem(&e))?;
        match kind {
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            SectionKind::PrivateKey => keys.push(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => keys.push(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => keys.push(PrivateKeyDer::Sec1(der.into())),
            _ => {}
        }
    }
    if certs.is_empty() && keys.is_empty() && bytes.first() == Some(&0x30) {
        // A DER certificate (`.cer` from Windows tools).
        certs.push(CertificateDer::from(bytes.to_vec()));
    }
    Ok((certs, keys))
}

fn summary(leaf: &CertFacts, now: i64) -> Summary {
    Summary {
        subject: leaf.subject.clone(),
        issuer: leaf.issuer.clone(),
        names: leaf.dns_names.clone(),
        key: leaf.key.clone(),
        not_after: date(leaf.not_after),
        days_left: (leaf.not_after - now).div_euclid(86_400),
    }
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
