//! The client socket under TLS, read ahead in large reads.
//!
//! rustls takes ciphertext 4 KiB per read, so a client sending 16 KiB records costs four
//! or five `read` calls per record. This reads what the socket has, up to `AHEAD`, in one
//! call and hands it to rustls from memory. The buffer exists only while it holds bytes
//! or a read is under way: a connection waiting for its client holds none.
//!
//! Only the relay reads ahead: the handshake's few short messages are read straight into
//! rustls' buffer, since taking a 64 KiB buffer from the allocator for a 100-byte record
//! costs more than the read it saves (and its release can return heap to the kernel).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

/// Most bytes taken from the socket in one read: four full TLS records (16 KiB of
/// plaintext and up to 256 bytes of header, padding and tag each), what the relay takes
/// in one go.
const AHEAD: usize = 4 * (16 * 1024 + 256);

/// A TCP stream whose reads are batched; writes go straight through.
#[derive(Debug)]
pub struct ReadAhead {
    io: TcpStream,
    /// Read from the socket, not yet taken, from `at`.
    buf: Vec<u8>,
    at: usize,
    /// Reads go ahead (the relay); until then they go straight to the reader (the
    /// handshake).
    ahead: bool,
}

impl ReadAhead {
    /// Wraps `io`.
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: Vec::new(),
            at: 0,
            ahead: false,
        }
    }

    /// Reads ahead from now on: the handshake is over and the relay begins.
    pub fn read_ahead(&mut self) {
        self.ahead = true;
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at == this.buf.len() {
            if !this.ahead || dst.remaining() >= AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, dst);
            }
            this.buf.clear();
            this.at = 0;
            this.buf.reserve_exact(AHEAD);
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                // End of stream: the other direction may go on for a while; hold nothing.
                Poll::Ready(Ok(0)) => this.buf = Vec::new(),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.buf = Vec::new();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing to hold while the client is quiet.
                    this.buf = Vec::new();
                    return Poll::Pending;
                }
            }
        }
        let n = dst.remaining().min(this.buf.len() - this.at);
        dst.put_slice(&this.buf[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.get_mut().io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected peer, and the other end under a `ReadAhead`.
    async fn pair() -> (TcpStream, ReadAhead) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        (peer, ReadAhead::new(socket))
    }

    /// Before the relay (the handshake), reads go straight into the reader's buffer: no
    /// read-ahead buffer is taken.
    #[tokio::test]
    async fn handshake_reads_go_straight() {
        let (mut peer, mut ahead) = pair().await;
        let mut chunk = [0u8; 4096];
        for message in [&b"a1 NOOP\r\n"[..], &[0x17; 300][..]] {
            peer.write_all(message).await.unwrap();
            let n = ahead.read(&mut chunk).await.unwrap();
            assert_eq!(&chunk[..n], message);
            assert_eq!(ahead.buf.capacity(), 0);
        }
    }

    /// In the relay, small reads are served from one large read; the buffer is gone once
    /// drained and the socket is quiet; end-of-stream comes through.
    #[tokio::test]
    async fn small_reads_from_one_large_read() {
        let (mut peer, mut ahead) = pair().await;
        ahead.read_ahead();
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut ahead_reads = 0;
        while got.len() < sent.len() {
            let n = ahead.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
            ahead_reads += usize::from(ahead.buf.capacity() > 0);
        }
        assert_eq!(got, sent);
        assert!(ahead_reads >= 9, "{ahead_reads} reads from the buffer");
        // Drained and quiet: a read would wait, and the buffer is released.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), ahead.read(&mut chunk))
                .await;
        assert!(waited.is_err());
        assert_eq!(ahead.buf.capacity(), 0);
        ahead.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        peer.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
        drop(peer);
        assert_eq!(ahead.read(&mut chunk).await.unwrap(), 0);
        assert_eq!(ahead.buf.capacity(), 0);
    }
}
