//! ACME against a real CA: Debian's pebble, validating at mailfront's own listeners
//! (tls-alpn-01 at the https one, http-01 at the port 80 one), every issued certificate
//! verified by openssl with pebble's root.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::{names_of, run, served_der};
use common::pebble::{addr, free_port, Pebble, Ports};
use common::{backend::Backend, head, Pki, Proxy};

/// Polls handshakes for `sni` at `at` until a certificate from pebble (naming `sni`) is
/// served; returns its DER.
async fn wait_issued(at: SocketAddr, sni: &str, limit: Duration, pebble: &Pebble) -> Vec<u8> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(der) = served_der(at, sni).await {
            if names_of(&der) == [sni] && issuer_of(&der).contains("Pebble") {
                return der;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{sni} was not issued within {limit:?}; pebble said:\n{}",
        pebble.log_text()
    );
}

fn issuer_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().to_string()
}

fn serial_of(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}

/// openssl verifies the chain served for `sni` against pebble's root, and the name.
async fn openssl_verifies(at: SocketAddr, sni: &str, pebble: &Pebble) {
    let out = common::client::s_client(at, Some(sni), &pebble.root).await;
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("Verification: OK") && out.status == Some(0),
        "openssl s_client for {sni}: {all}"
    );
}

/// `listener` blocks bound to explicit ports (pebble must know them before mailfront
/// starts, and mailfront needs pebble's directory URL in its config).
fn listener_at(name: &str, protocol: &str, port: u16, backend: Option<SocketAddr>) -> String {
    let backend = backend.map_or(String::new(), |b| format!("backend = \"{b}\"\n"));
    format!(
        "[[listener]]\nname = \"{name}\"\nbind = [\"127.0.0.1:{port}\"]\nprotocol = \"{protocol}\"\n{backend}\n"
    )
}

/// A test directory with the test PKI (the server-wide certificate) and a store in it.
fn test_root() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    Pki::new(dir.path());
    let store = common::store_dir(dir.path());
    (dir, store)
}

/// pebble for a test in `root`, validating at `ports`, issuing for `validity` seconds.
async fn pebble_at(root: &Path, ports: Ports, validity: u64) -> Pebble {
    Pebble::start(&root.join("pebble"), ports, validity).await
}

/// What `curl -w FORMAT` prints for `url`, with `Host: host` when given.
async fn curl_out(url: &str, host: Option<&str>, format: &str) -> String {
    let host = host.map(|h| format!("Host: {h}"));
    let mut args = vec!["-sS", "-o", "/dev/null", "-w", format];
    if let Some(host) = &host {
        args.extend(["-H", host.as_str()]);
    }
    args.push(url);
    let out = run("curl", &args).await;
    assert_eq!(out.status, Some(0), "curl {url}: {}", out.stderr);
    out.stdout
}

/// Writes `root/FILE` listing `names` and gives the `names_file` line for it.
fn names_file(root: &Path, file: &str, names: &[&str]) -> String {
    let path = root.join(file);
    std::fs::write(&path, names.join("\n") + "\n").unwrap();
    format!("names_file = \"{}\"", path.display())
}

/// pebble validating tls-alpn-01 at a new `https` listener's port (certificates valid
/// `validity` seconds), a webmail backend behind that listener, and the config of a proxy
/// with it, `[acme]` (state in `state`, with `acme`'s lines) and `[admin]`.
async fn https_with_pebble(
    root: &Path,
    store: &Path,
    validity: u64,
    state: &Path,
    acme: &str,
) -> (Pebble, Backend, u16, String) {
    let https = free_port();
    let pebble = pebble_at(
        root,
        Ports {
            http: free_port(),
            tls: https,
        },
        validity,
    )
    .await;
    let web = Backend::http().await;
    let config = format!(
        "{}{}{}{}",
        head(root, store, ""),
        listener_at("https", "https", https, Some(web.addr)),
        pebble.acme_section(state, acme),
        admin_section(),
    );
    (pebble, web, https, config)
}

/// pebble validating http-01 at a new `http` listener's port (relaying to `backend80`
/// when given, else redirecting), an `imaps` listener in front of an IMAP backend, and the
/// config of a proxy with both and `[acme]` (with `acme`'s lines); the ports are
/// `[imaps, http]`.
async fn http_with_pebble(
    root: &Path,
    store: &Path,
    backend80: Option<SocketAddr>,
    acme: &str,
) -> (Pebble, Backend, [u16; 2], String) {
    let (http, imaps) = (free_port(), free_port());
    let pebble = pebble_at(
        root,
        Ports {
            http,
            tls: free_port(),
        },
        3600,
    )
    .await;
    let imap = Backend::start("* OK", common::backend::Expect::Plain).await;
    let config = format!(
        "{}{}{}{}",
        head(root, store, ""),
        listener_at("imaps", "imaps", imaps, Some(imap.addr)),
        listener_at("web80", "http", http, backend80),
        pebble.acme_section(&root.join("state"), acme),
    );
    (pebble, imap, [imaps, http], config)
}

fn admin_section() -> &'static str {
    "[admin]\nbind = \"127.0.0.1:0\"\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_name_is_issued_over_tls_alpn_and_nothing_else_is_ordered() {
    let (dir, store) = test_root();
    let root = dir.path();
    let names = names_file(
        root,
        "names.txt",
        &["# customers", "mail.example.com", "*.example.org"],
    );
    let state = root.join("acme-state");
    let (pebble, _web, https, config) = https_with_pebble(root, &store, 3600, &state, &names).await;
    let proxy = Proxy::start(root, &config);
    let at = addr(https);
    let der = wait_issued(at, "mail.example.com", Duration::from_secs(60), &pebble).await;
    openssl_verifies(at, "mail.example.com", &pebble).await;
    // curl through the proxy to the webmail backend, verifying with pebble's root.
    let url = format!("https://mail.example.com:{https}/");
    let resolve = format!("mail.example.com:{https}:127.0.0.1");
    let root_pem = pebble.root.display().to_string();
    let out = run(
        "curl",
        &["-sS", "--cacert", &root_pem, "--resolve", &resolve, &url],
    )
    .await;
    assert_eq!(out.status, Some(0), "curl: {}", out.stderr);

    // certbot's names, through a swapped ..data link; the key 0600; the account 0600.
    use std::os::unix::fs::PermissionsExt;
    let entry = store.join("acme/mail.example.com");
    assert_eq!(
        std::fs::read_link(entry.join("fullchain.pem")).unwrap(),
        Path::new("..data/fullchain.pem")
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&entry.join("privkey.pem")), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(state.join("accounts")).unwrap().collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0].as_ref().unwrap().path()), 0o600);

    // Names not listed (and the wildcard, which needs dns-01) are never ordered, however
    // often they are asked for.
    for i in 0..100 {
        let _ = served_der(at, &format!("scan{i}.example.com")).await;
        let _ = served_der(at, "www.example.org").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pebble.issued(), 1, "{}", pebble.log_text());
    assert_eq!(
        proxy
            .metric("mailfront_acme_orders_total{result=\"valid\"}")
            .await,
        1
    );
    assert_eq!(
        proxy
            .metric("mailfront_acme_orders_total{result=\"failed\"}")
            .await,
        0
    );
    assert_eq!(served_der(at, "mail.example.com").await.unwrap(), der);

    // A client offering acme-tls/1 for a name with no challenge pending is refused with
    // unrecognized_name, and is never relayed.
    let connect = at.to_string();
    let out = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "nothing.example.com",
            "-alpn",
            "acme-tls/1",
            "-brief",
        ],
    )
    .await;
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("unrecognized name"), "{all}");
    openssl_verifies(at, "mail.example.com", &pebble).await;

    // The report says where it comes from and when it renews.
    let config_path = root.join("mailfront.toml");
    let out = run(
        env!("CARGO_BIN_EXE_mailfront"),
        &[
            "certs",
            "--config",
            config_path.to_str().unwrap(),
            "--format",
            "json",
        ],
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let row = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["entry"] == "acme/mail.example.com/")
        .unwrap_or_else(|| panic!("no acme row: {}", out.stdout));
    assert_eq!(row["source"], "acme");
    assert_eq!(row["state"], "serving");
    assert!(
        row["renews"].as_str().is_some_and(|r| r.starts_with("20")),
        "{row}"
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_on_the_port_80_listener_which_redirects_everything_else() {
    let (dir, store) = test_root();
    let root = dir.path();
    let names = names_file(root, "names.txt", &["imap.example.com"]);
    let (pebble, _imap, [imaps, http], config) = http_with_pebble(root, &store, None, &names).await;
    let _proxy = Proxy::start(root, &config);
    wait_issued(
        addr(imaps),
        "imap.example.com",
        Duration::from_secs(60),
        &pebble,
    )
    .await;
    openssl_verifies(addr(imaps), "imap.example.com", &pebble).await;

    let base = format!("http://127.0.0.1:{http}");
    let redirect = "%{http_code} %{redirect_url}";
    let url = format!("{base}/inbox?folder=1");
    let out = curl_out(&url, Some("Mail.Example.com:80"), redirect).await;
    assert_eq!(out, "308 https://mail.example.com/inbox?folder=1");
    let url = format!("{base}/.well-known/acme-challenge/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(curl_out(&url, None, "%{http_code}").await, "404");
    let url = format!("{base}/");
    assert_eq!(
        curl_out(&url, Some("evil.example.com/x"), "%{http_code}").await,
        "400"
    );
}

/// A tiny `ask` service: 200 for the names in `allowed`, 404 for the others; counts the
/// requests per name. Dropping the handle stops it.
struct AskService {
    url: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AskService {
    async fn start(allowed: &'static [&'static str]) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/allowed?domain=", listener.local_addr().unwrap());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let name = head
                        .split_once("domain=")
                        .and_then(|(_, r)| r.split_whitespace().next())
                        .unwrap_or("")
                        .to_owned();
                    *counted.lock().unwrap().entry(name.clone()).or_default() += 1;
                    let status = if allowed.contains(&name.as_str()) {
                        "200 OK"
                    } else {
                        "404 Not Found"
                    };
                    let _ = tcp
                        .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                        .await;
                });
            }
        });
        Self { url, hits, task }
    }

    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_with_ask_and_short_lived_certificates_renewed_while_ask_is_down() {
    let (dir, store) = test_root();
    let root = dir.path();
    // 30-second certificates: renewed about 20 s after issuance.
    let ask = AskService::start(&["shop.example.com"]).await;
    let (pebble, _web, https, config) = https_with_pebble(
        root,
        &store,
        30,
        &root.join("state"),
        &format!("ask = \"{}\"\non_demand = true", ask.url),
    )
    .await;
    let proxy = Proxy::start(root, &config);
    let at = addr(https);
    // The first handshake is never held up: it gets the server-wide certificate at once.
    let first = served_der(at, "shop.example.com").await.unwrap();
    assert_eq!(names_of(&first), ["server.com"]);
    let issued = wait_issued(at, "shop.example.com", Duration::from_secs(60), &pebble).await;
    openssl_verifies(at, "shop.example.com", &pebble).await;
    assert_eq!(ask.hits("shop.example.com"), 1);

    // A name ask refuses: asked once (the refusal is cached), never ordered; a scanner's
    // random names: asked once each, never ordered.
    for _ in 0..5 {
        assert_eq!(
            names_of(&served_der(at, "denied.example.com").await.unwrap()),
            ["server.com"]
        );
    }
    for i in 0..5 {
        let _ = served_der(at, &format!("rnd{i}.example.com")).await;
    }
    assert!(common::wait_for(Duration::from_secs(5), || ask.hits("rnd4.example.com") == 1).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ask.hits("denied.example.com"), 1);
    assert!(!store.join("acme/denied.example.com").exists());

    // ask goes down: the issued name keeps serving, and is renewed when due; a new name
    // waits.
    ask.task.abort();
    let _ = ask.task.await;
    for _ in 0..3 {
        let _ = served_der(at, "new.example.com").await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let der = served_der(at, "shop.example.com").await.unwrap();
        assert_eq!(
            names_of(&der),
            ["shop.example.com"],
            "the issued name kept serving"
        );
        if serial_of(&der) != serial_of(&issued) {
            break der;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not renewed within 60 s: {}",
            pebble.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(issuer_of(&renewed).contains("Pebble"));
    openssl_verifies(at, "shop.example.com", &pebble).await;
    assert!(!store.join("acme/new.example.com").exists());
    assert_eq!(
        proxy
            .metric("mailfront_acme_orders_total{result=\"failed\"}")
            .await,
        0
    );
    assert!(
        proxy
            .metric("mailfront_acme_orders_total{result=\"valid\"}")
            .await
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_backs_off_and_stops_for_the_hour_at_the_cap() {
    let (dir, store) = test_root();
    let root = dir.path();
    let https = free_port();
    let pebble = pebble_at(
        root,
        Ports {
            http: free_port(),
            tls: https,
        },
        3600,
    )
    .await;
    // The CA looks for the name where nothing answers.
    pebble.resolve("broken.example.com", "127.0.0.2").await;
    let web = Backend::http().await;
    let names = names_file(root, "names.txt", &["broken.example.com"]);
    let config = format!(
        "{}{}{}{}",
        head(root, &store, ""),
        listener_at("https", "https", https, Some(web.addr)),
        pebble.acme_section(
            &root.join("state"),
            &format!("{names}\nretry_min = \"4s\"\nfailures_per_name_per_hour = 2")
        ),
        admin_section(),
    );
    let proxy = Proxy::start(root, &config);
    let failed = "mailfront_acme_orders_total{result=\"failed\"}";
    let one = common::wait_for_async(Duration::from_secs(60), || async {
        proxy.metric(failed).await >= 1
    })
    .await;
    assert!(one, "the order did not fail: {}", pebble.log_text());
    let t1 = std::time::Instant::now();
    // Not again before retry_min, even when handshakes ask for it.
    for _ in 0..10 {
        let _ = served_der(addr(https), "broken.example.com").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(t1.elapsed() < Duration::from_secs(4) || proxy.metric(failed).await == 1);
    assert_eq!(proxy.metric(failed).await, 1);
    // Then once more after it, and then not for the rest of the hour.
    let two = common::wait_for_async(Duration::from_secs(30), || async {
        proxy.metric(failed).await >= 2
    })
    .await;
    assert!(two, "no second attempt after retry_min");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        proxy.metric(failed).await,
        2,
        "a third attempt within the hour"
    );
    assert_eq!(
        proxy
            .metric("mailfront_acme_orders_total{result=\"valid\"}")
            .await,
        0
    );
    assert_eq!(
        names_of(&served_der(addr(https), "broken.example.com").await.unwrap()),
        ["server.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_the_directories_order_each_name_once() {
    let (dir, store) = test_root();
    let root = dir.path();
    let (a_port, b_port) = (free_port(), free_port());
    // The CA validates at instance B only: B answers what A ordered.
    let pebble = pebble_at(
        root,
        Ports {
            http: free_port(),
            tls: b_port,
        },
        3600,
    )
    .await;
    let web = Backend::http().await;
    let state = root.join("state");
    std::fs::write(root.join("a.txt"), "both.example.com\nfroma.example.com\n").unwrap();
    std::fs::write(root.join("b.txt"), "both.example.com\n").unwrap();
    let instance = |name: &str, port: u16, names: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "{}{}{}{}",
            head(root, &store, ""),
            listener_at("https", "https", port, Some(web.addr)),
            pebble.acme_section(
                &state,
                &format!("names_file = \"{}\"", root.join(names).display())
            ),
            admin_section(),
        );
        Proxy::start(&dir, &config)
    };
    let a = instance("a", a_port, "a.txt");
    let b = instance("b", b_port, "b.txt");
    for at in [addr(a_port), addr(b_port)] {
        for name in ["both.example.com", "froma.example.com"] {
            wait_issued(at, name, Duration::from_secs(90), &pebble).await;
            openssl_verifies(at, name, &pebble).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pebble.issued(), 2, "{}", pebble.log_text());
    let valid = "mailfront_acme_orders_total{result=\"valid\"}";
    let (va, vb) = (a.metric(valid).await, b.metric(valid).await);
    assert_eq!(va + vb, 2, "a: {va}, b: {vb}");
    // froma.example.com is listed at A only: A ordered it, and B answered the CA.
    assert!(va >= 1);
    assert_eq!(
        a.metric("mailfront_acme_orders_total{result=\"failed\"}")
            .await,
        0
    );
    assert_eq!(
        b.metric("mailfront_acme_orders_total{result=\"failed\"}")
            .await,
        0
    );
    // One account for the fleet.
    assert_eq!(
        std::fs::read_dir(state.join("accounts")).unwrap().count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_binding_and_the_account_kept_across_restarts() {
    let (dir, store) = test_root();
    let root = dir.path();
    let https = free_port();
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start_with(
        &root.join("pebble"),
        Ports {
            http: free_port(),
            tls: https,
        },
        3600,
        Some(("kid-1", key)),
    )
    .await;
    std::fs::write(root.join("eab.key"), format!("{key}\n")).unwrap();
    let web = Backend::http().await;
    names_file(root, "names.txt", &["eab.example.com"]);
    let state = root.join("state");
    let config = |names: &str| {
        format!(
            "{}{}{}",
            head(root, &store, ""),
            listener_at("https", "https", https, Some(web.addr)),
            pebble.acme_section(
                &state,
                &format!(
                    "names_file = \"{}\"\neab_kid = \"kid-1\"\neab_hmac_key_file = \"{}\"",
                    root.join(names).display(),
                    root.join("eab.key").display()
                )
            ),
        )
    };
    let proxy = Proxy::start(root, &config("names.txt"));
    wait_issued(
        addr(https),
        "eab.example.com",
        Duration::from_secs(60),
        &pebble,
    )
    .await;
    openssl_verifies(addr(https), "eab.example.com", &pebble).await;
    let accounts = state.join("accounts");
    let file = std::fs::read_dir(&accounts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let before = std::fs::read(&file).unwrap();
    proxy.shutdown().await;

    // Restarted with another name: the same account orders it (no second account).
    std::fs::write(
        root.join("more.txt"),
        "eab.example.com\nsecond.example.com\n",
    )
    .unwrap();
    let _proxy = Proxy::start(root, &config("more.txt"));
    wait_issued(
        addr(https),
        "second.example.com",
        Duration::from_secs(60),
        &pebble,
    )
    .await;
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(std::fs::read_dir(&accounts).unwrap().count(), 1);
    assert_eq!(pebble.issued(), 2, "{}", pebble.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_leaves_the_certificate_serving() {
    let (dir, store) = test_root();
    let root = dir.path();
    let names = names_file(root, "names.txt", &["renew.example.com"]);
    let (pebble, _web, https, config) = https_with_pebble(
        root,
        &store,
        45,
        &root.join("state"),
        &format!("{names}\nretry_min = \"1h\""),
    )
    .await;
    let proxy = Proxy::start(root, &config);
    let at = addr(https);
    let issued = wait_issued(at, "renew.example.com", Duration::from_secs(60), &pebble).await;
    // From now on the CA cannot validate the name: the renewal (two thirds into the 45
    // seconds, as the certificate itself says) fails.
    pebble.resolve("renew.example.com", "127.0.0.2").await;
    let (_, cert) = x509_parser::parse_x509_certificate(&issued).unwrap();
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let due = mailfront::acme::renewal_due("renew.example.com", not_before, not_after);
    let now = || mailfront::certs::check::now();
    assert!(
        now() < due,
        "the renewal was due before the name's DNS could be changed (a slow machine): \
         {} s late",
        now() - due
    );
    let failed = "mailfront_acme_orders_total{result=\"failed\"}";
    let mut seen = false;
    // Until the certificate expires: what serves after is the store's rule for expired
    // certificates, not this test's concern.
    while now() < not_after {
        assert_eq!(
            served_der(at, "renew.example.com").await.unwrap(),
            issued,
            "the certificate kept serving"
        );
        if proxy.metric(failed).await == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen,
        "the renewal did not fail before the certificate expired: {}",
        pebble.log_text()
    );
    if now() < not_after {
        assert_eq!(served_der(at, "renew.example.com").await.unwrap(), issued);
    }
    assert_eq!(
        proxy
            .metric("mailfront_acme_orders_total{result=\"valid\"}")
            .await,
        1
    );
    // The files on disk are still the ones serving (nothing half-renewed).
    let on_disk =
        std::fs::read_to_string(store.join("acme/renew.example.com/fullchain.pem")).unwrap();
    assert_eq!(common::pki::first_der(on_disk.as_bytes()), issued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_80_listener_relays_to_its_backend_and_still_answers_challenges() {
    let (dir, store) = test_root();
    let root = dir.path();
    let web = Backend::http().await;
    let names = names_file(root, "names.txt", &["relay.example.com"]);
    let (pebble, _imap, [imaps, http], config) =
        http_with_pebble(root, &store, Some(web.addr), &names).await;
    let _proxy = Proxy::start(root, &config);
    wait_issued(
        addr(imaps),
        "relay.example.com",
        Duration::from_secs(60),
        &pebble,
    )
    .await;
    let out = run(
        "curl",
        &[
            "-sS",
            "-i",
            "-H",
            "Host: relay.example.com",
            &format!("http://127.0.0.1:{http}/some/page"),
        ],
    )
    .await;
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with("HTTP/1.1 200"),
        "relayed to the backend: {}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_per_hour_holds_back_the_names_beyond_it() {
    let (dir, store) = test_root();
    let root = dir.path();
    let names = names_file(
        root,
        "names.txt",
        &["first.example.com", "second.example.com"],
    );
    let (pebble, _web, https, config) = https_with_pebble(
        root,
        &store,
        3600,
        &root.join("state"),
        &format!("{names}\norders_per_hour = 1"),
    )
    .await;
    let proxy = Proxy::start(root, &config);
    let valid = "mailfront_acme_orders_total{result=\"valid\"}";
    let one = common::wait_for_async(Duration::from_secs(60), || async {
        proxy.metric(valid).await == 1
    })
    .await;
    assert!(one, "no order: {}", pebble.log_text());
    // Handshakes for the other name do not start a second order within the hour.
    for _ in 0..20 {
        for name in ["first.example.com", "second.example.com"] {
            let _ = served_der(addr(https), name).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(proxy.metric(valid).await, 1);
    assert_eq!(pebble.issued(), 1, "{}", pebble.log_text());
    let served: Vec<bool> = ["first.example.com", "second.example.com"]
        .iter()
        .map(|n| store.join("acme").join(n).exists())
        .collect();
    assert_eq!(served.iter().filter(|s| **s).count(), 1, "{served:?}");
}

/// A CA whose API certificate the ACME client does not trust (pebble without
/// `acme.ca_bundle`): the order's failure is logged with its whole chain of causes, the
/// certificate verification error among them, each cause once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_api_is_reported_with_its_cause() {
    let (dir, store) = test_root();
    let root = dir.path();
    let names = names_file(root, "names.txt", &["mail.example.com"]);
    let state = root.join("state");
    let (_pebble, _web, _, config) = https_with_pebble(root, &store, 3600, &state, &names).await;
    // [acme] without its ca_bundle: the system's roots, which lack pebble's.
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("ca_bundle"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = root.join("m.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = common::running::Running::start("", &path);
    let line = proxy
        .wait_line("ACME: order failed")
        .expect("the order fails at once");
    let reason = common::running::field(&line, "reason");
    assert!(
        reason.contains("client error (Connect)") && reason.contains("certificate"),
        "the cause is named: {reason}"
    );
    for part in reason.split(": ") {
        assert_eq!(reason.matches(part).count(), 1, "{part:?} once in {reason}");
    }
}
