//! Soak: continuous sessions on every listener kind while the store's entries are swapped
//! every few milliseconds. Every handshake succeeds with a version of its name's entry,
//! every session's bytes come back intact, and after the load the process holds no more
//! descriptors and no more memory than after the same load earlier.
//!
//! `SOAK_SECONDS` sets the length (default 15; `.ci/run` runs it for minutes).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{Backend, Expect};
use common::client::{self, Opts};
use common::running::Running;
use common::{head, listener, store_dir, KeyKind, Pki};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Entries in the store, each swapped between two versions (ECDSA and RSA).
const ENTRIES: usize = 8;
/// Client tasks running sessions at once.
const WORKERS: usize = 6;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Https,
    Smtps,
    Imaps,
    Pop3s,
    Smtp,
    Imap,
    Pop3,
}

const KINDS: [(Kind, &str, &str); 7] = [
    (Kind::Https, "https", "https"),
    (Kind::Smtps, "smtps", "smtps"),
    (Kind::Imaps, "imaps", "imaps"),
    (Kind::Pop3s, "pop3s", "pop3s"),
    (Kind::Smtp, "submission", "smtp-starttls"),
    (Kind::Imap, "imap", "imap-starttls"),
    (Kind::Pop3, "pop3", "pop3-starttls"),
];

/// What the workers share.
struct Load {
    addrs: Vec<(Kind, SocketAddr)>,
    /// The two versions' leaf DER of each entry.
    versions: Vec<[Vec<u8>; 2]>,
    stop: AtomicBool,
    sessions: AtomicU64,
    /// Sessions served each version (ECDSA, RSA): the swaps reach the handshakes.
    served: [AtomicU64; 2],
    failures: Mutex<Vec<String>>,
}

/// The backend's greeting for the mail protocol of `kind`.
fn greeting(kind: Kind) -> &'static str {
    match kind {
        Kind::Smtps | Kind::Smtp => "220 backend.soak ESMTP",
        Kind::Pop3s | Kind::Pop3 => "+OK backend.soak ready",
        _ => "* OK backend.soak ready",
    }
}

fn sni(entry: usize) -> String {
    format!("soak{entry}.example.com")
}

/// One CRLF line, or why not (within 5 s).
async fn recv<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> Result<String, String> {
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
        Ok(Ok(_)) => Ok(line),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no line within 5 s".into()),
    }
}

/// Writes a CRLF line.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, line: &str) -> Result<(), String> {
    let write = async {
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        stream.flush().await
    };
    write.await.map_err(|e| format!("write: {e}"))
}

/// One session of `kind` for entry `entry`'s name: handshake (after the plain-text
/// STARTTLS dialogue where there is one), a check of the certificate served, a line of
/// `size` bytes echoed back, and an orderly goodbye.
async fn session(
    load: &Load,
    kind: Kind,
    addr: SocketAddr,
    entry: usize,
    size: usize,
) -> Result<(), String> {
    let opts = Opts {
        sni: Some(sni(entry)),
        ..Opts::default()
    };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tcp = match kind {
        Kind::Smtp | Kind::Imap | Kind::Pop3 => starttls(kind, tcp).await?,
        _ => tcp,
    };
    let tls = client::upgrade(tcp, &opts)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls.get_ref().1.peer_certificates().map(|c| c[0].to_vec());
    let Some(version) = served.and_then(|d| load.versions[entry].iter().position(|v| *v == d))
    else {
        return Err(format!("{}: not one of its entry's versions", sni(entry)));
    };
    load.served[version].fetch_add(1, Ordering::Relaxed);
    let mut tls = BufReader::new(tls);
    match kind {
        Kind::Https => https(&mut tls).await,
        Kind::Smtps | Kind::Imaps | Kind::Pop3s => {
            let said = recv(&mut tls).await?;
            if said != format!("{}\r\n", greeting(kind)) {
                return Err(format!("greeting {said:?}"));
            }
            echo(&mut tls, size).await
        }
        // The backend's greeting was consumed by the proxy after STARTTLS.
        Kind::Smtp | Kind::Imap | Kind::Pop3 => echo(&mut tls, size).await,
    }
}

/// The plain-text part of a STARTTLS listener, up to the point where TLS starts.
async fn starttls(kind: Kind, tcp: TcpStream) -> Result<TcpStream, String> {
    let mut plain = BufReader::new(tcp);
    let greeting = recv(&mut plain).await?;
    let (command, ready) = match kind {
        Kind::Smtp => {
            send(plain.get_mut(), "EHLO soak.test").await?;
            while !recv(&mut plain).await?.starts_with("250 ") {}
            ("STARTTLS", "220 ")
        }
        Kind::Imap => ("a STARTTLS", "a OK"),
        _ => ("STLS", "+OK"),
    };
    send(plain.get_mut(), command).await?;
    let answer = recv(&mut plain).await?;
    if !answer.starts_with(ready) {
        return Err(format!("{kind:?}: {greeting:?} then {answer:?}"));
    }
    Ok(plain.into_inner())
}

/// A line of `size` bytes echoed back whole, then the goodbye and the close.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    size: usize,
) -> Result<(), String> {
    let line: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    send(stream.get_mut(), &format!("a {line}")).await?;
    let back = recv(stream).await?;
    if back != format!("ECHO a {line}\r\n") {
        return Err(format!(
            "echo of {size} bytes came back as {} bytes",
            back.len()
        ));
    }
    send(stream.get_mut(), "a LOGOUT").await?;
    let bye = recv(stream).await?;
    if bye != "BYE\r\n" {
        return Err(format!("goodbye {bye:?}"));
    }
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    Ok(())
}

async fn https<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>) -> Result<(), String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
        .await
        .map_err(|e| format!("request: {e}"))?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    if !(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n")) {
        return Err(format!("http answer {answer:?}"));
    }
    Ok(())
}

/// Runs sessions round the listener kinds and entries until `load.stop`.
async fn worker(load: Arc<Load>, id: usize) {
    let mut n = id;
    while !load.stop.load(Ordering::Relaxed) {
        let (kind, addr) = load.addrs[n % load.addrs.len()];
        let entry = (n / load.addrs.len()) % ENTRIES;
        let size = (n * 7919) % 20_000 + 1;
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            session(&load, kind, addr, entry, size),
        )
        .await
        .unwrap_or_else(|_| Err("no end within 10 s".into()));
        match result {
            Ok(()) => {
                load.sessions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => load
                .failures
                .lock()
                .unwrap()
                .push(format!("{kind:?} {}: {e}", sni(entry))),
        }
        n += WORKERS;
    }
}

/// Swaps entries between their versions every 3 ms until `stop`: mostly write-and-rename,
/// every tenth an overwrite in place in two writes (a half-written file in between).
fn swapper(store: PathBuf, texts: Vec<[String; 2]>, stop: Arc<AtomicBool>) -> u64 {
    let mut swaps = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let entry = (swaps as usize) % ENTRIES;
        let text = &texts[entry][(swaps as usize / ENTRIES) % 2];
        let path = store.join(format!("soak{entry}.pem"));
        if swaps % 10 == 9 {
            let half = text.len() / 2;
            std::fs::write(&path, &text[..half]).unwrap();
            std::thread::sleep(Duration::from_millis(3));
            std::fs::write(&path, text).unwrap();
        } else {
            let tmp = store.join(format!(".soak{entry}.pem.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        swaps += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
    swaps
}

/// Runs the load and the swaps for `length`, then waits until the proxy is quiet.
async fn phase(load: &Arc<Load>, store: &Path, texts: &[[String; 2]], length: Duration) -> u64 {
    load.stop.store(false, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = {
        let (store, texts, stop) = (store.to_owned(), texts.to_vec(), Arc::clone(&stop));
        std::thread::spawn(move || swapper(store, texts, stop))
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| tokio::spawn(worker(Arc::clone(load), id)))
        .collect();
    tokio::time::sleep(length).await;
    load.stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    swaps.join().unwrap()
}

/// Continuous sessions on all seven listener kinds while entries are swapped every 3 ms:
/// no failed session, and descriptors and memory level after the load.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_on_every_listener_while_entries_swap() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let mut texts = Vec::new();
    let mut versions = Vec::new();
    for entry in 0..ENTRIES {
        let name = sni(entry);
        let a = pki.leaf(&[name.as_str()], KeyKind::Ecdsa);
        let b = pki.leaf(&[name.as_str()], KeyKind::Rsa);
        std::fs::write(store.join(format!("soak{entry}.pem")), a.combined()).unwrap();
        texts.push([a.combined(), b.combined()]);
        versions.push([a.der(), b.der()]);
    }
    let http = Backend::http().await;
    let smtp = Backend::start(greeting(Kind::Smtp), Expect::Plain).await;
    let imap = Backend::start(greeting(Kind::Imap), Expect::Plain).await;
    let pop3 = Backend::start(greeting(Kind::Pop3), Expect::Plain).await;
    let mut config = head(tmp.path(), &store, "");
    for (kind, name, protocol) in KINDS {
        let backend = match kind {
            Kind::Https => http.addr,
            Kind::Smtps | Kind::Smtp => smtp.addr,
            Kind::Imaps | Kind::Imap => imap.addr,
            Kind::Pop3s | Kind::Pop3 => pop3.addr,
        };
        config.push_str(&listener(name, protocol, backend, ""));
    }
    let path = tmp.path().join("m.toml");
    std::fs::write(&path, config).unwrap();
    let names: Vec<&str> = KINDS.iter().map(|k| k.1).collect();
    let (proxy, addrs) = Running::start_listeners("", &path, &names);
    let load = Arc::new(Load {
        addrs: KINDS.iter().map(|k| k.0).zip(addrs).collect(),
        versions,
        stop: AtomicBool::new(false),
        sessions: AtomicU64::new(0),
        served: Default::default(),
        failures: Mutex::new(Vec::new()),
    });

    // The first third warms up: buffers, TLS tickets, the allocator's arenas.
    let started = Instant::now();
    let mut swaps = phase(&load, &store, &texts, Duration::from_secs(seconds / 3)).await;
    let mut lines = proxy.lines_until_quiet(Duration::from_secs(1), Duration::from_secs(30));
    let (fds_warm, rss_warm) = (proxy.fds(), proxy.rss_kib());
    let warm_sessions = load.sessions.load(Ordering::Relaxed);
    swaps += phase(
        &load,
        &store,
        &texts,
        Duration::from_secs(seconds - seconds / 3),
    )
    .await;
    lines.extend(proxy.lines_until_quiet(Duration::from_secs(1), Duration::from_secs(30)));
    let (fds_end, rss_end) = (proxy.fds(), proxy.rss_kib());
    let sessions = load.sessions.load(Ordering::Relaxed);
    let served = load.served.each_ref().map(|n| n.load(Ordering::Relaxed));
    eprintln!(
        "soak {:?}: {sessions} sessions ({warm_sessions} in the warm-up; ECDSA {}, RSA {}), \
         {swaps} swaps; descriptors {fds_warm} -> {fds_end}, RSS {rss_warm} -> {rss_end} KiB",
        started.elapsed(),
        served[0],
        served[1],
    );

    let failures = load.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed sessions: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        sessions >= 20 * seconds,
        "the load ran: {sessions} sessions"
    );
    assert!(swaps >= 50 * seconds, "the swaps ran: {swaps}");
    assert!(
        served.iter().all(|n| *n > 0),
        "both versions served: {served:?}"
    );
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("panicked"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(
        fds_end <= fds_warm,
        "descriptors after the load: {fds_warm} -> {fds_end}"
    );
    // Memory after twice the warm-up's load: level, with room for the allocator's noise.
    assert!(
        rss_end <= rss_warm + rss_warm / 10 + 2048,
        "RSS after the load: {rss_warm} -> {rss_end} KiB"
    );
}
