//! Who may use the interface when it has a token: a request that carries it as
//! `Authorization: Bearer TOKEN`, or a browser that signed in with it once on the page and
//! holds a session id in a cookie. The cookie never holds the token: the id is random,
//! expires after [`SESSION_LIFE`], and is forgotten at sign-out or restart. Tokens are
//! compared in constant time, and a wrong one is answered slowly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie the page keeps its session id in.
pub const COOKIE: &str = "mailfront_session";
/// How long a session lasts after signing in.
pub const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; signing in beyond ends the one nearest its end.
const MAX_SESSIONS: usize = 256;
/// How long a request with a wrong or missing token waits for its 401.
pub const FAILED_DELAY: Duration = Duration::from_secs(1);

/// The token every request but `/healthz` and `/readyz` needs.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token `text` (read from `admin.token_file`).
    pub fn new(text: &str) -> Self {
        Self(text.as_bytes().into())
    }

    /// Whether `given` is the token, in time independent of where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, given).is_ok()
    }
}

/// The page's signed-in sessions: random ids and when each ends.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Instant>>);

impl Sessions {
    /// A new session, ending [`SESSION_LIFE`] after `now`: its id.
    pub fn open(&self, now: Instant) -> String {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.lock();
        map.retain(|_, end| *end > now);
        if map.len() >= MAX_SESSIONS {
            let nearest = map
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(id, _)| id.clone());
            if let Some(nearest) = nearest {
                map.remove(&nearest);
            }
        }
        map.insert(id.clone(), now + SESSION_LIFE);
        id
    }

    /// Whether `id` is a session that has not ended at `now`.
    pub fn valid(&self, id: &[u8], now: Instant) -> bool {
        let Ok(id) = std::str::from_utf8(id) else {
            return false;
        };
        self.lock().get(id).is_some_and(|end| *end > now)
    }

    /// Ends session `id`.
    pub fn close(&self, id: &[u8]) {
        if let Ok(id) = std::str::from_utf8(id) {
            self.lock().remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The bearer token a request offers.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?;
    value.as_bytes().strip_prefix(b"Bearer ")
}

/// The session id of the page's cookie a request offers.
pub fn session(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|c| c.strip_prefix(COOKIE.as_bytes())?.strip_prefix(b"="))
}

/// Whether a request is let in by `token`: it carries the token, or a live session.
pub fn signed_in(state: &super::State, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    if bearer(headers).is_some_and(|given| token.matches(given)) {
        return true;
    }
    session(headers).is_some_and(|id| state.sessions.valid(id, Instant::now()))
}

/// Lets a request through when no token is set or it is signed in; otherwise a 401, after
/// [`FAILED_DELAY`] (the connection caps bound how many guesses wait at once).
pub async fn require(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    if signed_in(&state, request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(path = %request.uri().path(), "admin: request without the right token");
    tokio::time::sleep(FAILED_DELAY).await;
    let browser = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if browser {
        let offered = bearer(request.headers()).or(session(request.headers()));
        let page = super::page::login_page(offered.is_some());
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(page.into_string()),
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the admin token is missing or wrong: send Authorization: Bearer TOKEN\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_session_cookie() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_none() && session(&headers).is_none());
        headers.insert(
            header::COOKIE,
            "a=b; mailfront_session=abc".parse().unwrap(),
        );
        assert_eq!(session(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, "Bearer 0123".parse().unwrap());
        assert_eq!(bearer(&headers), Some(&b"0123"[..]));
        let token = Token::new("0123456789abcdef");
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcde"), "shorter");
    }

    /// Sessions are random, end after their life, end at sign-out, and are bounded.
    #[test]
    fn sessions_expire_and_are_bounded() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(now);
        let b = sessions.open(now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.valid(a.as_bytes(), now + Duration::from_secs(3600)));
        assert!(!sessions.valid(a.as_bytes(), now + SESSION_LIFE));
        assert!(!sessions.valid(b"0123456789abcdef", now), "made up");
        sessions.close(b.as_bytes());
        assert!(!sessions.valid(b.as_bytes(), now));
        for i in 0..(MAX_SESSIONS as u64 + 10) {
            sessions.open(now + Duration::from_millis(i));
        }
        assert!(sessions.lock().len() <= MAX_SESSIONS);
        assert!(!sessions.valid(a.as_bytes(), now), "the oldest went first");
    }
}
