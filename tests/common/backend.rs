//! Plain-text test backends standing in for Dovecot, Postfix and a webmail server.
//!
//! Each connection: optionally read a PROXY header (kept for the test to inspect), send a
//! greeting, then answer line by line: `QUIT`/`LOGOUT` gets a goodbye and a close, any other
//! line is echoed, and end-of-stream (the proxy's half-close) gets a last line counting the
//! bytes received before the backend closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the backend expects before the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Plain,
    ProxyV1,
    ProxyV2,
}

/// A running test backend.
pub struct Backend {
    pub addr: SocketAddr,
    /// PROXY headers received, one per connection.
    pub headers: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections accepted.
    pub accepted: Arc<Mutex<usize>>,
    /// Messages received by [`Backend::smtp`] (the DATA of each).
    pub messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// A line-protocol backend greeting with `greeting` (e.g. "* OK IMAP ready").
    pub async fn start(greeting: &'static str, expect: Expect) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (h, a) = (Arc::clone(&headers), Arc::clone(&accepted));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *a.lock().unwrap() += 1;
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    let _ = serve(stream, greeting, expect, h).await;
                });
            }
        });
        Self {
            addr,
            headers,
            accepted,
            messages: Arc::default(),
            task,
        }
    }

    /// A minimal SMTP server, as Postfix on a plain port would be: greeting, EHLO, MAIL,
    /// RCPT, DATA (kept in `messages`), QUIT.
    pub async fn smtp() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let accepted = Arc::new(Mutex::new(0));
        let (m, a) = (Arc::clone(&messages), Arc::clone(&accepted));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *a.lock().unwrap() += 1;
                let m = Arc::clone(&m);
                tokio::spawn(async move {
                    let _ = smtp_session(stream, m).await;
                });
            }
        });
        Self {
            addr,
            headers: Arc::default(),
            accepted,
            messages,
            task,
        }
    }

    /// A minimal HTTP/1.1 server answering every request with `200 ok`.
    pub async fn http() -> Self {
        Self::start("", Expect::Plain).await
    }
}

async fn serve(
    mut stream: TcpStream,
    greeting: &'static str,
    expect: Expect,
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
) -> std::io::Result<()> {
    match expect {
        Expect::Plain => {}
        Expect::ProxyV1 => {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\r\n") && line.len() < 108 {
                stream.read_exact(&mut byte).await?;
                line.push(byte[0]);
            }
            headers.lock().unwrap().push(line);
        }
        Expect::ProxyV2 => {
            let mut fixed = [0u8; 16];
            stream.read_exact(&mut fixed).await?;
            let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
            let mut rest = vec![0u8; len];
            stream.read_exact(&mut rest).await?;
            let mut all = fixed.to_vec();
            all.extend_from_slice(&rest);
            headers.lock().unwrap().push(all);
        }
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if greeting.is_empty() {
        return http(reader, write).await;
    }
    write
        .write_all(format!("{greeting}\r\n").as_bytes())
        .await?;
    let mut received = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n == 0 {
            write
                .write_all(format!("EOF after {received} bytes\r\n").as_bytes())
                .await?;
            return write.shutdown().await;
        }
        received += n;
        let command = line.trim_end();
        let upper = command.to_ascii_uppercase();
        if upper == "QUIT" || upper.ends_with(" LOGOUT") {
            write.write_all(b"BYE\r\n").await?;
            return write.shutdown().await;
        }
        write
            .write_all(format!("ECHO {command}\r\n").as_bytes())
            .await?;
    }
}

async fn smtp_session(stream: TcpStream, messages: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 backend.test ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-backend.test\r\n250-8BITMIME\r\n250 AUTH PLAIN\r\n",
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 OK\r\n",
            "AUTH" => b"235 2.7.0 Authentication successful\r\n",
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut message = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 || line == ".\r\n" {
                        break;
                    }
                    message.push_str(&line);
                }
                messages.lock().unwrap().push(message);
                b"250 2.0.0 Ok: queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return write.shutdown().await;
            }
            _ => b"502 5.5.2 Error: command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
}

async fn http(
    mut reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut write: tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
    }
    write
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
        .await?;
    write.shutdown().await
}

/// An address nothing listens on (bound, then closed).
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
