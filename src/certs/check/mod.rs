//! The certificate checks of DESIGN.md's catalogue, the ones hosting panels run on an
//! upload, each finding with a stable code, a severity, the file, the values involved and
//! what to do. `mailfront check` runs them on files; the store runs them on every load,
//! where errors refuse the entry (the previous version keeps serving) and warnings are
//! logged.
//!
//! - [`facts`]: what one certificate says (x509-parser).
//! - [`trust`]: roots, `issuers_dir` intermediates, `crl_dir` CRLs.
//! - [`chain`]: the order of the file, the missing issuer, the path to a root (webpki).
//! - [`crl`]: CRLs, each verified once per issuer key, for revocation on load.
//! - [`der`]: the DER structures taken apart by hand.
//! - `problems`: the set of errors a certificate serves with ([`Problems`]).

pub mod chain;
pub mod crl;
pub mod der;
pub mod facts;
mod problems;
pub mod trust;

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::sign::SigningKey;
use serde::Serialize;

use crate::names::Pattern;
pub use facts::CertFacts;
pub use problems::{Codes, Problems};
pub use trust::{Trust, TrustError, TrustFiles};

/// How bad a finding is: errors refuse an entry, warnings load it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    /// The word printed and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// The stable codes of DESIGN.md's catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    KeyMismatch,
    NotOneLeaf,
    ChainIncomplete,
    NameMismatch,
    WeakSignature,
    WeakKey,
    Expired,
    NotYetValid,
    Revoked,
    SelfSigned,
    UntrustedIssuer,
    KeyPermissions,
    ExpiresSoon,
    /// A certificate in the file cannot be parsed at all, or the file is damaged beyond
    /// a certain repair.
    BadCertificate,
    /// The files hold no certificate.
    NoCertificate,
    /// The files hold no private key.
    NoKey,
    /// The private key is encrypted with a passphrase.
    EncryptedKey,
    /// A PKCS#12 bundle, locked with a password.
    Pkcs12,
    /// A PEM file read after a repair with one certain reading (BOM, joined lines).
    PemRepaired,
    /// The root certificate is in the chain; it is left out of what is served.
    RootInChain,
    /// A file given to `mailfront check` holds nothing the certificate uses.
    UnusedFile,
    /// An OCSP response file that cannot be stapled: not a successful basic response, the
    /// status unknown, or no issuer in the chain to check it against.
    OcspUnusable,
    /// An OCSP response for another certificate (issuer or serial).
    OcspForeign,
    /// An OCSP response signed by neither the issuer nor a responder it certified.
    OcspBadSignature,
    /// An OCSP response past its nextUpdate.
    OcspExpired,
    /// An OCSP response whose thisUpdate is still ahead.
    OcspNotYetValid,
    /// An install (an upload, an ACME certificate) would serve no client: what serves its
    /// name outranks it (a trusted chain, fewer errors, a later notAfter, an exact name).
    NotBetter,
}

impl Code {
    /// The code as printed, logged and matched by tools.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyMismatch => "key-mismatch",
            Self::NotOneLeaf => "not-one-leaf",
            Self::ChainIncomplete => "chain-incomplete",
            Self::NameMismatch => "name-mismatch",
            Self::WeakSignature => "weak-signature",
            Self::WeakKey => "weak-key",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::Revoked => "revoked",
            Self::SelfSigned => "self-signed",
            Self::UntrustedIssuer => "untrusted-issuer",
            Self::KeyPermissions => "key-permissions",
            Self::ExpiresSoon => "expires-soon",
            Self::BadCertificate => "bad-certificate",
            Self::NoCertificate => "no-certificate",
            Self::NoKey => "no-key",
            Self::EncryptedKey => "encrypted-key",
            Self::Pkcs12 => "pkcs12",
            Self::PemRepaired => "pem-repaired",
            Self::RootInChain => "root-in-chain",
            Self::UnusedFile => "unused-file",
            Self::OcspUnusable => "ocsp-unusable",
            Self::OcspForeign => "ocsp-foreign",
            Self::OcspBadSignature => "ocsp-bad-signature",
            Self::OcspExpired => "ocsp-expired",
            Self::OcspNotYetValid => "ocsp-not-yet-valid",
            Self::NotBetter => "not-better",
        }
    }
}

impl Code {
    /// The errors a certificate still serves with, badly: the store loads a version with
    /// them when nothing better serves its names (DESIGN.md, "the store's rule"), since the
    /// alternative is the server-wide certificate and a certain name mismatch. The other
    /// errors mean it cannot serve at all.
    pub fn serves_anyway(self) -> bool {
        self != Code::Revoked && Problems::bit(self).is_some()
    }
}

/// One problem found, with what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// What is wrong, with the values involved.
    pub message: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.code.as_str(),
            self.file.display(),
            self.message
        )
    }
}

/// A domain the certificate must cover, and whether it was asked for (`--domain`) or
/// guessed from the entry's file or directory name (then a mismatch only warns: the
/// operator may name files after the customer, not after the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub explicit: bool,
}

/// How far to go: on load the chain is judged by names and key identifiers (what a
/// client needs to build the path) and certificates are looked up in the CRLs of their
/// issuers (each CRL's signature verified once), because 100,000 path verifications would
/// add seconds to every start; `mailfront check` verifies every signature with webpki.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Load,
    Full,
}

/// What is checked: an entry's certificates as they are in the file, and its key.
pub struct Subject<'a> {
    /// The file holding the chain.
    pub cert_path: &'a Path,
    /// The file holding the key (the same as `cert_path` for one combined file).
    pub key_path: &'a Path,
    /// The certificates in file order.
    pub chain: &'a [CertificateDer<'static>],
    /// The key, when it could be loaded.
    pub key: Option<&'a dyn SigningKey>,
    /// The domain it must cover, if any.
    pub domain: Option<Domain>,
}

/// The findings, and what to serve when the file's chain needs changing.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// The chain to serve when it differs from the file's (reordered, completed from
    /// `issuers_dir`, or with unrelated certificates left out).
    pub chain: Option<Vec<CertificateDer<'static>>>,
    /// The leaf's facts, when it could be read.
    pub leaf: Option<CertFacts>,
}

impl Outcome {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Days before notAfter from which `expires-soon` warns.
pub const EXPIRES_SOON_DAYS: i64 = 30;

/// Runs every check on `subject` at time `now` (Unix seconds).
pub fn check(subject: &Subject<'_>, trust: &Trust, now: i64, depth: Depth) -> Outcome {
    let mut out = Outcome::default();
    let mut facts = Vec::with_capacity(subject.chain.len());
    for (i, der) in subject.chain.iter().enumerate() {
        match CertFacts::parse(der) {
            Ok(f) => facts.push(f),
            Err(reason) => {
                out.findings.push(Finding {
                    code: Code::BadCertificate,
                    severity: Severity::Error,
                    file: subject.cert_path.to_owned(),
                    message: format!(
                        "certificate {} of the file cannot be parsed: {reason}",
                        i + 1
                    ),
                    fix: "replace the file with the PEM your certificate authority issued".into(),
                });
                return out;
            }
        }
    }
    let Some(path) = chain::order(subject, &facts, trust, &mut out) else {
        return out;
    };
    let leaf = &facts[path.leaf];
    key_checks(subject, leaf, &mut out);
    if let Some(domain) = &subject.domain {
        name_check(subject.cert_path, leaf, domain, &mut out);
    }
    // The dates and algorithms of what is served, the root excepted: clients use their
    // own copy of a root, and its self-signature means nothing.
    let served: Vec<&CertFacts> = path.served_facts(&facts, trust);
    for (i, cert) in served.iter().enumerate() {
        let is_root = i > 0 && cert.self_issued();
        if !is_root {
            date_checks(subject.cert_path, cert, i == 0, now, &mut out);
            if cert.weak_signature {
                out.findings.push(Finding {
                    code: Code::WeakSignature,
                    severity: Severity::Error,
                    file: subject.cert_path.to_owned(),
                    message: format!(
                        "{} is signed with {}, which browsers and mail clients reject",
                        describe(cert),
                        cert.signature
                    ),
                    fix: "have the certificate reissued with a SHA-256 signature".into(),
                });
            }
        }
        if let Some(weak) = &cert.weak_key {
            out.findings.push(Finding {
                code: Code::WeakKey,
                severity: Severity::Error,
                file: subject.cert_path.to_owned(),
                message: format!("{} has {weak}", describe(cert)),
                fix: "generate a new key (ECDSA P-256, or RSA of 2048 bits or more) and have \
                      the certificate reissued for it"
                    .into(),
            });
        }
    }
    chain::verify(subject, &facts, &path, trust, now, depth, &mut out);
    out.leaf = Some(facts[path.leaf].clone());
    out
}

/// `CN=x (serial 0a:1b...)` style description used in messages.
pub fn describe(cert: &CertFacts) -> String {
    format!(
        "the certificate \"{}\" (serial {})",
        cert.label(),
        cert.serial
    )
}

fn key_checks(subject: &Subject<'_>, leaf: &CertFacts, out: &mut Outcome) {
    if let Some(key) = subject.key {
        if key
            .public_key()
            .is_some_and(|spki| spki.as_ref() != leaf.spki.as_slice())
        {
            out.findings.push(Finding {
                code: Code::KeyMismatch,
                severity: Severity::Error,
                file: subject.key_path.to_owned(),
                message: format!(
                    "the private key in {} does not match {} in {} ({} key)",
                    subject.key_path.display(),
                    describe(leaf),
                    subject.cert_path.display(),
                    leaf.key
                ),
                fix: "use the key the certificate was requested with (certificate and key \
                      files from different orders or renewals do not mix)"
                    .into(),
            });
        }
    }
    if subject.key.is_some() {
        key_permissions(subject.key_path, out);
    }
}

#[cfg(unix)]
fn key_permissions(path: &Path, out: &mut Outcome) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            out.findings.push(Finding {
                code: Code::KeyPermissions,
                severity: Severity::Warning,
                file: path.to_owned(),
                message: format!(
                    "the file holding the private key is readable by {} (mode {mode:04o})",
                    if mode & 0o004 != 0 {
                        "everyone"
                    } else {
                        "its group"
                    }
                ),
                fix: format!("chmod 600 {}", path.display()),
            });
        }
    }
}

#[cfg(not(unix))]
fn key_permissions(_: &Path, _: &mut Outcome) {}

fn name_check(file: &Path, leaf: &CertFacts, domain: &Domain, out: &mut Outcome) {
    let wanted = crate::names::normalize(&domain.name).into_owned();
    let patterns: Vec<Pattern> = leaf
        .dns_names
        .iter()
        .filter_map(|n| Pattern::parse(n).ok())
        .collect();
    if patterns.iter().any(|p| p.covers(&wanted)) {
        return;
    }
    let covered = if leaf.dns_names.is_empty() {
        "no DNS name at all".to_owned()
    } else {
        leaf.dns_names.join(", ")
    };
    let mut message = format!(
        "{} does not cover {wanted}; it covers {covered}",
        describe(leaf)
    );
    for name in &leaf.dns_names {
        if let Some(parent) = name.strip_prefix("*.") {
            if parent.eq_ignore_ascii_case(&wanted) {
                message.push_str(&format!(
                    ". {name} covers the names one label below {parent} (mail.{parent}), not \
                     {parent} itself"
                ));
            } else if wanted.ends_with(&format!(".{}", parent.to_ascii_lowercase())) {
                message.push_str(&format!(
                    ". {name} covers exactly one label below {parent}, not {wanted}"
                ));
            }
        }
    }
    if !domain.explicit {
        message.push_str(" (the domain is guessed from the file or directory name)");
    }
    out.findings.push(Finding {
        code: Code::NameMismatch,
        severity: if domain.explicit {
            Severity::Error
        } else {
            Severity::Warning
        },
        file: file.to_owned(),
        message,
        fix: format!("request a certificate that lists {wanted} in its subjectAltName"),
    });
}

const DAY: i64 = 86_400;

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A Unix time as the date operators read (`2027-03-01`).
pub fn date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(|d| d.date().to_string())
        .unwrap_or_else(|_| t.to_string())
}

fn date_checks(file: &Path, cert: &CertFacts, leaf: bool, now: i64, out: &mut Outcome) {
    if now > cert.not_after {
        let days = (now - cert.not_after) / DAY;
        out.findings.push(Finding {
            code: Code::Expired,
            severity: Severity::Error,
            file: file.to_owned(),
            message: format!(
                "{} expired on {} ({days} days ago)",
                describe(cert),
                date(cert.not_after)
            ),
            fix: "renew it and replace the file".into(),
        });
    } else if now < cert.not_before {
        let days = (cert.not_before - now + DAY - 1) / DAY;
        out.findings.push(Finding {
            code: Code::NotYetValid,
            severity: Severity::Error,
            file: file.to_owned(),
            message: format!(
                "{} is not valid before {} (in {days} days)",
                describe(cert),
                date(cert.not_before)
            ),
            fix: "check this machine's clock, or wait until then".into(),
        });
    } else if leaf && cert.not_after - now < EXPIRES_SOON_DAYS * DAY {
        let days = (cert.not_after - now) / DAY;
        out.findings.push(Finding {
            code: Code::ExpiresSoon,
            severity: Severity::Warning,
            file: file.to_owned(),
            message: format!(
                "{} expires on {} (in {days} days)",
                describe(cert),
                date(cert.not_after)
            ),
            fix: "renew it; automated renewal usually starts 30 days before expiry".into(),
        });
    }
}

/// The domain an entry's name suggests: `example.com.pem` or `live/example.com/` suggest
/// example.com; names without a dot, or with characters no host name has, suggest none.
pub fn domain_of_entry(id: &str) -> Option<Domain> {
    let last = id.trim_end_matches('/').rsplit('/').next()?;
    let name = match last.rsplit_once('.') {
        Some((stem, ext))
            if !id.ends_with('/')
                && matches!(
                    ext.to_ascii_lowercase().as_str(),
                    "pem" | "crt" | "cer" | "der" | "key"
                ) =>
        {
            stem
        }
        _ if id.ends_with('/') => last,
        _ => return None,
    };
    let labels: Vec<&str> = name.split('.').collect();
    let hostlike = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_alphabetic()));
    hostlike.then(|| Domain {
        name: name.to_ascii_lowercase(),
        explicit: false,
    })
}

#[cfg(test)]
mod tests;
