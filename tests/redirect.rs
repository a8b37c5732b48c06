//! The port-80 listener's redirect to https, against request-targets built to send the
//! browser elsewhere: only a path is appended to `https://HOST`.

mod common;

use std::time::Duration;

use common::backend::{Backend, Expect};
use common::{head, listener, store_dir, Pki, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` raw to `addr` and reads the whole answer (the listener closes after it).
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tcp.read_to_end(&mut answer);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A path is redirected to the same host and path over https; a target that is not a
/// path (`@evil.example/`, an absolute URL, `*`) is answered 400 without a `location`.
#[tokio::test(flavor = "multi_thread")]
async fn the_redirect_keeps_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    Pki::new(root);
    let store = store_dir(root);
    let imap = Backend::start("* OK", Expect::Plain).await;
    let http = "[[listener]]\nname = \"http\"\nbind = [\"127.0.0.1:0\"]\nprotocol = \"http\"\n";
    let config = format!(
        "{}{}{http}",
        head(root, &store, ""),
        listener("imaps", "imaps", imap.addr, "")
    );
    let proxy = Proxy::start(root, &config);
    let addr = proxy.addr("http");

    let answer = raw(
        addr,
        "GET /inbox?f=1 HTTP/1.1\r\nHost: mail.alpha.test\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer.contains("location: https://mail.alpha.test/inbox?f=1\r\n"),
        "{answer}"
    );
    for target in [
        "@evil.example/",
        "http://evil.example/",
        "*",
        "evil.example",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: mail.alpha.test\r\n\r\n");
        let answer = raw(addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("location:"),
            "{target}: {answer}"
        );
    }
}
