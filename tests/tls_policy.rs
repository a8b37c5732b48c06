//! The TLS surface: versions, suites, resumption, IPv6 listeners.

mod common;

use common::backend::{Backend, Expect};
use common::client::{self, read_line};
use common::{head, store_dir, KeyKind, Pki, Proxy};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::BufReader;
use tokio::net::TcpStream;

async fn proxy(root: &std::path::Path) -> (Pki, Proxy, Backend) {
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(&store, "mail", &["mail.example.com"], KeyKind::Rsa);
    let backend = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}[[listener]]\nname = \"imaps\"\nbind = [\"127.0.0.1:0\", \"[::1]:0\"]\nprotocol = \"imaps\"\nbackend = \"{}\"\n",
        head(root, &store, ""),
        backend.addr
    );
    (pki, Proxy::start(root, &config), backend)
}

/// Whether `openssl s_client` with `args` completes a handshake for mail.example.com.
async fn openssl_connects(proxy: &Proxy, args: &[&str]) -> (bool, String) {
    let addr = proxy.addr("imaps").to_string();
    let mut all = vec![
        "s_client",
        "-connect",
        &addr,
        "-servername",
        "mail.example.com",
        "-brief",
    ];
    all.extend_from_slice(args);
    let out = client::run("openssl", &all).await;
    (out.stderr.contains("CONNECTION ESTABLISHED"), out.stderr)
}

/// TLS 1.0 and 1.1 are refused; TLS 1.2 and 1.3 work.
#[tokio::test(flavor = "multi_thread")]
async fn only_tls12_and_tls13() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = proxy(tmp.path()).await;
    for (flag, ok) in [
        ("-tls1", false),
        ("-tls1_1", false),
        ("-tls1_2", true),
        ("-tls1_3", true),
    ] {
        let (connected, stderr) =
            openssl_connects(&proxy, &[flag, "-cipher", "ALL:@SECLEVEL=0"]).await;
        assert_eq!(connected, ok, "{flag}: {stderr}");
    }
}

/// TLS 1.2 suites without ECDHE or without AEAD are refused; ECDHE-AES-GCM works.
#[tokio::test(flavor = "multi_thread")]
async fn only_aead_ecdhe_suites() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = proxy(tmp.path()).await;
    for (cipher, ok) in [
        ("AES128-GCM-SHA256", false),         // RSA key exchange
        ("ECDHE-RSA-AES128-SHA", false),      // CBC
        ("DHE-RSA-AES128-GCM-SHA256", false), // finite-field DH
        ("ECDHE-RSA-AES128-GCM-SHA256", true),
        ("ECDHE-RSA-CHACHA20-POLY1305", true),
    ] {
        let (connected, stderr) = openssl_connects(&proxy, &["-tls1_2", "-cipher", cipher]).await;
        assert_eq!(connected, ok, "{cipher}: {stderr}");
    }
}

/// The server's order of suites wins over the client's: a client listing AES-256-GCM and
/// ChaCha20 first (OpenSSL's own default order) still gets Mozilla's first choice,
/// AES-128-GCM, in TLS 1.3 and 1.2 (scanners rate the opposite as a finding).
#[tokio::test(flavor = "multi_thread")]
async fn server_chooses_the_suite_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = proxy(tmp.path()).await;
    let (connected, stderr) = openssl_connects(
        &proxy,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
        ],
    )
    .await;
    assert!(connected, "{stderr}");
    assert!(
        stderr.contains("Ciphersuite: TLS_AES_128_GCM_SHA256"),
        "{stderr}"
    );
    let (connected, stderr) = openssl_connects(
        &proxy,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256",
        ],
    )
    .await;
    assert!(connected, "{stderr}");
    assert!(
        stderr.contains("Ciphersuite: ECDHE-RSA-AES128-GCM-SHA256"),
        "{stderr}"
    );
}

/// A TLS 1.2 client asking to renegotiate (`R` in `openssl s_client`) is answered at once
/// with the `no_renegotiation` alert, as HAProxy does, while the backend has nothing to
/// say: the alert is a record rustls makes on its own and must not wait for relayed bytes.
#[tokio::test(flavor = "multi_thread")]
async fn renegotiation_is_refused_at_once() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = proxy(tmp.path()).await;
    let addr = proxy.addr("imaps").to_string();
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-tls1_2", "-connect", &addr])
        .args(["-servername", "mail.example.com"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // The backend's greeting: the session is up and nothing more will come from it.
        while let Some(line) = out.next_line().await.unwrap() {
            if line.starts_with("* OK") {
                break;
            }
        }
        stdin.write_all(b"R\n").await.unwrap();
        let started = std::time::Instant::now();
        let mut said = Vec::new();
        loop {
            tokio::select! {
                Ok(Some(line)) = out.next_line() => said.push(line),
                Ok(Some(line)) = err.next_line() => said.push(line),
                else => return (started.elapsed(), said),
            }
            if said.last().is_some_and(|l| l.contains("no renegotiation")) {
                return (started.elapsed(), said);
            }
        }
    })
    .await;
    // stdin is held open all along: the client gives up only on the alert.
    drop(stdin);
    let (took, said) = seen.expect("the alert within 10 s");
    assert!(
        said.iter().any(|l| l.contains("no renegotiation")),
        "{said:?}"
    );
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}

/// A TLS 1.3 client resumes with the ticket it was given.
#[tokio::test(flavor = "multi_thread")]
async fn tls13_resumption_with_tickets() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, proxy, _b) = proxy(tmp.path()).await;
    let connector = common::client::connector(&common::client::Opts {
        ca: Some(pki.ca_file()),
        sni: Some("mail.example.com".into()),
        ..Default::default()
    });
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(proxy.addr("imaps")).await.unwrap();
        let name = ServerName::try_from("mail.example.com").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let mut stream = BufReader::new(stream);
        // Reading the greeting also reads the tickets sent after the handshake.
        assert_eq!(read_line(&mut stream).await, "* OK\r\n");
        kinds.push(stream.get_ref().get_ref().1.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// Counts the TLS 1.3 tickets a client is given, and keeps them in rustls' own store.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// `server.session_tickets`: one TLS 1.3 ticket per handshake by default (a mail client
/// keeps one per server), as many as set, and none with 0, which turns resumption off.
#[tokio::test(flavor = "multi_thread")]
async fn session_tickets_per_handshake() {
    for (setting, tickets, second) in [
        ("", 1, rustls::HandshakeKind::Resumed),
        ("session_tickets = 3\n", 3, rustls::HandshakeKind::Resumed),
        ("session_tickets = 0\n", 0, rustls::HandshakeKind::Full),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp.path());
        let store = store_dir(tmp.path());
        pki.write_pair(&store, "mail", &["mail.example.com"], KeyKind::Ecdsa);
        let backend = Backend::start("* OK", Expect::Plain).await;
        let config = format!(
            "{}[[listener]]\nname = \"imaps\"\nbind = \"127.0.0.1:0\"\nprotocol = \"imaps\"\nbackend = \"{}\"\n",
            head(tmp.path(), &store, setting),
            backend.addr
        );
        let proxy = Proxy::start(tmp.path(), &config);
        let counted = Arc::new(CountingStore {
            inner: rustls::client::ClientSessionMemoryCache::new(16),
            tickets: Default::default(),
        });
        let mut config = common::client::config(&common::client::Opts {
            ca: Some(pki.ca_file()),
            sni: Some("mail.example.com".into()),
            ..Default::default()
        });
        config.resumption = rustls::client::Resumption::store(counted.clone());
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(proxy.addr("imaps")).await.unwrap();
            let name = ServerName::try_from("mail.example.com").unwrap();
            let mut stream = BufReader::new(connector.connect(name, tcp).await.unwrap());
            // The tickets come before the greeting.
            assert_eq!(read_line(&mut stream).await, "* OK\r\n");
            kinds.push(stream.get_ref().get_ref().1.handshake_kind().unwrap());
        }
        let given = counted.tickets.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            given,
            2 * tickets,
            "{setting:?}: tickets over two handshakes"
        );
        assert_eq!(kinds, [rustls::HandshakeKind::Full, second], "{setting:?}");
    }
}

/// A listener bound to IPv4 and IPv6 serves both.
#[tokio::test(flavor = "multi_thread")]
async fn ipv4_and_ipv6_addresses_of_one_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = proxy(tmp.path()).await;
    let addrs = &proxy.bound;
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
    for &addr in addrs {
        assert_eq!(
            client::names_for(addr, Some("mail.example.com")).await,
            ["mail.example.com"],
            "{addr}"
        );
    }
}
