//! The operator's HTTP interface (`[admin]`): health and readiness, Prometheus metrics, the
//! store's report and the names served the server-wide certificate.
//!
//! It runs on the proxy's runtime as tasks of its own, never on the handshake path: its
//! own socket (loopback, a unix socket, or any address with a token and HTTPS with the
//! server-wide certificate). Strangers cannot hold it ([`slots`]): at most
//! [`MAX_CONNECTIONS`] connections, at most [`PER_CLIENT`] of them from one client
//! address, each request's headers within [`HEADER_TIMEOUT`] and body within
//! [`guard::BODY_LIFE`], every connection closed after [`CONNECTION_LIFE`]; and while those
//! caps are reached, [`PROBE_SLOTS`] more connections answer `/healthz` and `/readyz` (and
//! nothing else), so that an orchestrator's liveness probe is answered. No web page can use it
//! ([`guard`]). What it shows comes from the store's one report (asked of the reloader)
//! and the counters the connections keep ([`crate::metrics`]).

mod auth;
mod guard;
mod page;
mod routes;
mod slots;
mod upload;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::certs::{Reports, Store};
use crate::config::{AdminBind, AdminSettings, Config};
use crate::metrics::fallback::{Recorder, TopNames};
use crate::metrics::Exposition;
use slots::{Slot, Slots};
pub use slots::{MAX_CONNECTIONS, PER_CLIENT, PROBE_PER_CLIENT, PROBE_SLOTS};

/// A request's headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A probe's request (beyond the caps) must arrive within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection is closed after this long, whatever it does (a scraper reconnects).
pub const CONNECTION_LIFE: Duration = Duration::from_secs(300);
/// The largest request body read.
pub const MAX_BODY: usize = 1 << 20;
/// The shortest token accepted.
const MIN_TOKEN: usize = 16;

/// Why the admin interface cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin.bind: cannot listen on {bind}: {error}")]
    Bind {
        bind: AdminBind,
        error: std::io::Error,
    },
    #[error("admin.token_file {}: {reason}", path.display())]
    Token { path: PathBuf, reason: String },
}

/// The admin interface's socket, bound at start (before the process gives up root).
#[derive(Debug)]
pub struct Admin {
    socket: Socket,
    settings: AdminSettings,
    token: Option<auth::Token>,
}

#[derive(Debug)]
enum Socket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct State {
    pub token: Option<auth::Token>,
    pub exposition: Arc<Exposition>,
    pub reports: Reports,
    pub config: Config,
    pub names: Arc<Mutex<TopNames>>,
    /// The names `Host` may give ([`guard`]).
    pub hosts: guard::Names,
    /// The page's signed-in sessions.
    pub sessions: auth::Sessions,
    pub recorder: Arc<Recorder>,
    pub ready: Arc<AtomicBool>,
    pub store: Arc<Store>,
    /// Installs and removes entries: the store's one writer.
    pub installer: crate::certs::Installer,
    /// Whether it speaks HTTPS (the page's cookie is then `Secure`).
    pub tls: bool,
    /// The domain readiness checks, when on.
    pub domains: Option<Arc<crate::onboarding::periodic::Checked>>,
}

impl Admin {
    /// Binds `settings.bind` and reads the token; `owner` is the uid and gid a unix socket
    /// is handed to (the user the process becomes).
    pub fn bind(settings: &AdminSettings, owner: Option<(u32, u32)>) -> Result<Self, AdminError> {
        let token = settings.token_file.as_deref().map(read_token).transpose()?;
        let bind_error = |error| AdminError::Bind {
            bind: settings.bind.clone(),
            error,
        };
        let socket = match &settings.bind {
            AdminBind::Tcp(addr) => {
                let socket = std::net::TcpListener::bind(addr).map_err(bind_error)?;
                socket.set_nonblocking(true).map_err(bind_error)?;
                Socket::Tcp(socket)
            }
            AdminBind::Unix(path) => {
                let socket = bind_unix(path, owner).map_err(bind_error)?;
                socket.set_nonblocking(true).map_err(bind_error)?;
                Socket::Unix(socket)
            }
        };
        Ok(Self {
            socket,
            settings: settings.clone(),
            token,
        })
    }

    /// Its address, when it listens on TCP (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tcp(s) => s.local_addr().ok(),
            Socket::Unix(_) => None,
        }
    }

    /// Serves until `stop` is cancelled.
    pub(crate) async fn serve(self, state: State, stop: CancellationToken) {
        let tls = match self.settings.tls() {
            true => Some(TlsAcceptor::from(tls_config(&state.store))),
            false => None,
        };
        let state = Arc::new(State {
            token: self.token,
            tls: tls.is_some(),
            hosts: guard::Names::new(&state.config.server.name, &self.settings.allowed_hosts),
            ..state
        });
        let router = routes::router(Arc::clone(&state));
        let slots = Arc::new(Slots::default());
        let bind = self.settings.bind.clone();
        let serve_one = |io: Conn, peer: Option<SocketAddr>| {
            let Some(slot) = slots.take(peer) else {
                debug!(peer = ?peer, "admin: connection refused, every slot taken");
                return;
            };
            let (router, tls, stop) = (router.clone(), tls.clone(), stop.clone());
            tokio::spawn(async move {
                let served = async {
                    let local = io.local();
                    match (io, tls) {
                        (Conn::Tcp(tcp), Some(tls)) => {
                            let limit = match slot {
                                Slot::Probe { .. } => PROBE_TIMEOUT,
                                Slot::Full { .. } => HEADER_TIMEOUT,
                            };
                            let Ok(Ok(tls)) = tokio::time::timeout(limit, tls.accept(tcp)).await
                            else {
                                return;
                            };
                            http(tls, router, local, &slot).await;
                        }
                        (Conn::Tcp(tcp), None) => http(tcp, router, local, &slot).await,
                        (Conn::Unix(unix), _) => http(unix, router, local, &slot).await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::timeout(CONNECTION_LIFE, served) => {}
                    () = stop.cancelled() => {}
                }
            });
        };
        match self.socket {
            Socket::Tcp(socket) => {
                let Ok(socket) = TcpListener::from_std(socket) else {
                    warn!(%bind, "admin: cannot watch its socket; not served");
                    return;
                };
                info!(%bind, https = tls.is_some(), "admin interface listening");
                loop {
                    tokio::select! {
                        accepted = socket.accept() => match accepted {
                            Ok((tcp, peer)) => serve_one(Conn::Tcp(tcp), Some(peer)),
                            Err(e) => accept_failed(&e).await,
                        },
                        () = stop.cancelled() => return,
                    }
                }
            }
            Socket::Unix(socket) => {
                let Ok(socket) = UnixListener::from_std(socket) else {
                    warn!(%bind, "admin: cannot watch its socket; not served");
                    return;
                };
                info!(%bind, "admin interface listening");
                loop {
                    tokio::select! {
                        accepted = socket.accept() => match accepted {
                            Ok((unix, _)) => serve_one(Conn::Unix(unix), None),
                            Err(e) => accept_failed(&e).await,
                        },
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Conn {
    /// What the router is told of it.
    fn local(&self) -> guard::Conn {
        let local = match self {
            Self::Tcp(tcp) => tcp.local_addr().ok().map(|a| a.ip()),
            Self::Unix(_) => None,
        };
        guard::Conn { local }
    }
}

/// A 500 saying what failed (the handlers' answer when their own work fails).
fn internal(what: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    (status, format!("{what}\n")).into_response()
}

/// An accept error (out of descriptors): a pause, so that the loop does not spin.
async fn accept_failed(e: &std::io::Error) {
    debug!(reason = %e, "admin: accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves HTTP/1.1 on one connection: every request handed to the router with what the
/// connection is ([`guard::Conn`]); on a probe's slot, one request for the health
/// endpoints within [`PROBE_TIMEOUT`], and nothing else.
async fn http<I>(io: I, router: axum::Router, local: guard::Conn, slot: &Slot)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let probe = match slot {
        Slot::Probe { why, .. } => Some(Arc::new(why.clone())),
        Slot::Full { .. } => None,
    };
    let service = tower::service_fn(
        move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            let router = router.clone();
            let probe = probe.clone();
            async move {
                let health = matches!(request.uri().path(), "/healthz" | "/readyz");
                if let (Some(why), false) = (probe, health) {
                    let why =
                        format!("busy: {why}; try again later (/healthz and /readyz still answer)");
                    return Ok(guard::busy(why));
                }
                request.extensions_mut().insert(local);
                let request = request.map(axum::body::Body::new);
                tower::ServiceExt::oneshot(router, request).await
            }
        },
    );
    let service = TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    let (timeout, keep_alive) = match slot {
        Slot::Probe { .. } => (PROBE_TIMEOUT, false),
        Slot::Full { .. } => (HEADER_TIMEOUT, true),
    };
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(keep_alive)
        .max_buf_size(64 * 1024);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(reason = %e, "admin: connection ended");
    }
}

/// HTTPS with the server-wide certificate, as it is now (a reload that replaces it
/// applies to the next connection).
fn tls_config(store: &Arc<Store>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ServerWide(Arc::clone(store))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Hands rustls the store's server-wide certificate.
#[derive(Debug)]
struct ServerWide(Arc<Store>);

impl rustls::server::ResolvesServerCert for ServerWide {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.index().fallback().resolver.resolve(hello)
    }
}

/// Checks `admin.token_file` as `run` reads it (`check-config` refuses what `run` would).
pub fn check_token(path: &Path) -> Result<(), AdminError> {
    read_token(path).map(|_| ())
}

/// Reads the token: one line, at least [`MIN_TOKEN`] characters, in a file other users
/// can neither read nor write.
fn read_token(path: &Path) -> Result<auth::Token, AdminError> {
    let error = |reason: String| AdminError::Token {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| error(format!("cannot be read: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        let who = match mode & 0o006 {
            0o002 => "written",
            0o004 => "read",
            _ => "read and written",
        };
        return Err(error(format!(
            "can be {who} by every user (mode {mode:o}): chmod 600 it"
        )));
    }
    if meta.len() > 4096 {
        return Err(error(
            "is larger than 4 KiB; it should hold one token".into(),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot be read: {e}")))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN || token.contains(char::is_whitespace) {
        return Err(error(format!(
            "must hold one token of at least {MIN_TOKEN} characters without spaces \
             (openssl rand -hex 32 > {})",
            path.display()
        )));
    }
    Ok(auth::Token::new(token))
}

/// Binds a unix socket at `path`, replacing a stale socket left by an earlier run (never
/// another kind of file), readable and writable by its owner and group only.
fn bind_unix(
    path: &Path,
    owner: Option<(u32, u32)>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let socket = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(socket)
}
