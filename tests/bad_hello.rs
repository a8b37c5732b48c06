//! Hostile and broken ClientHellos, written byte by byte: each gets an alert or a close,
//! never a panic, and the proxy goes on serving everyone else.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::client::{self, read_line, Opts};
use common::{head, listener, store_dir, KeyKind, Pki, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The SNI extension's body: a list of `(type, name)` entries.
fn sni(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(0); // host_name
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut body = (list.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&list);
    body
}

fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A TLS 1.3 ClientHello handshake message (not yet in records): X25519 only, ECDSA and
/// RSA-PSS signatures, the SNI extension body `sni` if any, and `padding` bytes of the
/// padding extension.
fn client_hello(sni_body: Option<Vec<u8>>, padding: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(body) = sni_body {
        exts.extend(extension(0x0000, &body));
    }
    exts.extend(extension(0x000a, &[0, 2, 0x00, 0x1d])); // supported_groups: x25519
    exts.extend(extension(0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04])); // signature_algorithms
    exts.extend(extension(0x002b, &[2, 0x03, 0x04])); // supported_versions: TLS 1.3
    let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
    share.extend_from_slice(&[9u8; 32]); // any 32 bytes are an X25519 public key
    exts.extend(extension(0x0033, &share)); // key_share
    if padding > 0 {
        exts.extend(extension(0x0015, &vec![0u8; padding]));
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(32);
    body.extend_from_slice(&[5u8; 32]); // legacy session id
    body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut message = vec![0x01];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    message
}

/// `message` cut into handshake records of at most `max` bytes.
fn records(message: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in message.chunks(max) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// What the proxy answered.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A handshake record: the hello was taken (ServerHello).
    ServerHello,
    /// An alert record, with its description code.
    Alert(u8),
    /// Closed without a byte.
    Closed,
}

/// Sends `bytes` in `segments` TCP writes a little apart, then reads the first record.
async fn send(addr: SocketAddr, bytes: &[u8], segments: usize, then_close: bool) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let size = bytes.len().div_ceil(segments.max(1));
    for part in bytes.chunks(size.max(1)) {
        // A peer that already answered (an alert) and closed may refuse the rest.
        if tcp.write_all(part).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if then_close {
        let _ = tcp.shutdown().await;
    }
    let mut head = [0u8; 7];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut got = 0;
        while got < head.len() {
            match tcp.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    })
    .await
    .expect("the proxy answers or closes within 5 s");
    match (read, head[0]) {
        (0, _) => Answer::Closed,
        (n, 0x16) if n >= 5 => Answer::ServerHello,
        (7, 0x15) => Answer::Alert(head[6]),
        other => panic!("unexpected answer {other:?}: {head:?}"),
    }
}

async fn setup(root: &std::path::Path) -> (Pki, Proxy, Backend) {
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(&store, "mail", &["mail.example.com"], KeyKind::Ecdsa);
    let backend = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}{}",
        head(root, &store, ""),
        listener("imaps", "imaps", backend.addr, "")
    );
    (pki, Proxy::start(root, &config), backend)
}

/// A normal client is still served.
async fn still_serves(addr: SocketAddr) {
    let opts = Opts {
        sni: Some("mail.example.com".into()),
        ..Opts::default()
    };
    let stream = client::connect(addr, &opts).await.unwrap();
    let mut stream = BufReader::new(stream);
    assert_eq!(read_line(&mut stream).await, "* OK\r\n");
}

const DECODE_ERROR: u8 = 50;
const ILLEGAL_PARAMETER: u8 = 47;

#[tokio::test(flavor = "multi_thread")]
async fn hellos_that_are_fine_however_they_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = setup(tmp.path()).await;
    let addr = proxy.addr("imaps");
    let good = client_hello(Some(sni(&[b"mail.example.com"])), 0);
    // The baseline, in one record and one write.
    assert_eq!(
        send(addr, &records(&good, 16384), 1, false).await,
        Answer::ServerHello
    );
    // One byte per record, over many TCP segments.
    assert_eq!(
        send(addr, &records(&good, 1), 8, false).await,
        Answer::ServerHello
    );
    // Over 16 KB (a padded hello), across two records and several segments.
    let big = client_hello(Some(sni(&[b"mail.example.com"])), 20_000);
    assert!(big.len() > 16_384);
    assert_eq!(
        send(addr, &records(&big, 16384), 5, false).await,
        Answer::ServerHello
    );
    // An IP literal is not a name (RFC 6066): treated as no SNI, served the server-wide
    // certificate.
    let ip = client_hello(Some(sni(&[b"127.0.0.1"])), 0);
    assert_eq!(
        send(addr, &records(&ip, 16384), 1, false).await,
        Answer::ServerHello
    );
    still_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_hellos_get_an_alert_or_a_close() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _b) = setup(tmp.path()).await;
    let addr = proxy.addr("imaps");
    let good = records(&client_hello(Some(sni(&[b"mail.example.com"])), 0), 16384);
    // Cut short, then the client leaves: nothing to answer.
    assert_eq!(
        send(addr, &good[..good.len() / 2], 1, true).await,
        Answer::Closed
    );
    // Cut short in the record header.
    assert_eq!(send(addr, &good[..3], 1, true).await, Answer::Closed);
    // Not TLS at all.
    let http = b"GET / HTTP/1.1\r\nHost: mail.example.com\r\n\r\n";
    assert!(matches!(
        send(addr, http, 1, false).await,
        Answer::Alert(_) | Answer::Closed
    ));
    // Random bytes shaped like a handshake record: they may claim a longer message, which
    // is waited for until the handshake deadline (2 s here), or fail to parse at once.
    let noise: Vec<u8> = (0..256u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut garbage = vec![0x16, 0x03, 0x01, 0x01, 0x00];
    garbage.extend_from_slice(&noise);
    assert!(matches!(
        send(addr, &garbage, 1, false).await,
        Answer::Alert(_) | Answer::Closed
    ));
    // A ClientHello of the right length whose body is noise.
    let mut hello = vec![0x01, 0x00, 0x00, 252];
    hello.extend_from_slice(&noise[..252]);
    assert_eq!(
        send(addr, &records(&hello, 16384), 1, false).await,
        Answer::Alert(DECODE_ERROR)
    );
    // A record longer than TLS allows.
    let mut oversized = vec![0x16, 0x03, 0x01, 0x48, 0x01];
    oversized.extend(std::iter::repeat_n(0u8, 64));
    assert!(matches!(
        send(addr, &oversized, 1, false).await,
        Answer::Alert(_) | Answer::Closed
    ));
    // A handshake message claiming more than rustls buffers (16 MB).
    let mut huge = vec![0x01, 0xff, 0xff, 0xff];
    huge.extend(std::iter::repeat_n(0u8, 100));
    assert!(matches!(
        send(addr, &records(&huge, 16384), 1, false).await,
        Answer::Alert(_) | Answer::Closed
    ));
    // Malformed names: refused with the alert RFC 6066 and RFC 8446 call for; a trailing
    // dot is the same name (served like it).
    for (label, names, want) in [
        ("empty name", vec![&b""[..]], Answer::Alert(DECODE_ERROR)),
        (
            "NUL in the name",
            vec![&b"mail\0.example.com"[..]],
            Answer::Alert(ILLEGAL_PARAMETER),
        ),
        (
            "control bytes",
            vec![&b"mail\x07\x1b.example.com"[..]],
            Answer::Alert(ILLEGAL_PARAMETER),
        ),
        (
            "two names",
            vec![&b"mail.example.com"[..], &b"other.example.com"[..]],
            Answer::Alert(DECODE_ERROR),
        ),
        (
            "a dot only",
            vec![&b"."[..]],
            Answer::Alert(ILLEGAL_PARAMETER),
        ),
        (
            "a trailing dot",
            vec![&b"mail.example.com."[..]],
            Answer::ServerHello,
        ),
    ] {
        let hello = records(&client_hello(Some(sni(&names)), 0), 16384);
        assert_eq!(send(addr, &hello, 1, false).await, want, "{label}");
    }
    // An SNI extension whose lengths lie.
    let mut lying = sni(&[b"mail.example.com"]);
    lying[1] = lying[1].wrapping_add(9);
    let hello = records(&client_hello(Some(lying), 0), 16384);
    assert_eq!(
        send(addr, &hello, 1, false).await,
        Answer::Alert(DECODE_ERROR)
    );
    still_serves(addr).await;
}
