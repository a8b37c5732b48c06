//! An entry's files read into one set of certificates and one key, whatever files they
//! came in: each file through [`pieces`](crate::certs::pieces), certificates from every
//! file in file order with exact duplicates dropped, and the key the leaf's public key
//! names when there are several. What cannot be used becomes a finding with its fix, so
//! that the store, the report and `mailfront check` all say the same thing.

use std::path::{Path, PathBuf};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs::check::{Code, Finding, Severity};
use crate::certs::pieces::{self, Unusable};
use crate::certs::resolver::signing_key;

/// The certificates and key of an entry's files, and what reading them found.
#[derive(Default)]
pub(super) struct Gathered {
    /// Every certificate, in file order, each once.
    pub(super) certs: Vec<CertificateDer<'static>>,
    /// The private keys, with their files.
    keys: Vec<(PrivateKeyDer<'static>, PathBuf)>,
    /// Repairs (warnings), and files that cannot be used (errors).
    pub(super) findings: Vec<Finding>,
}

impl Gathered {
    /// Reads one file's bytes.
    pub(super) fn add(&mut self, path: &Path, bytes: &[u8]) {
        match pieces::read(bytes) {
            Ok(pieces) => {
                if !pieces.repairs.is_empty() {
                    self.findings.push(repaired(path, &pieces.repairs));
                }
                let mut twice = Vec::new();
                for cert in pieces.certs {
                    match self.certs.contains(&cert) {
                        true => twice.push(cert),
                        false => self.certs.push(cert),
                    }
                }
                if !twice.is_empty() {
                    self.findings.push(duplicates(path, &twice));
                }
                self.keys
                    .extend(pieces.keys.into_iter().map(|k| (k, path.to_owned())));
            }
            Err(unusable) => self.findings.push(unusable_finding(path, &unusable)),
        }
    }

    /// The key to use and its file: the only one, or of several the one whose public key
    /// is a certificate's here (else the first). `None` when there is none.
    pub(super) fn take_key(
        &mut self,
        provider: &CryptoProvider,
    ) -> Option<(PrivateKeyDer<'static>, PathBuf)> {
        if self.keys.len() > 1 {
            let spkis: Vec<Vec<u8>> = self.certs.iter().filter_map(spki_of).collect();
            let matching = self.keys.iter().position(|(key, _)| {
                signing_key(key.clone_key(), provider)
                    .ok()
                    .and_then(|s| s.public_key().map(|p| p.as_ref().to_vec()))
                    .is_some_and(|p| spkis.contains(&p))
            });
            if let Some(i) = matching {
                self.keys.swap(0, i);
            }
        }
        match self.keys.is_empty() {
            true => None,
            false => Some(self.keys.swap_remove(0)),
        }
    }

    /// Whether a finding already says why there is no usable key (an encrypted key, a
    /// PKCS#12 bundle).
    pub(super) fn key_explained(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f.code, Code::EncryptedKey | Code::Pkcs12))
    }
}

fn spki_of(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

fn repaired(path: &Path, repairs: &[pieces::Repair]) -> Finding {
    let what: Vec<String> = repairs.iter().map(pieces::Repair::describe).collect();
    Finding {
        code: Code::PemRepaired,
        severity: Severity::Warning,
        file: path.to_owned(),
        message: format!(
            "{} was read after a repair: {}",
            path.display(),
            what.join("; ")
        ),
        fix: "write it again as plain PEM: UTF-8 without a byte-order mark, each BEGIN and \
              END line on a line of its own"
            .into(),
    }
}

fn duplicates(path: &Path, twice: &[CertificateDer<'_>]) -> Finding {
    let names: Vec<String> = twice
        .iter()
        .map(|der| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, c)| format!("\"{}\"", c.subject()))
                .unwrap_or_else(|_| "a certificate".into())
        })
        .collect();
    Finding {
        code: Code::NotOneLeaf,
        severity: Severity::Warning,
        file: path.to_owned(),
        message: format!(
            "{} repeats {} given before (as `cat cert.pem fullchain.pem` does); served once",
            path.display(),
            names.join(", ")
        ),
        fix: "give each certificate once: the server's certificate, then its chain".into(),
    }
}

/// A file that cannot be used, as a finding with the command that fixes it.
pub(super) fn unusable_finding(path: &Path, unusable: &Unusable) -> Finding {
    let code = match unusable {
        Unusable::EncryptedKey => Code::EncryptedKey,
        Unusable::Pkcs12 => Code::Pkcs12,
        Unusable::Pem(_) | Unusable::Utf16 | Unusable::Binary => Code::BadCertificate,
    };
    let (message, fix) = pieces::explain(path, unusable);
    Finding {
        code,
        severity: Severity::Error,
        file: path.to_owned(),
        message,
        fix,
    }
}
