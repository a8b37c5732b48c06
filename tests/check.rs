//! `mailfront check` on the cases hosting panels refuse, each asserting the code, the exit
//! status and that the message names the file; and the store keeping a serving version
//! when each bad case is dropped over it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::wait_served;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_mailfront");
/// How long to wait before concluding that something did not (wrongly) change.
const SETTLE: Duration = Duration::from_millis(400);

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str, parent: Option<&Ca>) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = match parent {
        Some(p) => params.signed_by(&key, &p.cert, &p.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Ca { cert, key }
}

/// root -> intermediate, files in a tempdir: `root.pem` (the bundle), `inter.pem`.
struct Pki {
    tmp: tempfile::TempDir,
    root: Ca,
    inter: Ca,
}

struct Leaf {
    cert: String,
    key: String,
    serial: u64,
}

impl Pki {
    fn new() -> Self {
        let root = ca("Check Root", None);
        let inter = ca("Check Intermediate", Some(&root));
        let pki = Self {
            tmp: tempfile::tempdir().unwrap(),
            root,
            inter,
        };
        pki.write("root.pem", &pki.root.cert.pem());
        pki.write("inter.pem", &pki.inter.cert.pem());
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes `text` to `name`, mode 0600 (as a key should be).
    fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A leaf for `names` issued by the intermediate, valid from `days.0` to `days.1`
    /// days from now.
    fn leaf_with(&self, names: &[&str], days: (i64, i64), serial: u64) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params
            .signed_by(&key, &self.inter.cert, &self.inter.key)
            .unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, (-10, 300), 1)
    }

    /// `leaf + intermediate`, as a CA delivers a full chain.
    fn fullchain(&self, leaf: &Leaf) -> String {
        format!("{}{}", leaf.cert, self.inter.cert.pem())
    }
}

/// Runs `mailfront check --ca-bundle root.pem ARGS`: (exit status, stdout).
fn check(pki: &Pki, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .current_dir(pki.tmp.path())
        .args(["check", "--ca-bundle", "root.pem"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

/// Asserts a finding `severity code: file` is printed.
fn has(text: &str, severity: &str, code: &str, file: &str) {
    let line = format!("{severity} {code}: {file}");
    assert!(text.contains(&line), "expected {line:?} in:\n{text}");
}

/// A good chain and key, in either order and as one file: exit 0, no findings.
#[test]
fn a_good_certificate_passes_in_every_arrangement() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["mail.example.com"]);
    pki.write("site.crt", &pki.fullchain(&leaf));
    pki.write("site.key", &leaf.key);
    pki.write(
        "combined.pem",
        &format!("{}{}", pki.fullchain(&leaf), leaf.key),
    );
    for args in [
        &["site.crt", "site.key"][..],
        &["site.key", "site.crt"],
        &["combined.pem"],
        &["--domain", "mail.example.com", "combined.pem"],
    ] {
        let (code, text) = check(&pki, args);
        assert_eq!(code, 0, "{args:?}: {text}");
        assert!(text.contains("ok: no problems found"), "{text}");
        assert!(text.contains("mail.example.com"), "{text}");
    }
}

/// The key of another certificate: key-mismatch names the key file and the certificate.
#[test]
fn key_mismatch() {
    let pki = Pki::new();
    let (a, b) = (pki.leaf(&["a.example.com"]), pki.leaf(&["b.example.com"]));
    pki.write("a.crt", &pki.fullchain(&a));
    pki.write("b.key", &b.key);
    let (code, text) = check(&pki, &["a.crt", "b.key"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "key-mismatch", "b.key");
    assert!(
        text.contains("a.crt") && text.contains("a.example.com"),
        "{text}"
    );
}

/// Chain first and certificate second (files swapped), two server certificates, and a
/// chain merely out of order (a warning: it is served reordered).
#[test]
fn not_one_leaf_in_its_three_forms() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["a.example.com"]);
    let other = pki.leaf(&["b.example.com"]);
    pki.write("a.key", &leaf.key);
    pki.write(
        "swapped.crt",
        &format!("{}{}", pki.inter.cert.pem(), leaf.cert),
    );
    let (code, text) = check(&pki, &["swapped.crt", "a.key"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "not-one-leaf", "swapped.crt");
    assert!(text.contains("look swapped"), "{text}");

    pki.write("two.crt", &format!("{}{}", leaf.cert, other.cert));
    let (code, text) = check(&pki, &["two.crt", "a.key"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "not-one-leaf", "two.crt");

    let root = pki.root.cert.pem();
    pki.write(
        "order.crt",
        &format!("{}{root}{}", leaf.cert, pki.inter.cert.pem()),
    );
    let (code, text) = check(&pki, &["order.crt", "a.key"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "not-one-leaf", "order.crt");
    assert!(text.contains("not in issuing order"), "{text}");
}

/// The intermediate missing: named as the missing issuer; found in --issuers-dir, the
/// chain is completed with a warning.
#[test]
fn chain_incomplete_and_completed_from_issuers_dir() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["a.example.com"]);
    pki.write("short.crt", &leaf.cert);
    pki.write("a.key", &leaf.key);
    let (code, text) = check(&pki, &["short.crt", "a.key"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "chain-incomplete", "short.crt");
    assert!(text.contains("Check Intermediate"), "{text}");

    std::fs::create_dir(pki.path("issuers")).unwrap();
    pki.write("issuers/inter.pem", &pki.inter.cert.pem());
    let (code, text) = check(&pki, &["--issuers-dir", "issuers", "short.crt", "a.key"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "chain-incomplete", "short.crt");
    assert!(text.contains("issuers/inter.pem"), "{text}");
}

/// --domain not covered; the wildcard rule spelled out for the bare domain.
#[test]
fn name_mismatch_and_the_wildcard_rule() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["*.example.com"]);
    pki.write("wild.pem", &format!("{}{}", pki.fullchain(&leaf), leaf.key));
    let (code, _) = check(&pki, &["--domain", "mail.example.com", "wild.pem"]);
    assert_eq!(code, 0);
    let (code, text) = check(&pki, &["--domain", "example.com", "wild.pem"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "name-mismatch", "wild.pem");
    assert!(text.contains("not example.com itself"), "{text}");
}

/// Expired, not yet valid, and expiring within 30 days (a warning), each with its dates.
#[test]
fn dates() {
    let pki = Pki::new();
    for (days, code_word, severity, exit) in [
        ((-100, -2), "expired", "error", 1),
        ((3, 90), "not-yet-valid", "error", 1),
        ((-80, 10), "expires-soon", "warning", 0),
    ] {
        let leaf = pki.leaf_with(&["a.example.com"], days, 9);
        let file = format!("{code_word}.pem");
        pki.write(&file, &format!("{}{}", pki.fullchain(&leaf), leaf.key));
        let (code, text) = check(&pki, &[&file]);
        assert_eq!(code, exit, "{text}");
        has(&text, severity, code_word, &file);
        assert!(text.contains(" days"), "{text}");
    }
}

/// A leaf listed in a CRL from --crl-dir, PEM and DER alike.
#[test]
fn revoked_by_a_crl_in_pem_or_der() {
    let pki = Pki::new();
    let leaf = pki.leaf_with(&["a.example.com"], (-10, 300), 77);
    let now = OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::days(1),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(3),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(leaf.serial),
            revocation_time: now - time::Duration::hours(2),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&pki.inter.cert, &pki.inter.key)
    .unwrap();
    pki.write("a.pem", &format!("{}{}", pki.fullchain(&leaf), leaf.key));
    std::fs::create_dir(pki.path("pem")).unwrap();
    pki.write("pem/inter.crl", &crl.pem().unwrap());
    std::fs::create_dir(pki.path("der")).unwrap();
    std::fs::write(pki.path("der/inter.crl"), crl.der()).unwrap();
    for dir in ["pem", "der"] {
        let (code, text) = check(&pki, &["--crl-dir", dir, "a.pem"]);
        assert_eq!(code, 1, "{dir}: {text}");
        has(&text, "error", "revoked", "a.pem");
    }
    let other = pki.leaf_with(&["b.example.com"], (-10, 300), 78);
    pki.write("b.pem", &format!("{}{}", pki.fullchain(&other), other.key));
    let (code, text) = check(&pki, &["--crl-dir", "pem", "b.pem"]);
    assert_eq!(code, 0, "{text}");
}

/// Self-signed, a private root, and a key file others can read: warnings, exit 0.
#[test]
fn warnings_self_signed_untrusted_issuer_key_permissions() {
    let pki = Pki::new();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let own = CertificateParams::new(vec!["self.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    pki.write("self.pem", &format!("{}{}", own.pem(), key.serialize_pem()));
    let (code, text) = check(&pki, &["self.pem"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "self-signed", "self.pem");

    let leaf = pki.leaf(&["a.example.com"]);
    pki.write("a.crt", &pki.fullchain(&leaf));
    let key_path = pki.path("a.key");
    std::fs::write(&key_path, &leaf.key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .current_dir(pki.tmp.path())
        .args(["check", "--ca-bundle", "inter.pem", "a.crt", "a.key"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    has(&text, "warning", "key-permissions", "a.key");
    assert!(text.contains("chmod 600"), "{text}");
    // The intermediate given as the only root: the chain ends at a trusted certificate.
    assert!(!text.contains("chain-incomplete"), "{text}");

    let private = ca("Private Root", None);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["p.example.com".to_owned()])
        .unwrap()
        .signed_by(&key, &private.cert, &private.key)
        .unwrap();
    let chain = format!(
        "{}{}{}",
        leaf.pem(),
        private.cert.pem(),
        key.serialize_pem()
    );
    pki.write("private.pem", &chain);
    let (code, text) = check(&pki, &["private.pem"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "untrusted-issuer", "private.pem");
    assert!(text.contains("Private Root"), "{text}");
}

/// SHA-1 signatures need an RSA issuer, and rcgen signs no SHA-1: openssl makes them.
/// It also makes the 1024-bit RSA key.
#[test]
fn weak_signature_and_weak_key_from_openssl() {
    let pki = Pki::new();
    let dir = pki.tmp.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-sha256",
        "-nodes",
        "-keyout",
        "rsa-ca.key",
        "-out",
        "rsa-ca.crt",
        "-subj",
        "/CN=RSA Check CA",
        "-days",
        "30",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "sha1.key",
        "-out",
        "sha1.csr",
        "-subj",
        "/CN=sha1.example.com",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:sha1.example.com\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "sha1.csr",
        "-CA",
        "rsa-ca.crt",
        "-CAkey",
        "rsa-ca.key",
        "-CAcreateserial",
        "-sha1",
        "-days",
        "200",
        "-out",
        "sha1.crt",
        "-extfile",
        "ext",
    ]);
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["check", "--ca-bundle", "rsa-ca.crt", "sha1.crt", "sha1.key"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    has(&text, "error", "weak-signature", "sha1.crt");
    assert!(text.contains("sha1WithRSAEncryption"), "{text}");

    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-keyout",
        "weak.key",
        "-out",
        "weak.crt",
        "-subj",
        "/CN=weak.example.com",
        "-addext",
        "subjectAltName=DNS:weak.example.com",
        "-days",
        "200",
    ]);
    let (code, text) = check(&pki, &["weak.crt", "weak.key"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "weak-key", "weak.crt");
    assert!(text.contains("RSA 1024"), "{text}");
}

/// `--format json`: one document with the findings and counts; usage problems exit 2.
#[test]
fn json_output_and_usage_errors() {
    let pki = Pki::new();
    let leaf = pki.leaf_with(&["a.example.com"], (-100, -1), 5);
    pki.write("old.pem", &format!("{}{}", pki.fullchain(&leaf), leaf.key));
    let (code, text) = check(&pki, &["--format", "json", "old.pem"]);
    assert_eq!(code, 1, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["errors"], 1);
    assert_eq!(doc["findings"][0]["code"], "expired");
    assert_eq!(doc["findings"][0]["severity"], "error");
    assert!(doc["findings"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("old.pem"));
    assert!(doc["findings"][0]["fix"].as_str().is_some());
    assert_eq!(doc["certificate"]["names"][0], "a.example.com");

    let (code, text) = check(&pki, &["missing.pem"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("missing.pem"), "{text}");
    pki.write("only.key", &leaf.key);
    let (code, text) = check(&pki, &["only.key"]);
    assert_eq!(code, 2, "{text}");
    let out = Command::new(BIN).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Each bad case dropped over a serving entry leaves the good version serving.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_keeps_the_good_version_over_each_bad_case() {
    let pki = Pki::new();
    let root = pki.tmp.path();
    let store = common::store_dir(root);
    // The server-wide certificate the test head names.
    let _server = common::Pki::new(root);
    let good = pki.leaf(&["mail.example.com"]);
    let entry = store.join("mail.example.com.pem");
    write_atomically(&entry, &format!("{}{}", pki.fullchain(&good), good.key));
    let bundle = format!(
        "[certs]\nca_bundle = \"{}\"\n",
        pki.path("root.pem").display()
    );
    let head = common::head(root, &store, "").replace("[certs]\n", &bundle);
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");
    let good_der = common::pki::first_der(good.cert.as_bytes());
    let name = "mail.example.com";
    assert!(wait_served(addr, name, &good_der, Duration::from_secs(2))
        .await
        .is_some());

    let other = pki.leaf(&["mail.example.com"]);
    let expired = pki.leaf_with(&["mail.example.com"], (-90, -1), 3);
    let wrong_name = pki.leaf(&["other.example.com"]);
    let cases = [
        (
            "key-mismatch",
            format!("{}{}", pki.fullchain(&other), good.key),
        ),
        (
            "expired",
            format!("{}{}", pki.fullchain(&expired), expired.key),
        ),
        (
            "not-one-leaf",
            format!("{}{}{}", pki.inter.cert.pem(), other.cert, other.key),
        ),
        ("chain-incomplete", format!("{}{}", other.cert, other.key)),
    ];
    for (code, text) in cases {
        write_atomically(&entry, &text);
        // A refusal changes nothing a client sees: let the reload happen (it takes tens
        // of milliseconds), then check that the old version still serves.
        tokio::time::sleep(SETTLE).await;
        assert!(
            wait_served(addr, name, &good_der, Duration::from_secs(2))
                .await
                .is_some(),
            "{code}: the good version keeps serving"
        );
    }
    // A name-mismatch guessed from the file name is only a warning: it loads.
    write_atomically(
        &entry,
        &format!("{}{}", pki.fullchain(&wrong_name), wrong_name.key),
    );
    let wrong_der = common::pki::first_der(wrong_name.cert.as_bytes());
    assert!(wait_served(
        addr,
        "other.example.com",
        &wrong_der,
        Duration::from_secs(2)
    )
    .await
    .is_some());
}

fn write_atomically(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `mailfront certs`: a row per entry with its state (serving, superseded, refused with its
/// codes), which entry serves a contested name, and route names only the server-wide
/// certificate covers; the same as JSON.
#[test]
fn certs_view_of_a_store() {
    let pki = Pki::new();
    let root = pki.tmp.path();
    let _server = common::Pki::new(root);
    let store = common::store_dir(root);
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
