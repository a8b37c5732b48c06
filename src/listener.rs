//! Listening sockets and the accept loop: the connection cap, back-off on accept errors
//! (EMFILE must not spin a core), and one tracked task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use crate::connection;
use crate::shared::{ListenerCtx, Shared};

/// Pending connections the kernel may queue per socket.
const BACKLOG: i32 = 1024;
/// First and longest pause after an accept error such as EMFILE.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one line per this long for each kind of trouble an accept loop reports: a
/// flood that keeps a listener at `max_connections` or out of descriptors would otherwise
/// log a line per connection, and fill the disk the logs are on.
const LOG_EVERY: Duration = Duration::from_secs(10);

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
    let (mut at_limit, mut failing) = (Trouble::default(), Trouble::default());
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
                if let Some(failed) = failing.over() {
                    info!(listener = %ctx.name, failed, "accepting again");
                }
                let (ctx, shared2) = (Arc::clone(&ctx), Arc::clone(&shared));
                shared
                    .shutdown
                    .tracker
                    .spawn(connection::serve(tcp, peer, ctx, shared2, permit));
            }
            // The client gave up between SYN and accept: nothing to do.
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                if let Some(unlogged) = failing.happened() {
                    warn!(
                        listener = %ctx.name, reason = %e, pause_ms = backoff.as_millis() as u64,
                        unlogged, "accept failed; pausing, then retrying with longer pauses"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Takes a connection permit, waiting (and saying so, throttled) when the cap is reached.
async fn permit(
    shared: &Shared,
    ctx: &ListenerCtx,
    at_limit: &mut Trouble,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() {
        return Some(permit);
    }
    if let Some(unlogged) = at_limit.happened() {
        warn!(
            listener = %ctx.name,
            max_connections = shared.settings.max_connections,
            unlogged,
            "max_connections reached; new connections wait in the backlog"
        );
    }
    let permit = tokio::select! {
        // The semaphore lives as long as `shared` and is never closed.
        p = Arc::clone(&shared.permits).acquire_owned() => p.ok(),
        () = stop.cancelled() => None,
    }?;
    if let Some(times) = at_limit.over() {
        info!(listener = %ctx.name, times, "below max_connections again; accepting");
    }
    Some(permit)
}

/// One kind of recurring trouble of an accept loop, logged at most once per [`LOG_EVERY`]
/// with how often it happened in between, and its end logged once after each line.
#[derive(Debug, Default)]
struct Trouble {
    /// When the last line was logged.
    logged: Option<Instant>,
    /// Occurrences since then, not logged.
    unlogged: u64,
    /// Occurrences since the last logged line, to report when the trouble is over;
    /// `None` when no line awaits its end.
    open: Option<u64>,
}

impl Trouble {
    /// Counts an occurrence; `Some(unlogged)` when it is to be logged now.
    fn happened(&mut self) -> Option<u64> {
        let now = Instant::now();
        if let Some(n) = self.open.as_mut() {
            *n += 1;
        }
        if self
            .logged
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.logged = Some(now);
        self.open = Some(self.open.unwrap_or(0).max(1));
        Some(std::mem::take(&mut self.unlogged))
    }

    /// The trouble is over for now; `Some(occurrences)` when its start was logged and its
    /// end has not been.
    fn over(&mut self) -> Option<u64> {
        self.open.take()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A trouble that keeps recurring is logged once per period, with the count of what
    /// was not logged; its end once after each logged start.
    #[test]
    fn trouble_is_throttled() {
        let mut t = Trouble::default();
        assert_eq!(t.over(), None);
        assert_eq!(t.happened(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.happened(), None);
        }
        assert_eq!(t.over(), Some(6));
        // Within the period: counted, neither start nor end logged.
        assert_eq!(t.happened(), None);
        assert_eq!(t.over(), None);
        // A period later: logged again, with the 6 unlogged ones.
        t.logged = Some(Instant::now() - LOG_EVERY);
        assert_eq!(t.happened(), Some(6));
        assert_eq!(t.over(), Some(1));
    }
}
