//! `acme.ask`: the operator's service that says whether a name may be ordered, asked
//! once per name and believed for `ask_ttl` (allowed) or `ask_negative_ttl` (refused).
//!
//! 200 means allowed and any other answer refused. A service that cannot be reached, or
//! answers 5xx, decides nothing: the name waits (its next handshake asks again, at most
//! every [`UNKNOWN_TTL`]), and certificates already issued keep serving and renewing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::config::AcmeSettings;

/// Answers kept at once; beyond, the expired go first, then all.
const CACHE_MAX: usize = 100_000;
/// How long an answer that decides nothing is kept.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(30);
/// The longest an `ask` request may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What `ask` said of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused,
    /// No answer, or a 5xx.
    Unknown,
}

/// Each name's answer and until when it is believed.
type Cache = HashMap<Box<str>, (Verdict, Instant)>;

/// The `ask` client and its cache; cheap to clone.
#[derive(Clone)]
pub struct Ask {
    url: Arc<str>,
    client: Option<Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    cache: Arc<Mutex<Cache>>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl Ask {
    pub fn new(url: &str, settings: &AcmeSettings) -> Self {
        let client = connector(settings.ca_bundle.as_deref())
            .map_err(|e| tracing::warn!(reason = %e, "acme.ask: no HTTPS client; only http:// URLs work"))
            .ok()
            .map(|c| Client::builder(hyper_util::rt::TokioExecutor::new()).build(c));
        Self {
            url: url.into(),
            client,
            cache: Arc::default(),
            ttl: settings.ask_ttl,
            negative_ttl: settings.ask_negative_ttl,
        }
    }

    /// The answer believed now for `name`, if any.
    pub fn cached(&self, name: &str) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (verdict, until) = cache.get(name)?;
        (*until > Instant::now()).then_some(*verdict)
    }

    /// Asks for `name` and remembers the answer.
    pub async fn ask(&self, name: &str) -> Verdict {
        let verdict = self.request(name).await;
        let ttl = match verdict {
            Verdict::Allowed => self.ttl,
            Verdict::Refused => self.negative_ttl,
            Verdict::Unknown => UNKNOWN_TTL,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(name.into(), (verdict, Instant::now() + ttl));
        verdict
    }

    async fn request(&self, name: &str) -> Verdict {
        let url = format!("{}{name}", self.url);
        let Some(client) = &self.client else {
            return Verdict::Unknown;
        };
        let request = match hyper::Request::get(&url)
            .header(hyper::header::USER_AGENT, "mailfront")
            .body(Empty::new())
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(url, reason = %e, "acme.ask: not a request");
                return Verdict::Unknown;
            }
        };
        match tokio::time::timeout(ASK_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                if status == hyper::StatusCode::OK {
                    Verdict::Allowed
                } else if status.is_server_error() {
                    tracing::warn!(url, %status, "acme.ask answered with a server error; the name waits");
                    Verdict::Unknown
                } else {
                    tracing::info!(name, %status, "acme.ask refused the name; it is not ordered");
                    Verdict::Refused
                }
            }
            Ok(Err(e)) => {
                let reason = super::causes(&e);
                tracing::warn!(url, reason, "acme.ask cannot be reached; new names wait, issued ones keep serving and renewing");
                Verdict::Unknown
            }
            Err(_) => {
                tracing::warn!(
                    url,
                    "acme.ask did not answer within {ASK_TIMEOUT:?}; the name waits"
                );
                Verdict::Unknown
            }
        }
    }
}

fn connector(bundle: Option<&Path>) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match bundle {
        Some(bundle) => builder.with_tls_config(super::client_config(Some(bundle))?),
        None => builder
            .with_native_roots()
            .map_err(|e| format!("the system's roots: {e}"))?,
    };
    Ok(builder.https_or_http().enable_http1().build())
}
