//! The plain-text side: connect the backend, send the PROXY header, and copy both ways
//! until both sides are done, with half-close, an idle bound and the drain deadline.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::{Backend, Mail, Protocol};
use crate::tls::ClientStream;

/// Most bytes read before a write, on the stack: about four TLS records' worth of
/// plaintext, and small enough that a write, plain or as four records, fits in one
/// segment on loopback (MTU 64 KiB), where a local Dovecot or Postfix is reached: 64 KiB
/// exactly would cost a second, tiny segment per write.
const CHUNK: usize = 64 * 1024 - 256;
/// How long a cut relay waits to send the client its close_notify.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);

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

/// Copies between `client` and `backend` until both directions end, nothing moves for
/// `idle`, or `drain` is cancelled. The future itself, not an `async` wrapper around it,
/// which would keep a second slot for the streams. Call it inside the runtime (it arms
/// the idle timer).
pub fn relay(
    client: Box<ClientStream>,
    backend: TcpStream,
    idle: Duration,
    drain: &CancellationToken,
) -> impl Future<Output = (Transfer, Ending)> {
    Relay::new(client, backend, idle, drain)
}

/// The relay as a future of its own rather than an `async` block: an idle IMAP client
/// costs this struct and nothing else (no copy buffers, no per-read timers), a few hundred
/// bytes where the `async` version kept a slot for every future it awaited.
struct Relay {
    client: Box<ClientStream>,
    backend: TcpStream,
    /// Client to backend.
    up: Pump,
    /// Backend to client.
    down: Pump,
    idle: Duration,
    /// Last time bytes moved either way.
    last: Instant,
    /// Fires at the idle deadline; rearmed lazily, only when it fires early.
    timer: Pin<Box<Sleep>>,
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set when the relay was cut and is telling the client, with close_notify.
    closing: Option<Ending>,
}

impl Relay {
    fn new(
        mut client: Box<ClientStream>,
        backend: TcpStream,
        idle: Duration,
        drain: &CancellationToken,
    ) -> Self {
        // The handshake is over: the client's socket is read ahead from now on.
        client.get_mut().0.read_ahead();
        let last = Instant::now();
        Self {
            client,
            backend,
            up: Pump::default(),
            down: Pump::default(),
            idle,
            last,
            timer: Box::pin(sleep_until(last + idle)),
            drain: Box::pin(drain.clone().cancelled_owned()),
            closing: None,
        }
    }

    fn transfer(&self) -> Transfer {
        Transfer {
            up: self.up.count,
            down: self.down.count,
        }
    }

    /// The idle bound in force: shorter once one side has finished.
    fn limit(&self) -> Duration {
        if self.up.done || self.down.done {
            self.idle.min(HALF_CLOSED_LINGER)
        } else {
            self.idle
        }
    }

    /// Pending until nothing has moved for the limit.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last + self.limit();
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Tells the client the session is over, never waiting on it for long.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<(Transfer, Ending)> {
        let closed = Pin::new(&mut *self.client).poll_shutdown(cx).is_ready();
        if !closed && self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let ending = self.closing.take().expect("closing");
        Poll::Ready((self.transfer(), ending))
    }
}

impl Future for Relay {
    type Output = (Transfer, Ending);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.closing.is_some() {
            return this.poll_close(cx);
        }
        let mut ended = None;
        if !this.up.done {
            match this.up.poll(cx, &mut *this.client, &mut this.backend) {
                Poll::Ready(Err(e)) => ended = Some(e.attribute(true)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        if ended.is_none() && !this.down.done {
            match this.down.poll(cx, &mut this.backend, &mut *this.client) {
                Poll::Ready(Err(e)) => ended = Some(e.attribute(false)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        // Records rustls makes on its own while it reads (the no_renegotiation alert that
        // answers a TLS 1.2 renegotiation) go out now: otherwise they wait for the
        // backend's next bytes, which may never come, and the client waits with them. (Its
        // answer to a TLS 1.3 KeyUpdate goes with the next data, as RFC 8446 allows.) Not
        // once the client's side is shut: its close_notify is then all there is to send,
        // and its pump has sent what it could.
        if ended.is_none() && !this.down.done && this.client.get_ref().1.wants_write() {
            if let Poll::Ready(Err(e)) = Pin::new(&mut *this.client).poll_flush(cx) {
                ended = Some(Side::Client(e));
            }
        }
        if std::mem::take(&mut this.up.moved) | std::mem::take(&mut this.down.moved) {
            this.last = Instant::now();
        }
        match ended {
            Some(Side::Client(e)) => return Poll::Ready((this.transfer(), Ending::Client(e))),
            Some(Side::Backend(e)) => return Poll::Ready((this.transfer(), Ending::Backend(e))),
            None => {}
        }
        if this.up.done && this.down.done {
            return Poll::Ready((this.transfer(), Ending::Closed));
        }
        let cut = if this.drain.as_mut().poll(cx).is_ready() {
            Ending::Drained
        } else if this.poll_idle(cx).is_ready() {
            Ending::Idle
        } else {
            return Poll::Pending;
        };
        this.closing = Some(cut);
        this.timer
            .as_mut()
            .reset(Instant::now() + CLOSE_NOTIFY_WAIT);
        this.poll_close(cx)
    }
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

/// One direction: read from one side, write to the other, until end-of-stream, then
/// half-close the writing side.
///
/// What the reading side has ready, up to `CHUNK`, is read into a buffer on the stack and
/// written from there in one call (on loopback every write to the backend costs the
/// kernel a segment's trip through TCP, so four records in one write cost about a quarter
/// of four writes); only what the writer does not take is copied to the heap, and only
/// until it is taken. TLS buffers what it cannot send at once, so every write is
/// flushed: mail protocols wait for each reply before they say more.
#[derive(Default)]
struct Pump {
    /// Read but not yet written, from `at`.
    pending: Vec<u8>,
    at: usize,
    /// The last write has not been flushed yet.
    unflushed: bool,
    /// The reading side reached end-of-stream.
    eof: bool,
    /// End-of-stream was passed on: this direction is over.
    done: bool,
    /// Bytes were written since the relay last looked.
    moved: bool,
    count: u64,
}

impl Pump {
    /// `Ready(Ok)` once this direction is over.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<Result<(), PumpError>>
    where
        R: AsyncRead + Unpin,
        W: Last,
    {
        loop {
            while self.at < self.pending.len() {
                let n = ready!(poll_write(cx, to, &self.pending[self.at..]))?;
                self.at += n;
                self.wrote(n);
            }
            if self.at > 0 {
                // Released as soon as it is written: a stalled peer costs memory only
                // while it is stalled.
                self.pending = Vec::new();
                self.at = 0;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(PumpError::Write)?;
                self.unflushed = false;
            }
            if self.eof {
                // A peer that is already gone cannot be half-closed; nothing is lost.
                let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut space = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut space);
            // Take what is there now (several TLS records, or what the backend has sent).
            while buf.remaining() > 0 {
                let before = buf.filled().len();
                match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if buf.filled().len() == before => {
                        self.eof = true;
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                    // A peer that closed TCP without TLS close_notify: many clients do,
                    // and for a relay that is an ordinary end, since the protocols inside
                    // frame their own data.
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.eof = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(PumpError::Read(e))),
                    Poll::Pending => break,
                }
            }
            if self.eof {
                // Reached once: past end-of-stream nothing is read again. What is still
                // to write goes out with the end (see [`Last`]).
                to.hold_for_end();
            }
            let bytes = buf.filled();
            if bytes.is_empty() {
                if self.eof {
                    continue;
                }
                return Poll::Pending;
            }
            let mut at = 0;
            if self.eof {
                // The last bytes and the end go out together where the writer can.
                at = to.queue_last(bytes);
                if at > 0 {
                    self.wrote(at);
                }
            }
            let mut blocked = false;
            while at < bytes.len() {
                match poll_write(cx, to, &bytes[at..]) {
                    Poll::Ready(result) => {
                        let n = result?;
                        at += n;
                        self.wrote(n);
                    }
                    Poll::Pending => {
                        blocked = true;
                        break;
                    }
                }
            }
            if blocked {
                self.pending = bytes[at..].to_vec();
                return Poll::Pending;
            }
        }
    }

    fn wrote(&mut self, n: usize) {
        self.count += n as u64;
        self.moved = true;
        self.unflushed = true;
    }
}

/// A writer that can send a stream's last bytes and its end together.
trait Last: AsyncWrite + Unpin {
    /// Holds back what is written from now on, the stream's end coming: the `shutdown`
    /// that ends it sends all of it at once.
    fn hold_for_end(&mut self) {}

    /// Queues what it takes of `bytes`, the last of the stream, and after them the end of
    /// the stream when it took them all, for the next flush to send at once; returns how
    /// much it took. Plain TCP takes nothing here: the kernel sends each write as it comes,
    /// and its end is `shutdown`.
    fn queue_last(&mut self, _bytes: &[u8]) -> usize {
        0
    }
}

impl Last for TcpStream {}

/// TLS: the last records, close_notify and the TCP FIN in one segment, where writing each
/// as it comes costs the client's socket three (and the client as many wake-ups) for every
/// connection its backend ends: IMAP LOGOUT, SMTP and POP3 QUIT, HTTP with `Connection:
/// close`.
impl Last for ClientStream {
    /// Corks the socket: the `shutdown` that follows puts the FIN on the records still
    /// queued and sends them (a close does the same, and the kernel's cork lasts 200 ms
    /// at most).
    fn hold_for_end(&mut self) {
        let _ = socket2::SockRef::from(self.get_ref().0.get_ref()).set_tcp_cork(true);
    }

    fn queue_last(&mut self, bytes: &[u8]) -> usize {
        let conn = self.get_mut().1;
        // rustls takes what fits under its buffer limit; the rest is written as usual.
        let taken = io::Write::write(&mut conn.writer(), bytes).unwrap_or(0);
        if taken == bytes.len() {
            conn.send_close_notify();
        }
        taken
    }
}

/// One write, with a writer that takes nothing made an error.
fn poll_write<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    to: &mut W,
    bytes: &[u8],
) -> Poll<Result<usize, PumpError>> {
    match ready!(Pin::new(to).poll_write(cx, bytes)) {
        Ok(0) => Poll::Ready(Err(PumpError::Write(io::ErrorKind::WriteZero.into()))),
        Ok(n) => Poll::Ready(Ok(n)),
        Err(e) => Poll::Ready(Err(PumpError::Write(e))),
    }
}
