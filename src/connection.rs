//! One client connection from accept to close: TLS handshake within `handshake_timeout`,
//! backend by SNI, PROXY header, relay, and exactly one log line at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout, timeout_at};
use tracing::{info, warn};

use crate::config::{Protocol, ProxyProtocol};
use crate::metrics::{BackendError, BackendStats, HandshakeKind, ListenerStats};
use crate::onboarding::{self, http::Routed};
use crate::proxy_header::{self, ConnectionFacts};
use crate::relay;
use crate::shared::{ListenerCtx, Shared};
use crate::starttls::{self, Greeting, Plain};
use crate::tls::{self, Handshake, HandshakeError};

/// Serves one accepted connection; `permit` holds its slot until the connection ends.
///
/// The relay runs as a task of its own, started here once the backend answers: a task's
/// future keeps the size of its largest phase for the task's whole life, and the phases
/// before the relay (handshake, connect, PROXY header, greeting) are several times larger
/// than the relay, which is all an idle IMAP client needs for hours.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let mut counted = Counted::open(&ctx.stats);
    let mut tcp = tcp;
    let _ = tcp.set_nodelay(true);
    let settings = &shared.settings;
    if let (true, Some(mail)) = (ctx.protocol.starttls(), ctx.protocol.mail()) {
        let plain = timeout(
            settings.handshake_timeout,
            Box::pin(starttls::negotiate(&mut tcp, mail, &ctx.greeting_name)),
        )
        .await;
        let ms = started.elapsed().as_millis() as u64;
        match plain {
            Ok(Ok(Plain::Upgrade)) => {}
            Ok(Ok(Plain::Quit)) => {
                info!(listener = %ctx.name, %peer, ms, outcome = "client-quit", "connection closed before STARTTLS");
                return counted.ended("client-quit");
            }
            Ok(Err(e)) => {
                info!(listener = %ctx.name, %peer, ms, outcome = e.outcome(), reason = %e, "connection closed before TLS");
                return counted.ended(e.outcome());
            }
            Err(_) => {
                counted.ended("starttls-timeout");
                info!(
                    listener = %ctx.name, %peer, ms, outcome = "starttls-timeout",
                    "connection closed: no STARTTLS within {:?}", settings.handshake_timeout
                );
                return;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + settings.handshake_timeout;
    // Nothing of the handshake is made before the client's first bytes: a client that
    // connects and says nothing (a scanner, a slowloris) costs this task alone. A peek,
    // not `readable()`: a new socket can be reported readable with nothing to read, and
    // rustls sets up its 4 KiB read buffer at its first read attempt.
    let mut first_bytes = None;
    let handshake = match timeout_at(deadline, tcp.peek(&mut [0u8; 1])).await {
        Ok(Ok(0)) => Ok(Err(HandshakeError::Closed)),
        Ok(Ok(_)) => {
            first_bytes = Some(Instant::now());
            // Boxed, as the other phases before the relay: a task's future is as large as
            // its largest phase for the whole connection.
            let challenges = match (&shared.acme, ctx.protocol) {
                (Some(acme), Protocol::Https) => Some(&acme.challenges),
                _ => None,
            };
            let handshake =
                tls::handshake(tcp, &ctx.tls, &shared.store, ctx.strict_sni, challenges);
            timeout_at(deadline, Box::pin(handshake)).await
        }
        Ok(Err(e)) => Ok(Err(HandshakeError::Io(e))),
        Err(elapsed) => Err(elapsed),
    };
    let took = first_bytes.map(|t| t.elapsed()).unwrap_or_default();
    let hs = match handshake {
        Ok(Ok(hs)) => {
            let kind = HandshakeKind::of(hs.matched, hs.sni.as_deref());
            ctx.stats.handshake(kind, took);
            if hs.stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                ctx.stats.resumed();
            }
            if let (HandshakeKind::Fallback, Some(sni)) = (kind, &hs.sni) {
                if let Some(names) = &shared.fallback_names {
                    names.record(&ctx.name, sni);
                }
                if let Some(acme) = &shared.acme {
                    acme.wanted(sni);
                }
            }
            hs
        }
        Ok(Err(e)) => {
            match &e {
                // Nothing was asked: not a handshake.
                HandshakeError::Closed if first_bytes.is_none() => {}
                HandshakeError::UnknownName(sni) => {
                    ctx.stats.handshake(HandshakeKind::StrictRefused, took);
                    if let (Some(names), Some(sni)) = (&shared.fallback_names, sni) {
                        names.record(&ctx.name, sni);
                    }
                    if let (Some(acme), Some(sni)) = (&shared.acme, sni) {
                        acme.wanted(sni);
                    }
                }
                // The CA's validation, not a client's handshake.
                HandshakeError::AcmeChallenge { .. } => {}
                _ => ctx.stats.handshake(HandshakeKind::Failed, took),
            }
            return counted.ended(log_refused(&ctx, peer, started, &e));
        }
        Err(_) => {
            if first_bytes.is_some() {
                ctx.stats.handshake(HandshakeKind::Failed, took);
            }
            counted.ended("handshake-timeout");
            info!(
                listener = %ctx.name, %peer, ms = started.elapsed().as_millis() as u64,
                outcome = "handshake-timeout",
                "connection closed: no TLS handshake within {:?}", settings.handshake_timeout
            );
            return;
        }
    };
    // With [onboarding], an https connection to a setup host (or asking for a setup path)
    // is answered here; the others go on with what was read of them.
    let (hs, first) = match (&shared.onboarding, ctx.protocol) {
        (Some(onboarding), Protocol::Https) => {
            match Box::pin(onboarding::http::route(hs, peer, &ctx, &shared, onboarding)).await {
                Routed::Done(outcome) => return counted.ended(outcome),
                Routed::Relay(hs, first) => (hs, first),
            }
        }
        _ => (hs, Vec::new()),
    };
    let connecting = connect_backend(hs, first, peer, &ctx, &shared, started);
    let session = match Box::pin(connecting).await {
        Ok(session) => session,
        Err(outcome) => return counted.ended(outcome),
    };
    let tracker = shared.shutdown.tracker.clone();
    tracker.spawn(session.relay(shared, permit, counted));
}

/// Counts a connection as open until it ends, then by its outcome (`other` if it ends
/// without one: a panic).
struct Counted {
    stats: Arc<ListenerStats>,
    outcome: &'static str,
}

impl Counted {
    fn open(stats: &Arc<ListenerStats>) -> Self {
        stats.opened();
        Self {
            stats: Arc::clone(stats),
            outcome: "other",
        }
    }

    /// Records the outcome the connection ends with.
    fn ended(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.closed(self.outcome);
    }
}

/// A client with its backend, ready to relay, and what the closing log line says.
struct Session {
    /// Boxed: moved from phase to phase, and a future keeps a slot for everything it
    /// holds across a wait (the stream is 1.2 KB).
    client: Box<tls::ClientStream>,
    backend: TcpStream,
    listener: Arc<str>,
    peer: SocketAddr,
    sni: Option<String>,
    cert: Arc<str>,
    matched: crate::certs::Match,
    backend_name: String,
    tls: Option<&'static str>,
    alpn: Option<Vec<u8>>,
    started: Instant,
    /// The listener's idle bound.
    idle: std::time::Duration,
    /// Its backend's error counters.
    backend_stats: Arc<BackendStats>,
}

impl Session {
    /// Relays until the connection ends, then logs its one line.
    async fn relay(self, shared: Arc<Shared>, permit: OwnedSemaphorePermit, mut counted: Counted) {
        let Self {
            client,
            backend,
            listener,
            peer,
            sni,
            cert,
            matched,
            backend_name,
            tls,
            alpn,
            started,
            idle,
            backend_stats,
        } = self;
        let (transfer, ending) = relay::relay(client, backend, idle, &shared.shutdown.cut).await;
        drop(permit);
        counted.stats.relayed(transfer.up, transfer.down);
        counted.ended(ending.outcome());
        if let relay::Ending::Backend(_) = &ending {
            backend_stats.error(BackendError::Relay);
        }
        let reason = match &ending {
            relay::Ending::Client(e) | relay::Ending::Backend(e) => e.to_string(),
            _ => String::new(),
        };
        info!(
            listener = %listener, %peer, sni = sni.as_deref().unwrap_or("-"), cert = %cert,
            matched = matched.as_str(), backend = %backend_name, tls = tls.unwrap_or("-"),
            alpn = alpn.as_deref().map(String::from_utf8_lossy).as_deref().unwrap_or("-"),
            up = transfer.up, down = transfer.down, ms = started.elapsed().as_millis() as u64,
            outcome = ending.outcome(), reason = %reason,
            "connection closed"
        );
    }
}

/// Connects the backend for a handshaken client: PROXY header, and for STARTTLS
/// listeners the backend's greeting; the outcome (logged, client told) when that fails.
async fn connect_backend(
    hs: Handshake,
    first: Vec<u8>,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    shared: &Shared,
    started: Instant,
) -> Result<Session, &'static str> {
    let Handshake {
        stream: mut client,
        sni,
        cert,
        matched,
    } = hs;
    let settings = &shared.settings;
    let target = ctx.routes.target(sni.as_deref());
    let sni_field = sni.as_deref().unwrap_or("-");
    let connected = tokio::select! {
        r = relay::connect(&target.backend, settings.connect_timeout) => r,
        () = shared.shutdown.cut.cancelled() => Err(std::io::Error::other("shutting down")),
    };
    let mut backend = match connected {
        Ok(backend) => backend,
        Err(e) => {
            warn!(
                listener = %ctx.name, %peer, sni = sni_field, cert = %cert,
                backend = %target.backend, reason = %e, outcome = "backend-unavailable",
                "connection closed: backend unreachable"
            );
            target.stats.error(BackendError::Unavailable);
            say_goodbye(client, relay::unavailable_message(ctx.protocol)).await;
            return Err("backend-unavailable");
        }
    };
    let facts = {
        let (_, conn) = client.get_ref();
        let version = conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            _ => "TLSv1.2",
        });
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        (version, alpn)
    };
    // Asked of the kernel only for a PROXY header: one system call per connection less.
    let local = match target.proxy_protocol {
        ProxyProtocol::None => peer,
        _ => client.get_ref().0.get_ref().local_addr().unwrap_or(peer),
    };
    if let Some(header) = proxy_header::header(
        target.proxy_protocol,
        &ConnectionFacts {
            peer,
            local,
            alpn: facts.1.as_deref(),
            sni: sni.as_deref(),
            tls_version: facts.0,
        },
    ) {
        let sent = send(
            &mut backend,
            &header,
            settings.connect_timeout,
            "the PROXY header",
        );
        if let Err(e) = sent.await {
            warn!(
                listener = %ctx.name, %peer, sni = sni_field, cert = %cert,
                backend = %target.backend, reason = %e, outcome = "backend-error",
                "connection closed: PROXY header not sent"
            );
            target.stats.error(BackendError::ProxyHeader);
            return Err("backend-error");
        }
    }
    if !first.is_empty() {
        // What the client sent while its first request was looked at: the backend's now.
        let sent = send(
            &mut backend,
            &first,
            settings.connect_timeout,
            "the request",
        );
        if let Err(e) = sent.await {
            warn!(
                listener = %ctx.name, %peer, sni = sni_field, cert = %cert,
                backend = %target.backend, reason = %e, outcome = "backend-error",
                "connection closed: the request was not passed on"
            );
            target.stats.error(BackendError::Relay);
            return Err("backend-error");
        }
    }
    if let (true, Some(mail)) = (ctx.protocol.starttls(), ctx.protocol.mail()) {
        // The client had mailfront's greeting before STARTTLS; the backend's is not for it.
        let greeting =
            starttls::consume_greeting(&mut backend, mail, settings.connect_timeout).await;
        match greeting {
            Ok(Greeting::Welcome { rest }) => {
                // Normally nothing: the backend waits for the client. A failed write shows
                // in the relay that follows.
                if !rest.is_empty() {
                    let _ = client.write_all(&rest).await;
                }
            }
            Ok(Greeting::Refused(refusal)) => {
                warn!(
                    listener = %ctx.name, %peer, sni = sni_field, cert = %cert,
                    backend = %target.backend, reason = %String::from_utf8_lossy(&refusal).trim_end(),
                    outcome = "backend-refused", "connection closed: the backend refused the session"
                );
                target.stats.error(BackendError::Refused);
                say_goodbye(client, &refusal).await;
                return Err("backend-refused");
            }
            Err(e) => {
                warn!(
                    listener = %ctx.name, %peer, sni = sni_field, cert = %cert,
                    backend = %target.backend, reason = %e, outcome = "backend-unavailable",
                    "connection closed: no greeting from the backend"
                );
                target.stats.error(BackendError::Unavailable);
                say_goodbye(client, relay::unavailable_message(ctx.protocol)).await;
                return Err("backend-unavailable");
            }
        }
    }
    Ok(Session {
        backend_stats: Arc::clone(&target.stats),
        client,
        backend,
        listener: Arc::clone(&ctx.name),
        peer,
        cert,
        matched,
        backend_name: target.backend.to_string(),
        tls: facts.0,
        alpn: facts.1,
        started,
        sni,
        idle: ctx.idle_timeout,
    })
}

/// Writes `bytes` to the backend within `limit`; one that does not take them in time is
/// an error naming `what` it did not take.
async fn send(
    backend: &mut TcpStream,
    bytes: &[u8],
    limit: std::time::Duration,
    what: &str,
) -> std::io::Result<()> {
    timeout(limit, backend.write_all(bytes))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("backend did not take {what}"),
            ))
        })
}

/// Tells the client why its session ends, in its protocol, and closes; bounded, since a
/// client that does not read must not hold the connection.
async fn say_goodbye<S: tokio::io::AsyncWrite + Unpin>(mut client: S, message: &[u8]) {
    let bye = async {
        client.write_all(message).await?;
        client.shutdown().await
    };
    let _ = timeout(std::time::Duration::from_secs(1), bye).await;
}

/// Logs a handshake that gave no session; returns the outcome logged.
fn log_refused(
    ctx: &ListenerCtx,
    peer: SocketAddr,
    started: Instant,
    e: &HandshakeError,
) -> &'static str {
    let outcome = match e {
        HandshakeError::UnknownName(_) => "strict-sni",
        HandshakeError::AcmeChallenge { answered: true, .. } => "acme-challenge",
        HandshakeError::AcmeChallenge {
            answered: false, ..
        } => "acme-challenge-unknown",
        HandshakeError::Closed => "client-closed",
        // The client or the network vanished (a reset): not a TLS failure to look into.
        HandshakeError::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            "client-reset"
        }
        _ => "handshake-failed",
    };
    let sni = match e {
        HandshakeError::UnknownName(Some(name)) => name.as_str(),
        HandshakeError::AcmeChallenge { name, .. } => name.as_str(),
        _ => "-",
    };
    info!(
        listener = %ctx.name, %peer, sni, ms = started.elapsed().as_millis() as u64,
        outcome, reason = %e,
        "connection closed: no TLS session"
    );
    outcome
}
