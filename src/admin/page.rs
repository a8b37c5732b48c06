//! The operator's page at `/`: the certificates in use (the store's report) with their
//! state and days left, a search, the names served the server-wide certificate, and the
//! upload form; server-rendered HTML without JavaScript.
//!
//! With a token, a browser without it is shown a form that asks for it once (`/login`),
//! which opens a session: a random id, never the token, in an HttpOnly, SameSite=Strict
//! cookie that expires (`/logout` ends it). Form posts from another site are refused
//! before they get here ([`super::guard`]: `Origin`), so that a page elsewhere cannot make
//! the operator's browser upload to a loopback interface.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::auth;
use super::upload::{read_form, upload, Early, Outcome};
use crate::certs::check::{Finding, Severity};
use crate::certs::{Row, State as EntryState};

/// Rows shown at most; a search narrows the rest.
const ROWS: usize = 500;
/// Fallback names shown.
const NAMES: usize = 50;
/// Domains that are not resolved shown on the page (all of them: `/api/v1/domains`).
const DOMAINS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct Search {
    q: Option<String>,
}

/// `GET /`.
pub async fn index(
    State(state): State<Arc<super::State>>,
    Query(search): Query<Search>,
) -> Response {
    let query = search.q.unwrap_or_default();
    match page(&state, &query, None).await {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(early) => early.into_response(),
    }
}

/// `POST /upload`: the form's upload, answered with the page showing its outcome.
pub async fn upload_form(State(state): State<Arc<super::State>>, request: Request) -> Response {
    let form = match Multipart::from_request(request, &state).await {
        Ok(form) => form,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a form: {e}\n")).into_response(),
    };
    let (name, sent) = match read_form(form).await {
        Ok(read) => read,
        Err(early) => return early.into_response(),
    };
    let name = name.unwrap_or_default();
    let outcome = upload(&state, &name, sent).await;
    let status = match &outcome {
        Outcome::Written { .. } => StatusCode::CREATED,
        Outcome::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Failed(Early(status, _)) => *status,
    };
    match page(&state, "", Some((&name, &outcome))).await {
        Ok(markup) => (status, Html(markup.into_string())).into_response(),
        Err(early) => early.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: a right token opens a session, whose id the cookie keeps, and goes to
/// the page.
pub async fn login(State(state): State<Arc<super::State>>, body: axum::body::Bytes) -> Response {
    let token = serde_urlencoded_token(&body);
    let Some(expected) = &state.token else {
        return Redirect::to("/").into_response();
    };
    match token {
        Some(login) if expected.matches(login.token.trim().as_bytes()) => {
            let id = state.sessions.open(std::time::Instant::now());
            let cookie = format!(
                "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
                auth::COOKIE,
                auth::SESSION_LIFE.as_secs(),
                if state.tls { "; Secure" } else { "" }
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        _ => {
            tokio::time::sleep(auth::FAILED_DELAY).await;
            (
                StatusCode::UNAUTHORIZED,
                Html(login_page(true).into_string()),
            )
                .into_response()
        }
    }
}

/// `POST /logout`: ends the session and forgets the cookie.
pub async fn logout(State(state): State<Arc<super::State>>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::session(&headers) {
        state.sessions.close(id);
    }
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        auth::COOKIE,
        if state.tls { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn serde_urlencoded_token(body: &[u8]) -> Option<Login> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let decoded = percent_decode(value)?;
    Some(Login { token: decoded })
}

/// Decodes `application/x-www-form-urlencoded` text.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The page that asks for the token.
pub fn login_page(wrong: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "mailfront: sign in" } (style()) }
            body {
                h1 { "mailfront" }
                @if wrong { p.error { "That is not the admin token." } }
                form method="post" action="/login" {
                    label { "Admin token " input type="password" name="token" autofocus required; }
                    " " button type="submit" { "Sign in" }
                }
            }
        }
    }
}

async fn page(
    state: &super::State,
    query: &str,
    uploaded: Option<(&str, &Outcome)>,
) -> Result<Markup, Early> {
    let report = state.reports.get().await.ok_or_else(|| {
        Early(
            StatusCode::SERVICE_UNAVAILABLE,
            "the certificate report is not available yet; reload the page".into(),
        )
    })?;
    let needle = query.trim().to_ascii_lowercase();
    let matches = |row: &&Row| {
        needle.is_empty()
            || row.entry.to_ascii_lowercase().contains(&needle)
            || row.names.iter().any(|n| n.contains(&needle))
    };
    let rows: Vec<&Row> = report.entries.iter().filter(matches).collect();
    let names = state
        .names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .top();
    let summary = state.store.summary();
    let (serving, degraded, refused) = summary.tally;
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "mailfront: " (state.config.server.name) }
                (style())
            }
            body {
                @if state.token.is_some() {
                    form.signout method="post" action="/logout" { button type="submit" { "Sign out" } }
                }
                h1 { "mailfront on " (state.config.server.name) }
                p.summary {
                    (serving) " serving, " (degraded) " serving with errors, " (refused) " refused. "
                    "Server-wide certificate: " (report.server_wide.names.join(", "))
                    @if let Some(days) = report.server_wide.days_left { ", " (days) " days left" }
                    "."
                }
                @if let Some((name, outcome)) = uploaded { (outcome_block(name, outcome)) }
                section #upload {
                    h2 { "Upload a certificate" }
                    form method="post" action="/upload" enctype="multipart/form-data" {
                        p { label { "Host name " input type="text" name="name" placeholder="mail.example.com" required; } }
                        p.files {
                            label { "Certificate " input type="file" name="certificate"; }
                            label { "Chain (CA bundle) " input type="file" name="chain"; }
                            label { "Private key " input type="file" name="key"; }
                        }
                        p.hint { "A .pfx or .p12 (IIS, Windows) goes in Certificate, with its password here: "
                            input type="password" name="password" autocomplete="off"; }
                        details {
                            summary { "or paste them" }
                            textarea name="certificate_text" rows="6" placeholder="-----BEGIN CERTIFICATE-----" {}
                            textarea name="key_text" rows="4" placeholder="-----BEGIN PRIVATE KEY-----" {}
                        }
                        p { button type="submit" { "Check and install" } }
                    }
                    p.hint { "The files are checked as " code { "mailfront check --domain NAME" } " does, as they will be written; nothing is written unless every check passes and the certificate would serve the name (a trusted certificate is never displaced by a self-signed one), and files the admin interface did not write are never replaced." }
                }
                section #certificates {
                    h2 { "Certificates in use" }
                    form method="get" action="/" {
                        input type="search" name="q" value=(query) placeholder="name or entry";
                        " " button type="submit" { "Search" }
                    }
                    p { (rows.len()) " of " (report.entries.len()) " entries"
                        @if rows.len() > ROWS { "; the first " (ROWS) " shown, search to narrow" } }
                    table {
                        thead { tr { th { "Entry" } th { "Names" } th { "State" } th { "Issuer" } th { "Key" } th { "Expires" } th { "Days left" } } }
                        tbody {
                            @for row in rows.iter().take(ROWS) { (row_html(row, uploaded.map(|u| u.0))) }
                        }
                    }
                }
                section #fallback {
                    h2 { "Names served the server-wide certificate" }
                    @if names.is_empty() {
                        p { "None since the start: every name clients asked for has its certificate." }
                    } @else {
                        p { "Clients asked for these names and got the server-wide certificate (a name mismatch for them): they need a certificate." }
                        table {
                            thead { tr { th { "Name" } th { "Listener" } th { "Handshakes" } th { "Last seen" } } }
                            tbody {
                                @for seen in names.iter().take(NAMES) {
                                    tr { td { (seen.name) } td { (seen.listener) } td.num { (seen.count) } td { (date(seen.last_seen)) } }
                                }
                            }
                        }
                    }
                }
                @if let Some(domains) = &state.domains { (domains_html(domains)) }
            }
        }
    })
}

/// The domain readiness section: counts, then each domain that is not resolved with
/// every reason and its fix.
fn domains_html(domains: &crate::onboarding::periodic::Checked) -> Markup {
    let [(_, resolved), (_, invalid), (_, unknown)] = domains.counts();
    let (shown, total) = domains.not_resolved(DOMAINS);
    let last = domains.last_pass();
    html! {
        section #domains {
            h2 { "Domain readiness (DNS)" }
            p {
                (resolved) " resolved, " (invalid) " invalid, " (unknown) " unknown (DNS did not answer). "
                @if last == 0 { "The first check is under way." } @else { "Last pass over every domain: " (date(last)) "." }
            }
            @if total > 0 {
                p { "Domains whose DNS or certificates are not ready for mail"
                    @if total > shown.len() { " (the first " (shown.len()) " of " (total) "; all in " code { "/api/v1/domains" } ")" } ":" }
                table {
                    thead { tr { th { "Domain" } th { "State" } th { "Problem" } th { "Found" } th { "Fix" } } }
                    tbody {
                        @for d in &shown {
                            @for (i, r) in d.reasons.iter().enumerate() {
                                tr {
                                    td { @if i == 0 { (d.domain) } }
                                    td { @if i == 0 { (d.state.as_str()) } }
                                    td { code { (r.code) } " " (r.record) }
                                    td { (r.found) }
                                    td { (r.fix) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn outcome_block(name: &str, outcome: &Outcome) -> Markup {
    match outcome {
        Outcome::Written { row, warnings } => html! {
            section.outcome.ok #outcome {
                h2 { "Installed: " (name) " is now served this certificate" }
                @if let Some(row) = row {
                    table { tbody { (row_html(row, Some(name))) } }
                }
                @if !warnings.is_empty() { (findings_html(warnings)) }
            }
        },
        Outcome::Refused(findings) => html! {
            section.outcome.refused #outcome {
                h2 { "Not installed: " (name) }
                p { "Nothing was written; the certificate in use stays. Fix these and upload again:" }
                (findings_html(findings))
            }
        },
        Outcome::Failed(Early(_, why)) => html! {
            section.outcome.refused #outcome {
                h2 { "Not installed: " (name) }
                p { (why) }
            }
        },
    }
}

fn findings_html(findings: &[Finding]) -> Markup {
    html! {
        ul.findings {
            @for f in findings {
                li class=(match f.severity { Severity::Error => "error", Severity::Warning => "warning" }) {
                    strong { (f.severity.as_str()) " " code { (f.code.as_str()) } } ": " (f.message)
                    br; span.fix { "Fix: " (f.fix) }
                }
            }
        }
    }
}

fn row_html(row: &Row, highlight: Option<&str>) -> Markup {
    let (class, word) = match row.state {
        EntryState::Serving => ("serving", "serving"),
        EntryState::ServingWithErrors => ("degraded", "serving with errors"),
        EntryState::Superseded => ("superseded", "superseded"),
        EntryState::Refused => ("refused", "refused"),
        EntryState::Absent => ("refused", "absent"),
    };
    let soon = row.days_left.is_some_and(|d| d < 30);
    let mine = highlight.is_some_and(|h| row.entry == format!("{h}.pem"));
    html! {
        tr.mine[mine] {
            td { (row.entry) }
            td { (row.names.join(", ")) }
            td class=(class) { (word) @if !row.codes.is_empty() { " (" (row.codes.join(", ")) ")" } }
            td { (row.issuer.as_deref().unwrap_or("-")) }
            td { (row.key.as_deref().unwrap_or("-")) }
            td { (row.not_after.as_deref().unwrap_or("-"))
                @if let Some(renews) = &row.renews { br; small { "ACME, renews " (renews) } }
                @if let Some(ocsp) = &row.ocsp { br; small {
                    @if ocsp.stapled { "OCSP stapled until " (ocsp.until.as_deref().unwrap_or("-")) }
                    @else { "OCSP not stapled: " (ocsp.reason.as_deref().unwrap_or("-")) } } } }
            td.num.soon[soon] { @if let Some(d) = row.days_left { (d) @if soon { " (soon)" } } @else { "-" } }
        }
    }
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_default()
}

fn style() -> Markup {
    html! {
        style { (maud::PreEscaped(CSS)) }
    }
}

/// Colours that also read in text: every state is written out, the colour only helps.
pub(super) const CSS: &str = "
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
td.num { text-align: right; }
.serving { color: #0a6b2d; } .degraded, .soon { color: #9a5b00; font-weight: 600; }
.refused, .error { color: #b00020; font-weight: 600; } .superseded { color: #666; }
tr.mine { background: #eef6ff; }
.outcome { border: 2px solid #ccc; padding: .2em 1em 1em; }
.outcome.ok { border-color: #0a6b2d; } .outcome.refused { border-color: #b00020; }
.fix { color: #444; } .hint { color: #555; }
p.files label { display: inline-block; margin-right: 1.5em; }
form.signout { float: right; }
textarea { width: 100%; font-family: monospace; margin: .3em 0; }
";
