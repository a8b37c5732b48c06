//! The certificate checks in the store, and `mailfront certs`: a bad version dropped over a
//! good one never replaces it, and the view shows what serves.

mod common;

use std::process::Command;
use std::time::Duration;

use common::chains::{sha1_leaf, weak_rsa, write_atomically, ChainPki as Pki, Leaf};
use common::client::wait_served;

const BIN: &str = env!("CARGO_BIN_EXE_mailfront");

/// A private PKI in a tempdir (root, intermediate), the store below it, and the
/// server-wide certificate the test head names.
fn setup() -> (Pki, std::path::PathBuf) {
    let pki = Pki::new();
    let store = common::store_dir(pki.tmp.path());
    common::Pki::new(pki.tmp.path());
    (pki, store)
}

/// A leaf for revoked.example.com, revoked by a CRL of the intermediate in `crl/`.
fn revoked_in_crl_dir(pki: &Pki) -> Leaf {
    std::fs::create_dir(pki.path("crl")).unwrap();
    let revoked = pki.leaf_with(&["revoked.example.com"], (-10, 300), 4242);
    let crl = pki.crl_revoking(revoked.serial).pem().unwrap();
    pki.write("crl/inter.crl", &crl);
    revoked
}

/// Each bad case dropped over a serving good version of the same entry leaves the good
/// version serving; a name that only the entry's file name suggests does not refuse it.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_keeps_the_good_version_over_each_bad_case() {
    let (pki, store) = setup();
    let root = pki.tmp.path();
    let revoked = revoked_in_crl_dir(&pki);
    sha1_leaf(root);
    weak_rsa(root);
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let settings = format!(
        "[certs]\nca_bundle = \"{}\"\ncrl_dir = \"{}\"\n",
        pki.path("root.pem").display(),
        pki.path("crl").display()
    );
    let head = common::head(root, &store, "").replace("[certs]\n", &settings);
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");

    let combined = |leaf: &Leaf, key: &str| format!("{}{key}", pki.fullchain(leaf));
    let other = pki.leaf(&["mismatch.example.com"]);
    let expired = pki.leaf_with(&["expired.example.com"], (-90, -1), 3);
    let early = pki.leaf_with(&["early.example.com"], (2, 90), 4);
    let swapped = pki.leaf(&["swapped.example.com"]);
    let short = pki.leaf(&["short.example.com"]);
    let cases = [
        (
            "key-mismatch",
            "mismatch.example.com",
            format!(
                "{}{}",
                pki.fullchain(&other),
                pki.leaf(&["x.example.com"]).key
            ),
        ),
        (
            "expired",
            "expired.example.com",
            combined(&expired, &expired.key),
        ),
        (
            "not-yet-valid",
            "early.example.com",
            combined(&early, &early.key),
        ),
        (
            "not-one-leaf",
            "swapped.example.com",
            // The chain given in place of the certificate: only CA certificates.
            format!("{}{}", pki.inter.cert.pem(), swapped.key),
        ),
        (
            "chain-incomplete",
            "short.example.com",
            format!("{}{}", short.cert, short.key),
        ),
        (
            "revoked",
            "revoked.example.com",
            combined(&revoked, &revoked.key),
        ),
        (
            "weak-signature",
            "sha1.example.com",
            format!(
                "{}{}{}",
                read("sha1.crt"),
                read("rsa-ca.crt"),
                read("sha1.key")
            ),
        ),
        (
            "weak-key",
            "weak.example.com",
            format!("{}{}", read("weak.crt"), read("weak.key")),
        ),
    ];
    for (code, name, bad) in cases {
        let good = pki.leaf(&[name]);
        let entry = store.join(format!("{name}.pem"));
        write_atomically(&entry, &combined(&good, &good.key));
        let good_der = common::pki::first_der(good.cert.as_bytes());
        let seen = wait_served(addr, name, &good_der, Duration::from_secs(2)).await;
        assert!(seen.is_some(), "{code}: the good version serves first");
        let since = std::time::Instant::now();
        write_atomically(&entry, &bad);
        // A refusal changes nothing a client sees: once the store has looked at the
        // file, the good version still serves.
        proxy.settled_since(since).await;
        let kept = wait_served(addr, name, &good_der, Duration::from_secs(2)).await;
        assert!(kept.is_some(), "{code}: the good version keeps serving");
    }
    // A name-mismatch guessed from the file name is only a warning: it loads.
    let wrong_name = pki.leaf(&["other.example.com"]);
    let entry = store.join("mismatch.example.com.pem");
    write_atomically(&entry, &combined(&wrong_name, &wrong_name.key));
    let wrong_der = common::pki::first_der(wrong_name.cert.as_bytes());
    let seen = wait_served(
        addr,
        "other.example.com",
        &wrong_der,
        Duration::from_secs(2),
    )
    .await;
    assert!(seen.is_some());
}

/// `mailfront certs`: a row per entry with its state (serving, superseded, refused with its
/// codes), which entry serves a contested name, and route names only the server-wide
/// certificate covers; the same as JSON.
#[test]
fn certs_view_of_a_store() {
    let (pki, store) = setup();
    let root = pki.tmp.path();
    let older = pki.leaf_with(&["mail.example.com"], (-30, 100), 11);
    let newer = pki.leaf_with(&["mail.example.com"], (-1, 300), 12);
    let bad = pki.leaf(&["bad.example.com"]);
    let wrong_key = pki.leaf(&["x.example.com"]);
    for (file, leaf, key) in [
        ("older.pem", &older, &older.key),
        ("newer.pem", &newer, &newer.key),
        ("bad.pem", &bad, &wrong_key.key),
    ] {
        write_atomically(&store.join(file), &format!("{}{key}", pki.fullchain(leaf)));
    }
    let config = format!(
        "{}{}[[route]]\nsni = \"webmail.example.com\"\nbackend = \"127.0.0.1:1\"\n",
        common::head(root, &store, "").replace(
            "[certs]\n",
            &format!(
                "[certs]\nca_bundle = \"{}\"\n",
                pki.path("root.pem").display()
            )
        ),
        common::listener("imaps", "imaps", "127.0.0.1:1".parse().unwrap(), "")
    );
    let config_path = pki.write("m.toml", &config);
    let run = |format: &str| {
        let out = Command::new(BIN)
            .args(["certs", "--format", format, "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run("text");
    let line = |entry: &str| {
        text.lines()
            .find(|l| l.starts_with(entry))
            .unwrap_or_else(|| panic!("no row for {entry}:\n{text}"))
            .to_owned()
    };
    assert!(line("newer.pem").contains("serving"), "{text}");
    assert!(line("older.pem").contains("superseded"), "{text}");
    assert!(line("bad.pem").contains("refused") && line("bad.pem").contains("key-mismatch"));
    assert!(
        line("newer.pem").contains("Check Intermediate")
            && line("newer.pem").contains("ECDSA P-256")
    );
    assert!(
        text.contains("mail.example.com: served by newer.pem; superseded: older.pem"),
        "{text}"
    );
    assert!(
        text.contains("route webmail.example.com: no entry covers it"),
        "{text}"
    );

    let doc: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    let state = |id: &str| entries.iter().find(|e| e["entry"] == id).unwrap()["state"].clone();
    assert_eq!(state("newer.pem"), "serving");
    assert_eq!(state("older.pem"), "superseded");
    assert_eq!(state("bad.pem"), "refused");
    assert_eq!(doc["uncovered_routes"][0], "webmail.example.com");
    assert_eq!(doc["server_wide"]["names"][0], "server.com");
}

/// An entry lacking its intermediate serves its leaf alone while nothing better covers its
/// name (the store's rule: better than the server-wide certificate's certain mismatch);
/// the intermediate put into `issuers_dir` while the proxy runs completes its chain: the
/// directory is watched (the rescan is a minute away), and every entry is checked again.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_intermediate_in_issuers_dir_completes_a_served_chain() {
    let (pki, store) = setup();
    let root = pki.tmp.path();
    // Deeper than the directories watched for the store and the server-wide certificate.
    std::fs::create_dir_all(pki.path("trust/issuers")).unwrap();
    let short = pki.leaf(&["short.example.com"]);
    write_atomically(
        &store.join("short.example.com.pem"),
        &format!("{}{}", short.cert, short.key),
    );
    let settings = format!(
        "[certs]\nca_bundle = \"{}\"\nissuers_dir = \"{}\"\nrescan_interval = \"60s\"\n",
        pki.path("root.pem").display(),
        pki.path("trust/issuers").display()
    );
    let head = common::head(root, &store, "").replace("[certs]\n", &settings);
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");
    let leaf_der = common::pki::first_der(short.cert.as_bytes());
    let served = served_chain(addr, "short.example.com").await;
    assert_eq!(
        served,
        std::slice::from_ref(&leaf_der),
        "its leaf alone, with errors"
    );
    // A new entry served shows the watcher running, past its first full refresh.
    let probe = pki.leaf(&["probe.example.com"]);
    write_atomically(
        &store.join("probe.pem"),
        &format!("{}{}", pki.fullchain(&probe), probe.key),
    );
    let probe_der = common::pki::first_der(probe.cert.as_bytes());
    assert!(wait_served(
        addr,
        "probe.example.com",
        &probe_der,
        Duration::from_secs(3)
    )
    .await
    .is_some());

    pki.write("trust/issuers/inter.pem", &pki.inter.cert.pem());
    let completed = vec![leaf_der, pki.inter.cert.der().to_vec()];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while served_chain(addr, "short.example.com").await != completed {
        assert!(
            std::time::Instant::now() < deadline,
            "completed once issuers_dir holds the intermediate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The certificates served for `sni`, leaf first.
async fn served_chain(addr: std::net::SocketAddr, sni: &str) -> Vec<Vec<u8>> {
    let opts = common::client::Opts {
        sni: Some(sni.to_owned()),
        ..Default::default()
    };
    let stream = common::client::connect(addr, &opts).await.unwrap();
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    certs.iter().map(|c| c.to_vec()).collect()
}

/// `mailfront certs --format json`, parsed.
fn certs_json(config: &std::path::Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["certs", "--format", "json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The row of entry `id` in a `certs --format json` document.
fn row<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    let entries = doc["entries"].as_array().unwrap();
    entries
        .iter()
        .find(|e| e["entry"] == id)
        .unwrap_or_else(|| panic!("no row for {id}: {doc:#}"))
}

/// An internal PKI's entries (leaf + intermediate of a private CA whose root is not in
/// the system bundle, and no `ca_bundle` configured) serve their names, with an
/// `untrusted-issuer` warning whose fix names `ca_bundle`: they were refused as
/// `chain-incomplete` ("append the intermediates"), and every client got the server-wide
/// certificate's name mismatch. `mailfront check` agrees.
#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_serves_without_ca_bundle() {
    assert!(
        std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists(),
        "the system bundle judges chains here (package ca-certificates)"
    );
    let (pki, store) = setup();
    let root = pki.tmp.path();
    let names = ["mail.corp.test", "imap.corp.test", "webmail.corp.test"];
    let mut ders = Vec::new();
    for name in names {
        let leaf = pki.leaf(&[name]);
        let text = format!("{}{}", pki.fullchain(&leaf), leaf.key);
        write_atomically(&store.join(format!("{name}.pem")), &text);
        ders.push(common::pki::first_der(leaf.cert.as_bytes()));
    }
    let head = common::head(root, &store, "");
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    for (name, der) in names.iter().zip(&ders) {
        let served = common::client::served_der(proxy.addr("imaps"), name).await;
        assert_eq!(
            served.as_ref(),
            Some(der),
            "{name} serves its own certificate"
        );
    }
    let doc = certs_json(&root.join("mailfront.toml"));
    for name in names {
        let row = row(&doc, &format!("{name}.pem"));
        assert_eq!(row["state"], "serving", "{row:#}");
        assert_eq!(
            row["codes"],
            serde_json::json!(["untrusted-issuer"]),
            "{row:#}"
        );
    }
    let out = Command::new(BIN)
        .arg("check")
        .arg(store.join("mail.corp.test.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("warning untrusted-issuer"), "{text}");
    assert!(text.contains("set ca_bundle"), "{text}");
    assert!(!text.contains("chain-incomplete"), "{text}");
}

/// The store's rule: an expired or not-yet-valid certificate that nothing else covers
/// serves (the alternative is the server-wide certificate and a certain mismatch), as
/// `serving-with-errors`, logged as an error at start and again at every full rescan;
/// revoked and key-mismatched ones are refused even then; a clean version for the name
/// serves ahead of the expired one; and a version worse than the one serving is refused.
#[tokio::test(flavor = "multi_thread")]
async fn serving_with_errors_while_nothing_better_covers_the_name() {
    use common::running::Running;
    let (pki, store) = setup();
    let root = pki.tmp.path();
    let backend = common::backend::Backend::start("* OK", common::backend::Expect::Plain).await;
    let expired = pki.leaf_with(&["expired.example.com"], (-90, -1), 3);
    let early = pki.leaf_with(&["early.example.com"], (2, 90), 4);
    let revoked = revoked_in_crl_dir(&pki);
    let mismatch = pki.leaf(&["mismatch.example.com"]);
    let other_key = pki.leaf(&["x.example.com"]).key;
    // The server-wide certificate (clean) serves server.com: an expired one does not take
    // it over, even where it serves another name.
    let shared = pki.leaf_with(&["own.example.com", "server.com"], (-90, -1), 6);
    let only = pki.leaf_with(&["server.com"], (-90, -1), 7);
    for (file, leaf, key) in [
        ("expired.pem", &expired, &expired.key),
        ("early.pem", &early, &early.key),
        ("revoked.pem", &revoked, &revoked.key),
        ("mismatch.pem", &mismatch, &other_key),
        ("shared.pem", &shared, &shared.key),
        ("only.pem", &only, &only.key),
    ] {
        write_atomically(&store.join(file), &format!("{}{key}", pki.fullchain(leaf)));
    }
    let settings = format!(
        "[certs]\nca_bundle = \"{}\"\ncrl_dir = \"{}\"\nrescan_interval = \"1s\"\n",
        pki.path("root.pem").display(),
        pki.path("crl").display()
    );
    let config = format!(
        "{}{}",
        common::head(root, &store, "").replace("[certs]\n", &settings),
        common::listener("imaps", "imaps", backend.addr, "")
    );
    let path = pki.write("m.toml", &config);
    let proxy = Running::start("", &path);
    let der = |leaf: &Leaf| common::pki::first_der(leaf.cert.as_bytes());
    let fallback = common::pki::first_der(&std::fs::read(root.join("server.com.crt")).unwrap());
    for (name, want) in [
        ("expired.example.com", der(&expired)),
        ("early.example.com", der(&early)),
        ("revoked.example.com", fallback.clone()),
        ("mismatch.example.com", fallback.clone()),
        ("own.example.com", der(&shared)),
        ("server.com", fallback.clone()),
    ] {
        let served = common::client::served_der(proxy.addr, name).await;
        assert_eq!(served, Some(want), "{name}");
    }
    let errors = |lines: &[String], cert: &str, code: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains("certificate serves with an error")
                    && l.contains(&format!("\"cert\":\"{cert}\""))
                    && l.contains(&format!("\"code\":\"{code}\""))
            })
            .count()
    };
    let startup = &proxy.startup;
    assert_eq!(errors(startup, "expired.pem", "expired"), 1, "{startup:#?}");
    assert_eq!(errors(startup, "early.pem", "not-yet-valid"), 1);
    // Two full rescans at least: each logs them again.
    let later = proxy.lines_until_quiet(Duration::from_millis(2500), Duration::from_millis(2500));
    assert!(errors(&later, "expired.pem", "expired") >= 2, "{later:#?}");
    assert!(
        errors(&later, "early.pem", "not-yet-valid") >= 2,
        "{later:#?}"
    );

    let doc = certs_json(&path);
    assert_eq!(row(&doc, "expired.pem")["state"], "serving-with-errors");
    assert_eq!(
        row(&doc, "expired.pem")["codes"],
        serde_json::json!(["expired"])
    );
    assert_eq!(row(&doc, "early.pem")["state"], "serving-with-errors");
    assert_eq!(row(&doc, "revoked.pem")["state"], "refused");
    assert_eq!(
        row(&doc, "revoked.pem")["codes"],
        serde_json::json!(["revoked"])
    );
    assert_eq!(row(&doc, "mismatch.pem")["state"], "refused");
    assert_eq!(row(&doc, "shared.pem")["state"], "serving-with-errors");
    assert_eq!(row(&doc, "only.pem")["state"], "refused");
    let only_reason = row(&doc, "only.pem")["reason"].as_str().unwrap().to_owned();
    assert!(only_reason.contains("server-wide"), "{only_reason}");

    // A clean version beside it serves ahead of it...
    let valid = pki.leaf(&["expired.example.com"]);
    write_atomically(
        &store.join("valid.pem"),
        &format!("{}{}", pki.fullchain(&valid), valid.key),
    );
    let addr = proxy.addr;
    let valid_der = der(&valid);
    let seen = wait_served(
        addr,
        "expired.example.com",
        &valid_der,
        Duration::from_secs(3),
    );
    assert!(seen.await.is_some(), "the clean version serves");
    // ...and a version worse than it (not yet valid) is refused, naming what serves.
    let worse = pki.leaf_with(&["expired.example.com"], (1, 400), 5);
    write_atomically(
        &store.join("worse.pem"),
        &format!("{}{}", pki.fullchain(&worse), worse.key),
    );
    let refused = proxy
        .wait_line(r#""cert":"worse.pem""#)
        .expect("the worse version is refused");
    assert!(
        refused.contains("certificate entry refused; valid.pem keeps serving its names"),
        "{refused}"
    );
    assert_eq!(
        common::client::served_der(addr, "expired.example.com").await,
        Some(der(&valid))
    );
}
