//! mailfront against nginx (stream module), HAProxy and hitch, side by side in one run:
//! server CPU per operation, from each proxy's CPU-time clock (all its processes and
//! threads), not requests per second (with two cores the load generator saturates first).
//!
//! `cargo bench --bench proxy_compare -- [--rounds N] [--peers mailfront,nginx,...]
//! [--cases full-ecdsa,bulk,...]`; a peer `mailfront=PATH` runs another build of mailfront
//! beside this one, to measure a change; `--mailfront-protocol https`, `--acme`, `--ticket-keys`
//! and `--onboarding` set up mailfront's listeners and ACME hooks (see [`MAILFRONT`]).
//! (root: it installs nginx, libnginx-mod-stream, haproxy and hitch with apt-get if
//! missing; the idle case needs an open-file hard limit above 11,000).
//!
//! Every proxy gets the same ECDSA P-256 and RSA-2048 certificates, one worker (thread or
//! process), logging off, and is pinned to core 0; this process (client and backend, one
//! thread) runs on core 1. The client offers TLS 1.3 only, AES-128-GCM only and X25519
//! only, so every proxy negotiates the same (but in `full-default` and `h2load`). Each
//! round starts every proxy afresh, in a rotated order, and runs every case on it:
//!
//! - `full-ecdsa`, `full-rsa`: full handshakes, each on a new connection that reads the
//!   backend's greeting and closes (16 at a time);
//! - `full-default`: `full-ecdsa` from a client offering its library's default suites in
//!   its default order (rustls: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305, as OpenSSL's
//!   clients): each proxy's own choice of suite, and what it costs, shows;
//! - `full-fallback`: the same (ECDSA) with a new name no certificate covers each time,
//!   as a scanner sends: the server-wide certificate, and with `--acme` the on-demand
//!   hand-off of every name;
//! - `resumed`: the same with TLS 1.3 session resumption (tickets), one at a time;
//! - `paced`, `paced-rate`: 2,000 ECDSA handshakes started at a fixed 500 per second:
//!   the CPU per handshake when the proxy is not saturated, and the rate achieved, which
//!   shows that every proxy keeps up;
//! - `h2load`: the standard load generator as an operator runs it, on a fresh process
//!   relaying to an HTTP backend: `h2load --h1 -c 16 -H 'Connection: close'` (nghttp2's
//!   defaults otherwise: OpenSSL, X25519 first, AES-128-GCM first), so each request is a
//!   new connection and a TLS 1.3 handshake; CPU per request. h2load keeps the session
//!   of each of its clients and offers it again, so with every proxy's default (tickets
//!   on) each request is a resumed handshake (with X25519);
//! - `h2load-full`: the same with session resumption off in every proxy (mailfront
//!   `server.session_tickets = 0`, nginx `ssl_session_tickets off` and `ssl_session_cache
//!   off`, HAProxy `no-tls-tickets` and `tune.ssl.cachesize 0`): a full ECDSA handshake
//!   per request. Not measured for hitch, which has no switch for tickets; a
//!   `mailfront=PATH` build must know the key (bc9e2d5 and later);
//! - `bulk`: one connection moving 256 MiB each way through the proxy (CPU per GB of the
//!   512 MiB moved);
//! - `idle`: resident memory growth per established TLS connection, with its backend
//!   connection open, over 5,000 connections;
//! - `silent`: resident memory growth per TCP connection that sends nothing (a scanner,
//!   a slowloris), over 5,000 connections.
//!
//! Reported: the median over the rounds, and mailfront's ratio to each peer.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::SignatureScheme;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const HANDSHAKES: usize = 2000;
const CONCURRENCY: usize = 16;
const BULK: usize = 256 << 20;
const IDLE: usize = 5000;
/// The fixed rate of the `paced` case, handshakes per second: under half of what the
/// slowest peer manages here, so every proxy should keep up with it.
const PACED_RATE: u32 = 500;
/// Requests (connections) of one `h2load` run.
const H2LOAD: usize = 4000;
const CASES: [&str; 12] = [
    "full-ecdsa",
    "full-default",
    "full-rsa",
    "full-fallback",
    "resumed",
    "paced",
    "paced-rate",
    "h2load",
    "h2load-full",
    "bulk",
    "idle",
    "silent",
];

/// How mailfront peers are configured: `--mailfront-protocol P` sets their listeners'
/// protocol (all builds; `imaps` by default), `--acme` adds an `[acme]` section to the
/// build under test only (an older build may not know it): its handshake hooks (the
/// tls-alpn-01 check on https listeners, the on-demand hand-off of fallback names) then
/// run on every handshake, with nothing allowed, so nothing is ever ordered.
///
/// `--ticket-keys` gives the build under test `server.ticket_keys` (a file of three fresh
/// keys, as a fleet shares), so that its tickets are sealed and opened by mailfront's own
/// ticketer instead of rustls'.
///
/// `--onboarding` gives the build under test `[onboarding]` (no DNS checks): on https
/// listeners every connection's first request line is then read before the backend is
/// connected. Every client, whatever the peer, then speaks first: a request line right
/// after the handshake (echoed by the backend after its greeting, and read back).
static MAILFRONT: std::sync::OnceLock<(String, bool, bool)> = std::sync::OnceLock::new();

/// `--onboarding`: clients send a request line before they read the greeting.
static CLIENT_FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The SNI that makes each connection ask for a new name (a scanner's flood).
const SCANNER: &str = "*";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let protocol = value("--mailfront-protocol").unwrap_or_else(|| "imaps".into());
    let flag = |f: &str| args.iter().any(|a| a == f);
    let _ = MAILFRONT.set((protocol, flag("--acme"), flag("--ticket-keys")));
    CLIENT_FIRST.store(flag("--onboarding"), std::sync::atomic::Ordering::Relaxed);
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let peers: Vec<String> = value("--peers")
        .unwrap_or_else(|| "mailfront,nginx,haproxy,hitch".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let cases: Vec<&'static str> = match value("--cases") {
        Some(list) => list
            .split(',')
            .map(|c| {
                *CASES
                    .iter()
                    .find(|k| **k == c)
                    .unwrap_or_else(|| panic!("unknown case {c}; the cases: {CASES:?}"))
            })
            .collect(),
        None => CASES.to_vec(),
    };
    install_peers(&peers, &cases);
    raise_fd_limit();
    pin_to_core(1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-peers");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store")).unwrap();
    write_certs(&dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = runtime.block_on(backend());
    let http = runtime.block_on(http_backend());
    // case -> peer -> one value per round
    let mut results: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = peers.clone();
        order.rotate_left(round % peers.len());
        for peer in &order {
            eprintln!("round {} of {rounds}: {peer}", round + 1);
            let measured = runtime.block_on(measure(peer, &dir, [backend, http], &cases));
            for (case, v) in &measured {
                eprintln!("  {case}: {v:.1}");
            }
            for (case, v) in measured {
                results
                    .entry(case)
                    .or_default()
                    .entry(peer.clone())
                    .or_default()
                    .push(v);
            }
        }
    }
    report(&results, &peers, rounds);
}

/// What one proxy costs on every case, on a fresh process.
/// `backends`: the IMAP-like echo, and the HTTP server of the `h2load` case.
async fn measure(
    peer: &str,
    dir: &Path,
    [backend, http]: [SocketAddr; 2],
    cases: &[&str],
) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    // Memory first, each on a fresh process: memory freed by one case would be reused
    // by the next without showing in its RSS.
    if cases.contains(&"silent") {
        let mut proxy = Proxy::start(peer, dir, backend, true);
        proxy.wait_ready().await;
        silent(&proxy, &mut out).await;
        proxy.stop();
    }
    for (case, resumption) in [("h2load", true), ("h2load-full", false)] {
        let switch = peer.starts_with("mailfront") || peer == "nginx" || peer == "haproxy";
        if !cases.contains(&case) || !(resumption || switch) {
            continue;
        }
        let mut proxy = Proxy::start(peer, dir, http, resumption);
        proxy.wait_ready().await;
        let per = h2load(&proxy).await;
        out.push((case, per));
        proxy.stop();
    }
    let mut proxy = Proxy::start(peer, dir, backend, true);
    proxy.wait_ready().await;
    let full = client(Resumption::disabled(), Suites::Aes128);
    if cases.contains(&"idle") {
        idle(&proxy, &full, &mut out).await;
    }
    let default = client(Resumption::disabled(), Suites::Default);
    for (case, client, addr, sni, n) in [
        (
            "full-ecdsa",
            &full,
            proxy.ecdsa,
            "ecdsa.bench.test",
            HANDSHAKES,
        ),
        (
            "full-default",
            &default,
            proxy.ecdsa,
            "ecdsa.bench.test",
            HANDSHAKES,
        ),
        (
            "full-rsa",
            &full,
            proxy.rsa,
            "rsa.bench.test",
            HANDSHAKES / 2,
        ),
        // A new unknown name each time: the server-wide certificate (ECDSA) for each.
        ("full-fallback", &full, proxy.ecdsa, SCANNER, HANDSHAKES),
    ] {
        if !cases.contains(&case) {
            continue;
        }
        handshakes(client, addr, sni, 100).await;
        let cpu = proxy.cpu_ns();
        handshakes(client, addr, sni, n).await;
        out.push((case, (proxy.cpu_ns() - cpu) as f64 / n as f64 / 1000.0));
    }
    if cases.contains(&"resumed") {
        resumed(peer, &proxy, &mut out).await;
    }
    if cases.contains(&"paced") || cases.contains(&"paced-rate") {
        let cpu = proxy.cpu_ns();
        let rate = paced(&full, proxy.ecdsa, "ecdsa.bench.test", HANDSHAKES).await;
        let per = (proxy.cpu_ns() - cpu) as f64 / HANDSHAKES as f64 / 1000.0;
        out.push(("paced", per));
        out.push(("paced-rate", rate));
    }
    if cases.contains(&"bulk") {
        let cpu = proxy.cpu_ns();
        bulk(&full, proxy.ecdsa).await;
        let gb = (2 * BULK) as f64 / 1e9;
        out.push(("bulk", (proxy.cpu_ns() - cpu) as f64 / 1e6 / gb));
    }
    proxy.stop();
    out
}

/// RSS growth over `IDLE` established connections.
async fn idle(
    proxy: &Proxy,
    full: &tokio_rustls::TlsConnector,
    out: &mut Vec<(&'static str, f64)>,
) {
    let per = rss_per_connection(proxy, || open(full, proxy.ecdsa, "ecdsa.bench.test")).await;
    out.push(("idle", per));
}

/// RSS growth over `IDLE` TCP connections that never send a byte.
async fn silent(proxy: &Proxy, out: &mut Vec<(&'static str, f64)>) {
    let addr = proxy.ecdsa;
    let per = rss_per_connection(
        proxy,
        || async move { TcpStream::connect(addr).await.unwrap() },
    )
    .await;
    out.push(("silent", per));
}

/// The proxy's RSS growth per connection, in bytes, while `IDLE` connections made by
/// `open` are held open.
async fn rss_per_connection<T, F: std::future::Future<Output = T>>(
    proxy: &Proxy,
    mut open: impl FnMut() -> F,
) -> f64 {
    let before = proxy.rss_kib();
    let mut held = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        held.push(open().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proxy.rss_kib();
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    (after as f64 - before as f64) * 1024.0 / IDLE as f64
}

/// CPU per request of `h2load` over HTTP/1.1 with `Connection: close`: every request a new
/// connection and a handshake (resumed where the proxy issues tickets, since h2load offers
/// each client's session again), as an operator measures a TLS proxy with a standard tool.
/// The requests that failed are not counted; a run where a tenth failed panics.
async fn h2load(proxy: &Proxy) -> f64 {
    let run = |n: usize| async move {
        let output = tokio::process::Command::new("h2load")
            .args([
                "--h1",
                "-t",
                "1",
                "-c",
                &CONCURRENCY.to_string(),
                "-n",
                &n.to_string(),
            ])
            .args(["-H", "Connection: close"])
            .arg(format!("--connect-to={}", proxy.ecdsa))
            .arg(format!("https://ecdsa.bench.test:{}/", proxy.ecdsa.port()))
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(120), output)
            .await
            .expect("h2load ends within 120 s")
            .expect("h2load runs (apt-get install nghttp2-client)");
        let text = String::from_utf8_lossy(&output.stdout);
        // "requests: 4000 total, 4000 started, 4000 done, 4000 succeeded, 0 failed, ..."
        let succeeded = text
            .lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| l.split(", ").find_map(|f| f.strip_suffix(" succeeded")))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no request count in h2load's output:\n{text}"));
        assert!(
            succeeded * 10 >= n * 9,
            "h2load: {succeeded} of {n} succeeded:\n{text}"
        );
        succeeded
    };
    run(100).await;
    let cpu = proxy.cpu_ns();
    let done = run(H2LOAD).await;
    (proxy.cpu_ns() - cpu) as f64 / done as f64 / 1000.0
}

/// CPU per resumed TLS 1.3 handshake (tickets), one at a time.
async fn resumed(peer: &str, proxy: &Proxy, out: &mut Vec<(&'static str, f64)>) {
    let resuming = client(Resumption::in_memory_sessions(256), Suites::Aes128);
    handshakes(&resuming, proxy.ecdsa, "ecdsa.bench.test", 1).await;
    let cpu = proxy.cpu_ns();
    let resumed = handshakes_by(&resuming, proxy.ecdsa, "ecdsa.bench.test", HANDSHAKES, 1).await;
    let per = (proxy.cpu_ns() - cpu) as f64 / HANDSHAKES as f64 / 1000.0;
    if resumed * 10 >= HANDSHAKES * 9 {
        out.push(("resumed", per));
    } else {
        eprintln!("{peer}: only {resumed} of {HANDSHAKES} handshakes resumed; not reported");
    }
}

// --- the client ---------------------------------------------------------------------------

/// The TLS 1.3 suites a client offers.
#[derive(Clone, Copy)]
enum Suites {
    /// AES-128-GCM only: every proxy negotiates the same.
    Aes128,
    /// rustls' default list and order (AES-256-GCM first): the proxy chooses.
    Default,
}

fn client(resumption: Resumption, suites: Suites) -> tokio_rustls::TlsConnector {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Suites::Aes128 = suites {
        provider.cipher_suites =
            vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    }
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let verifier = common::AcceptAny(vec![
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
    ]);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = resumption;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection that has read the backend's greeting, within 10 s (a proxy that
/// stalls fails the run instead of hanging it).
async fn open(client: &tokio_rustls::TlsConnector, addr: SocketAddr, sni: &str) -> BufReader<Tls> {
    tokio::time::timeout(Duration::from_secs(10), open_now(client, addr, sni))
        .await
        .unwrap_or_else(|_| panic!("no greeting through {addr} within 10 s"))
}

async fn open_now(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> BufReader<Tls> {
    static SCANNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tcp = TcpStream::connect(addr).await.expect("the proxy accepts");
    let _ = tcp.set_nodelay(true);
    let sni = match sni {
        SCANNER => {
            let n = SCANNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("scan{n}.unknown.test")
        }
        sni => sni.to_owned(),
    };
    let name = ServerName::try_from(sni).unwrap();
    let tls = client
        .connect(name, tcp)
        .await
        .expect("the handshake completes");
    let mut reader = BufReader::new(tls);
    let first = CLIENT_FIRST.load(std::sync::atomic::Ordering::Relaxed);
    if first {
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.0\r\n")
            .await
            .expect("the request line");
    }
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("the greeting");
    assert!(line.starts_with("* OK"), "greeting: {line:?}");
    if first {
        line.clear();
        reader
            .read_line(&mut line)
            .await
            .expect("the echoed request line");
        assert_eq!(line, "GET / HTTP/1.0\r\n");
    }
    reader
}

/// `n` connections, `CONCURRENCY` at a time; returns how many resumed a session.
async fn handshakes(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: &str,
    n: usize,
) -> usize {
    handshakes_by(client, addr, sni, n, CONCURRENCY).await
}

/// `n` connections, `concurrency` at a time. Resumption needs one at a time: each
/// resumption spends a ticket and its connection brings new ones, and 16 at once would
/// spend the client's store faster than it fills.
async fn handshakes_by(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: &str,
    n: usize,
    concurrency: usize,
) -> usize {
    let mut resumed = 0;
    let mut done = 0;
    while done < n {
        let batch = concurrency.min(n - done);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (client, sni) = (client.clone(), sni.to_owned());
            set.spawn(async move {
                let reader = open(&client, addr, &sni).await;
                let kind = reader.get_ref().get_ref().1.handshake_kind();
                let mut tls = reader.into_inner();
                let _ = tls.shutdown().await;
                kind == Some(rustls::HandshakeKind::Resumed)
            });
        }
        while let Some(r) = set.join_next().await {
            resumed += usize::from(r.expect("a connection task"));
        }
        done += batch;
    }
    resumed
}

/// `n` ECDSA handshakes started at `PACED_RATE` per second, each on its own task; returns
/// the rate achieved, start of the first to end of the last. A proxy that keeps up
/// achieves the rate asked; one that does not falls behind and the figure shows it.
async fn paced(client: &tokio_rustls::TlsConnector, addr: SocketAddr, sni: &str, n: usize) -> f64 {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / PACED_RATE);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        ticker.tick().await;
        let (client, sni) = (client.clone(), sni.to_owned());
        set.spawn(async move {
            let mut tls = open(&client, addr, &sni).await.into_inner();
            let _ = tls.shutdown().await;
        });
        while let Some(r) = set.try_join_next() {
            r.expect("a connection task");
        }
    }
    while let Some(r) = set.join_next().await {
        r.expect("a connection task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Moves `BULK` bytes each way through one connection (the backend echoes).
async fn bulk(client: &tokio_rustls::TlsConnector, addr: SocketAddr) {
    let reader = open(client, addr, "ecdsa.bench.test").await;
    let (mut read, mut write) = tokio::io::split(reader);
    let sender = async move {
        let chunk = vec![0x5a_u8; 64 << 10];
        let mut sent = 0;
        while sent < BULK {
            write.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        // What TLS could not send at once is still in the client's buffer; without a
        // flush the last records wait there for ever.
        write.flush().await.unwrap();
        write
    };
    let receiver = async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < BULK {
            let n = read.read(&mut buf).await.unwrap();
            assert!(n > 0, "the echo ends early");
            got += n;
        }
    };
    let moved = async { tokio::join!(sender, receiver) };
    tokio::time::timeout(Duration::from_secs(120), moved)
        .await
        .expect("256 MiB each way within 120 s");
}

// --- the backend --------------------------------------------------------------------------

/// A loopback server running `serve` on each connection it accepts (with TCP_NODELAY).
async fn serve_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// Greets like an IMAP server, then echoes every byte until the client closes.
async fn backend() -> SocketAddr {
    serve_each(|mut s| async move {
        if s.write_all(b"* OK bench\r\n").await.is_err() {
            return;
        }
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// An HTTP/1.1 server for `h2load`: reads a request head, answers 200 with a short body
/// and `Connection: close`, and closes.
async fn http_backend() -> SocketAddr {
    serve_each(|mut s| async move {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
        if s.write_all(answer).await.is_ok() {
            let _ = s.shutdown().await;
        }
    })
    .await
}

// --- the proxies --------------------------------------------------------------------------

/// Ports: each proxy listens on two, one per certificate (mailfront could serve both on
/// one by SNI; two keeps the setups alike).
// Below the ephemeral range (32768-60999 by default): probing a port in it while nothing
// listens can make the probe connect to itself and hold the port.
const ECDSA_PORT: u16 = 24443;
const RSA_PORT: u16 = 24444;

struct Proxy {
    child: Child,
    ecdsa: SocketAddr,
    rsa: SocketAddr,
}

impl Proxy {
    /// `resumption: false` turns session resumption off (tickets and the session cache),
    /// for mailfront, nginx and HAProxy.
    fn start(peer: &str, dir: &Path, backend: SocketAddr, resumption: bool) -> Self {
        let ecdsa: SocketAddr = format!("127.0.0.1:{ECDSA_PORT}").parse().unwrap();
        let rsa: SocketAddr = format!("127.0.0.1:{RSA_PORT}").parse().unwrap();
        let d = dir.display();
        let mut command = Command::new("taskset");
        command.args(["-c", "0"]);
        match peer {
            // `mailfront=PATH`: another build, to compare a change against.
            _ if peer == "mailfront" || peer.starts_with("mailfront=") => {
                let binary = peer
                    .strip_prefix("mailfront=")
                    .unwrap_or(env!("CARGO_BIN_EXE_mailfront"));
                let (protocol, acme, tickets) = MAILFRONT.get().cloned().unwrap_or_default();
                let listener = |name: &str, addr: SocketAddr| {
                    format!("[[listener]]\nname = \"{name}\"\nbind = \"{addr}\"\nprotocol = \"{protocol}\"\nbackend = \"{backend}\"\n")
                };
                let acme = match acme && peer == "mailfront" {
                    true => format!(
                        "[acme]\ndirectory = \"http://127.0.0.1:9/directory\"\n\
                         state_dir = \"{d}/acme\"\nnames_file = \"{d}/acme-names.txt\"\n"
                    ),
                    false => String::new(),
                };
                let tickets = match tickets && peer == "mailfront" {
                    true => {
                        let keys = dir.join("ticket.keys");
                        let make = format!(
                            "(umask 077; for i in 1 2 3; do openssl rand 80 | base64 -w0; echo; done > {})",
                            keys.display()
                        );
                        let made = Command::new("sh").args(["-c", &make]).status().unwrap();
                        assert!(made.success(), "openssl rand for the ticket keys");
                        format!("ticket_keys = \"{}\"\n", keys.display())
                    }
                    false => String::new(),
                };
                let onboarding = match CLIENT_FIRST.load(std::sync::atomic::Ordering::Relaxed)
                    && peer == "mailfront"
                {
                    true => "[onboarding]\ncheck_interval = \"0s\"\n",
                    false => "",
                };
                let tickets = match resumption {
                    true => tickets,
                    false => "session_tickets = 0\n".to_owned(),
                };
                let config = format!(
                    "[server]\nname = \"server.bench.test\"\nthreads = 1\nmax_connections = 30000\n{tickets}\
                     [certs]\ndir = \"{d}/store\"\ndefault_cert = \"{d}/ecdsa.chain\"\n\
                     default_key = \"{d}/ecdsa.key\"\nca_bundle = \"{d}/ca.pem\"\nrescan_interval = \"1h\"\n{}{}{acme}{onboarding}",
                    listener("ecdsa", ecdsa),
                    listener("rsa", rsa)
                );
                std::fs::write(dir.join("mailfront.toml"), config).unwrap();
                command
                    .arg(binary)
                    .args(["run", "--config"])
                    .arg(dir.join("mailfront.toml"))
                    .env("RUST_LOG", "error");
            }
            "nginx" => {
                let resumption = match resumption {
                    true => "",
                    false => "  ssl_session_tickets off;\n  ssl_session_cache off;\n",
                };
                let config = format!(
                    "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
                     worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
                     error_log {d}/nginx.log crit;\nworker_rlimit_nofile 65536;\n\
                     events {{ worker_connections 30000; }}\n\
                     stream {{\n  ssl_protocols TLSv1.3;\n  ssl_ecdh_curve X25519;\n{resumption}\
                       upstream be {{ server {backend}; }}\n\
                       server {{ listen {ecdsa} ssl; ssl_certificate {d}/ecdsa.chain; ssl_certificate_key {d}/ecdsa.key; proxy_pass be; }}\n\
                       server {{ listen {rsa} ssl; ssl_certificate {d}/rsa.chain; ssl_certificate_key {d}/rsa.key; proxy_pass be; }}\n}}\n"
                );
                std::fs::write(dir.join("nginx.conf"), config).unwrap();
                command.args(["nginx", "-c"]).arg(dir.join("nginx.conf"));
            }
            "haproxy" => {
                let (cache, tickets) = match resumption {
                    true => ("", ""),
                    false => ("  tune.ssl.cachesize 0\n", " no-tls-tickets"),
                };
                let config = format!(
                    "global\n  nbthread 1\n  maxconn 9000\n  ssl-default-bind-options ssl-min-ver TLSv1.3{tickets}\n{cache}\
                     defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n\
                     frontend fe_ecdsa\n  bind {ecdsa} ssl crt {d}/ecdsa.pem curves X25519\n  default_backend be\n\
                     frontend fe_rsa\n  bind {rsa} ssl crt {d}/rsa.pem curves X25519\n  default_backend be\n\
                     backend be\n  server s1 {backend}\n"
                );
                std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
                command
                    .args(["haproxy", "-db", "-f"])
                    .arg(dir.join("haproxy.cfg"));
            }
            "hitch" => {
                std::fs::create_dir_all(dir.join("ocsp")).unwrap();
                let config = format!(
                    "frontend = {{\n  host = \"127.0.0.1\"\n  port = \"{ECDSA_PORT}\"\n  pem-file = \"{d}/ecdsa.pem\"\n}}\n\
                     frontend = {{\n  host = \"127.0.0.1\"\n  port = \"{RSA_PORT}\"\n  pem-file = \"{d}/rsa.pem\"\n}}\n\
                     backend = \"[127.0.0.1]:{}\"\nworkers = 1\ndaemon = off\ntls-protos = TLSv1.3\n\
                     ecdh-curve = \"X25519\"\nlog-level = 0\nocsp-dir = \"{d}/ocsp\"\nuser = \"nobody\"\n",
                    backend.port()
                );
                std::fs::write(dir.join("hitch.conf"), config).unwrap();
                command
                    .args(["hitch", "--config"])
                    .arg(dir.join("hitch.conf"));
            }
            other => panic!("unknown peer {other}"),
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {peer}: {e}"));
        Self { child, ecdsa, rsa }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [self.ecdsa, self.rsa] {
            while TcpStream::connect(addr).await.is_err() {
                assert!(Instant::now() < deadline, "the proxy listens within 20 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The probes above were plain TCP; let the proxy finish with them.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// The proxy's processes: `taskset` execs the proxy, which may fork workers.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        let mut i = 0;
        while i < pids.len() {
            let task = format!("/proc/{}/task/{}/children", pids[i], pids[i]);
            if let Ok(children) = std::fs::read_to_string(task) {
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
            i += 1;
        }
        pids
    }

    /// CPU time of all the proxy's processes so far, in nanoseconds.
    fn cpu_ns(&self) -> u64 {
        self.pids().into_iter().map(process_cpu_ns).sum()
    }

    /// Resident memory of all the proxy's processes, in KiB.
    fn rss_kib(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    fn stop(&mut self) {
        for pid in self.pids().into_iter().rev() {
            // SAFETY: plain kill(2) on a pid of ours.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Proxy {
    /// A panicking run must not leave a proxy on the ports for the next one.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// A process's CPU time (all threads), from its CPU-time clock.
fn process_cpu_ns(pid: u32) -> u64 {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both out-pointers point to live locals of the right types.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    if ok {
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    } else {
        0
    }
}

// --- set-up -------------------------------------------------------------------------------

fn install_peers(peers: &[String], cases: &[&str]) {
    let load = cases.contains(&"h2load").then_some("nghttp2-client");
    let wanted: Vec<&str> = peers
        .iter()
        .flat_map(|p| match p.as_str() {
            "nginx" => vec!["nginx", "libnginx-mod-stream"],
            "haproxy" => vec!["haproxy"],
            "hitch" => vec!["hitch"],
            _ => vec![],
        })
        .chain(load)
        .filter(|pkg| {
            !Command::new("dpkg")
                .args(["-s", pkg])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    eprintln!("installing {}", wanted.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&wanted)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "apt-get install {} failed (run as root)",
        wanted.join(" ")
    );
}

/// Raises the open-file limit as far as the hard limit allows (children inherit it); the
/// idle case needs two descriptors per connection here and in the proxy.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_cur as usize > 2 * IDLE + 1000,
        "the open-file limit ({}) is too low for {IDLE} idle connections",
        limit.rlim_cur
    );
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity take it by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A CA, and an ECDSA P-256 and an RSA-2048 leaf under it, in the forms each proxy takes.
fn write_certs(dir: &Path) {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let (ca, ca_key) = common::bench_ca(dir);
    for (name, alg) in [
        ("ecdsa", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("rsa", &rcgen::PKCS_RSA_SHA256),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let sni = format!("{name}.bench.test");
        let mut params = CertificateParams::new(vec![sni.clone()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, sni);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let chain = format!("{}{}", cert.pem(), ca.pem());
        let write = |file: PathBuf, text: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(dir.join(format!("{name}.chain")), &chain);
        write(dir.join(format!("{name}.key")), &key.serialize_pem());
        write(
            dir.join(format!("{name}.pem")),
            &format!("{chain}{}", key.serialize_pem()),
        );
        write(
            dir.join("store").join(format!("{name}.bench.test.pem")),
            &format!("{chain}{}", key.serialize_pem()),
        );
    }
}

// --- the report ---------------------------------------------------------------------------

fn report(results: &BTreeMap<&str, BTreeMap<String, Vec<f64>>>, peers: &[String], rounds: usize) {
    let unit = |case: &str| match case {
        "bulk" => "ms CPU per GB",
        "paced" => "us CPU per handshake at the fixed rate",
        "paced-rate" => "handshakes per second achieved",
        "idle" => "bytes per connection",
        "silent" => "bytes per silent connection",
        "h2load" => "us CPU per request (a resumed handshake each)",
        "h2load-full" => "us CPU per request (a full handshake each)",
        _ => "us CPU per handshake",
    };
    println!("Medians of {rounds} rounds (server CPU of the proxy; lower is better).\n");
    let mut head = "| case | unit |".to_owned();
    for p in peers {
        head.push_str(&format!(" {p} |"));
    }
    let others: Vec<&String> = peers.iter().filter(|p| *p != "mailfront").collect();
    for p in &others {
        head.push_str(&format!(" mailfront / {p} |"));
    }
    println!("{head}");
    println!("|{}", " --- |".repeat(2 + peers.len() + others.len()));
    for case in CASES {
        let Some(by_peer) = results.get(case) else {
            continue;
        };
        let median = |p: &str| {
            by_peer.get(p).map(|v| {
                let mut v = v.clone();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v[v.len() / 2]
            })
        };
        let mut row = format!("| {case} | {} |", unit(case));
        for p in peers {
            row.push_str(&median(p).map_or(" n/a |".into(), |m| format!(" {m:.1} |")));
        }
        for p in &others {
            let ratio = median("mailfront").zip(median(p)).map(|(a, b)| a / b);
            row.push_str(&ratio.map_or(" n/a |".into(), |r| format!(" {r:.2} |")));
        }
        println!("{row}");
    }
}
