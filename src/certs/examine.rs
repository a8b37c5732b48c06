//! `mailfront check`'s verdict: the files given, in any order, made into one entry and run
//! through the store's own loader with every signature verified, so that `check` accepts
//! what the store serves and refuses what it refuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::check::{Code, Domain, Finding, Severity, Trust};
use super::discover::{Held, Layout, Source, OCSP_SUFFIX};
use super::load::{self, Contents, Context, Leaf, LoadError, Role};

/// What the loader made of the files.
#[derive(Debug)]
pub struct Examined {
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
    /// The leaf, when one could be read.
    pub leaf: Option<Box<Leaf>>,
    /// The chain the store would serve (leaf first, completed from `issuers_dir`, without a
    /// root), when the loader took the files; empty when it refused them.
    pub chain: Vec<CertificateDer<'static>>,
    /// Until when the OCSP response given would be stapled (its nextUpdate), when it
    /// would be.
    pub stapled_until: Option<i64>,
}

impl Examined {
    /// Whether any finding is an error.
    pub fn refused(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// A PKCS#12 bundle (`.pfx`, `.p12`: IIS and Windows exports) opened with its password, as
/// PEM text the loader reads: its certificates, then its keys. `None` when `bytes` is not
/// PKCS#12; an error in words when the password does not open it or it cannot be read.
pub fn open_pkcs12(bytes: &[u8], password: &str) -> Option<Result<String, String>> {
    use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
    if !matches!(
        super::pieces::read(bytes),
        Err(super::pieces::Unusable::Pkcs12)
    ) {
        return None;
    }
    let store = match KeyStore::from_pkcs12(bytes, password, Pkcs12ImportPolicy::Relaxed) {
        Ok(store) => store,
        Err(p12_keystore::error::Error::MacError(_)) => {
            return Some(Err("the password does not open it".into()))
        }
        Err(e) => return Some(Err(format!("it cannot be opened ({e})"))),
    };
    let (mut certs, mut keys) = (String::new(), String::new());
    for (_, entry) in store.entries() {
        match entry {
            KeyStoreEntry::PrivateKeyChain(chain) => {
                keys.push_str(&encode("PRIVATE KEY", chain.key().as_der()));
                for cert in chain.certs() {
                    certs.push_str(&encode("CERTIFICATE", cert.as_der()));
                }
            }
            KeyStoreEntry::Certificate(cert) => {
                certs.push_str(&encode("CERTIFICATE", cert.as_der()))
            }
            KeyStoreEntry::Secret(_) => {}
        }
    }
    Some(Ok(certs + &keys))
}

/// One PEM block with Unix line ends (the loader notes CRLF as a repair).
fn encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// The entry `examined` made of `contents` (the files' bytes), as one canonical PEM file:
/// the chain the store would serve, then the key that goes with its leaf. `None` when
/// there is no served chain or no key for it.
pub fn canonical_pem(contents: &[Vec<u8>], examined: &Examined) -> Option<String> {
    let leaf = examined.chain.first()?;
    let provider = crate::tls::provider();
    let keys = contents
        .iter()
        .filter_map(|bytes| super::pieces::read(bytes).ok())
        .flat_map(|pieces| pieces.keys);
    let key = keys.into_iter().find(|key| {
        super::resolver::signing_key(key.clone_key(), &provider).is_ok_and(|signing| {
            CertifiedKey::new(vec![leaf.clone()], signing)
                .keys_match()
                .is_ok()
        })
    })?;
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let mut text = String::new();
    for der in &examined.chain {
        text.push_str(&encode("CERTIFICATE", der));
    }
    text.push_str(&encode(label, key.secret_der()));
    Some(text)
}

/// Files that cannot be examined at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ExamineError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no certificate in {0}: give the certificate (or chain) file, and its key")]
    NoCertificate(String),
}

/// Runs the store's loader on `files` as one entry. `domain` is the name the certificate
/// must cover; without `key_expected`, a missing key is not an error (the key is not
/// there yet).
pub fn examine(
    files: &[PathBuf],
    domain: Option<String>,
    trust: Trust,
    key_expected: bool,
) -> Result<Examined, ExamineError> {
    let mut findings = Vec::new();
    let mut read = Vec::new();
    for path in files {
        match load::read(path) {
            Ok(bytes) => read.push((path.clone(), bytes)),
            Err(LoadError::Read { path, error }) => return Err(ExamineError::Read { path, error }),
            Err(other) => findings.push(failed(path, &other)),
        }
    }
    if read.is_empty() && findings.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(ExamineError::NoCertificate(names.join(", ")));
    }
    let ctx = Context {
        provider: crate::tls::provider(),
        trust,
    };
    examine_read(read, findings, domain, &ctx, key_expected).map_err(|()| {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        ExamineError::NoCertificate(names.join(", "))
    })
}

/// [`examine`] of bytes already read, each named by its path (or, for an upload, by the
/// part's label), with the loader's `ctx`; `findings` holds what reading them found.
/// `Err` when nothing in them could make an entry and nothing was found to say why.
pub(super) fn examine_read(
    read: Vec<(PathBuf, Vec<u8>)>,
    mut findings: Vec<Finding>,
    domain: Option<String>,
    ctx: &Context,
    key_expected: bool,
) -> Result<Examined, ()> {
    let Some((source, contents)) = as_entry(read, &mut findings) else {
        if findings.is_empty() {
            return Err(());
        }
        return Ok(Examined {
            findings,
            leaf: None,
            chain: Vec::new(),
            stapled_until: None,
        });
    };
    let domain = domain.map(|name| Domain {
        name,
        explicit: true,
    });
    let mut chain = Vec::new();
    let mut stapled_until = None;
    let leaf = match load::parse(&source, &contents, ctx, Role::Check(domain)) {
        Ok(loaded) => {
            chain = loaded.certified.cert.clone();
            stapled_until = loaded
                .ocsp
                .as_ref()
                .filter(|o| o.stapled)
                .and_then(|o| o.until);
            let leaf = loaded.certified.cert.first().and_then(|der| {
                let facts = super::check::CertFacts::parse(der).ok()?;
                Some(Box::new(Leaf {
                    names: facts.dns_names.clone(),
                    summary: load::Summary::of(&facts),
                }))
            });
            findings.extend(loaded.findings);
            leaf
        }
        Err(LoadError::Refused(found, leaf)) => {
            findings.extend(found);
            leaf
        }
        Err(other) => {
            findings.push(failed(&source.cert, &other));
            None
        }
    };
    if !key_expected {
        findings.retain(|f| f.code != Code::NoKey);
    }
    findings.sort_by_key(|f| f.severity);
    Ok(Examined {
        findings,
        leaf,
        chain,
        stapled_until,
    })
}

/// The files as one entry: the certificate is the first file holding a server
/// certificate (else any certificate), the key the first file holding only keys, every
/// other file an extra. A file that holds nothing usable is noted in `findings`.
fn as_entry(
    read: Vec<(PathBuf, Vec<u8>)>,
    findings: &mut Vec<Finding>,
) -> Option<(Source, Contents)> {
    // An OCSP response is named so (`CERTFILE.ocsp`, `NAME.ocsp`), as in the store.
    let ocsp = read
        .iter()
        .position(|(path, _)| path.to_string_lossy().ends_with(OCSP_SUFFIX));
    let kinds: Vec<Holds> = read
        .iter()
        .enumerate()
        .map(|(i, (_, bytes))| match Some(i) == ocsp {
            true => Holds::Ocsp,
            false => Holds::of(bytes),
        })
        .collect();
    let first = |holds: Holds| kinds.iter().position(|k| *k == holds);
    let cert = (first(Holds::Leaf))
        .or_else(|| first(Holds::CaOnly))
        .or_else(|| first(Holds::Unusable))?;
    let key = kinds.iter().position(|k| *k == Holds::KeyOnly);
    let mut extra = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if i == cert || Some(i) == key || Some(i) == ocsp {
            continue;
        }
        match kind {
            Holds::Nothing => findings.push(unused(&read[i].0)),
            _ => extra.push(i),
        }
    }
    let file = |i: usize| read[i].0.clone();
    let source = Source {
        id: Arc::from(file_name(&read[cert].0)),
        cert: file(cert),
        key: key.map(file),
        extra: extra.iter().map(|&i| file(i)).collect(),
        layout: Layout::Content,
        ocsp: None,
    };
    let contents = Contents {
        cert: read[cert].1.clone(),
        key: key.map(|i| read[i].1.clone()),
        extra: extra.iter().map(|&i| read[i].1.clone()).collect(),
        ocsp: ocsp.map(|i| (file(i), Ok(read[i].1.clone()))),
    };
    Some((source, contents))
}

/// What one file holds, as far as making an entry of files goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// A certificate that is not a CA's (with or without a key and chain).
    Leaf,
    /// CA certificates only: a chain or bundle.
    CaOnly,
    /// Private keys only.
    KeyOnly,
    /// Nothing that belongs to an entry.
    Nothing,
    /// Something that cannot be used as it is (the loader says what).
    Unusable,
    /// The OCSP response to staple (by its name).
    Ocsp,
}

impl Holds {
    /// Classified as the store's content pairing classifies files.
    fn of(bytes: &[u8]) -> Self {
        match Held::of(bytes) {
            Err(_) => Self::Unusable,
            Ok(held) if held.has_leaf() => Self::Leaf,
            Ok(held) if held.is_ca_only() => Self::CaOnly,
            Ok(held) if held.has_key() => Self::KeyOnly,
            Ok(_) => Self::Nothing,
        }
    }
}

/// What the loader said without a finding (too large, no usable name), as one.
pub(super) fn failed(path: &Path, error: &LoadError) -> Finding {
    Finding {
        code: Code::BadCertificate,
        severity: Severity::Error,
        file: path.to_owned(),
        message: error.to_string(),
        fix: "give the certificate, chain and key files your certificate authority issued".into(),
    }
}

fn unused(path: &Path) -> Finding {
    Finding {
        code: Code::UnusedFile,
        severity: Severity::Warning,
        file: path.to_owned(),
        message: format!("{} holds no certificate or key; not used", path.display()),
        fix: "give only the certificate, its chain and its key".into(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
