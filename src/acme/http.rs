//! The `protocol = "http"` listener (port 80): ACME http-01 answers below
//! `/.well-known/acme-challenge/`, and for every other request a redirect to https with
//! the same host and path, or a relay to the listener's `backend` when it has one.
//!
//! One request head is read (at most [`HEAD_MAX`] bytes, within `handshake_timeout`) and
//! parsed with httparse; an answer or a redirect closes the connection, a relay hands the
//! bytes read and the rest of the connection to the backend as they are. Each connection
//! ends with one log line and its outcome (`redirected`, `acme-challenge`, `relayed`...).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::Challenges;
use crate::config::{Backend, HttpListenerConfig, ProxyProtocol};
use crate::names::Pattern;
use crate::proxy_header::{self, ConnectionFacts};
use crate::shared::Shared;

/// The largest request head read.
pub const HEAD_MAX: usize = 8 * 1024;
/// The longest a relayed port 80 connection lasts.
const RELAY_LIMIT: Duration = Duration::from_secs(10 * 60);
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// What every connection of one http listener shares.
#[derive(Debug)]
pub struct HttpCtx {
    pub name: Arc<str>,
    pub backend: Option<Backend>,
    pub proxy_protocol: ProxyProtocol,
    /// Pending http-01 answers, with `[acme]`.
    pub challenges: Option<Arc<Challenges>>,
}

impl HttpCtx {
    pub fn new(config: &HttpListenerConfig, challenges: Option<Arc<Challenges>>) -> Self {
        Self {
            name: config.name.as_str().into(),
            backend: config.backend.clone(),
            proxy_protocol: config.proxy_protocol,
            challenges,
        }
    }
}

/// Accepts until the shutdown, each connection under the shared connection cap.
pub async fn accept_loop(socket: TcpListener, ctx: Arc<HttpCtx>, shared: Arc<Shared>) {
    let stop = shared.shutdown.stop_accepting.clone();
    let mut pause = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&shared.permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = socket.accept() => r,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                pause = Duration::from_millis(10);
                let (ctx, shared2) = (Arc::clone(&ctx), Arc::clone(&shared));
                shared.shutdown.tracker.spawn(async move {
                    serve(tcp, peer, &ctx, &shared2).await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(listener = %ctx.name, reason = %e, "accept failed; pausing");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// What one request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// `GET /.well-known/acme-challenge/TOKEN`.
    Challenge(String),
    /// Anything else, with the host (port removed) and the path as sent.
    Other {
        host: Option<String>,
        path: String,
        head: bool,
    },
}

/// Parses one request head; `Ok(None)` while it is incomplete.
pub fn parse(bytes: &[u8]) -> Result<Option<Asked>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let path = request.path.unwrap_or("/").to_owned();
    if let Some(token) = path.strip_prefix(CHALLENGE_PATH) {
        if matches!(request.method, Some("GET") | Some("HEAD")) {
            let token = token.split(['?', '#']).next().unwrap_or("");
            return Ok(Some(Asked::Challenge(token.to_owned())));
        }
    }
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(redirect_host);
    Ok(Some(Asked::Other {
        host,
        path,
        head: request.method == Some("HEAD"),
    }))
}

/// The host of a `Host` header, without its port, if it is a host name or an IP address.
fn redirect_host(value: &str) -> Option<String> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        return Some(format!("[{ip}]"));
    }
    let host = value.split(':').next()?;
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(ip.to_string());
    }
    match Pattern::parse(host) {
        Ok(Pattern::Exact(name)) => Some(name.into()),
        _ => None,
    }
}

/// Serves one connection and logs its one line.
async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: &HttpCtx, shared: &Shared) {
    let started = std::time::Instant::now();
    let outcome = answer(tcp, peer, ctx, shared).await;
    let ms = started.elapsed().as_millis() as u64;
    info!(listener = %ctx.name, %peer, ms, outcome, "connection closed");
}

/// Answers one connection; its outcome.
async fn answer(
    mut tcp: TcpStream,
    peer: SocketAddr,
    ctx: &HttpCtx,
    shared: &Shared,
) -> &'static str {
    let mut buf = Vec::with_capacity(1024);
    let limit = shared.settings.handshake_timeout;
    let asked = tokio::time::timeout(limit, async {
        loop {
            let mut chunk = [0u8; 2048];
            let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a whole request head".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(asked) = parse(&buf)? {
                return Ok(asked);
            }
            if buf.len() > HEAD_MAX {
                return Err(format!("request head over {HEAD_MAX} bytes"));
            }
        }
    })
    .await;
    let asked = match asked {
        Ok(Ok(asked)) => asked,
        Ok(Err(reason)) => {
            debug!(listener = %ctx.name, %peer, reason, "not an HTTP request");
            let _ = respond(
                &mut tcp,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
                false,
                None,
            )
            .await;
            return "bad-request";
        }
        Err(_) => {
            debug!(listener = %ctx.name, %peer, "no request head within {limit:?}");
            return "head-timeout";
        }
    };
    match asked {
        Asked::Challenge(token) => {
            let answer = match &ctx.challenges {
                Some(c) => c.http(&token).await,
                None => None,
            };
            match answer {
                Some(answer) => {
                    debug!(listener = %ctx.name, %peer, token, "ACME http-01 challenge answered");
                    let _ = respond(
                        &mut tcp,
                        "200 OK",
                        "application/octet-stream",
                        answer.as_bytes(),
                        false,
                        None,
                    )
                    .await;
                    "acme-challenge"
                }
                None => {
                    let _ = respond(
                        &mut tcp,
                        "404 Not Found",
                        "text/plain",
                        b"no such challenge\n",
                        false,
                        None,
                    )
                    .await;
                    "acme-challenge-unknown"
                }
            }
        }
        Asked::Other { host, path, head } => match &ctx.backend {
            Some(backend) => relay(tcp, peer, buf, backend, ctx, shared).await,
            // Only a path (origin-form) is appended to `https://HOST`: `@evil.example/`
            // would make the host a user name and evil.example the host, and an
            // absolute-form target another site altogether.
            None if !path.starts_with('/') => {
                let _ = respond(
                    &mut tcp,
                    "400 Bad Request",
                    "text/plain",
                    b"the request-target must be a path starting with /\n",
                    head,
                    None,
                )
                .await;
                "bad-target"
            }
            None => match host {
                Some(host) => {
                    let location = format!("https://{host}{path}");
                    let _ = respond(
                        &mut tcp,
                        "308 Permanent Redirect",
                        "text/plain",
                        b"",
                        head,
                        Some(&location),
                    )
                    .await;
                    "redirected"
                }
                None => {
                    let _ = respond(
                        &mut tcp,
                        "400 Bad Request",
                        "text/plain",
                        b"a Host header is needed\n",
                        head,
                        None,
                    )
                    .await;
                    "no-host"
                }
            },
        },
    }
}

async fn respond(
    tcp: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head: bool,
    location: Option<&str>,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(location) = location {
        out.push_str(&format!("location: {location}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(body);
    }
    tcp.write_all(&bytes).await?;
    tcp.shutdown().await
}

async fn relay(
    mut tcp: TcpStream,
    peer: SocketAddr,
    read: Vec<u8>,
    backend: &Backend,
    ctx: &HttpCtx,
    shared: &Shared,
) -> &'static str {
    let mut upstream = match crate::relay::connect(backend, shared.settings.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            warn!(listener = %ctx.name, %peer, %backend, reason = %e, "backend unavailable");
            let _ = respond(
                &mut tcp,
                "502 Bad Gateway",
                "text/plain",
                b"Service temporarily unavailable\n",
                false,
                None,
            )
            .await;
            return "backend-unavailable";
        }
    };
    let local = tcp.local_addr().unwrap_or(peer);
    let facts = ConnectionFacts {
        peer,
        local,
        alpn: None,
        sni: None,
        tls_version: None,
    };
    let mut first = proxy_header::header(ctx.proxy_protocol, &facts).unwrap_or_default();
    first.extend_from_slice(&read);
    if upstream.write_all(&first).await.is_err() {
        return "backend-error";
    }
    let cut = shared.shutdown.cut.clone();
    tokio::select! {
        done = tokio::time::timeout(RELAY_LIMIT, tokio::io::copy_bidirectional(&mut tcp, &mut upstream)) => match done {
            Ok(Ok(_)) => "relayed",
            Ok(Err(_)) => "relay-error",
            Err(_) => "relay-limit",
        },
        () = cut.cancelled() => "drain-timeout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let get = |raw: &str| parse(raw.as_bytes()).unwrap();
        assert_eq!(get("GET / HTTP/1.1\r\nHost: a"), None);
        assert_eq!(
            get("GET /.well-known/acme-challenge/abc_DEF-1 HTTP/1.1\r\nHost: mail.example.com\r\n\r\n"),
            Some(Asked::Challenge("abc_DEF-1".into()))
        );
        assert_eq!(
            get("GET /x/y?z=1 HTTP/1.1\r\nHost: Mail.Example.com:80\r\n\r\n"),
            Some(Asked::Other {
                host: Some("mail.example.com".into()),
                path: "/x/y?z=1".into(),
                head: false
            })
        );
        assert_eq!(
            get("HEAD / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Some(Asked::Other {
                host: Some("[::1]".into()),
                path: "/".into(),
                head: true
            })
        );
        // A Host that would inject a header or point elsewhere is not redirected to.
        assert_eq!(
            get("GET / HTTP/1.1\r\nHost: evil.com/x\r\n\r\n"),
            Some(Asked::Other {
                host: None,
                path: "/".into(),
                head: false
            })
        );
        assert!(parse(b"\x16\x03\x01\x00\x05hello\r\n\r\n").is_err());
    }
}
