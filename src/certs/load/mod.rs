//! Turning an entry's files into a servable certificate: PEM to DER, the key into a
//! signing key, the checks of [`super::check`], the names from the leaf's DNS SANs. Runs
//! at start and reload, in parallel across cores, never on the handshake path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::check::{self, CertFacts, Code, Depth, Finding, Problems, Severity, Trust};
use super::discover::Source;
use super::index::{Outranked, Served};
use super::limits::ReadError;
use super::ocsp;
use super::resolver::{schemes_of, signing_key, Fixed, Stapled};
use crate::names::Pattern;
use gather::Gathered;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

mod gather;

/// The findings that say a chain leads to no trusted root.
const UNTRUSTING: [Code; 3] = [
    Code::SelfSigned,
    Code::UntrustedIssuer,
    Code::ChainIncomplete,
];

/// A certificate ready to serve, with what the index needs to know of it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it came from.
    pub source: Source,
    /// What the handshake uses.
    pub served: Arc<Served>,
    /// The names it covers, from the leaf's DNS SANs.
    pub names: Vec<Pattern>,
    /// SAN entries that cannot be served (partial wildcards, bad characters).
    pub skipped_names: Vec<String>,
    /// What the checks found and did not refuse it for: warnings, and the errors it
    /// serves with anyway ([`Code::serves_anyway`]; their set is `served.problems`). The catalog logs them, and keeps them
    /// only for a version that serves with errors (there are few of those).
    pub findings: Vec<Finding>,
    /// The chain and key served (shared with `served`): the report reads the leaf's
    /// issuer, key and dates from it when asked, rather than every entry keep them.
    pub certified: Arc<CertifiedKey>,
    /// What became of its OCSP response file, when it has one.
    pub ocsp: Option<Box<OcspNote>>,
}

/// An entry's OCSP response as the report shows it, and when to judge it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspNote {
    /// Whether handshakes get it stapled.
    pub stapled: bool,
    /// Until when it is stapled (its nextUpdate).
    pub until: Option<i64>,
    /// When the entry is to be loaded again for it: a stapled response's nextUpdate, a
    /// future thisUpdate.
    pub recheck: Option<i64>,
    /// Why it is not stapled: the finding's code and message.
    pub reason: Option<String>,
}

impl OcspNote {
    fn refused(finding: &Finding, recheck: Option<i64>) -> Self {
        Self {
            stapled: false,
            until: None,
            recheck,
            reason: Some(format!("{}: {}", finding.code.as_str(), finding.message)),
        }
    }
}

/// A certificate as the report shows it: its leaf's issuer, key and validity.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The subject, as `CN=..., O=...`.
    pub subject: String,
    /// The issuer's CN (or whole name).
    pub issuer: String,
    /// `ECDSA P-256`, `RSA 2048`...
    pub key: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The leaf of a refused version, for the report.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The DNS names of its subjectAltName, as written.
    pub names: Vec<String>,
    pub summary: Summary,
}

impl Summary {
    pub fn of(leaf: &CertFacts) -> Self {
        Self {
            subject: leaf.subject.clone(),
            issuer: leaf.issuer_label(),
            key: leaf.key.clone(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        }
    }
}

/// What loading needs besides the files: the crypto provider and the trust the checks
/// judge chains by.
#[derive(Debug)]
pub struct Context {
    pub provider: Arc<CryptoProvider>,
    pub trust: Trust,
}

/// Which certificate is loaded. Loading refuses a version that cannot serve at all (an
/// error other than those of [`Code::serves_anyway`]); whether one that serves badly is
/// better than what serves its names now is the catalog's judgement. The server-wide
/// certificate also serves when revoked: refusing it would stop the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Entry,
    ServerWide,
    /// `mailfront check`: every signature verified, the domain given (or none).
    Check(Option<check::Domain>),
}

/// Why an entry cannot be served; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing or unreadable.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is far larger than any certificate entry: not read.
    #[error(
        "{path} is {}, more than the {} a certificate entry's file may be (a few KB is \
         usual): not read; move it out of the store",
        super::limits::size_text(*size),
        super::limits::size_text(*limit)
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The files or the checks found errors (each names its file): no certificate or key,
    /// a damaged or locked file, a failed check; the leaf, when it could be read.
    #[error("{}", list(.0))]
    Refused(Vec<Finding>, Option<Box<Leaf>>),
    /// What serves its names now (`serving`, the entry that does) outranks the version,
    /// for the reason `why`: it is not loaded, so as not to make things worse.
    #[error("{}", worse(.findings, .serving, *.why))]
    Worse {
        findings: Vec<Finding>,
        serving: Arc<str>,
        why: Outranked,
    },
    /// The leaf has no DNS name that could be served.
    #[error("{path}: the certificate has no usable DNS name in its subjectAltName{skipped}")]
    NoNames { path: PathBuf, skipped: String },
    /// Loading panicked: a bug (ours or a parser's) on bytes nobody foresaw. The entry is
    /// refused; everything else goes on.
    #[error(
        "{path}: loading it failed on a bug in mailfront or a library it uses ({message}); \
         the entry is refused: please report it, with the file if you can"
    )]
    Panicked { path: PathBuf, message: String },
}

/// The bytes of an entry's files, read once: hashed to notice changes, then parsed.
#[derive(Debug)]
pub struct Contents {
    /// The certificate file.
    pub cert: Vec<u8>,
    /// The key file, when separate.
    pub key: Option<Vec<u8>>,
    /// The further files holding CA certificates, in the source's order.
    pub extra: Vec<Vec<u8>>,
    /// The OCSP response file and its bytes, or why they could not be read. Never a
    /// reason to refuse the entry, which then serves unstapled.
    pub ocsp: Option<(PathBuf, Result<Vec<u8>, String>)>,
}

impl Contents {
    /// Reads the files of `source`.
    pub fn read(source: &Source) -> Result<Self, LoadError> {
        let cert = read(&source.cert)?;
        let key = source.key.as_deref().map(read).transpose()?;
        let extra = source
            .extra
            .iter()
            .map(|p| read(p))
            .collect::<Result<_, _>>()?;
        let ocsp = source
            .ocsp_path()
            .and_then(|path| read_ocsp(&path).map(|read| (path, read)));
        Ok(Self {
            cert,
            key,
            extra,
            ocsp,
        })
    }

    /// A hash of both files, to tell a real change from a touch.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.cert.hash(&mut hasher);
        self.key.hash(&mut hasher);
        self.extra.hash(&mut hasher);
        self.ocsp.hash(&mut hasher);
        hasher.finish()
    }
}

/// Loads one entry from its files.
pub fn load(source: &Source, ctx: &Context, role: Role) -> Result<Loaded, LoadError> {
    parse(source, &Contents::read(source)?, ctx, role)
}

/// Loads one entry from bytes already read. A panic while doing so refuses this entry
/// alone: the reloader, its catalog and every other entry go on (a panic used to take the
/// whole reload down, and with it live reload for good).
pub fn parse(
    source: &Source,
    contents: &Contents,
    ctx: &Context,
    role: Role,
) -> Result<Loaded, LoadError> {
    // Unwind safety: a panic leaves nothing half-changed behind, since parsing only reads
    // `contents` and `ctx` and builds values it returns.
    let guarded = std::panic::AssertUnwindSafe(|| parse_entry(source, contents, ctx, role));
    std::panic::catch_unwind(guarded).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(LoadError::Panicked {
            path: source.cert.clone(),
            message,
        })
    })
}

/// Debug builds only: panics while loading an entry whose id contains the text of
/// `MAILFRONT_DEBUG_PANIC_ON`, so that tests can show what one entry's panic does.
#[cfg(debug_assertions)]
fn debug_panic_on(id: &str) {
    if let Some(marker) = std::env::var_os("MAILFRONT_DEBUG_PANIC_ON") {
        let marker = marker.to_string_lossy();
        assert!(
            marker.is_empty() || !id.contains(&*marker),
            "MAILFRONT_DEBUG_PANIC_ON matches {id}"
        );
    }
}

fn parse_entry(
    source: &Source,
    contents: &Contents,
    ctx: &Context,
    role: Role,
) -> Result<Loaded, LoadError> {
    #[cfg(debug_assertions)]
    debug_panic_on(&source.id);
    let mut files = Gathered::default();
    let extra = source.extra.iter().zip(&contents.extra);
    let key = source.key.as_ref().zip(contents.key.as_ref());
    let all = std::iter::once((&source.cert, &contents.cert))
        .chain(extra)
        .chain(key);
    for (i, (path, bytes)) in all.enumerate() {
        // One file named twice (a combined PEM as both `default_cert` and `default_key`)
        // is read once: its certificates are not a second copy.
        if !source.files().take(i).any(|p| p == path) {
            files.add(path, bytes);
        }
    }
    if files.certs.is_empty() {
        if !files.findings.iter().any(|f| f.severity == Severity::Error) {
            files.findings.push(no_certificate(&source.cert));
        }
        return Err(LoadError::Refused(files.findings, None));
    }
    let key = files.take_key(&ctx.provider);
    let key_path = key.as_ref().map_or(source.cert.clone(), |(_, p)| p.clone());
    let signing = key.map(|(der, _)| signing_key(der, &ctx.provider));
    let subject = check::Subject {
        cert_path: &source.cert,
        key_path: &key_path,
        chain: &files.certs,
        key: signing
            .as_ref()
            .and_then(|s| s.as_ref().ok())
            .map(|k| k.as_ref()),
        domain: match &role {
            Role::Check(domain) => domain.clone(),
            _ => check::domain_of_entry(&source.id),
        },
    };
    let depth = match &role {
        Role::Check(_) => Depth::Full,
        _ => Depth::Load,
    };
    let now = check::now();
    let outcome = check::check(&subject, &ctx.trust, now, depth);
    let key_explained = files.key_explained();
    let mut findings = std::mem::take(&mut files.findings);
    findings.extend(outcome.findings);
    let served_chain = outcome.chain.as_deref().unwrap_or(&files.certs);
    let (staple, ocsp) = match &contents.ocsp {
        Some((path, response)) if !served_chain.is_empty() => {
            let chains = (served_chain, files.certs.as_slice());
            let (staple, note, finding) = judge_ocsp(path, response, chains, ctx, now);
            findings.extend(finding);
            (staple, Some(Box::new(note)))
        }
        _ => (None, None),
    };
    match &signing {
        None if !key_explained => findings.push(no_key(source)),
        Some(Err(e)) if !findings.iter().any(|f| f.code == Code::WeakKey) => {
            findings.push(unusable_key(&key_path, e))
        }
        _ => {}
    }
    // Errors first, each kind in the order found.
    findings.sort_by_key(|f| f.severity);
    let fatal = |f: &Finding| {
        f.severity == Severity::Error
            && !f.code.serves_anyway()
            && !(role == Role::ServerWide && f.code == Code::Revoked)
    };
    let (Some(leaf), Some(Ok(signing))) = (
        outcome
            .leaf
            .as_ref()
            .filter(|_| !findings.iter().any(fatal)),
        signing,
    ) else {
        let leaf = outcome.leaf.as_ref().map(|l| {
            Box::new(Leaf {
                names: l.dns_names.clone(),
                summary: Summary::of(l),
            })
        });
        return Err(LoadError::Refused(findings, leaf));
    };
    let problems = Problems::of(
        findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.code),
    );
    let trusted = !findings.iter().any(|f| UNTRUSTING.contains(&f.code));
    let (not_before, not_after) = (leaf.not_before, leaf.not_after);
    // Kept for as long as the version serves: no room for more certificates, as the
    // certificates were gathered one by one (a Vec of capacity 4 for a 1-certificate
    // chain is 72 bytes an entry, 7 MB at 100,000).
    let mut chain = outcome.chain.unwrap_or(files.certs);
    chain.shrink_to_fit();
    let schemes = schemes_of(signing.as_ref());
    let algorithm = signing.algorithm();
    let mut certified = CertifiedKey::new(chain, signing);
    let until = staple.map(|(response, until)| {
        certified.ocsp = Some(response);
        until
    });
    let certified = Arc::new(certified);
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match until {
        Some(until) => Arc::new(Stapled {
            with: Arc::clone(&certified),
            until,
        }),
        None => Arc::new(Fixed(Arc::clone(&certified))),
    };
    let mut names = Vec::new();
    let mut skipped = Vec::new();
    for dns in &leaf.dns_names {
        match Pattern::parse(dns) {
            Ok(p) if !names.contains(&p) => names.push(p),
            Ok(_) => {}
            Err(_) => skipped.push(dns.clone()),
        }
    }
    if names.is_empty() {
        let skipped = if skipped.is_empty() {
            String::new()
        } else {
            format!(" (unusable: {})", skipped.join(", "))
        };
        return Err(LoadError::NoNames {
            path: source.cert.clone(),
            skipped,
        });
    }
    let served = Arc::new(Served {
        id: Arc::clone(&source.id),
        resolver,
        algorithm,
        schemes,
        not_before,
        not_after,
        problems,
        trusted,
    });
    Ok(Loaded {
        source: source.clone(),
        served,
        names,
        skipped_names: skipped,
        findings,
        certified,
        ocsp,
    })
}

/// A response to staple, and until when (its nextUpdate, seconds since the epoch).
type Staple = (Vec<u8>, i64);

/// Judges an entry's OCSP response ([`super::ocsp`]): the bytes to staple, what the report
/// says of it, and the finding when it is not stapled.
fn judge_ocsp(
    path: &Path,
    response: &Result<Vec<u8>, String>,
    (chain, files): (&[CertificateDer<'static>], &[CertificateDer<'static>]),
    ctx: &Context,
    now: i64,
) -> (Option<Staple>, OcspNote, Option<Finding>) {
    let bytes = match response {
        Ok(bytes) => bytes,
        Err(reason) => {
            let finding = Finding {
                code: Code::OcspUnusable,
                severity: Severity::Warning,
                file: path.to_owned(),
                message: format!("the OCSP response {reason}"),
                fix: "write a DER OCSP response of a few kilobytes, readable by mailfront".into(),
            };
            let note = OcspNote::refused(&finding, None);
            return (None, note, Some(finding));
        }
    };
    match ocsp::judge(path, bytes, chain, files, &ctx.provider, now) {
        ocsp::Verdict::Staple { until } => {
            let note = OcspNote {
                stapled: true,
                until: Some(until),
                recheck: Some(until),
                reason: None,
            };
            (Some((bytes.clone(), until)), note, None)
        }
        ocsp::Verdict::Refused { finding, recheck } => {
            (None, OcspNote::refused(&finding, recheck), Some(finding))
        }
    }
}

fn no_certificate(path: &Path) -> Finding {
    Finding {
        code: Code::NoCertificate,
        severity: Severity::Error,
        file: path.to_owned(),
        message: format!(
            "{}: no certificate (no \"BEGIN CERTIFICATE\" block)",
            path.display()
        ),
        fix: "give the certificate file your certificate authority issued, PEM or DER".into(),
    }
}

fn no_key(source: &Source) -> Finding {
    let (file, fix) = match &source.key {
        Some(key) => (
            key.clone(),
            "give the private key the certificate was requested with",
        ),
        None => (
            source.cert.clone(),
            "put the private key in the file, or beside it as NAME.key",
        ),
    };
    Finding {
        code: Code::NoKey,
        severity: Severity::Error,
        message: format!(
            "{}: no private key (no \"BEGIN ... PRIVATE KEY\" block)",
            file.display()
        ),
        file,
        fix: fix.into(),
    }
}

fn unusable_key(path: &Path, e: &rustls::Error) -> Finding {
    Finding {
        code: Code::WeakKey,
        severity: Severity::Error,
        file: path.to_owned(),
        message: format!("the private key in {} cannot be used: {e}", path.display()),
        fix: "use an ECDSA P-256/P-384 or RSA (2048 bits or more) key".into(),
    }
}

/// Why a version is refused for one that outranks it: its errors, or what leaves its
/// chain untrusted, and what the version serving has instead.
fn worse(findings: &[Finding], serving: &str, why: Outranked) -> String {
    match why {
        Outranked::Errors => format!(
            "{}; {serving} serves its names without these problems",
            list(findings)
        ),
        Outranked::Trust => {
            let untrusted: Vec<String> = findings
                .iter()
                .filter(|f| UNTRUSTING.contains(&f.code))
                .map(ToString::to_string)
                .collect();
            format!(
                "{}; {serving} serves its names with a chain to a trusted root",
                untrusted.join("; ")
            )
        }
    }
}

fn list(findings: &[Finding]) -> String {
    let lines: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    lines.join("; ")
}

/// Applies `f` to every item on all cores, keeping the order. Small batches stay on the
/// calling thread, where starting threads would cost more than it saves.
///
/// Loading is CPU work when the files are in the page cache and I/O when they are not (the
/// first start after boot): one file, one small read, and a blocked thread leaves its core
/// idle. So there are several workers per core, and they take small batches from a shared
/// counter rather than fixed halves, which also keeps both cores busy when another process
/// holds one of them for a while. Measured on the store benchmark's 100,000 entries with
/// a cold cache: 13.3 s with one worker per core, 7.4 s with eight; no change when warm.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const BATCH: usize = 32;
    const PER_CORE: usize = 8;
    const MAX_WORKERS: usize = 64;
    if items.len() < 2 * BATCH {
        return items.iter().map(f).collect();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (cores * PER_CORE)
        .min(MAX_WORKERS)
        .min(items.len().div_ceil(BATCH));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            let batch = &items[start..(start + BATCH).min(items.len())];
            done.push((start, batch.iter().map(&f).collect::<Vec<R>>()));
        }
    };
    let mut batches: Vec<(usize, Vec<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
        handles
            .into_iter()
            // A panic in a worker is a bug in a parser; re-raise it rather than serve a
            // store with silently missing entries.
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    batches.sort_unstable_by_key(|(start, _)| *start);
    batches
        .into_iter()
        .flat_map(|(_, results)| results)
        .collect()
}

/// Reads an OCSP response file: `None` when it is gone (removed since the listing), the
/// reason when it cannot be read or is larger than any response.
fn read_ocsp(path: &Path) -> Option<Result<Vec<u8>, String>> {
    match super::limits::read(path, super::ocsp::MAX_RESPONSE) {
        Ok(bytes) => Some(Ok(bytes)),
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(ReadError::Io(e)) => Some(Err(format!("cannot be read: {e}"))),
        Err(ReadError::TooLarge { size, limit }) => Some(Err(format!(
            "{size} bytes, more than an OCSP response holds (at most {limit})"
        ))),
    }
}

/// Reads one of an entry's files, up to the bound of [`super::limits::ENTRY`].
pub fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    super::limits::read(path, super::limits::ENTRY).map_err(|e| match e {
        ReadError::Io(error) => LoadError::Read {
            path: path.to_owned(),
            error,
        },
        ReadError::TooLarge { size, limit } => LoadError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::parallel_map;

    #[test]
    fn parallel_map_keeps_the_order() {
        for n in [0, 1, 63, 64, 65, 1000, 4099] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = parallel_map(&items, |i| i * 2);
            assert_eq!(
                doubled,
                (0..n).map(|i| i * 2).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }
}
