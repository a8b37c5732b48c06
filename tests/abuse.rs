//! Abuse from the internet, judged from outside the `mailfront` process: a thousand
//! stalled and trickling clients, floods beyond `max_connections` and beyond the
//! descriptor limit. Others are served on time, the process does not spin, the log says
//! what happens without a line per connection, and service resumes by itself.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::backend::{Backend, Expect};
use common::client::{self, read_line, Opts};
use common::running::{raise_fd_limit, Running};
use common::{head, listener, store_dir, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A config with one IMAPS listener in front of `backend` (the test head: 2 s handshake
/// timeout), `server` added to `[server]`.
fn imaps_config(root: &Path, backend: SocketAddr, server: &str) -> PathBuf {
    let _pki = Pki::new(root);
    let config = format!(
        "{}{}",
        head(root, &store_dir(root), server),
        listener("imaps", "imaps", backend, "")
    );
    let path = root.join("m.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn opts() -> Opts {
    Opts {
        sni: Some("mail.example.com".into()),
        ..Opts::default()
    }
}

/// One normal client: handshake and the backend's greeting; how long that took.
async fn greeted(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let stream = client::connect(addr, &opts()).await.expect("handshake");
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK\r\n");
    started.elapsed()
}

/// `n` normal clients one after another; their times, sorted.
async fn greeted_times(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(greeted(addr).await);
    }
    times.sort();
    times
}

/// A client that connects, then sends nothing (`hello` empty) or trickles `hello` a byte
/// every 250 ms; returns how long after connecting the proxy closed it, `None` if it did
/// not within 10 s.
async fn stall(addr: SocketAddr, hello: Vec<u8>) -> Option<Duration> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for byte in hello {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Dropping the write half would send a FIN: hold it until aborted.
        std::future::pending::<()>().await;
        drop(write);
    });
    let mut buf = [0u8; 256];
    let closed = loop {
        match tokio::time::timeout_at(
            (started + Duration::from_secs(10)).into(),
            read.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => break None,
        }
    };
    trickle.abort();
    closed
}

/// 500 clients that send nothing and 500 that trickle a real ClientHello a byte every
/// 250 ms, all at once: a normal client meanwhile is served as fast as before, every one
/// of the thousand is cut at `handshake_timeout` (2 s) with one log line, and the proxy's
/// descriptors are back to where they were.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_stalled_and_trickling_clients() {
    raise_fd_limit(4096);
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let proxy = Running::start("", &imaps_config(tmp.path(), backend.addr, ""));
    let addr = proxy.addr;
    let before = greeted_times(addr, 10).await;
    let (fds_before, rss_before) = (proxy.fds(), proxy.rss_kib());

    let hello = client::client_hello(&opts());
    assert!(
        hello.len() > 100,
        "a real ClientHello: {} bytes",
        hello.len()
    );
    let mut stalled = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let bytes = if i % 2 == 0 {
            Vec::new()
        } else {
            hello.clone()
        };
        stalled.spawn(stall(addr, bytes));
    }
    // All thousand are connected and waiting well before the first is cut at 2 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_during = proxy.rss_kib();
    let during = greeted_times(addr, 20).await;
    let (median_before, median_during) = (before[before.len() / 2], during[during.len() / 2]);
    let per_stalled = rss_during.saturating_sub(rss_before) * 1024 / 1000;
    eprintln!(
        "normal client: median {median_before:?} before, {median_during:?} (max {:?}) beside \
         1,000 stalled, which cost {per_stalled} bytes each",
        during.last().unwrap()
    );
    assert!(
        per_stalled < 10 * 1024,
        "a stalled client costs bounded memory: {per_stalled} bytes"
    );
    assert!(
        *during.last().unwrap() < Duration::from_millis(500),
        "a normal client is not held up by the stalled ones: {during:?}"
    );

    let mut cut = Vec::new();
    while let Some(closed) = stalled.join_next().await {
        cut.push(closed.unwrap().expect("closed by the proxy within 10 s"));
    }
    cut.sort();
    assert!(
        cut[0] >= Duration::from_millis(1900) && cut[cut.len() - 1] < Duration::from_secs(5),
        "cut at the 2 s deadline: first {:?}, last {:?}",
        cut[0],
        cut[cut.len() - 1]
    );
    let lines = proxy.lines_until_quiet(Duration::from_secs(1), Duration::from_secs(10));
    let timeouts = lines
        .iter()
        .filter(|l| l.contains("\"outcome\":\"handshake-timeout\""))
        .count();
    assert_eq!(timeouts, 1000, "one line for each stalled client");
    assert!(
        common::wait_for(Duration::from_secs(5), || proxy.fds() <= fds_before).await,
        "descriptors back to {fds_before}: {}",
        proxy.fds()
    );
    assert!(greeted(addr).await < Duration::from_millis(500));
}

/// 300 connections that never speak TLS against `max_connections = 50`: the proxy says
/// once that it is at the cap, waits without spinning, and when the flood goes away says
/// so once and serves the next client at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_beyond_max_connections_waits_quietly_and_recovers() {
    raise_fd_limit(4096);
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let proxy = Running::start(
        "",
        &imaps_config(tmp.path(), backend.addr, "max_connections = 50"),
    );
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let reached = proxy
        .wait_line("max_connections reached")
        .expect("the cap is logged");
    assert!(reached.contains("\"max_connections\":50"), "{reached}");
    let used = proxy.cpu_over(Duration::from_secs(1)).await;
    assert!(
        used < 0.2,
        "waiting at the cap costs no CPU: {used:.2} s in 1 s"
    );

    drop(flood);
    let served = tokio::time::timeout(Duration::from_secs(5), greeted(proxy.addr)).await;
    assert!(served.is_ok(), "served once the flood is gone");
    let lines = proxy.lines_until_quiet(Duration::from_secs(1), Duration::from_secs(10));
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("max_connections reached"),
        0,
        "said once in 10 s, however often the cap is hit: {lines:#?}"
    );
    assert_eq!(count("below max_connections again"), 1, "{lines:#?}");
}

/// Out of file descriptors (EMFILE under `ulimit -n 64`), the accept loop backs off instead
/// of spinning a core, logs it once rather than per retry, and serves again once
/// descriptors free up, saying so.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_backs_off_quietly_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let proxy = Running::start(
        "ulimit -n 64 &&",
        &imaps_config(tmp.path(), backend.addr, ""),
    );

    let (idle, failed) = proxy.exhaust_descriptors().await;
    assert!(failed.contains("Too many open files"), "{failed}");
    let used = proxy.cpu_over(Duration::from_secs(1)).await;
    assert!(
        used < 0.5,
        "the accept loop does not spin: {used:.2} s CPU in 1 s"
    );

    drop(idle);
    // Served again once the stalled connections are gone.
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !served {
        if let Ok(stream) = client::connect(proxy.addr, &opts()).await {
            let mut stream = BufReader::new(stream);
            served = read_line(&mut stream).await == "* OK\r\n";
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(served, "serves again once descriptors are free");
    let lines = proxy.lines_until_quiet(Duration::from_secs(1), Duration::from_secs(10));
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("accept failed"),
        0,
        "one line, not one per retry: {lines:#?}"
    );
    assert_eq!(count("accepting again"), 1, "{lines:#?}");
}
