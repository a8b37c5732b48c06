//! What every request passes before a handler sees it, so that no web page the operator
//! visits can use the interface (DESIGN.md, "Admin interface"):
//!
//! - `Host` must name the interface: an address it was reached at, `localhost`,
//!   `server.name` or one of `admin.allowed_hosts` (on a unix socket, which a local proxy
//!   may forward to, the names alone). A DNS-rebinding page reaches it under its own
//!   name, and is answered 421 without a handler running.
//! - A request that changes something (any method but GET and HEAD) needs an `Origin` of
//!   the interface itself, or the bearer token in `Authorization` (which no page can send
//!   to another origin without a CORS preflight, and none is ever granted).
//! - The body arrives whole within [`BODY_LIFE`] and under [`super::MAX_BODY`] (under
//!   [`UNSIGNED_BODY`] from a client that has not signed in, when there is a token): a
//!   client trickling a byte at a time holds its connection that long at most.
//! - Every answer says `Content-Security-Policy`, `X-Frame-Options: DENY`,
//!   `Cache-Control: no-store`, `X-Content-Type-Options: nosniff` and `Referrer-Policy`.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// How long a request's body may take to arrive, whole (1 MiB at 35 KB/s).
pub const BODY_LIFE: Duration = Duration::from_secs(30);
/// The largest body read from a client without the token (the sign-in form's), when the
/// interface has one: strangers cannot make it hold a megabyte per connection.
pub const UNSIGNED_BODY: usize = 16 * 1024;

/// The connection a request came on, handed to the router with each request.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The address it was accepted at; `None` on a unix socket.
    pub local: Option<IpAddr>,
}

/// The names the interface answers to, besides the addresses it is reached at.
#[derive(Debug, Default)]
pub struct Names {
    names: Vec<String>,
}

impl Names {
    /// `localhost`, `server` (`server.name`) and `allowed` (`admin.allowed_hosts`).
    pub fn new(server: &str, allowed: &[String]) -> Self {
        let mut names = vec!["localhost".to_owned(), server.to_ascii_lowercase()];
        names.extend(allowed.iter().map(|n| n.to_ascii_lowercase()));
        Self { names }
    }

    /// Whether `host` (a `Host` value, with or without a port) names the interface
    /// reached on `conn`: one of its names, or the address it was reached at. On a unix
    /// socket (reached through a local proxy, perhaps) the names alone.
    pub fn allow(&self, host: Option<&str>, conn: &Conn) -> bool {
        let Some(host) = host.map(crate::names::host_of) else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        // An address literal is no rebinding: it must be the one reached.
        match (host.parse::<IpAddr>(), conn.local) {
            (Ok(ip), Some(local)) => ip.to_canonical() == local.to_canonical(),
            _ => false,
        }
    }
}

/// The checks, in front of every route.
pub async fn check(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    let conn = request.extensions().get::<Conn>().copied();
    let conn = conn.unwrap_or(Conn { local: None });
    let host = host_of(&request);
    if !state.hosts.allow(host.as_deref(), &conn) {
        let shown = host.as_deref().unwrap_or("(none)");
        tracing::warn!(host = %shown, path = %request.uri().path(), "admin: request for another host refused (421)");
        let why = format!(
            "misdirected request: Host {shown} does not name this admin interface (its \
             address, localhost, server.name or admin.allowed_hosts)"
        );
        return secured(refusal(StatusCode::MISDIRECTED_REQUEST, why));
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes && !same_origin(&state, request.headers(), host.as_deref(), conn) {
        let origin = request.headers().get(header::ORIGIN);
        let origin = origin.and_then(|o| o.to_str().ok()).unwrap_or("(none)");
        tracing::warn!(%origin, path = %request.uri().path(), "admin: cross-origin request refused (403)");
        let why = format!(
            "refused: a request that changes something needs the Origin of this interface \
             (found {origin}) or Authorization: Bearer TOKEN"
        );
        return secured(refusal(StatusCode::FORBIDDEN, why));
    }
    let limit = match super::auth::signed_in(&state, request.headers()) {
        true => super::MAX_BODY,
        false => UNSIGNED_BODY,
    };
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(BODY_LIFE, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            let why = format!("the body is larger than {limit} bytes");
            return secured(closing(refusal(StatusCode::PAYLOAD_TOO_LARGE, why)));
        }
        Err(_) => {
            let why = format!("the body did not arrive within {}s", BODY_LIFE.as_secs());
            return secured(closing(refusal(StatusCode::REQUEST_TIMEOUT, why)));
        }
    };
    let request = Request::from_parts(parts, Body::from(body));
    secured(next.run(request).await)
}

/// The `Host` a request names: its request-target's authority, else its `Host` header.
fn host_of(request: &Request) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    let host = request.headers().get(header::HOST)?;
    host.to_str().ok().map(str::to_owned)
}

/// Whether a request that changes something may: it carries the right bearer token, or
/// an `Origin` that is the interface as the request reached it (scheme and `Host`; on a
/// unix socket, behind a proxy, the `Host` alone).
fn same_origin(state: &super::State, headers: &HeaderMap, host: Option<&str>, conn: Conn) -> bool {
    if let (Some(token), Some(given)) = (&state.token, super::auth::bearer(headers)) {
        if token.matches(given) {
            return true;
        }
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), host) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = match (conn.local, state.tls) {
        (None, _) => scheme == "http" || scheme == "https",
        (Some(_), true) => scheme == "https",
        (Some(_), false) => scheme == "http",
    };
    scheme_ok && authority.eq_ignore_ascii_case(host)
}

/// A refusal as the API answers every one: `{"error": ...}`.
fn refusal(status: StatusCode, why: String) -> Response {
    let body = serde_json::json!({ "error": why }).to_string() + "\n";
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The answer, and the connection closed after it (the rest of a body is not read).
fn closing(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer with the headers that keep the page out of other sites' frames, caches and
/// scripts: a policy that allows nothing but the page's own style and forms.
pub fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let policy = HeaderValue::from_str(policy()).expect("the policy is ASCII");
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it, browsers send `Origin: null` on the page's own form
    // posts, which the Origin check then refuses.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The Content-Security-Policy: no scripts, no frames, forms to the interface only, and
/// the page's one style element by its hash.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine;
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, super::page::CSS.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// The answer (503, and the connection closed) of a connection beyond the caps to
/// anything but `/healthz` and `/readyz`.
pub fn busy(why: String) -> Response {
    secured(closing(refusal(StatusCode::SERVICE_UNAVAILABLE, why)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_the_interface() {
        let names = Names::new("Server.com", &["admin.example.net".into()]);
        let lo = Conn {
            local: Some("127.0.0.1".parse().unwrap()),
        };
        for host in [
            "127.0.0.1:9180",
            "127.0.0.1",
            "localhost:9180",
            "LOCALHOST",
            "server.com:9180",
            "server.com.",
            "admin.example.net",
        ] {
            assert!(names.allow(Some(host), &lo), "{host}");
        }
        for host in ["rebind.evil:9180", "127.0.0.2:9180", "evil.localhost", ""] {
            assert!(!names.allow(Some(host), &lo), "{host}");
        }
        let listed = Names::new("server.com", &["192.0.2.7".into()]);
        assert!(
            listed.allow(Some("192.0.2.7:9180"), &lo),
            "an address listed"
        );
        assert!(!names.allow(None, &lo), "no Host");
        let v6 = Conn {
            local: Some("::1".parse().unwrap()),
        };
        assert!(names.allow(Some("[::1]:9180"), &v6));
        assert!(!names.allow(Some("[::2]:9180"), &v6));
        let unix = Conn { local: None };
        assert!(names.allow(Some("localhost"), &unix), "unix: the names");
        assert!(
            !names.allow(Some("rebind.evil"), &unix),
            "unix behind a proxy"
        );
        assert!(
            !names.allow(Some("127.0.0.1"), &unix),
            "unix: no address reached"
        );
    }
}
