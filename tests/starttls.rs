//! STARTTLS listeners with real clients: `openssl s_client -starttls`, `curl --ssl-reqd`
//! sending mail, and a rustls client speaking the plain-text part by hand.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::client::{self, read_line, send_line, Opts};
use common::{head, listener, store_dir, KeyKind, Pki, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Setup {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    proxy: Proxy,
    /// The backends, kept running: `smtp`, `imap`, `pop3`.
    smtp: Backend,
    imap: Backend,
    _pop3: Backend,
}

impl Setup {
    /// One listener per STARTTLS protocol, `smtp`, `imap` and `pop3`, each in front of an
    /// echo backend (or `smtp` in front of the one given, with `smtp_extra` config lines),
    /// and a store holding mail.example.com.
    async fn new(smtp: Option<Backend>, smtp_extra: &str) -> Self {
        let smtp = match smtp {
            Some(b) => b,
            None => Backend::start("220 backend.test ESMTP", Expect::Plain).await,
        };
        let imap = Backend::start("* OK [CAPABILITY IMAP4rev1] backend ready", Expect::Plain).await;
        let pop3 = Backend::start("+OK backend ready", Expect::Plain).await;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let pki = Pki::new(&root);
        let store = store_dir(&root);
        pki.write_single(
            &store,
            "mail.example.com",
            &["mail.example.com"],
            KeyKind::Ecdsa,
        );
        let mut config = head(&root, &store, "");
        for (name, addr, extra) in [
            ("smtp", smtp.addr, smtp_extra),
            ("imap", imap.addr, ""),
            ("pop3", pop3.addr, ""),
        ] {
            config.push_str(&listener(name, &format!("{name}-starttls"), addr, extra));
        }
        let proxy = Proxy::start(&root, &config);
        Self {
            _tmp: tmp,
            root,
            proxy,
            smtp,
            imap,
            _pop3: pop3,
        }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.proxy.addr(name)
    }

    fn ca(&self) -> std::path::PathBuf {
        self.root.join("ca.pem")
    }
}

/// `openssl s_client -starttls smtp|imap|pop3 -servername` gets the certificate for the
/// name from the same store as the implicit-TLS ports, and the mismatch for another.
#[tokio::test(flavor = "multi_thread")]
async fn openssl_starttls_gets_the_certificate_by_sni() {
    let s = Setup::new(None, "").await;
    let ca = s.ca().display().to_string();
    for proto in ["smtp", "imap", "pop3"] {
        for (name, verified) in [("mail.example.com", true), ("other.example.org", false)] {
            let connect = s.addr(proto).to_string();
            let run = client::run(
                "openssl",
                &[
                    "s_client",
                    "-starttls",
                    proto,
                    "-connect",
                    &connect,
                    "-servername",
                    name,
                    "-verify_hostname",
                    name,
                    "-CAfile",
                    &ca,
                    "-brief",
                ],
            )
            .await;
            let out = format!("{}{}", run.stdout, run.stderr);
            assert_eq!(
                out.contains("Verification: OK"),
                verified,
                "{proto} {name}: {out}"
            );
            if !verified {
                assert!(out.contains("hostname mismatch"), "{proto} {name}: {out}");
            }
        }
    }
}

/// curl sends a message through `smtp-starttls` with `--ssl-reqd`: its EHLO after TLS
/// reaches the backend, and the message arrives.
#[tokio::test(flavor = "multi_thread")]
async fn curl_sends_mail_over_smtp_starttls() {
    let smtp = Backend::smtp().await;
    let s = Setup::new(Some(smtp), "").await;
    let message = s.root.join("message.txt");
    std::fs::write(
        &message,
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: starttls\r\n\r\nhello through mailfront\r\n",
    )
    .unwrap();
    let port = s.addr("smtp").port();
    let url = format!("smtp://mail.example.com:{port}");
    let resolve = format!("mail.example.com:{port}:127.0.0.1");
    let ca = s.ca().display().to_string();
    let upload = message.display().to_string();
    let run = client::run(
        "curl",
        &[
            "-sS",
            "--ssl-reqd",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &url,
            "--mail-from",
            "a@example.com",
            "--mail-rcpt",
            "b@example.com",
            "-T",
            &upload,
        ],
    )
    .await;
    assert_eq!(run.status, Some(0), "{}{}", run.stdout, run.stderr);
    let messages = s.smtp.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains("hello through mailfront"),
        "{messages:?}"
    );
}

/// IMAP by hand: plain CAPABILITY, STARTTLS, then over TLS the first line is the
/// backend's answer to our command, not its greeting (consumed by the proxy).
#[tokio::test(flavor = "multi_thread")]
async fn imap_session_continues_coherently_after_starttls() {
    let s = Setup::new(None, "").await;
    let tcp = TcpStream::connect(s.addr("imap")).await.unwrap();
    let mut plain = BufReader::new(tcp);
    assert!(read_line(&mut plain)
        .await
        .starts_with("* OK [CAPABILITY IMAP4rev1 STARTTLS"));
    send_line(&mut plain, "a1 LOGIN alice secret").await;
    assert_eq!(
        read_line(&mut plain).await,
        "a1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"
    );
    send_line(&mut plain, "a2 STARTTLS").await;
    assert_eq!(
        read_line(&mut plain).await,
        "a2 OK Begin TLS negotiation now\r\n"
    );
    let opts = Opts {
        sni: Some("mail.example.com".into()),
        ..Opts::default()
    };
    let tls = client::upgrade(plain.into_inner(), &opts).await.unwrap();
    assert_eq!(client::served_names(&tls), ["mail.example.com"]);
    let mut tls = BufReader::new(tls);
    send_line(&mut tls, "a3 CAPABILITY").await;
    assert_eq!(read_line(&mut tls).await, "ECHO a3 CAPABILITY\r\n");
    assert_eq!(*s.imap.accepted.lock().unwrap(), 1);
}

/// Bytes pipelined after STARTTLS are refused in clear text and no backend is reached;
/// a backend that refuses the session has its refusal passed on over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn injection_refused_and_backend_refusal_passed_on() {
    let smtp = Backend::start("554 5.3.2 backend.test busy", Expect::Plain).await;
    let s = Setup::new(Some(smtp), "").await;
    let mut tcp = TcpStream::connect(s.addr("smtp")).await.unwrap();
    tcp.write_all(b"EHLO c\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@x>\r\n")
        .await
        .unwrap();
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert!(
        all.contains("554 5.5.0 Data after STARTTLS refused"),
        "{all}"
    );
    assert!(!all.contains("Ready to start TLS"), "{all}");
    assert_eq!(*s.smtp.accepted.lock().unwrap(), 0);

    let tcp = TcpStream::connect(s.addr("smtp")).await.unwrap();
    let mut plain = BufReader::new(tcp);
    read_line(&mut plain).await;
    send_line(&mut plain, "STARTTLS").await;
    assert_eq!(
        read_line(&mut plain).await,
        "220 2.0.0 Ready to start TLS\r\n"
    );
    let tls = client::upgrade(plain.into_inner(), &Opts::default())
        .await
        .unwrap();
    let mut rest = String::new();
    let mut tls = tls;
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut rest)).await;
    assert_eq!(rest, "554 5.3.2 backend.test busy\r\n");
}

/// Greetings name the listener's `greeting_name`, else `server.name`; PROXY v2 reaches
/// the backend before its greeting is consumed.
#[tokio::test(flavor = "multi_thread")]
async fn greeting_names_and_proxy_protocol() {
    let smtp = Backend::start("220 backend.test ESMTP", Expect::ProxyV2).await;
    let s = Setup::new(
        Some(smtp),
        "proxy_protocol = \"v2\"\ngreeting_name = \"mx1.example.net\"",
    )
    .await;
    let mut pop = BufReader::new(TcpStream::connect(s.addr("pop3")).await.unwrap());
    assert_eq!(read_line(&mut pop).await, "+OK server.com POP3 ready\r\n");

    let mut plain = BufReader::new(TcpStream::connect(s.addr("smtp")).await.unwrap());
    assert_eq!(read_line(&mut plain).await, "220 mx1.example.net ESMTP\r\n");
    send_line(&mut plain, "EHLO client.test").await;
    assert_eq!(read_line(&mut plain).await, "250-mx1.example.net\r\n");
    read_line(&mut plain).await;
    assert_eq!(read_line(&mut plain).await, "250 STARTTLS\r\n");
    send_line(&mut plain, "STARTTLS").await;
    read_line(&mut plain).await;
    let opts = Opts {
        sni: Some("mail.example.com".into()),
        ..Opts::default()
    };
    let mut tls = BufReader::new(client::upgrade(plain.into_inner(), &opts).await.unwrap());
    send_line(&mut tls, "EHLO client.test").await;
    assert_eq!(read_line(&mut tls).await, "ECHO EHLO client.test\r\n");
    let headers = s.smtp.headers.lock().unwrap().clone();
    assert_eq!(headers.len(), 1);
    assert!(
        headers[0].starts_with(b"\r\n\r\n\0\r\nQUIT\n"),
        "a PROXY v2 signature"
    );
    let sni_tlv = b"mail.example.com";
    assert!(
        headers[0].windows(sni_tlv.len()).any(|w| w == sni_tlv),
        "SNI in a TLV"
    );
}
