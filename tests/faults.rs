//! Faults on either side of the proxy: backends that refuse, stay silent, reset mid-stream
//! or answer slowly; clients that vanish mid-handshake and mid-relay. Each ends its own
//! connection with exactly one log line, while a bystander's session on the same proxy
//! goes on undisturbed.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{dead_address, Backend, Expect};
use common::client::{self, read_line, send_line, Opts};
use common::running::{field, Running};
use common::{head, listener, store_dir, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn opts() -> Opts {
    Opts {
        sni: Some("mail.example.com".into()),
        ..Opts::default()
    }
}

/// A backend that runs `session` for every connection it accepts.
async fn backend<F, Fut>(session: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(session(stream));
        }
    });
    (addr, task)
}

/// Drops `tcp` with a reset instead of an orderly close, as a crashed peer or a
/// vanished network path shows.
fn reset(tcp: TcpStream) {
    socket2::SockRef::from(&tcp)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(tcp);
}

/// A proxy with one listener per fault, and `steady`, in front of a healthy echo backend,
/// where a bystander keeps a session.
struct Faults {
    proxy: Running,
    steady: SocketAddr,
    refused: SocketAddr,
    silent: SocketAddr,
    resets: SocketAddr,
    slow: SocketAddr,
    stream: SocketAddr,
    /// When the streaming backend's write failed (the proxy closed its connection).
    stream_cut: Arc<std::sync::Mutex<Option<Instant>>>,
    _backends: Vec<JoinHandle<()>>,
    _echo: Backend,
    _tmp: tempfile::TempDir,
}

impl Faults {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let _pki = Pki::new(tmp.path());
        let echo = Backend::start("* OK", Expect::Plain).await;
        let (silent, silent_task) = backend(|tcp| async move {
            // Accepts and says nothing: no greeting for a STARTTLS listener to pass on.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tcp);
        })
        .await;
        let (resets, resets_task) = backend(|mut tcp| async move {
            let _ = tcp.write_all(b"* OK\r\n").await;
            let _ = tcp.write_all(&[b'x'; 65536]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(tcp);
        })
        .await;
        let (slow, slow_task) = backend(|tcp| async move {
            let (read, mut write) = tcp.into_split();
            for byte in b"* OK slow IMAP ready\r\n" {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if write.write_all(&[*byte]).await.is_err() {
                    return;
                }
            }
            let mut read = BufReader::new(read);
            let mut line = String::new();
            while tokio::io::AsyncBufReadExt::read_line(&mut read, &mut line)
                .await
                .is_ok_and(|n| n > 0)
            {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
            }
        })
        .await;
        let stream_cut = Arc::new(std::sync::Mutex::new(None));
        let cut = Arc::clone(&stream_cut);
        let (stream, stream_task) = backend(move |mut tcp| {
            let cut = Arc::clone(&cut);
            async move {
                let chunk = vec![b'y'; 65536];
                let _ = tcp.write_all(b"* OK\r\n").await;
                // Up to 1 GiB: far more than any buffer between here and the client.
                for _ in 0..16384 {
                    if tcp.write_all(&chunk).await.is_err() {
                        *cut.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
        })
        .await;
        let refused = dead_address().await;
        let names = ["steady", "refused", "silent", "resets", "slow", "stream"];
        let config = format!(
            "{}{}{}{}{}{}{}",
            head(tmp.path(), &store_dir(tmp.path()), ""),
            listener("steady", "imaps", echo.addr, ""),
            listener("refused", "imaps", refused, ""),
            listener("silent", "imap-starttls", silent, ""),
            listener("resets", "imaps", resets, ""),
            listener("slow", "imaps", slow, ""),
            listener("stream", "imaps", stream, ""),
        );
        let path = tmp.path().join("m.toml");
        std::fs::write(&path, config).unwrap();
        let (proxy, addrs) = Running::start_listeners("", &path, &names);
        Self {
            proxy,
            steady: addrs[0],
            refused: addrs[1],
            silent: addrs[2],
            resets: addrs[3],
            slow: addrs[4],
            stream: addrs[5],
            stream_cut,
            _backends: vec![silent_task, resets_task, slow_task, stream_task],
            _echo: echo,
            _tmp: tmp,
        }
    }

    /// The one log line about the connection from `peer`, checked to be the only one
    /// (lines are gathered until 500 ms pass without any) and to say `outcome`.
    fn one_line(&self, peer: SocketAddr, outcome: &str) -> String {
        let needle = format!("\"peer\":\"{peer}\"");
        let first = self
            .proxy
            .wait_line(&needle)
            .unwrap_or_else(|| panic!("a line for {peer} within 10 s"));
        let more: Vec<String> = self
            .proxy
            .lines_until_quiet(Duration::from_millis(500), Duration::from_secs(5))
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect();
        assert!(more.is_empty(), "one line for {peer}: {first}\n{more:#?}");
        assert_eq!(field(&first, "outcome"), outcome, "{first}");
        first
    }
}

/// A client in an IMAP session on `addr` that sends a line every 20 ms and reads its echo,
/// until stopped; it fails the test on any error or a round trip over 500 ms.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u32, Duration)>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Self {
        let stream = client::connect(addr, &opts()).await.unwrap();
        let mut stream = BufReader::new(stream);
        assert_eq!(read_line(&mut stream).await, "* OK\r\n");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut n, mut slowest) = (0u32, Duration::ZERO);
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let line = format!("a{n} NOOP");
                send_line(stream.get_mut(), &line).await;
                assert_eq!(read_line(&mut stream).await, format!("ECHO {line}\r\n"));
                slowest = slowest.max(started.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, slowest)
        });
        Self { stop, task }
    }

    /// Stops and checks that the session went on throughout.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (n, slowest) = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the bystander's last round trip returns")
            .expect("the bystander's session never failed");
        assert!(n > 5, "the bystander kept talking: {n} round trips");
        assert!(
            slowest < Duration::from_millis(500),
            "the bystander was never held up: slowest round trip {slowest:?}"
        );
    }
}

/// Reads until the peer closes or fails; what was read, and whether it ended within `limit`.
async fn read_to_end_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (all, true),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => return (all, false),
        }
    }
}

/// The local address of a TLS client's TCP connection: the `peer` of its log line.
fn local(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> SocketAddr {
    stream.get_ref().0.local_addr().unwrap()
}

/// A backend refusing connections: the client is told in IMAP and closed, one warning.
#[tokio::test(flavor = "multi_thread")]
async fn backend_refusing() {
    let f = Faults::start().await;
    let bystander = Bystander::start(f.steady).await;
    let mut stream = client::connect(f.refused, &opts()).await.unwrap();
    let peer = local(&stream);
    let (said, closed) = read_to_end_within(&mut stream, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(
        String::from_utf8_lossy(&said).starts_with("* BYE"),
        "{}",
        String::from_utf8_lossy(&said)
    );
    f.one_line(peer, "backend-unavailable");
    bystander.finish().await;
}

/// A backend that accepts and never greets, behind a STARTTLS listener: the client is told
/// at `connect_timeout` (2 s) and closed, one warning.
#[tokio::test(flavor = "multi_thread")]
async fn backend_silent() {
    let f = Faults::start().await;
    let bystander = Bystander::start(f.steady).await;
    let tcp = TcpStream::connect(f.silent).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    let mut tcp = BufReader::new(tcp);
    assert!(read_line(&mut tcp).await.starts_with("* OK"));
    send_line(tcp.get_mut(), "a STARTTLS").await;
    assert!(read_line(&mut tcp).await.starts_with("a OK"));
    let mut stream = client::upgrade(tcp.into_inner(), &opts()).await.unwrap();
    let started = Instant::now();
    let (said, closed) = read_to_end_within(&mut stream, Duration::from_secs(5)).await;
    assert!(closed && started.elapsed() >= Duration::from_millis(1500));
    assert!(
        said.starts_with(b"* BYE"),
        "{}",
        String::from_utf8_lossy(&said)
    );
    f.one_line(peer, "backend-unavailable");
    bystander.finish().await;
}

/// A backend that resets its connection mid-stream: the client gets what was sent before
/// and then its connection ends; one line says the backend failed.
#[tokio::test(flavor = "multi_thread")]
async fn backend_resets_mid_stream() {
    let f = Faults::start().await;
    let bystander = Bystander::start(f.steady).await;
    let mut stream = client::connect(f.resets, &opts()).await.unwrap();
    let peer = local(&stream);
    let (got, closed) = read_to_end_within(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the client's connection ends with the backend's");
    assert!(got.starts_with(b"* OK\r\n"), "{} bytes", got.len());
    f.one_line(peer, "backend-error");
    bystander.finish().await;
}

/// A backend answering a byte every 50 ms and each line 300 ms late: every byte arrives,
/// nothing times out, one line at the end.
#[tokio::test(flavor = "multi_thread")]
async fn backend_answering_slowly() {
    let f = Faults::start().await;
    let bystander = Bystander::start(f.steady).await;
    let stream = client::connect(f.slow, &opts()).await.unwrap();
    let peer = local(&stream);
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK slow IMAP ready\r\n");
    send_line(stream.get_mut(), "a NOOP").await;
    assert_eq!(read_line(&mut stream).await, "a NOOP\r\n");
    stream.get_mut().shutdown().await.unwrap();
    drop(stream);
    f.one_line(peer, "closed");
    bystander.finish().await;
}

/// A client that sends its ClientHello, reads the start of the answer and resets: one
/// line, nothing else affected.
#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_mid_handshake() {
    let f = Faults::start().await;
    let bystander = Bystander::start(f.steady).await;
    let mut tcp = TcpStream::connect(f.steady).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.write_all(&client::client_hello(&opts())).await.unwrap();
    let mut first = [0u8; 5];
    tcp.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], 0x16, "a handshake record: the ServerHello");
    reset(tcp);
    let line = f.one_line(peer, "client-reset");
    assert!(line.contains("no TLS session"), "{line}");
    bystander.finish().await;
}

/// A client that resets mid-download: the proxy closes the backend's connection at once
/// (the backend's next write fails) and logs one line.
#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_mid_relay() {
    let f = Faults::start().await;
    let bystander = Bystander::start(f.steady).await;
    let mut stream = client::connect(f.stream, &opts()).await.unwrap();
    let peer = local(&stream);
    let mut got = vec![0u8; 256 * 1024];
    stream.read_exact(&mut got).await.unwrap();
    let (tcp, _) = stream.into_inner();
    let vanished = Instant::now();
    reset(tcp);
    f.one_line(peer, "client-error");
    assert!(
        common::wait_for(Duration::from_secs(3), || f
            .stream_cut
            .lock()
            .unwrap()
            .is_some())
        .await,
        "the backend's connection is closed too"
    );
    let cut = f.stream_cut.lock().unwrap().unwrap();
    assert!(cut.duration_since(vanished) < Duration::from_secs(2));
    bystander.finish().await;
}
