//! TLS policy and the handshake: Mozilla's "intermediate" profile on rustls with aws-lc-rs,
//! and the accept path that reads the ClientHello, picks the certificate from the store,
//! and either refuses the name (strict SNI) or completes the handshake.

use std::io::{self, Read};
use std::sync::Arc;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::{
    Acceptor, ClientHello, NoServerSessionStorage, ProducesTickets, ResolvesServerCert,
    ServerConfig, ServerSessionMemoryCache,
};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::read_ahead::ReadAhead;
use tokio_rustls::StartHandshake;

use crate::acme::{Challenges, ACME_TLS_ALPN};
use crate::certs::{Match, Store};

/// TLS sessions remembered per listener for TLS 1.2 clients without ticket support.
const SESSION_CACHE: usize = 4096;

/// The TLS alert `unrecognized_name` (112), fatal, as a plaintext record: what a strict
/// listener answers to a name it does not serve. rustls has no call for sending an alert
/// before a connection exists, and before ServerHello an alert is plain bytes.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// aws-lc-rs with the "intermediate" key exchange groups (X25519, P-256, P-384) and
/// cipher suites in its order: AEAD with ECDHE only, AES-128-GCM first, then AES-256-GCM,
/// then ChaCha20-Poly1305, for TLS 1.3 and 1.2.
///
/// AES-128-GCM first is more than taste: a TLS 1.3 suite also picks the hash of the
/// handshake's transcript and key schedule, and SHA-256 (AES-128's) has instructions of its
/// own on current x86-64 and ARMv8 servers where SHA-384 (AES-256's) runs in plain code;
/// with AES-256 first, a full handshake for a client that lists it first (as OpenSSL's
/// do) cost a fifth more here (BENCHMARKS.md, issue 19).
pub fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite as suite;
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    provider.kx_groups = vec![
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
        aws_lc_rs::kx_group::SECP384R1,
    ];
    Arc::new(provider)
}

/// The base configuration of one listener; each connection gets a copy carrying the
/// certificate chosen for it.
///
/// TLS 1.2 and 1.3 only; session tickets (keys rotated by rustls, or the fleet's) and a
/// session cache for resumption, each private to the listener so that a session never
/// crosses protocols; rustls never renegotiates.
/// `tickets`, when `server.ticket_keys` is set, replaces rustls' own keys with the
/// fleet's ([`crate::tickets`]). `session_tickets` (`server.session_tickets`) is the
/// number of TLS 1.3 tickets sent after each handshake; 0 turns resumption off (no
/// tickets, no session cache), as nginx's `ssl_session_tickets off` and no cache.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    alpn: &[String],
    tickets: Option<Arc<dyn ProducesTickets>>,
    session_tickets: usize,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Unchosen));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // The server's order of suites ([`provider`]), not the client's: AES-GCM first (every
    // x86-64 and ARMv8 server has it in hardware), AES-128 before AES-256, then
    // ChaCha20-Poly1305. Scanners (testssl.sh) rate a server without an order of its own
    // as a finding.
    config.ignore_client_order = true;
    config.send_tls13_tickets = session_tickets;
    if session_tickets == 0 {
        // The builder's ticketer never makes one; its session cache goes too.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        return Ok(config);
    }
    config.ticketer = match tickets {
        Some(tickets) => tickets,
        None => aws_lc_rs::Ticketer::new()?,
    };
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(config)
}

/// The base configuration's resolver: never asked, since every connection's copy carries
/// the certificate chosen from its ClientHello.
#[derive(Debug)]
struct Unchosen;

impl ResolvesServerCert for Unchosen {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// A client's TLS stream.
pub type ClientStream = TlsStream<ReadAhead>;

/// A completed handshake and what it was served.
pub struct Handshake {
    /// The TLS stream, boxed: it moves from phase to phase (1.2 KB of connection state),
    /// and each phase's future would keep a slot for it.
    pub stream: Box<ClientStream>,
    /// The name the client asked for, if any.
    pub sni: Option<String>,
    /// The entry that served it.
    pub cert: Arc<str>,
    /// How that entry matched.
    pub matched: Match,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client closed before sending a whole ClientHello.
    #[error("client closed before the handshake")]
    Closed,
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The client's TLS was refused (bad ClientHello, no common parameters, ...).
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// A strict listener does not serve the name asked for.
    #[error("strict SNI: no certificate for {}", .0.as_deref().unwrap_or("(no SNI)"))]
    UnknownName(Option<String>),
    /// The CA's tls-alpn-01 validation was answered (or refused: nothing pending for the
    /// name); the connection ends after the handshake, as RFC 8737 wants.
    #[error("ACME tls-alpn-01 challenge for {name}: {}", if *.answered { "answered" } else { "none pending" })]
    AcmeChallenge { name: String, answered: bool },
}

/// Reads the ClientHello, chooses the certificate and completes the handshake.
///
/// With `challenges` (on https listeners when `[acme]` is set), a ClientHello offering
/// ALPN `acme-tls/1` is the CA's tls-alpn-01 validation: it is answered from them and
/// never relayed. The caller bounds the whole by `handshake_timeout`.
pub async fn handshake(
    tcp: TcpStream,
    base: &ServerConfig,
    store: &Store,
    strict_sni: bool,
    challenges: Option<&Arc<Challenges>>,
) -> Result<Handshake, HandshakeError> {
    let accepted = read_client_hello(&tcp).await?;
    if let Some(challenges) = challenges {
        if offers_acme_tls(&accepted.client_hello()) {
            // Boxed: the handshake future stays the size of the common path.
            return Box::pin(answer_challenge(tcp, accepted, base, challenges)).await;
        }
    }
    let chosen = choose(&accepted.client_hello(), store);
    if strict_sni && chosen.matched == Match::Fallback {
        send_alert(&tcp, &UNRECOGNIZED_NAME_ALERT);
        return Err(HandshakeError::UnknownName(chosen.sni));
    }
    let config = connection_config(base, chosen.resolver);
    let stream = StartHandshake::from_parts(accepted, ReadAhead::new(tcp))
        .into_stream(config)
        .await
        .map_err(unwrap_tls_error)?;
    Ok(Handshake {
        stream: Box::new(stream),
        sni: chosen.sni,
        cert: chosen.cert,
        matched: chosen.matched,
    })
}

/// Whether the ClientHello offers `acme-tls/1` (only an ACME CA's validation does).
fn offers_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN))
}

/// Answers a tls-alpn-01 validation with the certificate of the challenge pending for
/// the name, negotiating `acme-tls/1`, then closes; refuses with `unrecognized_name`
/// when nothing is pending (RFC 8737 §3).
async fn answer_challenge(
    tcp: TcpStream,
    accepted: rustls::server::Accepted,
    base: &ServerConfig,
    challenges: &Arc<Challenges>,
) -> Result<Handshake, HandshakeError> {
    let name = accepted
        .client_hello()
        .server_name()
        .unwrap_or_default()
        .to_owned();
    let Some(certified) = challenges.tls_alpn(&name).await else {
        send_alert(&tcp, &UNRECOGNIZED_NAME_ALERT);
        return Err(HandshakeError::AcmeChallenge {
            name,
            answered: false,
        });
    };
    let mut config = base.clone();
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config.cert_resolver = Arc::new(crate::certs::Fixed(certified));
    config.send_tls13_tickets = 0;
    let mut stream = StartHandshake::from_parts(accepted, ReadAhead::new(tcp))
        .into_stream(Arc::new(config))
        .await
        .map_err(unwrap_tls_error)?;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    Err(HandshakeError::AcmeChallenge {
        name,
        answered: true,
    })
}

/// The certificate chosen for one ClientHello.
pub struct Chosen {
    /// The name the client asked for, if any.
    pub sni: Option<String>,
    /// Hands rustls the chosen certificate.
    pub resolver: Arc<dyn ResolvesServerCert>,
    /// The entry it comes from.
    pub cert: Arc<str>,
    /// How it matched.
    pub matched: Match,
}

/// Chooses the certificate for `hello` from the index in force: one atomic load and at
/// most two hash lookups, whatever the size of the store.
pub fn choose(hello: &ClientHello<'_>, store: &Store) -> Chosen {
    let sni = hello.server_name().map(str::to_owned);
    let index = store.index();
    let (served, matched) = index.select(sni.as_deref(), hello.signature_schemes());
    Chosen {
        resolver: Arc::clone(&served.resolver),
        cert: Arc::clone(&served.id),
        matched,
        sni,
    }
}

/// One connection's copy of the listener's configuration, serving `resolver`'s certificate.
pub fn connection_config(
    base: &ServerConfig,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Arc<ServerConfig> {
    let mut config = base.clone();
    config.cert_resolver = resolver;
    Arc::new(config)
}

async fn read_client_hello(tcp: &TcpStream) -> Result<rustls::server::Accepted, HandshakeError> {
    let mut acceptor = Acceptor::default();
    loop {
        tcp.readable().await?;
        match acceptor.read_tls(&mut TryRead(tcp)) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => {}
            Err((error, mut alert)) => {
                let mut bytes = Vec::new();
                let _ = alert.write_all(&mut bytes);
                send_alert(tcp, &bytes);
                return Err(error.into());
            }
        }
    }
}

/// tokio-rustls reports TLS errors as `io::Error`; give the rustls error back when it is one.
fn unwrap_tls_error(e: io::Error) -> HandshakeError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return HandshakeError::Tls(tls.clone());
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return HandshakeError::Closed;
    }
    HandshakeError::Io(e)
}

/// Lets rustls read straight from a non-blocking socket into its own buffer.
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// Sends the alert that ends a connection, best effort and without waiting: it is a few
/// bytes into an empty send buffer, the client may already be gone, and it is refused
/// either way.
fn send_alert(tcp: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match tcp.try_write(bytes) {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            _ => return,
        }
    }
}
