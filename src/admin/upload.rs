//! Uploads: `PUT /api/v1/certs/{name}` (and the page's form) hands what was sent to the
//! store's one writer ([`crate::certs::Installer`]), which checks the exact bytes it would
//! write as `mailfront check --domain NAME` does, with the store's own trust, writes one
//! file `NAME.pem` (the chain the store will serve, then the key) atomically, and answers
//! once new handshakes for the name are served it. `DELETE` removes an entry written so.
//!
//! What the interface may write is the store's decision, from its own discovery: `NAME.pem`
//! at the top of the store whose bytes the interface wrote, and nothing else. Any other
//! file or folder for the name, in any layout, is answered 409 and left as it is; a
//! certificate that would serve no client because what serves the name outranks it is
//! answered 422 (`not-better`); nothing is left on disk by a refusal.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::certs::check::{Code, Finding, Severity};
use crate::certs::{InstallError, Parts};

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

/// An answer that ends a request early: a status and what it says, as JSON
/// `{"error": ...}` like every refusal of the API.
#[derive(Debug)]
pub(super) struct Early(pub StatusCode, pub String);

impl IntoResponse for Early {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 });
        (self.0, json(&body)).into_response()
    }
}

impl From<InstallError> for Early {
    fn from(e: InstallError) -> Self {
        let status = match &e {
            InstallError::NotOurs(_) => StatusCode::CONFLICT,
            InstallError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            InstallError::NotFound(_) => StatusCode::NOT_FOUND,
            InstallError::BadName { .. } => StatusCode::BAD_REQUEST,
            InstallError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            InstallError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        let text = match &e {
            InstallError::BadName { .. } => {
                format!("{e}; upload under the host name the certificate is for (mail.example.com)")
            }
            _ => e.to_string(),
        };
        Self(status, text)
    }
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

/// Hands `parts` to the store's writer as the entry `name`: the upload of the API and of
/// the page.
pub(super) async fn upload(state: &super::State, name: &str, (parts, password): Sent) -> Outcome {
    if parts.is_empty() {
        return Outcome::Failed(Early(
            StatusCode::BAD_REQUEST,
            "nothing was sent: give the certificate (with its chain) and its key".into(),
        ));
    }
    let parts = match open_bundles(parts, password) {
        Ok(parts) => parts,
        Err(findings) => return Outcome::Refused(findings),
    };
    match state.installer.install(name, Parts::Upload(parts)).await {
        Ok(installed) => Outcome::Written {
            row: installed.row,
            warnings: installed.warnings,
        },
        Err(InstallError::Refused(findings)) => Outcome::Refused(findings),
        Err(e) => Outcome::Failed(e.into()),
    }
}

/// `DELETE /api/v1/certs/{name}`: removes the entry the interface wrote, and answers once
/// handshakes are no longer served it.
pub async fn delete(
    State(state): State<Arc<super::State>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match state.installer.remove(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Early::from(e).into_response(),
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

/// The parts with each PKCS#12 bundle among them opened with the password (an empty one
/// is tried without); a `pkcs12` finding for each that does not open.
fn open_bundles(
    mut parts: Vec<(String, Vec<u8>)>,
    password: Option<String>,
) -> Result<Vec<(String, Vec<u8>)>, Vec<Finding>> {
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
    match unopened.is_empty() {
        true => Ok(parts),
        false => Err(unopened),
    }
}

fn json(body: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(body) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => super::internal("the answer could not be encoded"),
    }
}
