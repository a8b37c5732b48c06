//! Serving the setup documents on a client's TLS connection, after the handshake: a
//! connection to a setup host is served here (hyper, HTTP/1.1 or HTTP/2 as ALPN said);
//! on any other name the first request line is read, and only a request for one of the
//! two setup paths is answered here (then the connection closes); every other connection
//! goes to the backend with the bytes read so far.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::timeout;
use tracing::info;

use super::documents::{self, Setup};
use super::{Answer, Document, Onboarding, SetupHost};
use crate::certs::Store;
use crate::shared::{ListenerCtx, Shared};
use crate::tls::Handshake;

/// The largest request body read (an autodiscover request is a few hundred bytes).
const MAX_BODY: usize = 16 * 1024;
/// The most a whole connection to the setup documents may last.
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);
/// Statuses remembered for a connection's log line.
const STATUSES_LOGGED: usize = 16;

/// Request lines answered on any name (clients ask the domain itself first). Compared
/// without regard to case, then followed by a space or `?`.
const SNIFFED: [&[u8]; 3] = [
    b"GET /.well-known/autoconfig/mail/config-v1.1.xml",
    b"HEAD /.well-known/autoconfig/mail/config-v1.1.xml",
    b"POST /autodiscover/autodiscover.xml",
];

/// What became of a handshaken https connection.
pub(crate) enum Routed {
    /// Answered here (or closed); the outcome for the connection counters.
    Done(&'static str),
    /// For the backend, with the bytes already read from the client.
    Relay(Handshake, Vec<u8>),
}

/// Serves `hs` here when it is for a setup host or asks for a setup path, else hands it
/// back for the relay.
pub(crate) async fn route(
    mut hs: Handshake,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    shared: &Shared,
    onboarding: &Arc<Onboarding>,
) -> Routed {
    let Some(sni) = hs.sni.clone() else {
        return Routed::Relay(hs, Vec::new());
    };
    let started = Instant::now();
    let (prefix, keep_alive) = if onboarding.setup_host(&sni).is_some() {
        (Vec::new(), true)
    } else {
        let sniffed = tokio::select! {
            r = timeout(ctx.idle_timeout, sniff(&mut hs.stream)) => r,
            () = shared.shutdown.cut.cancelled() => return Routed::Done("drain-timeout"),
        };
        match sniffed {
            Ok(Ok((prefix, false))) => return Routed::Relay(hs, prefix),
            Ok(Ok((prefix, true))) => (prefix, false),
            Ok(Err(e)) => {
                let outcome = if e.kind() == io::ErrorKind::UnexpectedEof {
                    "closed"
                } else {
                    "client-error"
                };
                info!(listener = %ctx.name, %peer, sni = %sni, cert = %hs.cert, outcome, reason = %e, "connection closed before a request");
                return Routed::Done(outcome);
            }
            Err(_) => {
                info!(listener = %ctx.name, %peer, sni = %sni, cert = %hs.cert, outcome = "idle-timeout", "connection closed: no request within {:?}", ctx.idle_timeout);
                return Routed::Done("idle-timeout");
            }
        }
    };
    let h2 = hs.stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = Prefixed {
        prefix,
        read: 0,
        inner: hs.stream,
    };
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let served = Serve {
        sni: sni.as_str().into(),
        onboarding: Arc::clone(onboarding),
        store: Arc::clone(&shared.store),
        statuses: Arc::clone(&statuses),
        header_timeout: shared.settings.handshake_timeout,
    };
    let result = tokio::select! {
        r = timeout(CONNECTION_LIMIT, served.connection(io, h2, keep_alive)) => r,
        () = shared.shutdown.cut.cancelled() => Ok(Ok(())),
    };
    let (outcome, reason) = match result {
        Ok(Ok(())) => ("onboarding", String::new()),
        Ok(Err(e)) => ("client-error", e.to_string()),
        Err(_) => (
            "idle-timeout",
            format!("connection open for {CONNECTION_LIMIT:?}"),
        ),
    };
    let statuses = statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
    info!(
        listener = %ctx.name, %peer, sni = %sni, cert = %hs.cert, matched = hs.matched.as_str(),
        backend = "onboarding", requests = statuses.len(), statuses = %statuses.join(","),
        ms = started.elapsed().as_millis() as u64, outcome, reason = %reason,
        "connection closed"
    );
    Routed::Done(outcome)
}

/// Reads the start of the first request, as little as decides whether it asks for a
/// setup path: `(bytes read, whether it does)`.
async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Vec<u8>, bool)> {
    // Longer than the longest sniffed line and its delimiter: the loop always decides.
    let mut buf = [0u8; 64];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        if let Some(ours) = decide(&buf[..len]) {
            return Ok((buf[..len].to_vec(), ours));
        }
    }
}

/// Whether `start` is a request for a setup path; `None` while it may still become one.
fn decide(start: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for line in SNIFFED {
        let n = start.len().min(line.len());
        if !start[..n].eq_ignore_ascii_case(&line[..n]) {
            continue;
        }
        match start.get(line.len()) {
            None => undecided = true,
            Some(b' ' | b'?') => return Some(true),
            Some(_) => {}
        }
    }
    (!undecided).then_some(false)
}

/// The client's stream with the bytes already read from it put back in front.
struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection's server of the setup documents.
#[derive(Clone)]
struct Serve {
    /// The name of the handshake; every request's host must be it.
    sni: Arc<str>,
    onboarding: Arc<Onboarding>,
    store: Arc<Store>,
    /// The statuses answered, for the log line.
    statuses: Arc<Mutex<Vec<u16>>>,
    /// A request's head must arrive within this.
    header_timeout: Duration,
}

impl Serve {
    async fn connection<S>(self, io: S, h2: bool, keep_alive: bool) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let header_timeout = self.header_timeout;
        let service = hyper::service::service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, std::convert::Infallible>(this.respond(req).await) }
        });
        let io = TokioIo::new(io);
        if h2 {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(8)
                .max_header_list_size(16 * 1024)
                .serve_connection(io, service)
                .await
        } else {
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(16 * 1024)
                .keep_alive(keep_alive)
                .serve_connection(io, service)
                .await
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (document, result, response) = self.answer(req).await;
        self.onboarding.count(document, result);
        if let Ok(mut statuses) = self.statuses.lock() {
            if statuses.len() < STATUSES_LOGGED {
                statuses.push(response.status().as_u16());
            }
        }
        response
    }

    /// The answer to one request, with what it asked for and what became of it.
    async fn answer(&self, req: Request<Incoming>) -> (Document, Answer, Response<Full<Bytes>>) {
        let host = request_host(&req);
        if !host
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&self.sni))
        {
            let text = format!("this connection is for {}\n", self.sni);
            return (
                Document::Other,
                Answer::Refused,
                plain(StatusCode::MISDIRECTED_REQUEST, text),
            );
        }
        let setup = self.onboarding.setup_host(&self.sni);
        let domain = setup.map_or(&*self.sni, |(_, d)| d).to_ascii_lowercase();
        let path = req.uri().path();
        let autoconfig = path.eq_ignore_ascii_case("/.well-known/autoconfig/mail/config-v1.1.xml")
            || (setup.is_some_and(|(h, _)| h == SetupHost::Autoconfig)
                && path.eq_ignore_ascii_case("/mail/config-v1.1.xml"));
        let autodiscover = path.eq_ignore_ascii_case("/autodiscover/autodiscover.xml");
        let mta_sts = setup.is_some_and(|(h, _)| h == SetupHost::MtaSts)
            && path == "/.well-known/mta-sts.txt";
        let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
        let document = match (autoconfig, autodiscover, mta_sts) {
            (true, _, _) => Document::Autoconfig,
            (_, true, _) => Document::Autodiscover,
            (_, _, true) => Document::MtaSts,
            _ => Document::Other,
        };
        // Only for a domain the store knows: no documents (an enforce policy, say) for a
        // name that merely points here.
        if document != Document::Other && !self.known(&domain) {
            let text = format!("no setup documents for {domain} here\n");
            return (
                document,
                Answer::Refused,
                plain(StatusCode::NOT_FOUND, text),
            );
        }
        if autoconfig && read_only {
            let address = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k.eq_ignore_ascii_case("emailaddress"))
                    .map(|(_, v)| v.into_owned())
            });
            // One customer's host answers for its own domain only.
            let asked = address.as_deref().and_then(documents::checked_address);
            if let Some((_, other)) = asked.filter(|(_, d)| *d != domain) {
                let text = format!("{other} is not set up through {}\n", self.sni);
                return (
                    document,
                    Answer::Refused,
                    plain(StatusCode::NOT_FOUND, text),
                );
            }
            let xml = documents::autoconfig(&self.setup(&domain, &self.host(&domain)));
            return (
                Document::Autoconfig,
                Answer::Answered,
                reply(StatusCode::OK, "application/xml; charset=utf-8", xml),
            );
        }
        if autodiscover && *req.method() == Method::POST {
            return self.autodiscover(req, &domain).await;
        }
        if mta_sts && read_only {
            let settings = &self.onboarding.settings;
            let mode = settings.mta_sts.expect("an mta-sts host has a mode");
            let mx = self.onboarding.mta_sts_mx(&domain, &self.store);
            let policy = documents::mta_sts_policy(mode, &mx, settings.mta_sts_max_age);
            return (
                Document::MtaSts,
                Answer::Answered,
                reply(StatusCode::OK, "text/plain; charset=utf-8", policy),
            );
        }
        if document == Document::Other {
            let response = plain(StatusCode::NOT_FOUND, "not found\n".into());
            return (Document::Other, Answer::NotFound, response);
        }
        let allow = if autodiscover { "POST" } else { "GET, HEAD" };
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(allow),
        );
        (document, Answer::Refused, response)
    }

    /// Outlook's POST: the account of the address it carries.
    async fn autodiscover(
        &self,
        req: Request<Incoming>,
        host_domain: &str,
    ) -> (Document, Answer, Response<Full<Bytes>>) {
        const XML: &str = "text/xml; charset=utf-8";
        let too_large = || {
            let text = format!("request body over {MAX_BODY} bytes or cut short\n");
            (
                Document::Autodiscover,
                Answer::Refused,
                plain(StatusCode::PAYLOAD_TOO_LARGE, text),
            )
        };
        // Refused before a byte of it is asked for (no `100 Continue`): a client that
        // waits for one sends nothing.
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return too_large();
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return too_large(),
        };
        let request = match documents::autodiscover_request(&body) {
            Ok(r) => r,
            Err(e) => {
                let xml = documents::autodiscover_error(600, &e.to_string());
                return (
                    Document::Autodiscover,
                    Answer::Refused,
                    reply(StatusCode::OK, XML, xml),
                );
            }
        };
        if request
            .schema
            .as_deref()
            .is_some_and(|s| s != documents::OUTLOOK_SCHEMA)
        {
            let xml = documents::autodiscover_error(601, "Provider is unavailable");
            return (
                Document::Autodiscover,
                Answer::Refused,
                reply(StatusCode::OK, XML, xml),
            );
        }
        let Some(address) = request.address else {
            let xml = documents::autodiscover_error(600, "Invalid Request");
            return (
                Document::Autodiscover,
                Answer::Refused,
                reply(StatusCode::OK, XML, xml),
            );
        };
        // One customer's host answers for its own domain only.
        let domain =
            documents::checked_address(&address).map_or_else(|| host_domain.to_owned(), |(_, d)| d);
        if domain != host_domain {
            let why = format!("{domain} is not set up through {}", self.sni);
            let xml = documents::autodiscover_error(600, &why);
            return (
                Document::Autodiscover,
                Answer::Refused,
                reply(StatusCode::OK, XML, xml),
            );
        }
        let xml = documents::autodiscover(&self.setup(&domain, &self.host(&domain)), &address);
        (
            Document::Autodiscover,
            Answer::Answered,
            reply(StatusCode::OK, XML, xml),
        )
    }

    /// Whether the store knows `domain`: an entry of its own (not the server-wide
    /// certificate) covers the name this connection asked for, `mail.DOMAIN` or DOMAIN.
    fn known(&self, domain: &str) -> bool {
        let mail = format!("mail.{domain}");
        [&*self.sni, &mail, domain]
            .iter()
            .any(|name| super::covering(&self.store, name).is_some())
    }

    fn host(&self, domain: &str) -> String {
        self.onboarding.mail_host(domain, &self.store)
    }

    fn setup<'a>(&'a self, domain: &'a str, host: &'a str) -> Setup<'a> {
        let settings = &self.onboarding.settings;
        Setup {
            domain,
            host,
            services: &self.onboarding.services,
            username: settings.username,
            display_name: settings.display_name.as_deref().unwrap_or(domain),
        }
    }
}

/// The host a request names (HTTP/2's `:authority` or HTTP/1.1's `Host`), without port
/// or trailing dot.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let host = req.headers().get(hyper::header::HOST)?.to_str().ok()?;
            crate::names::host_of(host).to_owned()
        }
    };
    Some(authority.strip_suffix('.').unwrap_or(&authority).to_owned())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    response
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the two setup paths, whole and followed by a space or a query, are taken;
    /// anything else is decided at the first byte that differs.
    #[test]
    fn first_request_line_decides() {
        assert_eq!(
            decide(b"GET /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a@b.c HTTP/1.1"),
            Some(true)
        );
        assert_eq!(
            decide(b"POST /Autodiscover/Autodiscover.xml HTTP/1.1\r\n"),
            Some(true)
        );
        assert_eq!(
            decide(b"GET /.well-known/autoconfig/mail/config-v1.1.xmlx"),
            Some(false)
        );
        assert_eq!(decide(b"GET /index.html HTTP/1.1"), Some(false));
        assert_eq!(decide(b"PRI * HTTP/2.0\r\n"), Some(false));
        assert_eq!(decide(b"G"), None);
        assert_eq!(decide(b"GET /.well-known/auto"), None);
        assert_eq!(decide(b"POST /autodiscover/autodiscover.xml"), None);
    }
}
