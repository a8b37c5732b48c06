//! Timeouts, the connection cap and shutdown: what bounds a connection's life.

mod common;

use std::time::{Duration, Instant};

use common::backend::Backend;
use common::client::{self, read_line, send_line, Opts};
use common::{head, listener, store_dir, Pki, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn opts() -> Opts {
    Opts {
        sni: Some("mail.example.com".into()),
        ..Opts::default()
    }
}

/// A proxy with one IMAPS listener in front of a "* OK" backend; `tweak` edits the
/// `[server]`/`[certs]` head, `server` adds to `[server]`.
async fn imaps_proxy(
    root: &std::path::Path,
    server: &str,
    tweak: impl Fn(String) -> String,
) -> (Proxy, Backend) {
    let _pki = Pki::new(root);
    let store = store_dir(root);
    common::imaps_over(root, &tweak(head(root, &store, server))).await
}

/// Reads until the peer closes, bounded by `limit`; returns when it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// A client that connects and sends nothing, and one that trickles its ClientHello a byte
/// at a time, are both cut at `handshake_timeout` (2 s here) while a normal client is served.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_and_trickling_clients_are_cut_at_the_handshake_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = imaps_proxy(tmp.path(), "", |h| h).await;
    let addr = proxy.addr("imaps");

    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let trickling = async {
        // A TLS record header announcing a 512-byte ClientHello, then a byte every 200 ms.
        let _ = trickle
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if trickle.write_all(&[0]).await.is_err() {
                break;
            }
        }
    };
    let normal = async {
        let stream = client::connect(addr, &opts()).await.unwrap();
        let mut stream = BufReader::new(stream);
        assert_eq!(read_line(&mut stream).await, "* OK\r\n");
    };
    let silent_closed = async { closed_within(&mut silent, Duration::from_secs(6)).await };
    let (closed, (), ()) = tokio::join!(silent_closed, trickling, normal);
    let closed = closed.expect("the silent client is cut");
    assert!(
        closed >= Duration::from_millis(1900) && closed < Duration::from_secs(4),
        "{closed:?}"
    );
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(2), trickle.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the trickling client was cut: {r:?}"
    );
}

/// Beyond `max_connections` a new client waits in the backlog, and is served as soon as a
/// slot frees; nothing crashes.
#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = imaps_proxy(tmp.path(), "max_connections = 1", |h| h).await;
    let addr = proxy.addr("imaps");
    let first = client::connect(addr, &opts()).await.unwrap();
    let mut first = BufReader::new(first);
    assert_eq!(read_line(&mut first).await, "* OK\r\n");

    let second = tokio::spawn(async move {
        let stream = client::connect(addr, &opts()).await?;
        let mut stream = BufReader::new(stream);
        Ok::<_, std::io::Error>(read_line(&mut stream).await)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second client waits while the first holds the slot"
    );
    send_line(first.get_mut(), "a LOGOUT").await;
    assert_eq!(read_line(&mut first).await, "BYE\r\n");
    drop(first);
    let line = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(line, "* OK\r\n");
}

/// On shutdown the proxy stops accepting, lets an open session finish within the drain
/// timeout, and reports nothing cut.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_open_sessions_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = imaps_proxy(tmp.path(), "", |h| h).await;
    let addr = proxy.addr("imaps");
    let stream = client::connect(addr, &opts()).await.unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK\r\n");

    let shutdown = tokio::spawn(proxy.shutdown());
    // New connections are refused once the listener is closed.
    let refused = common::wait_for(Duration::from_secs(3), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(refused, "the listener stops accepting");
    // The open session still works.
    send_line(stream.get_mut(), "a NOOP").await;
    assert_eq!(read_line(&mut stream).await, "ECHO a NOOP\r\n");
    send_line(stream.get_mut(), "a LOGOUT").await;
    assert_eq!(read_line(&mut stream).await, "BYE\r\n");
    drop(stream);
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.cut, 0);
}

/// A session still open at the drain deadline (3 s here) is cut, and shutdown completes.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_cuts_sessions_at_the_drain_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = imaps_proxy(tmp.path(), "", |h| h).await;
    let stream = client::connect(proxy.addr("imaps"), &opts()).await.unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK\r\n");
    let started = Instant::now();
    let report = proxy.shutdown().await;
    let took = started.elapsed();
    assert_eq!(report.cut, 1);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "the client sees the connection end");
}

/// A session where nothing moves for `idle_timeout` (1 s here) is closed.
#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_are_closed_at_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = imaps_proxy(tmp.path(), "", |h| {
        h.replace("idle_timeout = \"30s\"", "idle_timeout = \"1s\"")
    })
    .await;
    let stream = client::connect(proxy.addr("imaps"), &opts()).await.unwrap();
    let mut stream = BufReader::new(stream);
    let started = Instant::now();
    assert_eq!(read_line(&mut stream).await, "* OK\r\n");
    // Activity keeps it open past the timeout...
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        send_line(stream.get_mut(), &format!("a{i} NOOP")).await;
        assert_eq!(read_line(&mut stream).await, format!("ECHO a{i} NOOP\r\n"));
    }
    assert!(started.elapsed() > Duration::from_millis(1400));
    // ...silence closes it.
    let silent = Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "closed after the idle timeout");
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// A backend that never answers the TCP handshake is given up at `connect_timeout` (2 s
/// here) and the client is told the service is unavailable.
#[tokio::test(flavor = "multi_thread")]
async fn unanswering_backend_is_given_up_at_the_connect_timeout() {
    use socket2::{Domain, Socket, Type};
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    // A listener that never accepts, its queue filled: further SYNs go unanswered.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let full = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&full.into());
        fillers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = format!(
        "{}{}",
        head(tmp.path(), &store, ""),
        listener("imaps", "imaps", full, "")
    );
    let proxy = Proxy::start(tmp.path(), &config);
    let stream = client::connect(proxy.addr("imaps"), &opts()).await.unwrap();
    let mut stream = BufReader::new(stream);
    let started = Instant::now();
    let line = read_line(&mut stream).await;
    let took = started.elapsed();
    assert!(line.starts_with("* BYE [UNAVAILABLE]"), "{line}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// With `threads = 1` (a single-threaded scheduler) the proxy serves several clients at
/// once, and shuts down as the multi-threaded one does.
#[tokio::test(flavor = "multi_thread")]
async fn one_thread_serves_and_shuts_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = imaps_proxy(tmp.path(), "threads = 1", |h| h).await;
    let addr = proxy.addr("imaps");
    let mut open = Vec::new();
    for _ in 0..8 {
        let stream = client::connect(addr, &opts()).await.unwrap();
        let mut stream = BufReader::new(stream);
        assert_eq!(read_line(&mut stream).await, "* OK\r\n");
        open.push(stream);
    }
    for (i, stream) in open.iter_mut().enumerate() {
        send_line(stream.get_mut(), &format!("a{i} NOOP")).await;
        assert_eq!(read_line(stream).await, format!("ECHO a{i} NOOP\r\n"));
    }
    drop(open);
    let report = tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .unwrap();
    assert_eq!(report.cut, 0);
}
