//! The store's one way in for writers: uploads (the admin interface) and ACME certificates
//! are installed through [`Installer::install`], which the reloader answers between
//! refreshes, with the catalog that serves. For one name it:
//!
//! 1. decides ownership from the store's own discovery ([`owner`]): a file or folder the
//!    writer did not write itself, in any layout, is answered [`InstallError::NotOurs`];
//! 2. checks the exact bytes it will write, as `mailfront check --domain NAME` does, with
//!    the store's own trust (the catalog's; never a second load), and refuses on any error;
//! 3. refuses what would serve no client, because what serves the name outranks it
//!    (`not-better`, naming that version and why);
//! 4. writes atomically ([`files`]), refreshes that entry and publishes the index, and
//!    answers once handshakes get it: no polling;
//! 5. on any refusal leaves nothing on disk (a version the store did not take is rolled
//!    back to what was there).
//!
//! `remove` takes away only what the admin interface wrote.

mod files;
mod owner;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::catalog::{Catalog, Scope};
use super::check::{date, Code, Domain, Finding, Severity};
use super::discover::{Layout, Source};
use super::index::{Match, Outranked, Served};
use super::load::{parse, Contents, LoadError, Loaded, Role};
use super::report::Row;
pub use files::RECORD;
pub use owner::{acme_conflict, Writer};

/// What a writer gives for a name.
#[derive(Debug)]
pub enum Parts {
    /// An upload: its files as sent, `(label, bytes)` in any order (the certificate, its
    /// chain, its key; a PKCS#12 bundle already opened), written as `NAME.pem`.
    Upload(Vec<(String, Vec<u8>)>),
    /// A certificate chain and its key from an ACME CA, written as `acme/NAME/`.
    Acme { chain: String, key: String },
}

impl Parts {
    fn writer(&self) -> Writer {
        match self {
            Self::Upload(_) => Writer::Admin,
            Self::Acme { .. } => Writer::Acme,
        }
    }
}

/// An install done: handshakes for the name are served it.
#[derive(Debug)]
pub struct Installed {
    /// The entry's row in the report.
    pub row: Option<Box<Row>>,
    /// What the checks found that did not refuse it.
    pub warnings: Vec<Finding>,
}

/// Why nothing was installed or removed; in each case nothing changed on disk.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The name's entry, or a file the store would pair with it, was not written by this
    /// writer (HTTP 409).
    #[error("{0}")]
    NotOurs(String),
    /// The checks found errors, or what serves the name outranks it (HTTP 422): every
    /// finding, errors first.
    #[error("{}", summary(.0))]
    Refused(Vec<Finding>),
    /// Nothing the admin interface wrote is there to remove (HTTP 404).
    #[error("no entry written by the admin interface for {0}")]
    NotFound(String),
    /// The name is not a host name an entry can be written for (HTTP 400).
    #[error("{name}: {reason}")]
    BadName { name: String, reason: String },
    /// Writing or removing failed (HTTP 500); what was written is rolled back.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The reloader has stopped (HTTP 503).
    #[error("the certificate store is not running")]
    Stopped,
}

fn summary(findings: &[Finding]) -> String {
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.code.as_str(), f.message))
        .collect();
    errors.join("; ")
}

/// A request to the reloader that owns the catalog.
#[derive(Debug)]
pub(super) enum Change {
    Install(
        String,
        Parts,
        oneshot::Sender<Result<Installed, InstallError>>,
    ),
    Remove(String, oneshot::Sender<Result<(), InstallError>>),
}

/// Installs and removes entries through the running reloader.
#[derive(Debug, Clone)]
pub struct Installer(pub(super) mpsc::Sender<super::watch::Request>);

impl Installer {
    /// Installs `parts` as the entry for `name`; answers once handshakes get it.
    pub async fn install(&self, name: &str, parts: Parts) -> Result<Installed, InstallError> {
        let (tx, rx) = oneshot::channel();
        let change = Change::Install(name.to_owned(), parts, tx);
        self.ask(change).await?;
        rx.await.map_err(|_| InstallError::Stopped)?
    }

    /// Removes the entry the admin interface wrote for `name`; answers once handshakes no
    /// longer get it.
    pub async fn remove(&self, name: &str) -> Result<(), InstallError> {
        let (tx, rx) = oneshot::channel();
        self.ask(Change::Remove(name.to_owned(), tx)).await?;
        rx.await.map_err(|_| InstallError::Stopped)?
    }

    async fn ask(&self, change: Change) -> Result<(), InstallError> {
        let request = super::watch::Request::Change(change);
        self.0
            .send(request)
            .await
            .map_err(|_| InstallError::Stopped)
    }
}

/// Refreshes a scope of the catalog and publishes what changed (the reloader's own step).
pub(super) type Refresh<'a> = &'a mut dyn FnMut(&mut Catalog, &Scope);

/// Carries out `change` on the catalog; `refresh` looks at the entry again and publishes.
pub(super) fn apply(catalog: &mut Catalog, change: Change, refresh: Refresh<'_>) {
    match change {
        Change::Install(name, parts, reply) => {
            let _ = reply.send(install(catalog, &name, parts, refresh));
        }
        Change::Remove(name, reply) => {
            let _ = reply.send(remove(catalog, &name, refresh));
        }
    }
}

/// The entry `name` as `writer` writes it: its id, the scope a refresh of it looks at,
/// and its files.
fn source_of(catalog: &Catalog, writer: Writer, name: &str) -> (Source, Scope) {
    let root = catalog.root();
    let id: Arc<str> = writer.id(name).into();
    match writer {
        Writer::Admin => (
            Source {
                id,
                cert: writer.path(root, name),
                key: None,
                extra: Box::new([]),
                layout: Layout::Single,
                ocsp: None,
            },
            Scope::Stem(name.to_owned()),
        ),
        Writer::Acme => {
            let dir = writer.path(root, name);
            (
                Source {
                    id,
                    cert: dir.join("fullchain.pem"),
                    key: Some(dir.join("privkey.pem")),
                    extra: Box::new([]),
                    layout: Layout::Certbot,
                    ocsp: None,
                },
                Scope::Dir(PathBuf::from("acme").join(name)),
            )
        }
    }
}

/// The name as an entry's name: a host name, lower case, without a trailing dot.
fn entry_name(name: &str) -> Result<String, InstallError> {
    let bad = |reason: &str| InstallError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    match crate::names::Pattern::parse(name) {
        Ok(crate::names::Pattern::Exact(name)) if name.contains('.') => Ok(name.to_string()),
        Ok(crate::names::Pattern::Exact(_)) => Err(bad("not a host name with a domain")),
        Ok(crate::names::Pattern::Wildcard(_)) => Err(bad("a wildcard is not an entry name")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

fn install(
    catalog: &mut Catalog,
    name: &str,
    parts: Parts,
    refresh: Refresh<'_>,
) -> Result<Installed, InstallError> {
    let name = entry_name(name)?;
    let writer = parts.writer();
    if let Some(why) = owner::conflict(catalog, writer, &name) {
        return Err(InstallError::NotOurs(why));
    }
    let (source, scope) = source_of(catalog, writer, &name);
    let (contents, loaded, warnings) = prepare(catalog, &source, &name, parts)?;
    if let Err((winner, matched)) = catalog.contest(&source.id, &loaded, &name) {
        let finding = not_better(&name, &source, &loaded, &winner, matched);
        return Err(InstallError::Refused(vec![finding]));
    }
    let root = catalog.root().to_owned();
    let write_error = |error| InstallError::Write {
        path: writer.path(&root, &name),
        error,
    };
    let written = match (writer, &contents.key) {
        (Writer::Admin, _) => files::write_single(&root, &name, &contents.cert),
        (Writer::Acme, Some(key)) => files::write_versioned(
            &root.join("acme"),
            &name,
            &String::from_utf8_lossy(&contents.cert),
            &String::from_utf8_lossy(key),
        ),
        (Writer::Acme, None) => unreachable!("an ACME install always has its key"),
    }
    .map_err(write_error)?;
    refresh(catalog, &scope);
    let leaf = loaded.certified.cert.first().map(|der| der.as_ref());
    if catalog.serving_leaf(&source.id) != leaf {
        // Not taken after all (the store judged it again, as it judges every version):
        // what was there before is put back.
        let findings = refused_findings(catalog, &source.id);
        written.roll_back().map_err(write_error)?;
        refresh(catalog, &scope);
        return Err(InstallError::Refused(findings));
    }
    if let Err(e) = written.commit() {
        tracing::warn!(entry = %source.id, reason = %e, "installed, but the version it replaced could not be cleaned up");
    }
    Ok(Installed {
        row: catalog.row_of(&source.id).map(Box::new),
        warnings,
    })
}

/// The bytes to write for `parts` and the version they load as, checked as `mailfront
/// check --domain NAME` checks (every signature, the name, the store's trust), with the
/// warnings to report; every finding when any is an error.
fn prepare(
    catalog: &Catalog,
    source: &Source,
    name: &str,
    parts: Parts,
) -> Result<(Contents, Loaded, Vec<Finding>), InstallError> {
    let ctx = Arc::clone(catalog.context());
    let (contents, mut warnings) = match parts {
        Parts::Upload(files) => {
            let (pem, warnings) = canonical(files, name, &ctx)?;
            let contents = Contents {
                cert: pem.into_bytes(),
                key: None,
                extra: Vec::new(),
                ocsp: None,
            };
            (contents, warnings)
        }
        Parts::Acme { chain, key } => {
            let contents = Contents {
                cert: chain.into_bytes(),
                key: Some(key.into_bytes()),
                extra: Vec::new(),
                ocsp: None,
            };
            (contents, Vec::new())
        }
    };
    let domain = Domain {
        name: name.to_owned(),
        explicit: true,
    };
    // The exact bytes, as the store will read them from where they will be.
    let loaded = match parse(source, &contents, &ctx, Role::Check(Some(domain))) {
        Ok(loaded) => loaded,
        Err(LoadError::Refused(findings, _)) => return Err(as_written(source, findings)),
        Err(other) => {
            let finding = super::examine::failed(&source.cert, &other);
            return Err(as_written(source, vec![finding]));
        }
    };
    if loaded
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error)
    {
        return Err(as_written(source, loaded.findings));
    }
    if warnings.is_empty() {
        warnings.clone_from(&loaded.findings);
    }
    Ok((contents, loaded, warnings))
}

/// An upload's files as one canonical `NAME.pem`: the chain the store would serve (in
/// order, completed from `issuers_dir`, without a root), then the key of its leaf; with
/// the warnings about what was sent. Every finding, naming the parts by their labels,
/// when any is an error.
fn canonical(
    files: Vec<(String, Vec<u8>)>,
    name: &str,
    ctx: &super::load::Context,
) -> Result<(String, Vec<Finding>), InstallError> {
    let bytes: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
    // Labelled by the part (`certificate`, a file name sent): never a path of this host.
    let read = files
        .into_iter()
        .map(|(label, b)| (PathBuf::from(label.replace('/', "_")), b))
        .collect();
    let examined = super::examine::examine_read(read, Vec::new(), Some(name.into()), ctx, true);
    let Ok(mut examined) = examined else {
        return Err(InstallError::Refused(vec![Finding {
            code: Code::NoCertificate,
            severity: Severity::Error,
            file: PathBuf::from("upload"),
            message: "nothing sent holds a certificate".into(),
            fix: "send the certificate (with its chain) and its key".into(),
        }]));
    };
    // The modes of what was sent are not the operator's to fix: the entry is written 0600.
    examined.findings.retain(|f| f.code != Code::KeyPermissions);
    if examined.refused() {
        return Err(InstallError::Refused(examined.findings));
    }
    match super::examine::canonical_pem(&bytes, &examined) {
        Some(pem) => Ok((pem, examined.findings)),
        None => Err(InstallError::Refused(vec![Finding {
            code: Code::NoKey,
            severity: Severity::Error,
            file: PathBuf::from("upload"),
            message: "no private key sent matches the certificate".into(),
            fix: "send the private key the certificate was requested with".into(),
        }])),
    }
}

/// Findings of the bytes as they would be written: said so, since what was sent passed
/// (a root that completed the chain is not served, for one).
fn as_written(source: &Source, mut findings: Vec<Finding>) -> InstallError {
    for finding in &mut findings {
        finding.message = format!(
            "{} as it would be written (the chain served, without a root): {}",
            source.id, finding.message
        );
    }
    findings.sort_by_key(|f| f.severity);
    InstallError::Refused(findings)
}

/// Why the store refused the version of `id` it was just given, as findings.
fn refused_findings(catalog: &Catalog, id: &str) -> Vec<Finding> {
    let row = catalog.row_of(id);
    let refusal = row.as_ref().and_then(|r| r.refused_version.as_ref());
    let mut findings: Vec<Finding> = refusal.map(|r| r.findings.clone()).unwrap_or_default();
    let reason = refusal.and_then(|r| r.reason.clone());
    if findings.iter().all(|f| f.severity != Severity::Error) {
        findings.insert(
            0,
            Finding {
                code: Code::NotBetter,
                severity: Severity::Error,
                file: PathBuf::from(id),
                message: reason.unwrap_or_else(|| format!("the store did not take {id}")),
                fix: "see GET /api/v1/certs (or `mailfront certs`) for what serves the name".into(),
            },
        );
    }
    findings
}

/// The `not-better` finding: `winner` keeps serving `name`, and why.
fn not_better(
    name: &str,
    source: &Source,
    new: &Loaded,
    winner: &Served,
    matched: Match,
) -> Finding {
    let now = super::check::now();
    let who = match winner.id.as_ref() {
        _ if matched == Match::Fallback => "the server-wide certificate".to_owned(),
        id if *id == *source.id => format!("the version of {id} in the store"),
        id => id.to_owned(),
    };
    let exact = new
        .names
        .iter()
        .any(|p| matches!(p, crate::names::Pattern::Exact(n) if **n == *name));
    let (why, fix) = match winner
        .standing_at(now)
        .better_than(new.served.standing_at(now))
    {
        Some(Outranked::Trust) => (
            "its chain leads to a trusted root, and this one's does not".to_owned(),
            format!(
                "upload a certificate from a trusted CA (one in ca_bundle), or remove {who} first"
            ),
        ),
        Some(Outranked::Errors) => (
            "it serves without the errors this one has".to_owned(),
            format!("fix what the findings say, or remove {who} first"),
        ),
        _ if matched == Match::Exact && !exact => (
            format!("it names {name} exactly, and this one covers it by a wildcard"),
            format!("upload a certificate naming {name}, or remove {who} first"),
        ),
        _ if winner.not_after > new.served.not_after => (
            format!(
                "it expires later ({}) than this one ({})",
                date(winner.not_after),
                date(new.served.not_after)
            ),
            format!(
                "upload a certificate that expires after {}, or remove {who} first",
                date(winner.not_after)
            ),
        ),
        _ => (
            "it ranks first for every client (ECDSA before RSA, then by entry name)".to_owned(),
            format!("remove {who} first"),
        ),
    };
    Finding {
        code: Code::NotBetter,
        severity: Severity::Error,
        file: source.cert.clone(),
        message: format!(
            "{who} keeps serving {name}: {why}; this certificate would serve no client"
        ),
        fix,
    }
}

/// Removes the entry the admin interface wrote for `name`.
fn remove(catalog: &mut Catalog, name: &str, refresh: Refresh<'_>) -> Result<(), InstallError> {
    let name = entry_name(name)?;
    let root = catalog.root().to_owned();
    match owner::admin_owns(&root, &name) {
        Ok(true) => {}
        Ok(false) => return Err(InstallError::NotFound(name)),
        Err(why) => return Err(InstallError::NotOurs(why)),
    }
    files::remove_single(&root, &name).map_err(|error| InstallError::Write {
        path: Writer::Admin.path(&root, &name),
        error,
    })?;
    refresh(catalog, &Scope::Stem(name));
    Ok(())
}
