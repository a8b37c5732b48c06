//! Listening sockets and the accept loop: the connection cap, back-off on accept errors
//! (EMFILE must not spin a core), and one tracked task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::certs::Store;
use crate::config::{Protocol, ServerSettings};
use crate::connection;
use crate::routes::RouteTable;
use crate::shutdown::Shutdown;

/// Pending connections the kernel may queue per socket.
const BACKLOG: i32 = 1024;
/// First and longest pause after an accept error such as EMFILE.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What every connection of one `[[listener]]` shares.
#[derive(Debug)]
pub struct ListenerCtx {
    /// The listener's name, for logs.
    pub name: Arc<str>,
    /// What is spoken inside TLS.
    pub protocol: Protocol,
    /// Base TLS configuration (policy, ALPN, tickets); each connection adds its certificate.
    pub tls: rustls::ServerConfig,
    /// Refuse names no certificate covers.
    pub strict_sni: bool,
    /// Backend per name.
    pub routes: RouteTable,
    /// The host name in the greetings of a STARTTLS listener.
    pub greeting_name: Arc<str>,
}

/// What every connection of every listener shares.
#[derive(Debug)]
pub struct Shared {
    /// The certificate store.
    pub store: Arc<Store>,
    /// Timeouts and limits.
    pub settings: ServerSettings,
    /// One permit per open connection, `max_connections` in all.
    pub permits: Arc<Semaphore>,
    /// Stop, drain and cut.
    pub shutdown: Shutdown,
}

/// Binds `addr` for listening. IPv6 sockets are IPv6-only, so that `0.0.0.0:993` and
/// `[::]:993` can both be listed, as operators write them. The socket is handed to the
/// runtime when the server runs: binding comes first at start-up, before the user switch
/// and the store, and needs no runtime.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts connections on `socket` until shutdown starts.
pub async fn accept_loop(socket: TcpListener, ctx: Arc<ListenerCtx>, shared: Arc<Shared>) {
    let stop = shared.shutdown.stop_accepting.clone();
    let mut backoff = BACKOFF_MIN;
    let mut at_limit = false;
    loop {
        let Some(permit) = permit(&shared, &ctx, &mut at_limit, &stop).await else {
            return;
        };
        let accepted = tokio::select! {
            r = socket.accept() => r,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = BACKOFF_MIN;
                let (ctx, shared2) = (Arc::clone(&ctx), Arc::clone(&shared));
                shared
                    .shutdown
                    .tracker
                    .spawn(connection::serve(tcp, peer, ctx, shared2, permit));
            }
            // The client gave up between SYN and accept: nothing to do.
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                warn!(listener = %ctx.name, reason = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Takes a connection permit, waiting (and saying so once) when the cap is reached.
async fn permit(
    shared: &Shared,
    ctx: &ListenerCtx,
    at_limit: &mut bool,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() {
        if *at_limit {
            info!(listener = %ctx.name, "below max_connections again; accepting");
            *at_limit = false;
        }
        return Some(permit);
    }
    if !*at_limit {
        warn!(
            listener = %ctx.name,
            max_connections = shared.settings.max_connections,
            "max_connections reached; new connections wait in the backlog"
        );
        *at_limit = true;
    }
    tokio::select! {
        // The semaphore lives as long as `shared` and is never closed.
        p = Arc::clone(&shared.permits).acquire_owned() => p.ok(),
        () = stop.cancelled() => None,
    }
}

/// Errors that concern one connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
