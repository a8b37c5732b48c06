//! Uploads: `PUT /api/v1/certs/{name}` runs `mailfront check`'s checks (the store's own
//! loader, with the name) on what was sent, and writes the entry into the store only when
//! nothing is an error: one file `NAME.pem` (the chain the store will serve, then the key),
//! written beside as a dot-file, synced, and renamed into place; the answer waits until
//! new handshakes for the name are served it. `DELETE` removes an entry written so.
//!
//! The interface owns `NAME.pem` at the top of the store and nothing else: a name whose
//! entry is a directory (certbot, Kubernetes, ACME) or files of another tool (`NAME.crt`,
//! `NAME.key`, ...) is answered 409, and those files are left alone. The names it wrote are
//! listed in the dot-file [`WRITTEN`] (which the store ignores), so that `DELETE` removes
//! only what an upload put there.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::internal;
use crate::certs::check::{Code, Finding, Severity, Trust};
use crate::names::Pattern;

/// The dot-file listing the names the interface wrote, one per line.
pub const WRITTEN: &str = ".mailfront-admin-written";
/// How long an answer waits for new handshakes to be served what was written.
const SERVED_WITHIN: Duration = Duration::from_secs(15);
/// Parts an upload may have.
const MAX_PARTS: usize = 8;

/// An upload as JSON: the certificate (the chain inside it, or in `chain`) and the key,
/// as PEM text, in any order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    certificate: Option<String>,
    key: Option<String>,
    chain: Option<String>,
    /// A PKCS#12 bundle, base64, with its password.
    pfx: Option<String>,
    password: Option<String>,
}

/// What was sent: the files (label, bytes) in any order, and the password of a PKCS#12
/// bundle among them.
pub(super) type Sent = (Vec<(String, Vec<u8>)>, Option<String>);

/// A finding as the answer lists it.
#[derive(Debug, Serialize)]
struct Refused<'a> {
    error: &'a str,
    findings: &'a [Finding],
}

/// An answer that ends a request early: a status and what it says.
#[derive(Debug)]
pub(super) struct Early(pub StatusCode, pub String);

impl IntoResponse for Early {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn early_internal(what: &str) -> Early {
    Early(StatusCode::INTERNAL_SERVER_ERROR, what.to_owned())
}

/// What an upload came to.
pub(super) enum Outcome {
    /// Written, and served: the report's row for it, and the warnings.
    Written {
        row: Option<Box<crate::certs::Row>>,
        warnings: Vec<Finding>,
    },
    /// Refused by the checks: every finding.
    Refused(Vec<Finding>),
    /// Not looked at, or failed on the way (the status says which).
    Failed(Early),
}

/// `PUT /api/v1/certs/{name}`.
pub async fn put(
    State(state): State<Arc<super::State>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let sent = match parts_of(request, &state).await {
        Ok(sent) => sent,
        Err(early) => return early.into_response(),
    };
    match upload(&state, &name, sent).await {
        Outcome::Written { row, warnings } => {
            let body = serde_json::json!({ "entry": row, "warnings": warnings });
            (StatusCode::CREATED, json(&body)).into_response()
        }
        Outcome::Refused(findings) => {
            let body = Refused {
                error: "refused: the certificate was not written; each finding says how to fix it",
                findings: &findings,
            };
            (StatusCode::UNPROCESSABLE_ENTITY, json(&body)).into_response()
        }
        Outcome::Failed(early) => early.into_response(),
    }
}

/// Checks `parts` as the entry `name`, writes it when nothing is an error, and waits until
/// handshakes for the name are served it: the upload of the API and of the page.
pub(super) async fn upload(state: &super::State, name: &str, (parts, password): Sent) -> Outcome {
    let name = match entry_name(name) {
        Ok(name) => name,
        Err(early) => return Outcome::Failed(early),
    };
    if parts.is_empty() {
        return Outcome::Failed(Early(
            StatusCode::BAD_REQUEST,
            "nothing was sent: give the certificate (with its chain) and its key".into(),
        ));
    }
    let _one_at_a_time = state.uploads.lock().await;
    let dir = state.config.certs.dir.clone();
    if let Some(why) = not_ours(&dir, &name) {
        return Outcome::Failed(Early(StatusCode::CONFLICT, why));
    }
    let certs = state.config.certs.clone();
    let domain = name.clone();
    let checked =
        tokio::task::spawn_blocking(move || check(&certs, &domain, parts, password)).await;
    let (examined, pem) = match checked {
        Ok(Ok(checked)) => checked,
        Ok(Err(early)) => return Outcome::Failed(early),
        Err(_) => return Outcome::Failed(early_internal("the checks failed unexpectedly")),
    };
    let Some(pem) = pem.filter(|_| !examined.refused()) else {
        return Outcome::Refused(examined.findings);
    };
    let leaf = examined.chain[0].to_vec();
    let since = Instant::now();
    let written = {
        let (dir, name) = (dir.clone(), name.clone());
        tokio::task::spawn_blocking(move || write_entry(&dir, &name, pem.as_bytes())).await
    };
    let file = dir.join(format!("{name}.pem"));
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = format!("cannot write {}: {e}", file.display());
            return Outcome::Failed(early_internal(&why));
        }
        Err(_) => return Outcome::Failed(early_internal("writing the entry failed unexpectedly")),
    }
    let id = format!("{name}.pem");
    // Served to the clients its key can serve (an RSA entry beside an ECDSA one serves
    // only RSA-only clients).
    let served = state
        .store
        .served_when(&name, since, SERVED_WITHIN, |served| {
            served
                .iter()
                .flatten()
                .any(|(id_now, der)| *id_now == id && *der == leaf)
        })
        .await;
    if !served {
        return Outcome::Failed(early_internal(&format!(
            "{id} was written, but handshakes for {name} were not served it within {}s: \
             `mailfront certs` or GET /api/v1/certs shows what serves {name} and why",
            SERVED_WITHIN.as_secs()
        )));
    }
    Outcome::Written {
        row: row_of(state, &id).await,
        warnings: examined.findings,
    }
}

/// `DELETE /api/v1/certs/{name}`.
pub async fn delete(
    State(state): State<Arc<super::State>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let name = match entry_name(&name) {
        Ok(name) => name,
        Err(early) => return early.into_response(),
    };
    let _one_at_a_time = state.uploads.lock().await;
    let dir = state.config.certs.dir.clone();
    let file = dir.join(format!("{name}.pem"));
    if !written(&dir).contains(&name) {
        return match file.exists() {
            true => conflict(&format!(
                "{} was not written by the admin interface; remove it yourself",
                file.display()
            )),
            false => (
                StatusCode::NOT_FOUND,
                format!("no entry written by the admin interface for {name}\n"),
            )
                .into_response(),
        };
    }
    let since = Instant::now();
    let removed = {
        let (dir, name) = (dir.clone(), name.clone());
        tokio::task::spawn_blocking(move || remove_entry(&dir, &name)).await
    };
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return internal(&format!("cannot remove {}: {e}", file.display())),
        Err(_) => return internal("removing the entry failed unexpectedly"),
    }
    let id = format!("{name}.pem");
    let gone = state
        .store
        .served_when(&name, since, SERVED_WITHIN, |served| {
            served.iter().flatten().all(|(id_now, _)| *id_now != id)
        })
        .await;
    match gone {
        true => StatusCode::NO_CONTENT.into_response(),
        false => internal(&format!(
            "{id} was removed, but handshakes for {name} were still served it after {}s",
            SERVED_WITHIN.as_secs()
        )),
    }
}

/// The name from the path, as the entry's file stem: a host name (a wildcard certificate
/// is uploaded under one name it covers).
fn entry_name(name: &str) -> Result<String, Early> {
    let bad = |why: &str| {
        Early(
            StatusCode::BAD_REQUEST,
            format!(
                "{name}: {why}; upload under the host name the certificate is for \
                 (mail.example.com)"
            ),
        )
    };
    match Pattern::parse(name) {
        Ok(Pattern::Exact(name)) => Ok(name.to_string()),
        Ok(Pattern::Wildcard(_)) => Err(bad("a wildcard is not an entry name")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

/// What was sent: a JSON body, or a multipart form whose file (or text) parts are the
/// certificate, chain and key in any order.
async fn parts_of(request: Request, state: &Arc<super::State>) -> Result<Sent, Early> {
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bad = |why: String| Early(StatusCode::BAD_REQUEST, why);
    if kind.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, state)
            .await
            .map_err(|e| bad(format!("not a form: {e}")))?;
        let (_, sent) = read_form(form).await?;
        if sent.0.is_empty() {
            return Err(bad("the form has no certificate".into()));
        }
        return Ok(sent);
    }
    let body = Bytes::from_request(request, state)
        .await
        .map_err(|e| Early(e.status(), format!("the body cannot be read: {e}")))?;
    let upload: Json = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "send JSON {{\"certificate\": PEM, \"key\": PEM}} (or {{\"pfx\": BASE64, \
             \"password\": TEXT}}) or a multipart form: {e}"
        ))
    })?;
    let pfx = match upload.pfx {
        Some(text) => {
            use base64::Engine;
            let text: String = text.split_ascii_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| bad(format!("pfx: not base64 ({e})")))?;
            Some(("certificate.pfx".to_owned(), bytes))
        }
        None => None,
    };
    let fields = [
        ("certificate", upload.certificate),
        ("chain", upload.chain),
        ("key", upload.key),
    ];
    let parts = fields
        .into_iter()
        .filter_map(|(label, text)| Some((label.to_owned(), text?.into_bytes())))
        .chain(pfx)
        .filter(|(_, bytes)| !bytes.iter().all(u8::is_ascii_whitespace))
        .collect();
    Ok((parts, upload.password))
}

/// A multipart form as an upload: its file (or pasted text) fields in any order, the
/// `password` of a PKCS#12 bundle among them, and its `name` field (the page's; the API
/// names the entry in its path).
pub(super) async fn read_form(mut form: Multipart) -> Result<(Option<String>, Sent), Early> {
    let (mut name, mut parts, mut password) = (None, Vec::new(), None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| Early(e.status(), format!("the form cannot be read: {e}")))?
    {
        let field_name = field.name().unwrap_or("").to_owned();
        let label = field
            .file_name()
            .or(field.name())
            .unwrap_or("part")
            .to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| Early(e.status(), format!("{label} cannot be read: {e}")))?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match field_name.as_str() {
            "name" => name = Some(text()),
            "password" => password = Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ if bytes.iter().all(u8::is_ascii_whitespace) => {}
            _ => parts.push((label, bytes.to_vec())),
        }
        if parts.len() > MAX_PARTS {
            return Err(Early(
                StatusCode::BAD_REQUEST,
                format!("more than {MAX_PARTS} files"),
            ));
        }
    }
    let password = password.filter(|p| !p.is_empty());
    Ok((name, (parts, password)))
}

/// Why `name` cannot be written by the interface, if it cannot: its entry belongs to
/// another tool.
fn not_ours(dir: &Path, name: &str) -> Option<String> {
    for sub in [dir.join(name), dir.join("acme").join(name)] {
        if sub.is_dir() {
            return Some(format!(
                "{} is a directory entry (certbot, Kubernetes or ACME) that another tool \
                 writes; the admin interface does not replace it",
                sub.display()
            ));
        }
    }
    for ext in ["crt", "cer", "der", "key"] {
        let file = dir.join(format!("{name}.{ext}"));
        if file.exists() {
            return Some(format!(
                "{} is there, written by another tool: update those files, or remove them \
                 and upload again",
                file.display()
            ));
        }
    }
    None
}

/// Runs the checks on the parts, written as files of a private temporary directory
/// (`check` reads files); the findings name the parts, not those files.
fn check(
    certs: &crate::config::CertSettings,
    domain: &str,
    mut parts: Vec<(String, Vec<u8>)>,
    password: Option<String>,
) -> Result<(crate::certs::Examined, Option<String>), Early> {
    // A PKCS#12 bundle is opened with its password (an empty one is tried without).
    let mut unopened = Vec::new();
    for (label, bytes) in &mut parts {
        let opened = crate::certs::open_pkcs12(bytes, password.as_deref().unwrap_or(""));
        match opened {
            None => {}
            Some(Ok(pem)) => *bytes = pem.into_bytes(),
            Some(Err(why)) => {
                let why = match password {
                    Some(_) => why,
                    None => "it needs its password".to_owned(),
                };
                unopened.push(Finding {
                    code: Code::Pkcs12,
                    severity: Severity::Error,
                    file: PathBuf::from(&*label),
                    message: format!("{label} is a PKCS#12 bundle (.pfx, .p12): {why}"),
                    fix: "send its password with it: the form's password field, or \
                          \"password\" beside \"pfx\" in JSON"
                        .into(),
                });
            }
        }
    }
    if !unopened.is_empty() {
        let examined = crate::certs::Examined {
            findings: unopened,
            leaf: None,
            chain: Vec::new(),
            stapled_until: None,
        };
        return Ok((examined, None));
    }
    let trust = Trust::load(
        certs.ca_bundle.as_deref(),
        certs.issuers_dir.as_deref(),
        certs.crl_dir.as_deref(),
    )
    .map_err(|e| early_internal(&format!("the trust files cannot be read: {e}")))?;
    let tmp =
        tempfile::tempdir().map_err(|e| early_internal(&format!("no temporary directory: {e}")))?;
    let mut files = Vec::with_capacity(parts.len());
    for (i, (_, bytes)) in parts.iter().enumerate() {
        // Private to the process, as the entry will be: the upload's own file modes are
        // not the operator's to fix.
        let path = tmp.path().join(format!("part-{i}"));
        let staged = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes));
        staged.map_err(|e| early_internal(&format!("cannot stage: {e}")))?;
        files.push(path);
    }
    let mut examined = match crate::certs::examine(&files, Some(domain.to_owned()), trust, true) {
        Ok(examined) => examined,
        Err(e) => {
            let finding = Finding {
                code: Code::NoCertificate,
                severity: Severity::Error,
                file: PathBuf::from("upload"),
                message: e.to_string(),
                fix: "send the certificate (with its chain) and its key".into(),
            };
            crate::certs::Examined {
                findings: vec![finding],
                leaf: None,
                chain: Vec::new(),
                stapled_until: None,
            }
        }
    };
    for finding in &mut examined.findings {
        if let Some(i) = files.iter().position(|f| *f == finding.file) {
            finding.file = PathBuf::from(&parts[i].0);
        }
        let shown = files.iter().zip(&parts);
        for (path, (label, _)) in shown {
            let path = path.display().to_string();
            finding.message = finding.message.replace(&path, label);
            finding.fix = finding.fix.replace(&path, label);
        }
    }
    let contents: Vec<Vec<u8>> = parts.into_iter().map(|(_, bytes)| bytes).collect();
    let pem = match examined.refused() {
        true => None,
        false => crate::certs::canonical_pem(&contents, &examined),
    };
    Ok((examined, pem))
}

/// Writes `dir/NAME.pem` atomically (a dot-file beside it, synced, renamed, the directory
/// synced), mode 0600, and lists `name` as written by the interface.
fn write_entry(dir: &Path, name: &str, pem: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.pem."))
        .suffix(".upload")
        .tempfile_in(dir)?;
    tmp.write_all(pem)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(format!("{name}.pem")))
        .map_err(|e| e.error)?;
    let mut names = written(dir);
    if !names.iter().any(|n| n == name) {
        names.push(name.to_owned());
        save_written(dir, &names)?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Removes `dir/NAME.pem` and its line in the list.
fn remove_entry(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(format!("{name}.pem"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let names: Vec<String> = written(dir).into_iter().filter(|n| n != name).collect();
    save_written(dir, &names)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The names the interface wrote.
fn written(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(WRITTEN)).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn save_written(dir: &Path, names: &[String]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{WRITTEN}."))
        .tempfile_in(dir)?;
    for name in names {
        writeln!(tmp, "{name}")?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(WRITTEN)).map_err(|e| e.error)?;
    Ok(())
}

/// The report's row for entry `id`.
async fn row_of(state: &super::State, id: &str) -> Option<Box<crate::certs::Row>> {
    let report = state.reports.get().await?;
    report
        .entries
        .iter()
        .find(|r| r.entry == id)
        .cloned()
        .map(Box::new)
}

fn json(body: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(body) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => internal("the answer could not be encoded"),
    }
}

fn conflict(why: &str) -> Response {
    (StatusCode::CONFLICT, format!("{why}\n")).into_response()
}
