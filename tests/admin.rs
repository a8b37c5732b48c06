//! The admin interface with real clients: curl for every endpoint, with and without the
//! token; promtool on the exposition; the counters moving as handshakes of each kind
//! happen; the names served the server-wide certificate.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::chains::ChainPki;
use common::client::{self, names_for, served_der};
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

/// The `Origin` header of a page of the interface at `addr`, which every request that
/// changes something carries (as a browser's do) unless it has the bearer token.
fn same_origin(addr: SocketAddr) -> String {
    format!("Origin: http://{addr}")
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

/// The two ways a handshake gives no session: a strict listener's refusal of a name
/// nothing covers (also in the names report), and a client that is not speaking TLS.
#[tokio::test(flavor = "multi_thread")]
async fn strict_refusals_and_failed_handshakes_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(&store, "mail", &["mail.example.com"], KeyKind::Ecdsa);
    let imap = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}{}[admin]\nbind = \"127.0.0.1:0\"\n",
        head(root, &store, ""),
        listener("imaps", "imaps", imap.addr, "strict_sni = true")
    );
    let proxy = Proxy::start(root, &config);
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let opts = client::Opts {
        sni: Some("unknown.customer.test".into()),
        ..client::Opts::default()
    };
    assert!(client::connect(imaps, &opts).await.is_err(), "refused");
    let mut plain = tokio::net::TcpStream::connect(imaps).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
        .await
        .unwrap();
    let _ = plain.read(&mut [0u8; 64]).await;
    drop(plain);
    let counted = |text: &str, kind: &str| {
        let sample = format!("mailfront_handshakes_total{{listener=\"imaps\",match=\"{kind}\"}}");
        text.lines().any(|l| l == format!("{sample} 1"))
    };
    let mut text = String::new();
    for _ in 0..50 {
        text = curl(&url(admin, "/metrics"), &[]).await.1;
        if counted(&text, "strict-refused") && counted(&text, "failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        counted(&text, "strict-refused") && counted(&text, "failed"),
        "{text}"
    );
    assert!(
        text.contains("mailfront_connections_total{listener=\"imaps\",outcome=\"strict-sni\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "mailfront_connections_total{listener=\"imaps\",outcome=\"handshake-failed\"} 1"
        ),
        "{text}"
    );
    let (_, names) = curl(&url(admin, "/api/v1/fallback-names"), &[]).await;
    assert!(names.contains("unknown.customer.test"), "{names}");
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

/// With a token every request but `/healthz` and `/readyz` (an orchestrator's probes)
/// needs it, as a bearer token or the session the page's sign-in opens; a wrong one is
/// answered 401, and slowly. The session's cookie is a random id, never the token: the
/// token given as the cookie is refused, and signing out ends the session.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_guards_everything_but_the_probes() {
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
    assert_eq!(curl(&url(admin, "/readyz"), &[]).await.0, 200);
    let started = std::time::Instant::now();
    for path in ["/metrics", "/", "/api/v1/certs", "/api/v1/fallback-names"] {
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

    // A stranger's body is not read past 16 KiB (a sign-in form's): no megabyte held.
    let big = tmp.path().join("big.json");
    std::fs::write(&big, vec![b' '; 100_000]).unwrap();
    let data = format!("@{}", big.display());
    let origin = same_origin(admin);
    let put = ["-X", "PUT", "-H", &origin, "--data-binary", &data];
    assert_eq!(
        curl(&url(admin, "/api/v1/certs/a.example.com"), &put)
            .await
            .0,
        413
    );

    // The page's sign-in: a session id in the cookie, not the token.
    let origin = same_origin(admin);
    let token = "0123456789abcdef0123456789abcdef";
    let jar = tmp.path().join("cookies.txt");
    let jar = jar.to_str().unwrap();
    let form = format!("token={token}");
    let sign_in = ["-H", &origin, "-c", jar, "--data", &form];
    let (code, _) = curl(&url(admin, "/login"), &sign_in).await;
    assert_eq!(code, 303, "signed in, sent to the page");
    let cookies = std::fs::read_to_string(jar).unwrap();
    let line = cookies
        .lines()
        .find(|l| l.contains("mailfront_session"))
        .unwrap();
    assert!(line.starts_with("#HttpOnly_"), "HttpOnly: {line}");
    let id = line.split('\t').next_back().unwrap();
    assert_eq!(id.len(), 64, "a random id: {line}");
    assert!(
        !cookies.contains(token),
        "the token is not in the cookie: {cookies}"
    );
    let with_jar = ["-b", jar];
    assert_eq!(curl(&url(admin, "/api/v1/certs"), &with_jar).await.0, 200);
    let made_up = format!("mailfront_session={token}");
    let made_up = ["-b", made_up.as_str()];
    assert_eq!(
        curl(&url(admin, "/api/v1/certs"), &made_up).await.0,
        401,
        "the token is no session"
    );
    let old_cookie = format!("mailfront_admin={token}");
    let old_cookie = ["-b", old_cookie.as_str()];
    assert_eq!(
        curl(&url(admin, "/api/v1/certs"), &old_cookie).await.0,
        401,
        "nor the old cookie"
    );
    let sign_out = ["-H", &origin, "-b", jar, "-X", "POST"];
    assert_eq!(curl(&url(admin, "/logout"), &sign_out).await.0, 303);
    assert_eq!(
        curl(&url(admin, "/api/v1/certs"), &with_jar).await.0,
        401,
        "the session ended"
    );
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

/// A proxy whose store judges chains by `chains`' root, with the admin interface on
/// loopback; also the store directory.
async fn upload_proxy(root: &Path, chains: &ChainPki) -> (Proxy, Backend, std::path::PathBuf) {
    Pki::new(root);
    let store = store_dir(root);
    let imap = Backend::start("* OK", Expect::Plain).await;
    // The intermediate's CRL revokes serial 99.
    let crls = root.join("crls");
    std::fs::create_dir_all(&crls).unwrap();
    std::fs::write(
        crls.join("inter.crl"),
        chains.crl_revoking(99).pem().unwrap(),
    )
    .unwrap();
    let config = format!(
        "{}ca_bundle = \"{}\"\ncrl_dir = \"{}\"\n\n{}[admin]\nbind = \"127.0.0.1:0\"\n",
        head(root, &store, ""),
        chains.path("root.pem").display(),
        crls.display(),
        listener("imaps", "imaps", imap.addr, "")
    );
    (Proxy::start(root, &config), imap, store)
}

/// PUTs `body` (a JSON file) to `/api/v1/certs/{name}`.
async fn put_json(
    admin: SocketAddr,
    name: &str,
    body: &serde_json::Value,
    dir: &Path,
) -> (u16, String) {
    let file = dir.join("upload.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let data = format!("@{}", file.display());
    let origin = same_origin(admin);
    let args = [
        "-X",
        "PUT",
        "-H",
        &origin,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
    ];
    curl(&url(admin, &format!("/api/v1/certs/{name}")), &args).await
}

/// Uploads run the checks with the name: a good one is written (one file, mode 0600) and
/// served by the next handshake, in JSON or as a form with the files in any order; each
/// broken case is refused with its code and the version serving stays; entries of other
/// tools are not touched; DELETE removes only what an upload wrote.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_checked_written_and_served() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let chains = ChainPki::new();
    let (proxy, _imap, store) = upload_proxy(root, &chains).await;
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let name = "mail.example.net";

    let v1 = chains.leaf_with(&[name], (-1, 200), 11);
    let body = serde_json::json!({ "certificate": chains.fullchain(&v1), "key": v1.key });
    let (code, answer) = put_json(admin, name, &body, root).await;
    assert_eq!(code, 201, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["entry"]["entry"], "mail.example.net.pem", "{answer}");
    assert_eq!(answer["entry"]["state"], "serving");
    assert_eq!(
        answer["entry"]["codes"],
        serde_json::json!([]),
        "written as the store likes it"
    );
    let der = |leaf: &common::chains::Leaf| common::pki::first_der(leaf.cert.as_bytes());
    assert_eq!(
        served_der(imaps, name).await.unwrap(),
        der(&v1),
        "served at once"
    );
    let file = store.join("mail.example.net.pem");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A form, the key first and the chain in its own file, as a panel's upload.
    let v2 = chains.leaf_with(&[name], (-1, 250), 12);
    let key = chains.write("v2.key", &v2.key);
    let cert = chains.write("v2.crt", &v2.cert);
    let inter = chains.path("inter.pem");
    let form = [
        "-X".to_owned(),
        "PUT".to_owned(),
        "-H".to_owned(),
        same_origin(admin),
        "-F".to_owned(),
        format!("key=@{}", key.display()),
        "-F".to_owned(),
        format!("chain=@{}", inter.display()),
        "-F".to_owned(),
        format!("certificate=@{}", cert.display()),
    ];
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    let (code, answer) = curl(&url(admin, &format!("/api/v1/certs/{name}")), &form).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(served_der(imaps, name).await.unwrap(), der(&v2));
    let written = std::fs::read(&file).unwrap();

    // Each broken case: refused with its code, nothing written, v2 still served.
    let other = chains.leaf(&[name]);
    let expired = chains.leaf_with(&[name], (-300, -1), 13);
    let early = chains.leaf_with(&[name], (5, 300), 14);
    let wrong_name = chains.leaf(&["other.example.net"]);
    let revoked = chains.leaf_with(&[name], (-1, 300), 99);
    let v3 = chains.leaf_with(&[name], (-1, 300), 15);
    common::chains::openssl(
        chains.tmp.path(),
        &[
            "pkey",
            "-in",
            "v2.key",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            "v2.enc",
        ],
    );
    let encrypted = std::fs::read_to_string(chains.path("v2.enc")).unwrap();
    // SHA-1 and 1024-bit RSA, which rcgen does not make: the fixtures' openssl helpers
    // (for other names, so name-mismatch comes with them; the code looked for is there).
    let dir = chains.tmp.path();
    common::chains::sha1_leaf(dir);
    common::chains::weak_rsa(dir);
    let read = |name: &str| std::fs::read_to_string(chains.path(name)).unwrap();
    let weak = (read("sha1.crt"), read("sha1.key"));
    let small = (read("weak.crt"), read("weak.key"));
    let cases = [
        (
            "key-mismatch",
            chains.fullchain(&v3),
            Some(other.key.clone()),
        ),
        (
            "expired",
            chains.fullchain(&expired),
            Some(expired.key.clone()),
        ),
        (
            "not-yet-valid",
            chains.fullchain(&early),
            Some(early.key.clone()),
        ),
        (
            "name-mismatch",
            chains.fullchain(&wrong_name),
            Some(wrong_name.key.clone()),
        ),
        ("chain-incomplete", v3.cert.clone(), Some(v3.key.clone())),
        ("no-key", chains.fullchain(&v3), None),
        ("encrypted-key", chains.fullchain(&v2), Some(encrypted)),
        ("no-certificate", "hello".to_owned(), Some(v3.key.clone())),
        ("weak-signature", weak.0.clone(), Some(weak.1.clone())),
        ("weak-key", small.0.clone(), Some(small.1.clone())),
        (
            "revoked",
            chains.fullchain(&revoked),
            Some(revoked.key.clone()),
        ),
        (
            "not-one-leaf",
            format!("{}{}", v3.cert, chains.fullchain(&expired)),
            Some(wrong_name.key.clone()),
        ),
    ];
    for (want, certificate, key) in cases {
        let body = serde_json::json!({ "certificate": certificate, "key": key });
        let (code, answer) = put_json(admin, name, &body, root).await;
        assert_eq!(code, 422, "{want}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let codes: Vec<&str> = answer["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&want), "{want}: {codes:?}");
        let first = &answer["findings"][0];
        assert!(
            first["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{first}"
        );
        assert!(
            !first["message"].as_str().unwrap().contains("part-"),
            "{first}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            written,
            "{want}: nothing written"
        );
        assert_eq!(served_der(imaps, name).await.unwrap(), der(&v2), "{want}");
    }

    // Other tools' entries: not replaced.
    std::fs::create_dir_all(store.join("certbot.example.net")).unwrap();
    let body = serde_json::json!({ "certificate": chains.fullchain(&v3), "key": v3.key });
    assert_eq!(
        put_json(admin, "certbot.example.net", &body, root).await.0,
        409
    );
    std::fs::write(store.join("hand.example.net.crt"), &v3.cert).unwrap();
    assert_eq!(
        put_json(admin, "hand.example.net", &body, root).await.0,
        409
    );
    std::fs::write(store.join("pem.example.net.pem"), "").unwrap();
    let origin = same_origin(admin);
    let delete = ["-X", "DELETE", "-H", &origin];
    let (code, _) = curl(&url(admin, "/api/v1/certs/pem.example.net"), &delete).await;
    assert_eq!(code, 409, "not written by the admin interface");
    assert_eq!(
        curl(&url(admin, "/api/v1/certs/*.example.net"), &delete)
            .await
            .0,
        400
    );

    // DELETE: gone, and the name falls back to the server-wide certificate.
    let (code, answer) = curl(&url(admin, &format!("/api/v1/certs/{name}")), &delete).await;
    assert_eq!(code, 204, "{answer}");
    assert!(!file.exists());
    assert_eq!(names_for(imaps, Some(name)).await, ["server.com"]);
    assert_eq!(
        curl(&url(admin, &format!("/api/v1/certs/{name}")), &delete)
            .await
            .0,
        404
    );
}

/// Headless Chromium (Debian's `chromium`) loading `url`: the DOM it built.
async fn chromium_dom(url: &str, profile: &Path) -> String {
    let profile = format!("--user-data-dir={}", profile.display());
    let run = client::run(
        "chromium",
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &profile,
            "--dump-dom",
            url,
        ],
    )
    .await;
    assert_eq!(run.status, Some(0), "chromium: {}", run.stderr);
    run.stdout
}

/// The page: the form's upload installs a certificate and the page shows its row; a
/// refused one shows each finding with its fix and installs nothing; a post from another
/// site is refused; a real browser renders the table, the search and the names served the
/// server-wide certificate.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_uploads_and_shows_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let chains = ChainPki::new();
    let (proxy, _imap, store) = upload_proxy(root, &chains).await;
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let name = "mail.example.net";
    let origin = format!("Origin: http://{admin}");

    let leaf = chains.leaf_with(&[name], (-1, 200), 21);
    let cert = chains.write("page.crt", &chains.fullchain(&leaf));
    let key = chains.write("page.key", &leaf.key);
    let form = |cert: &Path, key: &Path| {
        vec![
            "-H".to_owned(),
            origin.clone(),
            "-F".to_owned(),
            format!("name={name}"),
            "-F".to_owned(),
            format!("certificate=@{}", cert.display()),
            "-F".to_owned(),
            format!("key=@{}", key.display()),
        ]
    };
    let args = form(&cert, &key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, html) = curl(&url(admin, "/upload"), &args).await;
    assert_eq!(code, 201, "{html}");
    assert!(html.contains("Installed: mail.example.net"), "{html}");
    assert!(
        html.contains("<tr class=\"mine\"><td>mail.example.net.pem</td>"),
        "{html}"
    );
    assert_eq!(
        served_der(imaps, name).await.unwrap(),
        common::pki::first_der(leaf.cert.as_bytes())
    );

    let expired = chains.leaf_with(&[name], (-300, -1), 22);
    let old = chains.write("old.crt", &chains.fullchain(&expired));
    let old_key = chains.write("old.key", &expired.key);
    let args = form(&old, &old_key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, html) = curl(&url(admin, "/upload"), &args).await;
    assert_eq!(code, 422, "{html}");
    assert!(html.contains("Not installed: mail.example.net"), "{html}");
    assert!(
        html.contains("<code>expired</code>") && html.contains("Fix: "),
        "{html}"
    );
    assert_eq!(
        served_der(imaps, name).await.unwrap(),
        common::pki::first_der(leaf.cert.as_bytes()),
        "the certificate in use stays"
    );

    let mut args = form(&cert, &key);
    args[1] = "Origin: http://evil.example".to_owned();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&url(admin, "/upload"), &args).await.0, 403);

    // A name nothing covers, for the page's list; then the page in a browser.
    names_for(imaps, Some("nocert.customer.test")).await;
    let dom = chromium_dom(&url(admin, "/?q=mail"), &root.join("chromium")).await;
    assert!(dom.contains("<td>mail.example.net.pem</td>"), "{dom}");
    assert!(dom.contains("<td class=\"serving\">serving</td>"), "{dom}");
    assert!(dom.contains("1 of 1 entries"), "{dom}");
    assert!(dom.contains("<td>nocert.customer.test</td>"), "{dom}");
    assert!(dom.contains("action=\"/upload\""), "{dom}");
    assert!(store.join("mail.example.net.pem").exists());
}

/// A flood of random names (a scanner) among real ones: the report keeps the real names at
/// its top and never holds more than its capacity.
#[tokio::test(flavor = "multi_thread")]
async fn fallback_names_under_a_flood_of_random_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, _imap) = proxy_with_admin(tmp.path(), "bind = \"127.0.0.1:0\"").await;
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u32 {
        tasks.spawn(async move {
            for i in 0..200u32 {
                let name = match i % 10 {
                    0 => "mail.real-customer.test".to_owned(),
                    1 if i % 20 == 1 => "imap.second-customer.test".to_owned(),
                    _ => format!("x{worker}-{i}.scan.invalid"),
                };
                let opts = client::Opts {
                    sni: Some(name),
                    ..client::Opts::default()
                };
                let _ = client::connect(imaps, &opts).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // The names reach the report through a queue: wait until the last ones are counted.
    let mut body = serde_json::Value::Null;
    for _ in 0..50 {
        let (_, text) = curl(&url(admin, "/api/v1/fallback-names"), &[]).await;
        body = serde_json::from_str(&text).unwrap();
        let total: u64 = body["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["count"].as_u64().unwrap() - n["error"].as_u64().unwrap())
            .sum();
        if total > 0 && body["names"][0]["count"].as_u64() >= Some(160) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names = body["names"].as_array().unwrap();
    assert!(names.len() <= 1000, "bounded: {}", names.len());
    assert_eq!(names[0]["name"], "mail.real-customer.test", "{body}");
    assert_eq!(names[0]["count"], 160);
    assert_eq!(names[1]["name"], "imap.second-customer.test", "{body}");
    assert_eq!(body["dropped"], 0);
}

/// On a unix socket, and against hostile requests: a foreign `Host` is refused there too,
/// a body over 1 MiB is refused, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_and_bounded_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("admin.sock");
    let admin = format!("bind = \"unix:{}\"", socket.display());
    let (proxy, _imap) = proxy_with_admin(tmp.path(), &admin).await;
    assert!(proxy.admin.is_none(), "no TCP address");
    let mode = std::fs::metadata(&socket).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o660
    );
    let sock = socket.display().to_string();
    let (code, body) = curl("http://localhost/healthz", &["--unix-socket", &sock]).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    // Forwarded to by a local proxy, a rebinding page's name is still not the interface's.
    let (code, _) = curl("http://rebind.evil/api/v1/certs", &["--unix-socket", &sock]).await;
    assert_eq!(code, 421, "a foreign Host on the unix socket");
    let big = tmp.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    let data = format!("@{}", big.display());
    let args = [
        "--unix-socket",
        &sock,
        "-X",
        "PUT",
        "-H",
        "Origin: http://localhost",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
    ];
    let (code, _) = curl("http://localhost/api/v1/certs/mail.example.com", &args).await;
    assert_eq!(code, 413, "a body over 1 MiB");
    assert_eq!(
        names_for(proxy.addr("imaps"), Some("mail.example.com")).await,
        ["mail.example.com"]
    );
}

/// A PKCS#12 bundle with its password, as IIS and Windows export it (AES, the default of
/// OpenSSL 3 and Windows 10, and legacy 3DES): converted on upload and served; a wrong or
/// missing password is refused as such.
#[tokio::test(flavor = "multi_thread")]
async fn pfx_uploads_with_their_password() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let chains = ChainPki::new();
    let (proxy, _imap, _store) = upload_proxy(root, &chains).await;
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let name = "exchange.example.net";
    let pfx = |n: u64, legacy: bool| {
        let leaf = chains.leaf_with(&[name], (-1, 200), n);
        chains.write(&format!("{n}.crt"), &leaf.cert);
        chains.write(&format!("{n}.key"), &leaf.key);
        let (out, cert, key) = (format!("{n}.pfx"), format!("{n}.crt"), format!("{n}.key"));
        let mut args = vec![
            "pkcs12",
            "-export",
            "-out",
            &out,
            "-inkey",
            &key,
            "-in",
            &cert,
            "-certfile",
            "inter.pem",
            "-passout",
            "pass:s3cret",
        ];
        if legacy {
            args.extend([
                "-certpbe",
                "PBE-SHA1-3DES",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ]);
        }
        common::chains::openssl(chains.tmp.path(), &args);
        (leaf, chains.path(&out))
    };
    let der = |leaf: &common::chains::Leaf| common::pki::first_der(leaf.cert.as_bytes());
    let path = format!("/api/v1/certs/{name}");

    let (aes, file) = pfx(31, false);
    let form = format!("certificate=@{}", file.display());
    let origin = same_origin(admin);
    let args = [
        "-X",
        "PUT",
        "-H",
        &origin,
        "-F",
        &form,
        "-F",
        "password=s3cret",
    ];
    let (code, answer) = curl(&url(admin, &path), &args).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(served_der(imaps, name).await.unwrap(), der(&aes));

    let (tdes, file) = pfx(32, true);
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&file).unwrap());
    let body = serde_json::json!({ "pfx": b64, "password": "s3cret" });
    let (code, answer) = put_json(admin, name, &body, root).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(served_der(imaps, name).await.unwrap(), der(&tdes));

    for (password, says) in [
        (Some("wrong"), "the password does not open it"),
        (None, "needs its password"),
    ] {
        let mut body = serde_json::json!({ "pfx": b64 });
        if let Some(p) = password {
            body["password"] = p.into();
        }
        let (code, answer) = put_json(admin, name, &body, root).await;
        assert_eq!(code, 422, "{answer}");
        assert!(
            answer.contains("\"pkcs12\"") && answer.contains(says),
            "{answer}"
        );
    }
    assert_eq!(
        served_der(imaps, name).await.unwrap(),
        der(&tdes),
        "still served"
    );
}

/// An operator's upload in a real browser: Debian's chromium, driven by playwright-core
/// (`tests/browser`), chooses the files in the page's form and clicks; the page shows the
/// row now in use; a broken certificate shows its findings with their fixes.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_through_the_page_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let chains = ChainPki::new();
    let (proxy, _imap, _store) = upload_proxy(root, &chains).await;
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let name = "webmail.example.net";
    let good = chains.leaf_with(&[name], (-1, 200), 41);
    let bad = chains.leaf_with(&[name], (-300, -1), 42);
    let files = [
        chains.write("good.crt", &chains.fullchain(&good)),
        chains.write("good.key", &good.key),
        chains.write("bad.crt", &chains.fullchain(&bad)),
        chains.write("bad.key", &bad.key),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/upload.mjs");
    assert!(
        script.with_file_name("node_modules").is_dir(),
        "npm ci --prefix tests/browser (what .ci/run does) installs playwright-core"
    );
    let base = url(admin, "/");
    let mut args = vec![script.to_str().unwrap(), &base, name];
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(files.iter().map(String::as_str));
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser is done within a minute")
    .expect("node runs");
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{out}{err}");
    assert_eq!(
        served_der(imaps, name).await.unwrap(),
        common::pki::first_der(good.cert.as_bytes()),
        "served what the page installed"
    );
}

/// An RSA certificate uploaded for a name an ECDSA entry already serves: handshakes that
/// take ECDSA keep the ECDSA one, RSA-only clients get the upload, and the upload is
/// answered as served.
#[tokio::test(flavor = "multi_thread")]
async fn an_rsa_upload_beside_an_ecdsa_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let chains = ChainPki::new();
    let (proxy, _imap, store) = upload_proxy(root, &chains).await;
    let (admin, imaps) = (proxy.admin.unwrap(), proxy.addr("imaps"));
    let name = "mail.example.net";
    let ecdsa = chains.leaf_with(&[name], (-1, 200), 51);
    let text = format!("{}{}", chains.fullchain(&ecdsa), ecdsa.key);
    common::chains::write_atomically(&store.join("ecdsa.pem"), &text);
    let ecdsa_der = common::pki::first_der(ecdsa.cert.as_bytes());
    let seen = client::wait_served(imaps, name, &ecdsa_der, Duration::from_secs(5)).await;
    assert!(seen.is_some(), "the ECDSA entry serves");

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let rsa = params
        .signed_by(&key, &chains.inter.cert, &chains.inter.key)
        .unwrap();
    let certificate = format!("{}{}", rsa.pem(), chains.inter.cert.pem());
    let body = serde_json::json!({ "certificate": certificate, "key": key.serialize_pem() });
    let started = std::time::Instant::now();
    let (code, answer) = put_json(admin, name, &body, root).await;
    assert_eq!(code, 201, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered when served"
    );
    assert_eq!(
        served_der(imaps, name).await.unwrap(),
        ecdsa_der,
        "ECDSA clients"
    );
    let rsa_only = client::Opts {
        sni: Some(name.to_owned()),
        schemes: Some(vec![rustls::SignatureScheme::RSA_PSS_SHA256]),
        ..client::Opts::default()
    };
    let stream = client::connect(imaps, &rsa_only).await.unwrap();
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(
        served,
        rsa.der().to_vec(),
        "RSA-only clients get the upload"
    );
}
