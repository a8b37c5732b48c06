//! The admin interface with real clients: curl for every endpoint, with and without the
//! token; promtool on the exposition; the counters moving as handshakes of each kind
//! happen; the names served the server-wide certificate.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::client::{self, names_for};
use common::{head, listener, store_dir, KeyKind, Pki, Proxy};

/// A proxy with one `imaps` listener over a store with an exact and a wildcard entry, and
/// `[admin]` as given.
async fn proxy_with_admin(root: &Path, admin: &str) -> (Proxy, Backend) {
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(&store, "mail", &["mail.example.com"], KeyKind::Ecdsa);
    pki.write_pair(&store, "wild", &["*.example.org"], KeyKind::Ecdsa);
    let imap = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}{}[admin]\n{admin}\n",
        head(root, &store, ""),
        listener("imaps", "imaps", imap.addr, "")
    );
    (Proxy::start(root, &config), imap)
}

/// `curl` of `url` with `args`: the status code and the body.
async fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "--max-time", "10", "-w", "\n%{http_code}", url];
    all.extend(args);
    let run = client::run("curl", &all).await;
    assert_eq!(run.status, Some(0), "curl {url}: {}", run.stderr);
    let (body, code) = run.stdout.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.trim_end().to_owned())
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// The value of the sample `name{labels}` in an exposition.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_and_counters_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = proxy_with_admin(tmp.path(), "bind = \"127.0.0.1:0\"").await;
    let admin = proxy.admin.expect("the admin interface listens");
    let imaps = proxy.addr("imaps");

    assert_eq!(curl(&url(admin, "/healthz"), &[]).await, (200, "ok".into()));
    assert_eq!(
        curl(&url(admin, "/readyz"), &[]).await,
        (200, "ready".into())
    );
    let (code, _) = curl(&url(admin, "/nothing"), &[]).await;
    assert_eq!(code, 404);

    // One handshake of each kind.
    assert_eq!(
        names_for(imaps, Some("mail.example.com")).await,
        ["mail.example.com"]
    );
    assert_eq!(
        names_for(imaps, Some("a.example.org")).await,
        ["*.example.org"]
    );
    for _ in 0..3 {
        names_for(imaps, Some("nocert.customer.test")).await;
    }
    names_for(imaps, None).await;
    // Handshakes are counted when they end; the connections when they close.
    let (code, text) = curl(&url(admin, "/metrics"), &[]).await;
    assert_eq!(code, 200, "{text}");
    let hs = |kind: &str| {
        sample(
            &text,
            &format!("mailfront_handshakes_total{{listener=\"imaps\",match=\"{kind}\"}}"),
        )
    };
    assert_eq!(
        (hs("exact"), hs("wildcard"), hs("fallback"), hs("no-sni")),
        (1.0, 1.0, 3.0, 1.0)
    );
    assert_eq!(
        sample(
            &text,
            "mailfront_handshake_duration_seconds_count{listener=\"imaps\"}"
        ),
        6.0
    );
    assert_eq!(
        sample(&text, "mailfront_store_entries{state=\"serving\"}"),
        2.0
    );
    assert!(text.contains("mailfront_certificates_expiring{within=\"30d\"}"));
    assert!(!text.contains("# EOF"), "Prometheus' text format for curl");
    let accept = ["-H", "Accept: application/openmetrics-text;version=1.0.0"];
    let (_, om) = curl(&url(admin, "/metrics"), &accept).await;
    assert!(om.ends_with("# EOF"), "OpenMetrics when asked for: {om}");
    assert!(om.contains("# TYPE mailfront_handshakes counter"), "{om}");

    // The names served the server-wide certificate.
    let (code, body) = curl(&url(admin, "/api/v1/fallback-names"), &[]).await;
    assert_eq!(code, 200);
    let names: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &names["names"][0];
    assert_eq!(first["name"], "nocert.customer.test", "{body}");
    assert_eq!(
        (first["listener"].as_str(), first["count"].as_u64()),
        (Some("imaps"), Some(3))
    );

    // The report, as `mailfront certs --format json` prints it.
    let (code, body) = curl(&url(admin, "/api/v1/certs"), &[]).await;
    assert_eq!(code, 200);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entries: Vec<&str> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"].as_str().unwrap())
        .collect();
    assert_eq!(entries, ["mail.crt", "wild.crt"], "{body}");
    assert_eq!(report["server_wide"]["state"], "serving");
}

/// `promtool check metrics` (the Prometheus project's own linter) on the exposition.
#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_exposition() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = proxy_with_admin(
        tmp.path(),
        "bind = \"127.0.0.1:0\"\nper_certificate_metrics = true",
    )
    .await;
    let admin = proxy.admin.unwrap();
    names_for(proxy.addr("imaps"), Some("mail.example.com")).await;
    let (_, text) = curl(&url(admin, "/metrics"), &[]).await;
    assert!(text.contains("mailfront_certificate_not_after_seconds{entry=\"mail.crt\"}"));
    let file = tmp.path().join("metrics.txt");
    std::fs::write(&file, format!("{text}\n")).unwrap();
    let run = client::run(
        "sh",
        &[
            "-c",
            &format!("promtool check metrics < {}", file.display()),
        ],
    )
    .await;
    assert_eq!(run.status, Some(0), "{}{}", run.stdout, run.stderr);
}

/// With a token every request but `/healthz` needs it, as a bearer token or the page's
/// cookie; a wrong one is answered 401, and slowly.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_guards_everything_but_healthz() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let admin = format!(
        "bind = \"127.0.0.1:0\"\ntoken_file = \"{}\"",
        token.display()
    );
    let (proxy, _imap) = proxy_with_admin(tmp.path(), &admin).await;
    let admin = proxy.admin.unwrap();
    assert_eq!(curl(&url(admin, "/healthz"), &[]).await.0, 200);
    let started = std::time::Instant::now();
    for path in [
        "/metrics",
        "/readyz",
        "/api/v1/certs",
        "/api/v1/fallback-names",
    ] {
        let (code, _) = curl(&url(admin, path), &[]).await;
        assert_eq!(code, 401, "{path} without the token");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "each 401 waits a second"
    );
    let wrong = [
        "-H",
        "Authorization: Bearer 0123456789abcdef0123456789abcdeX",
    ];
    assert_eq!(curl(&url(admin, "/metrics"), &wrong).await.0, 401);
    let right = [
        "-H",
        "Authorization: Bearer 0123456789abcdef0123456789abcdef",
    ];
    assert_eq!(curl(&url(admin, "/metrics"), &right).await.0, 200);
    let cookie = ["-b", "mailfront_admin=0123456789abcdef0123456789abcdef"];
    assert_eq!(curl(&url(admin, "/api/v1/certs"), &cookie).await.0, 200);
}

/// On an address other than loopback the interface speaks HTTPS with the server-wide
/// certificate (the test binds every address and connects through loopback).
#[tokio::test(flavor = "multi_thread")]
async fn https_off_loopback_with_the_server_wide_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let admin = format!("bind = \"0.0.0.0:0\"\ntoken_file = \"{}\"", token.display());
    let (proxy, _imap) = proxy_with_admin(tmp.path(), &admin).await;
    let port = proxy.admin.unwrap().port();
    let ca = tmp.path().join("ca.pem");
    let url = format!("https://server.com:{port}/healthz");
    let resolve = format!("server.com:{port}:127.0.0.1");
    let (code, body) = curl(
        &url,
        &["--cacert", ca.to_str().unwrap(), "--resolve", &resolve],
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let plain = client::run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/healthz"),
        ],
    )
    .await;
    assert_ne!(plain.status, Some(0), "no plain HTTP off loopback");
}
