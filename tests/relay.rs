//! The plain-text side: greetings, half-close, PROXY headers, routes and dead backends.

mod common;

use std::time::Duration;

use common::backend::{self, Backend, Expect};
use common::client::{self, read_line, send_line, Opts};
use common::{head, listener, store_dir, Pki, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

fn opts(sni: &str) -> Opts {
    Opts {
        sni: Some(sni.into()),
        ..Opts::default()
    }
}

/// IMAP, POP3 and SMTP greetings reach the client through each listener kind, and
/// commands and answers flow both ways until the backend says goodbye.
#[tokio::test(flavor = "multi_thread")]
async fn greetings_and_commands_on_each_mail_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let imap = Backend::start("* OK [CAPABILITY IMAP4rev1] Dovecot ready.", Expect::Plain).await;
    let pop3 = Backend::start("+OK Dovecot ready.", Expect::Plain).await;
    let smtp = Backend::start("220 mail.example.com ESMTP Postfix", Expect::Plain).await;
    let config = format!(
        "{}{}{}{}",
        head(tmp.path(), &store, ""),
        listener("imaps", "imaps", imap.addr, ""),
        listener("pop3s", "pop3s", pop3.addr, ""),
        listener("smtps", "smtps", smtp.addr, "")
    );
    let proxy = Proxy::start(tmp.path(), &config);
    let cases = [
        (
            "imaps",
            "* OK [CAPABILITY IMAP4rev1] Dovecot ready.",
            "a1 NOOP",
            "a2 LOGOUT",
        ),
        ("pop3s", "+OK Dovecot ready.", "STAT", "QUIT"),
        (
            "smtps",
            "220 mail.example.com ESMTP Postfix",
            "EHLO client.test",
            "QUIT",
        ),
    ];
    for (name, greeting, command, quit) in cases {
        let stream = client::connect(proxy.addr(name), &opts("mail.example.com"))
            .await
            .unwrap();
        let mut stream = BufReader::new(stream);
        assert_eq!(read_line(&mut stream).await.trim_end(), greeting, "{name}");
        send_line(stream.get_mut(), command).await;
        assert_eq!(
            read_line(&mut stream).await.trim_end(),
            format!("ECHO {command}"),
            "{name}"
        );
        send_line(stream.get_mut(), quit).await;
        assert_eq!(read_line(&mut stream).await.trim_end(), "BYE", "{name}");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(
            n.is_ok() && rest.is_empty(),
            "{name}: connection ends after BYE"
        );
    }
}

/// A client that shuts down its sending side still gets the backend's reply.
#[tokio::test(flavor = "multi_thread")]
async fn half_close_still_gets_the_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let smtp = Backend::start("220 ready", Expect::Plain).await;
    let config = format!(
        "{}{}",
        head(tmp.path(), &store, ""),
        listener("smtps", "smtps", smtp.addr, "")
    );
    let proxy = Proxy::start(tmp.path(), &config);
    let stream = client::connect(proxy.addr("smtps"), &opts("mail.example.com"))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "220 ready\r\n");
    stream
        .get_mut()
        .write_all(b"DATA LINE 1\r\n")
        .await
        .unwrap();
    assert_eq!(read_line(&mut stream).await, "ECHO DATA LINE 1\r\n");
    // TLS close_notify + FIN: the client is done sending, not done listening.
    stream.get_mut().shutdown().await.unwrap();
    assert_eq!(read_line(&mut stream).await, "EOF after 13 bytes\r\n");
}

/// PROXY v1 and v2 headers arrive at the backend with the client's address, and v2 carries
/// the negotiated ALPN, the SNI and the TLS version; a route can override the listener's.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_protocol_headers_as_received() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let v1 = Backend::start("* OK v1", Expect::ProxyV1).await;
    let v2 = Backend::start("* OK v2", Expect::ProxyV2).await;
    let config = format!(
        "{}{}{}[[route]]\nsni = \"*.routed.test\"\nlistener = \"imaps-v2\"\nbackend = \"{}\"\nproxy_protocol = \"v1\"\n",
        head(tmp.path(), &store, ""),
        listener("imaps-v1", "imaps", v1.addr, "proxy_protocol = \"v1\""),
        listener("imaps-v2", "imaps", v2.addr, "proxy_protocol = \"v2\"\nalpn = [\"imap\"]"),
        v1.addr,
    );
    let proxy = Proxy::start(tmp.path(), &config);

    let stream = client::connect(proxy.addr("imaps-v1"), &opts("mail.example.com"))
        .await
        .unwrap();
    let local = stream.get_ref().0.local_addr().unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK v1\r\n");
    let expected = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
        local.port(),
        proxy.addr("imaps-v1").port()
    );
    assert_eq!(v1.headers.lock().unwrap()[0], expected.as_bytes());

    let mut o = opts("mail.example.com");
    o.alpn = vec![b"imap".to_vec()];
    let stream = client::connect(proxy.addr("imaps-v2"), &o).await.unwrap();
    let local = stream.get_ref().0.local_addr().unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK v2\r\n");
    let raw = v2.headers.lock().unwrap()[0].clone();
    let header = ppp::v2::Header::try_from(raw.as_slice()).unwrap();
    let want: ppp::v2::Addresses = (local, proxy.addr("imaps-v2")).into();
    assert_eq!(header.addresses, want);
    let tlvs: Vec<_> = header.tlvs().map(|t| t.unwrap()).collect();
    let tlv = |kind: ppp::v2::Type| {
        tlvs.iter()
            .find(|t| t.kind == kind as u8)
            .map(|t| t.value.to_vec())
    };
    assert_eq!(tlv(ppp::v2::Type::ALPN).unwrap(), b"imap");
    assert_eq!(tlv(ppp::v2::Type::Authority).unwrap(), b"mail.example.com");
    assert!(tlv(ppp::v2::Type::SSL).unwrap().ends_with(b"TLSv1.3"));

    // The route for *.routed.test sends to the v1 backend with a v1 header.
    let stream = client::connect(proxy.addr("imaps-v2"), &opts("x.routed.test"))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK v1\r\n");
    assert_eq!(v1.headers.lock().unwrap().len(), 2);
}

/// A dead backend closes that client with a protocol-level error; other clients and
/// listeners are untouched.
#[tokio::test(flavor = "multi_thread")]
async fn dead_backend_closes_only_that_client() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let alive = Backend::start("* OK alive", Expect::Plain).await;
    let dead = backend::dead_address().await;
    let config = format!(
        "{}{}{}",
        head(tmp.path(), &store, ""),
        listener("alive", "imaps", alive.addr, ""),
        listener("dead", "imaps", dead, "")
    );
    let proxy = Proxy::start(tmp.path(), &config);
    let open = client::connect(proxy.addr("alive"), &opts("a.test"))
        .await
        .unwrap();
    let mut open = BufReader::new(open);
    assert_eq!(read_line(&mut open).await, "* OK alive\r\n");

    let stream = client::connect(proxy.addr("dead"), &opts("a.test"))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    assert!(read_line(&mut stream)
        .await
        .starts_with("* BYE [UNAVAILABLE]"));

    send_line(open.get_mut(), "a1 NOOP").await;
    assert_eq!(read_line(&mut open).await, "ECHO a1 NOOP\r\n");
}

/// The https listener offers only http/1.1 by default: a browser offering h2 first still
/// gets http/1.1, and a client offering only h2 is refused instead of speaking HTTP/2 to
/// an HTTP/1.1 backend.
#[tokio::test(flavor = "multi_thread")]
async fn https_alpn_defaults_to_http11() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _http) = common::webmail_proxy(tmp.path()).await;
    let mut o = opts("webmail.example.net");
    o.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut stream = client::connect(proxy.addr("https"), &o).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: webmail.example.net\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(
        body.starts_with("HTTP/1.1 200 OK") && body.ends_with("ok\n"),
        "{body}"
    );
    o.alpn = vec![b"h2".to_vec()];
    let err = client::connect(proxy.addr("https"), &o).await.unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
}

/// Megabytes each way arrive whole and in order while the client stops reading for a
/// while: the relay holds back (the backend's and then the client's sends block) and
/// resumes, with the bytes it could not write kept until they are taken.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_both_ways_with_a_stalled_reader() {
    const SIZE: usize = 8 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        s.write_all(b"* OK echo\r\n").await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let config = format!(
        "{}{}",
        head(tmp.path(), &store, ""),
        listener("imaps", "imaps", echo_addr, "")
    );
    let proxy = Proxy::start(tmp.path(), &config);
    let stream = client::connect(proxy.addr("imaps"), &opts("mail.example.com"))
        .await
        .unwrap();
    let (mut read, mut write) = tokio::io::split(stream);
    let sent: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let expected = sent.clone();
    let sender = async move {
        for chunk in sent.chunks(50_000) {
            write.write_all(chunk).await.unwrap();
        }
        write.flush().await.unwrap();
        write.shutdown().await.unwrap();
        write
    };
    let receiver = async move {
        let mut greeting = [0u8; 11];
        read.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"* OK echo\r\n");
        // Stop reading long enough for every buffer on the way to fill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut got = Vec::with_capacity(SIZE);
        read.read_to_end(&mut got).await.unwrap();
        got
    };
    let moved = async { tokio::join!(sender, receiver) };
    let (_, got) = tokio::time::timeout(Duration::from_secs(60), moved)
        .await
        .expect("8 MiB each way within 60 s");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the echo arrives unchanged");
}
