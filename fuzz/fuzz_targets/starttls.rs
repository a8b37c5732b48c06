//! The plain-text start of SMTP, IMAP and POP3 sessions, and the backend greeting that is
//! consumed, fed arbitrary bytes in arbitrary pieces: a decision or an error, never a
//! panic, and never more than the bounded lines and commands.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailfront::config::Mail;
use mailfront::starttls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads `data` in pieces whose sizes come from `cuts`, then end-of-stream; takes every
/// write.
struct Script<'a> {
    data: &'a [u8],
    cuts: &'a [u8],
    written: usize,
}

impl AsyncRead for Script<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let piece = match self.cuts.split_first() {
            Some((c, rest)) => {
                self.cuts = rest;
                usize::from(*c).max(1)
            }
            None => usize::MAX,
        };
        let n = piece.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, input)) = input.split_first() else {
        return;
    };
    let mail = match pick % 3 {
        0 => Mail::Smtp,
        1 => Mail::Imap,
        _ => Mail::Pop3,
    };
    let at = input.len().min(usize::from(pick / 3));
    let (cuts, data) = input.split_at(at);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = Script {
            data,
            cuts,
            written: 0,
        };
        let _ = starttls::negotiate(&mut client, mail, "mail.example.com").await;
        // Answers are lines to a client that sent at most as many commands.
        assert!(client.written < 64 * 1024);
        let mut backend = Script {
            data,
            cuts,
            written: 0,
        };
        let _ = starttls::consume_greeting(&mut backend, mail, Duration::from_secs(5)).await;
    });
});
