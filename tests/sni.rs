//! Certificate choice by SNI, as clients see it.

mod common;

use std::path::Path;

use common::backend::{Backend, Expect};
use common::client::{self, Opts};
use common::{head, listener, store_dir, KeyKind, Pki, Proxy};
use rustls::SignatureScheme;

/// A store with an exact name, a wildcard, and a name with both ECDSA and RSA certificates.
async fn setup(root: &Path, strict: bool) -> (Pki, Proxy, Backend) {
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(
        &store,
        "mail.example.com",
        &["mail.example.com"],
        KeyKind::Ecdsa,
    );
    pki.write_single(
        &store,
        "wild.example.org",
        &["*.example.org"],
        KeyKind::Ecdsa,
    );
    pki.write_pair(
        &store,
        "exact.example.org",
        &["exact.example.org"],
        KeyKind::Ecdsa,
    );
    pki.write_pair(&store, "dual-ecdsa", &["dual.example.net"], KeyKind::Ecdsa);
    pki.write_pair(&store, "dual-rsa", &["dual.example.net"], KeyKind::Rsa);
    let backend = Backend::start("* OK ready", Expect::Plain).await;
    let strict = if strict { "strict_sni = true" } else { "" };
    let config = format!(
        "{}{}{}",
        head(root, &store, ""),
        listener("imaps", "imaps", backend.addr, ""),
        listener("strict", "imaps", backend.addr, strict)
    );
    let proxy = Proxy::start(root, &config);
    (pki, proxy, backend)
}

/// Exact names, one-label wildcards, and everything else going to the server-wide cert.
#[tokio::test(flavor = "multi_thread")]
async fn exact_wildcard_and_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _backend) = setup(tmp.path(), false).await;
    let addr = proxy.addr("imaps");
    let names = |sni| client::names_for(addr, sni);
    assert_eq!(names(Some("mail.example.com")).await, ["mail.example.com"]);
    assert_eq!(names(Some("x.example.org")).await, ["*.example.org"]);
    // An exact name beats the wildcard that also covers it.
    assert_eq!(
        names(Some("exact.example.org")).await,
        ["exact.example.org"]
    );
    // RFC 6125: the wildcard covers one label only.
    assert_eq!(names(Some("example.org")).await, ["server.com"]);
    assert_eq!(names(Some("a.b.example.org")).await, ["server.com"]);
    // Unknown name and no SNI: the server-wide certificate.
    assert_eq!(names(Some("mail.unknown.test")).await, ["server.com"]);
    assert_eq!(names(None).await, ["server.com"]);
}

/// ECDSA is served to clients that accept it; RSA-only clients get the RSA certificate.
#[tokio::test(flavor = "multi_thread")]
async fn ecdsa_first_rsa_for_rsa_only_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _backend) = setup(tmp.path(), false).await;
    let addr = proxy.addr("imaps");
    let mut opts = Opts {
        sni: Some("dual.example.net".into()),
        ..Opts::default()
    };
    let stream = client::connect(addr, &opts).await.unwrap();
    assert_eq!(client::served_key(&stream), "ECDSA");
    opts.schemes = Some(vec![
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]);
    let stream = client::connect(addr, &opts).await.unwrap();
    assert_eq!(client::served_key(&stream), "RSA");
    assert_eq!(client::served_names(&stream), ["dual.example.net"]);
}

/// A verifying rustls client sees the "mail.example.com vs server.com" name mismatch.
#[tokio::test(flavor = "multi_thread")]
async fn verifying_rustls_client_reports_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, proxy, _backend) = setup(tmp.path(), false).await;
    let addr = proxy.addr("imaps");
    let verify = |sni: &str| Opts {
        sni: Some(sni.into()),
        ca: Some(pki.ca_file()),
        ..Opts::default()
    };
    client::connect(addr, &verify("mail.example.com"))
        .await
        .expect("a covered name verifies");
    let err = client::connect(addr, &verify("mail.customer.test"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

/// `openssl s_client -verify_hostname` reports the mismatch; case and a trailing dot do
/// not matter; an IP literal in SNI counts as no SNI.
#[tokio::test(flavor = "multi_thread")]
async fn openssl_s_client_sees_mismatch_and_normalised_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, proxy, _backend) = setup(tmp.path(), false).await;
    let addr = proxy.addr("imaps");
    let ca = pki.ca_file();

    let good = client::s_client(addr, Some("mail.example.com"), &ca).await;
    assert!(good.stderr.contains("Verification: OK"), "{}", good.stderr);

    let bad = client::s_client(addr, Some("mail.customer.test"), &ca).await;
    assert!(bad.stderr.contains("hostname mismatch"), "{}", bad.stderr);
    assert!(bad.stderr.contains("CN = server.com"), "{}", bad.stderr);

    let upper = client::s_client(addr, Some("MAIL.Example.COM"), &ca).await;
    assert!(
        upper.stderr.contains("CN = mail.example.com"),
        "{}",
        upper.stderr
    );

    let dot = client::run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "mail.example.com.",
            "-brief",
        ],
    )
    .await;
    assert!(
        dot.stderr.contains("CN = mail.example.com"),
        "{}",
        dot.stderr
    );

    let ip = client::run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "127.0.0.1",
            "-brief",
        ],
    )
    .await;
    assert!(ip.stderr.contains("CN = server.com"), "{}", ip.stderr);
}

/// A strict listener answers unknown names (and no SNI) with `unrecognized_name`, and
/// still serves the names it has, including the server-wide certificate's own.
#[tokio::test(flavor = "multi_thread")]
async fn strict_sni_refuses_unknown_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, proxy, _backend) = setup(tmp.path(), true).await;
    let addr = proxy.addr("strict");
    assert_eq!(
        client::names_for(addr, Some("mail.example.com")).await,
        ["mail.example.com"]
    );
    assert_eq!(
        client::names_for(addr, Some("server.com")).await,
        ["server.com"]
    );
    let opts = Opts {
        sni: Some("mail.unknown.test".into()),
        ..Opts::default()
    };
    let err = client::connect(addr, &opts).await.unwrap_err();
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
    let err = client::connect(addr, &Opts::default()).await.unwrap_err();
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
    let out = client::run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "nope.test",
            "-brief",
        ],
    )
    .await;
    assert!(out.stderr.contains("unrecognized name"), "{}", out.stderr);
}

/// `curl` over https verifies a covered name and reports the mismatch for an uncovered one.
#[tokio::test(flavor = "multi_thread")]
async fn curl_verifies_and_reports_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, proxy, _http) = common::webmail_proxy(tmp.path()).await;
    let port = proxy.addr("https").port();
    let ca = pki.ca_file().display().to_string();
    let curl = |name: &'static str| {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/");
        let ca = ca.clone();
        async move {
            client::run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "5",
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    &url,
                ],
            )
            .await
        }
    };
    let ok = curl("webmail.example.net").await;
    assert_eq!(ok.status, Some(0), "{}", ok.stderr);
    assert_eq!(ok.stdout, "ok\n");
    let bad = curl("mail.customer.test").await;
    assert_eq!(bad.status, Some(60), "{}", bad.stderr);
    assert!(bad.stderr.contains("mail.customer.test"), "{}", bad.stderr);
}
