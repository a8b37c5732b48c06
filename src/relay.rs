//! The plain-text side: connect the backend, send the PROXY header, and copy both ways
//! until both sides are done, with half-close, an idle bound and the drain deadline.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, Mail, Protocol};

/// Bytes per read; one TLS record's worth of plaintext.
const CHUNK: usize = 16 * 1024;
/// What an idle direction waits with.
const FIRST: usize = 128;
/// How long a direction keeps its `CHUNK` buffer waiting for more bytes.
const HOLD: Duration = Duration::from_millis(20);

/// After one side has finished, how long the other may stay silent before the connection
/// is closed: a client that half-closed gets the backend's answer, but a peer that never
/// closes does not hold the connection for the whole idle timeout.
const HALF_CLOSED_LINGER: Duration = Duration::from_secs(60);

/// How a relayed connection ended.
#[derive(Debug)]
pub enum Ending {
    /// Both sides closed.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// Cut at the drain deadline of a shutdown.
    Drained,
    /// Reading from or writing to the client failed.
    Client(io::Error),
    /// Reading from or writing to the backend failed.
    Backend(io::Error),
}

impl Ending {
    /// The word used in logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle-timeout",
            Self::Drained => "drain-timeout",
            Self::Client(_) => "client-error",
            Self::Backend(_) => "backend-error",
        }
    }
}

/// Bytes moved each way.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Client to backend.
    pub up: u64,
    /// Backend to client.
    pub down: u64,
}

/// Opens the backend connection within `limit`.
pub async fn connect(backend: &Backend, limit: Duration) -> io::Result<TcpStream> {
    let stream = timeout(limit, TcpStream::connect(backend.as_str()))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a client is told when its backend cannot be reached, in its own protocol, so that
/// a mail client shows a reason instead of "connection lost".
pub fn unavailable_message(protocol: Protocol) -> &'static [u8] {
    match protocol.mail() {
        Some(Mail::Imap) => b"* BYE [UNAVAILABLE] Service temporarily unavailable\r\n",
        Some(Mail::Pop3) => b"-ERR [SYS/TEMP] Service temporarily unavailable\r\n",
        Some(Mail::Smtp) => b"421 4.3.0 Service temporarily unavailable\r\n",
        None => {
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 32\r\nconnection: close\r\n\r\nService temporarily unavailable\n"
        }
    }
}

/// Which side an I/O error came from.
enum Side {
    Client(io::Error),
    Backend(io::Error),
}

/// Shared by the two directions of one connection.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last byte read either way.
    last: AtomicU64,
    /// One direction has seen end-of-stream.
    half_closed: AtomicBool,
    up: AtomicU64,
    down: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

/// Copies between `client` and `backend` until both directions end, nothing moves for
/// `idle`, or `drain` fires.
pub async fn relay(
    client: Box<TlsStream<TcpStream>>,
    backend: TcpStream,
    idle: Duration,
    drain: &CancellationToken,
) -> (Transfer, Ending) {
    let activity = Activity {
        started: Instant::now(),
        last: AtomicU64::new(0),
        half_closed: AtomicBool::new(false),
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
    };
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = backend.into_split();
    let up = async {
        pump(
            &mut client_read,
            &mut backend_write,
            &activity.up,
            &activity,
        )
        .await
        .map_err(|e| e.attribute(true))
    };
    let down = async {
        pump(
            &mut backend_read,
            &mut client_write,
            &activity.down,
            &activity,
        )
        .await
        .map_err(|e| e.attribute(false))
    };
    let ending = tokio::select! {
        result = async { tokio::try_join!(up, down) } => match result {
            Ok(_) => Ending::Closed,
            Err(Side::Client(e)) => Ending::Client(e),
            Err(Side::Backend(e)) => Ending::Backend(e),
        },
        () = idle_expiry(&activity, idle) => Ending::Idle,
        () = drain.cancelled() => Ending::Drained,
    };
    if matches!(ending, Ending::Idle | Ending::Drained) {
        // Tell a client still there that the session is over, with close_notify, but never
        // wait on it for long.
        let mut client = client_read.unsplit(client_write);
        let _ = timeout(Duration::from_secs(1), client.shutdown()).await;
    }
    let transfer = Transfer {
        up: activity.up.load(Ordering::Relaxed),
        down: activity.down.load(Ordering::Relaxed),
    };
    (transfer, ending)
}

/// A copy error, before we know which direction it belongs to.
enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

impl PumpError {
    fn attribute(self, from_client: bool) -> Side {
        match (self, from_client) {
            (Self::Read(e), true) | (Self::Write(e), false) => Side::Client(e),
            (Self::Read(e), false) | (Self::Write(e), true) => Side::Backend(e),
        }
    }
}

/// Copies `from` to `to` until end-of-stream, then half-closes `to`.
///
/// An idle connection (an IMAP client in IDLE, thousands of them) must not hold copy
/// buffers: the wait for the next bytes uses a small buffer inside the task, and the
/// `CHUNK` buffer is taken when bytes come and kept only while more follow within `HOLD`
/// (a large message arrives as bursts of TCP segments; a conversation pauses longer).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    count: &AtomicU64,
    activity: &Activity,
) -> Result<(), PumpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut first = [0u8; FIRST];
    let mut hot: Option<Vec<u8>> = None;
    loop {
        let n = match hot.as_mut() {
            Some(buf) => match timeout(HOLD, from.read_buf(buf)).await {
                Ok(result) => read_or_eof(result)?,
                Err(_) => {
                    hot = None;
                    continue;
                }
            },
            None => {
                let n = read_or_eof(from.read(&mut first).await)?;
                let mut buf = Vec::with_capacity(CHUNK);
                buf.extend_from_slice(&first[..n]);
                hot = Some(buf);
                n
            }
        };
        activity.touch();
        let buf = hot.as_mut().expect("taken above");
        let mut ended = n == 0;
        // Take what else is there now, without waiting, up to one buffer.
        while !ended && buf.len() < CHUNK {
            match read_now(from, buf).await {
                Ok(Some(0)) => ended = true,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => ended = true,
                Err(e) => return Err(PumpError::Read(e)),
            }
        }
        if !buf.is_empty() {
            to.write_all(buf).await.map_err(PumpError::Write)?;
            // TLS buffers what it cannot send at once; push it out now, since mail
            // protocols wait for each reply before they say more.
            to.flush().await.map_err(PumpError::Write)?;
            count.fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
        }
        if ended {
            activity.half_closed.store(true, Ordering::Relaxed);
            // A peer that is already gone cannot be half-closed; nothing is lost.
            let _ = to.shutdown().await;
            return Ok(());
        }
    }
}

/// A read result with end-of-stream for a peer that closed TCP without TLS close_notify:
/// many clients do, and for a relay that is an ordinary end, since the protocols inside
/// frame their own data.
fn read_or_eof(result: io::Result<usize>) -> Result<usize, PumpError> {
    match result {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(PumpError::Read(e)),
    }
}

/// Reads into `buf`'s spare room what `from` has now: `Some(0)` at end-of-stream, `None`
/// when it would have to wait (the read is dropped, which a read may be).
async fn read_now<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    std::future::poll_fn(|cx| {
        let read = from.read_buf(buf);
        let mut read = std::pin::pin!(read);
        match std::future::Future::poll(read.as_mut(), cx) {
            std::task::Poll::Pending => std::task::Poll::Ready(Ok(None)),
            std::task::Poll::Ready(r) => std::task::Poll::Ready(r.map(Some)),
        }
    })
    .await
}

/// Resolves when nothing has moved for `idle` (or for the shorter linger once one side
/// has finished).
async fn idle_expiry(activity: &Activity, idle: Duration) {
    loop {
        let limit = if activity.half_closed.load(Ordering::Relaxed) {
            idle.min(HALF_CLOSED_LINGER)
        } else {
            idle
        };
        let last = Duration::from_millis(activity.last.load(Ordering::Relaxed));
        let deadline = activity.started + last + limit;
        if Instant::now() >= deadline {
            return;
        }
        sleep_until(deadline).await;
    }
}
