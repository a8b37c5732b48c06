//! The admin interface against what a web page and strangers can do: a DNS-rebinding page
//! (a foreign `Host` with its own matching `Origin`), a cross-site form or script without
//! the interface's `Origin`, 64 strangers trickling request bodies to hold every
//! connection while an orchestrator probes `/healthz`, and the headers that keep the page
//! out of frames and caches. curl and raw sockets, from several loopback addresses.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::backend::{Backend, Expect};
use common::client;
use common::{head, listener, store_dir, KeyKind, Pki, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A proxy with `[admin]` on loopback without a token (the example config's), and
/// `extra` in `[admin]`; the store has mail.example.com.
async fn proxy(root: &Path, extra: &str) -> (Proxy, Backend) {
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(&store, "mail", &["mail.example.com"], KeyKind::Ecdsa);
    let imap = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}{}[admin]\nbind = \"127.0.0.1:0\"\n{extra}\n",
        head(root, &store, ""),
        listener("imaps", "imaps", imap.addr, "")
    );
    (Proxy::start(root, &config), imap)
}

/// curl `path` on `admin` with `args`: status, headers and body.
async fn curl(admin: SocketAddr, path: &str, args: &[&str]) -> (u16, String, String) {
    let url = format!("http://{admin}{path}");
    let mut all = vec![
        "-sS",
        "--max-time",
        "10",
        "-D",
        "-",
        "-w",
        "\n%{http_code}",
        &url,
    ];
    all.extend(args);
    let run = client::run("curl", &all).await;
    assert_eq!(run.status, Some(0), "curl {url}: {}", run.stderr);
    let (text, code) = run.stdout.rsplit_once('\n').unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    (
        code.parse().unwrap(),
        head.to_ascii_lowercase(),
        body.to_owned(),
    )
}

/// A self-signed certificate and key for `name`, as JSON for an upload.
fn upload_body(name: &str, dir: &Path) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let body = serde_json::json!({ "certificate": cert.pem(), "key": key.serialize_pem() });
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, body.to_string()).unwrap();
    format!("@{}", file.display())
}

/// A request with `Host: rebind.evil:PORT` and the matching `Origin` (what a page at
/// rebind.evil whose name now points at 127.0.0.1 sends) is answered 421 for every method
/// and path, and writes nothing; the names the interface has are answered; a
/// state-changing request without the interface's `Origin` (a cross-site form, a page's
/// script) is refused 403, and with it (or with the bearer token) is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_use_the_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = proxy(tmp.path(), "allowed_hosts = [\"admin.example.net\"]").await;
    let admin = proxy.admin.unwrap();
    let port = admin.port();
    let store = tmp.path().join("store");
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let data = upload_body("rebound.example.com", tmp.path());

    let host = format!("Host: rebind.evil:{port}");
    let origin = format!("Origin: http://rebind.evil:{port}");
    let json = "Content-Type: application/json";
    let cases: [(&str, &str, Vec<&str>); 5] = [
        ("GET", "/api/v1/certs", vec![]),
        ("GET", "/", vec![]),
        ("GET", "/metrics", vec![]),
        (
            "PUT",
            "/api/v1/certs/rebound.example.com",
            vec!["-H", json, "--data-binary", &data],
        ),
        ("DELETE", "/api/v1/certs/mail.example.com", vec![]),
    ];
    for (method, path, extra) in &cases {
        let mut args = vec!["-X", method, "-H", &host, "-H", &origin];
        args.extend(extra.iter().copied());
        let (code, head, body) = curl(admin, path, &args).await;
        assert_eq!(code, 421, "{method} {path}: {body}");
        assert!(
            body.contains("does not name this admin interface"),
            "{body}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
    }
    assert_eq!(listing(), before, "nothing written");

    for name in ["localhost", "server.com", "admin.example.net", "127.0.0.1"] {
        let host = format!("Host: {name}:{port}");
        let (code, _, body) = curl(admin, "/api/v1/certs", &["-H", &host]).await;
        assert_eq!(code, 200, "{name}: {body}");
    }

    // Changing something: the interface's own Origin, nothing else.
    let put = |origin: Option<String>| {
        let data = data.clone();
        async move {
            let mut args = vec!["-X".to_owned(), "PUT".into(), "-H".into(), json.into()];
            args.extend(["--data-binary".to_owned(), data]);
            if let Some(origin) = origin {
                args.extend(["-H".to_owned(), origin]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(admin, "/api/v1/certs/rebound.example.com", &args).await
        }
    };
    for origin in [
        None,
        Some("Origin: http://evil.example".to_owned()),
        Some("Origin: null".to_owned()),
        Some(format!("Origin: https://127.0.0.1:{port}")),
    ] {
        let (code, _, body) = put(origin.clone()).await;
        assert_eq!(code, 403, "{origin:?}: {body}");
        assert!(
            body.contains("needs the Origin of this interface"),
            "{body}"
        );
    }
    assert_eq!(listing(), before, "nothing written");
    let (code, _, body) = put(Some(format!("Origin: http://{admin}"))).await;
    assert_eq!(code, 201, "same origin: {body}");
}

/// Every answer keeps the page out of other sites' frames, caches and scripts.
#[tokio::test(flavor = "multi_thread")]
async fn answers_carry_the_protective_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = proxy(tmp.path(), "").await;
    let admin = proxy.admin.unwrap();
    for path in ["/", "/api/v1/certs", "/healthz", "/nothing"] {
        let (_, head, _) = curl(admin, path, &[]).await;
        for want in [
            "content-security-policy: default-src 'none'; style-src 'sha256-",
            "frame-ancestors 'none'",
            "x-frame-options: deny",
            "cache-control: no-store",
            "x-content-type-options: nosniff",
        ] {
            assert!(head.contains(want), "{path}: no {want} in\n{head}");
        }
    }
}

/// Opens a connection to `admin` from the loopback address `from`.
async fn connect_from(from: &str, admin: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(admin).await.unwrap()
}

/// What a stranger sends and then trickles: a login whose body will never come.
const TRICKLE: &[u8] = b"POST /login HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\nt";

/// 64 strangers, each from an address of its own, send a login with a body of a million
/// bytes and trickle it a byte every 2 s, taking every connection slot: `/healthz` and
/// `/readyz` still answer at once (an orchestrator's probe does not restart the proxy),
/// anything else is told it is busy; 20 from one address get 16 slots (the rest are told
/// the interface is busy, or closed), and the operator from another address is served in
/// full; every trickling connection is closed once its
/// body's time is up.
#[tokio::test(flavor = "multi_thread")]
async fn strangers_cannot_hold_the_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = proxy(tmp.path(), "").await;
    let admin = proxy.admin.unwrap();
    let mut strangers = Vec::new();
    for i in 1..=64 {
        let mut s = connect_from(&format!("127.0.1.{i}"), admin).await;
        s.write_all(TRICKLE).await.unwrap();
        strangers.push(s);
    }
    // Trickle in the background, a byte every 2 s, until closed.
    let trickled = tokio::spawn(async move {
        let started = Instant::now();
        let mut open = strangers;
        let mut closed_after = Vec::new();
        while !open.is_empty() && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut still = Vec::new();
            for mut s in open {
                let mut buf = [0u8; 512];
                let gone =
                    match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => true,
                        Ok(Ok(_)) => true, // answered (408): the server closes after it
                        Err(_) => s.write_all(b"x").await.is_err(),
                    };
                match gone {
                    true => closed_after.push(started.elapsed()),
                    false => still.push(s),
                }
            }
            open = still;
        }
        (closed_after, open.len())
    });
    // Let the 64 be accepted and their heads read.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for path in ["/healthz", "/readyz"] {
        let started = Instant::now();
        let (code, _, body) = curl(admin, path, &[]).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} answered at once"
        );
    }
    let (code, _, body) = curl(admin, "/metrics", &[]).await;
    assert_eq!(code, 503, "busy: {body}");
    assert!(body.contains("connections are open"), "{body}");

    let (closed_after, still_open) = trickled.await.unwrap();
    assert_eq!(still_open, 0, "every trickling connection closed");
    let latest = closed_after.iter().max().unwrap();
    assert!(
        *latest < Duration::from_secs(45),
        "closed once the body's time (30 s) was up: {latest:?}"
    );
    assert_eq!(curl(admin, "/metrics", &[]).await.0, 200, "free again");

    // One address gets 16 slots; the operator at another keeps working.
    let mut crowd = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.2", admin).await;
        s.write_all(TRICKLE).await.unwrap();
        crowd.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        curl(admin, "/metrics", &[]).await.0,
        200,
        "another address is served"
    );
    // Beyond its 16, each is told it is busy (a probe slot, 2 at a time per address) or
    // closed at accept: none is held.
    let (mut held, mut busy, mut closed) = (0, 0, 0);
    for s in &mut crowd {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Err(_) => held += 1,
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.contains(" 503 "), "{text}");
                busy += 1;
            }
        }
    }
    assert_eq!(
        held, 16,
        "16 held from one address ({busy} busy, {closed} closed)"
    );
    assert!(busy >= 2, "told they are busy: {busy} ({closed} closed)");
}
