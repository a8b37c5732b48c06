//! The admin token: given as `Authorization: Bearer TOKEN` (or the page's cookie),
//! compared in constant time, and a wrong one answered slowly.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie the page keeps the token in.
pub const COOKIE: &str = "mailfront_admin";
/// How long a request with a wrong or missing token waits for its 401.
pub const FAILED_DELAY: Duration = Duration::from_secs(1);

/// The token every request but `/healthz` needs.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn new(text: &str) -> Self {
        Self(text.as_bytes().into())
    }

    /// Whether `given` is the token, in time independent of where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, given).is_ok()
    }
}

/// What a request offers as its token: the bearer token, or the page's cookie.
pub fn offered(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .map(<[u8]>::trim_ascii)
            .find_map(|c| c.strip_prefix(COOKIE.as_bytes())?.strip_prefix(b"="))
    })
}

/// Lets a request through when no token is set or it carries the token; otherwise a 401,
/// after [`FAILED_DELAY`] (the connection cap bounds how many guesses wait at once).
pub async fn require(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if offered(request.headers()).is_some_and(|given| token.matches(given)) {
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
        let page = super::page::login_page(offered(request.headers()).is_some());
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
    fn bearer_or_cookie() {
        let token = Token::new("0123456789abcdef");
        let mut headers = HeaderMap::new();
        assert!(offered(&headers).is_none());
        headers.insert(
            header::COOKIE,
            "a=b; mailfront_admin=0123456789abcdef".parse().unwrap(),
        );
        assert!(token.matches(offered(&headers).unwrap()));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdeX".parse().unwrap(),
        );
        assert!(
            !token.matches(offered(&headers).unwrap()),
            "the header comes first"
        );
        assert!(!token.matches(b"0123456789abcde"), "shorter");
    }
}
