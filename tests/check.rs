//! `mailfront check` on the cases hosting panels refuse, each asserting the code, the exit
//! status and that the message names the file (the store's side is in check_store.rs).

mod common;

use std::process::Command;

use common::chains::{ca, sha1_leaf, weak_rsa, ChainPki as Pki};
use rcgen::{CertificateParams, KeyPair};

const BIN: &str = env!("CARGO_BIN_EXE_mailfront");

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
        // One combined file named as certificate and as key (`default_cert` and
        // `default_key` both set to it): read once, not a second copy.
        &["combined.pem", "combined.pem"],
    ] {
        let (code, text) = check(&pki, args);
        assert_eq!(code, 0, "{args:?}: {text}");
        assert!(text.contains("ok: no problems found"), "{text}");
        assert!(text.contains("mail.example.com"), "{text}");
    }
    // A certificate alone, readable by all as certificates are: the store would refuse
    // it for want of a key; with --no-key (the key is not there yet) it passes.
    let public = pki.path("public.crt");
    std::fs::write(&public, pki.fullchain(&leaf)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = check(&pki, &["public.crt"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "no-key", "public.crt");
    let (code, text) = check(&pki, &["--no-key", "public.crt"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok: no problems found"), "{text}");
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
/// chain merely out of order: errors without a key to say which certificate is the
/// server's, warnings (served in order) with one.
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
    let (code, text) = check(&pki, &["--no-key", "swapped.crt"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "not-one-leaf", "swapped.crt");
    assert!(text.contains("look swapped"), "{text}");
    let (code, text) = check(&pki, &["swapped.crt", "a.key"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "not-one-leaf", "swapped.crt");

    pki.write("two.crt", &format!("{}{}", leaf.cert, other.cert));
    let (code, text) = check(&pki, &["--no-key", "two.crt"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "error", "not-one-leaf", "two.crt");
    pki.write(
        "two-chain.crt",
        &format!("{}{}{}", other.cert, leaf.cert, pki.inter.cert.pem()),
    );
    let (code, text) = check(&pki, &["two-chain.crt", "a.key"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "not-one-leaf", "two-chain.crt");
    assert!(text.contains("left out"), "{text}");

    let root = pki.root.cert.pem();
    pki.write(
        "order.crt",
        &format!("{}{root}{}", leaf.cert, pki.inter.cert.pem()),
    );
    let (code, text) = check(&pki, &["order.crt", "a.key"]);
    assert_eq!(code, 0, "{text}");
    has(&text, "warning", "not-one-leaf", "order.crt");
    has(&text, "warning", "root-in-chain", "order.crt");
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
    let crl = pki.crl_revoking(leaf.serial);
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

/// A SHA-1-signed leaf and a 1024-bit RSA key, both made by openssl.
#[test]
fn weak_signature_and_weak_key_from_openssl() {
    let pki = Pki::new();
    let dir = pki.tmp.path();
    sha1_leaf(dir);
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["check", "--ca-bundle", "rsa-ca.crt", "sha1.crt", "sha1.key"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    has(&text, "error", "weak-signature", "sha1.crt");
    assert!(text.contains("sha1WithRSAEncryption"), "{text}");

    weak_rsa(dir);
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
