//! Each check on an rcgen-made PKI: root -> intermediate -> leaves.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use super::trust::Issuer;
use super::*;

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
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

struct Leaf {
    der: CertificateDer<'static>,
    key: KeyPair,
    serial: u64,
}

fn leaf_with(names: &[&str], issuer: &Ca, days: (i64, i64), serial: u64) -> Leaf {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(days.0);
    params.not_after = now + Duration::days(days.1);
    params.serial_number = Some(SerialNumber::from(serial));
    let der = params
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap()
        .der()
        .clone();
    Leaf { der, key, serial }
}

fn leaf(names: &[&str], issuer: &Ca) -> Leaf {
    leaf_with(names, issuer, (-10, 365), 1)
}

/// A PKI whose root is trusted (as if in the system bundle).
struct Pki {
    root: Ca,
    inter: Ca,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let root = ca("Test Root", None);
        let inter = ca("Test Intermediate", Some(&root));
        Self {
            root,
            inter,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn trust(&self) -> Trust {
        let anchor = webpki::anchor_from_trusted_cert(&self.root.der())
            .unwrap()
            .to_owned();
        Trust {
            bundle: Some(PathBuf::from("/test/bundle.pem")),
            roots: vec![anchor],
            ..Trust::none()
        }
    }

    /// Writes the key with `mode` and returns its path.
    fn key_file(&self, key: &KeyPair, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("site.key");
        std::fs::write(&path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

fn signing(key: &KeyPair) -> Arc<dyn SigningKey> {
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    crate::certs::resolver::signing_key(der, &rustls::crypto::aws_lc_rs::default_provider())
        .unwrap()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Runs the checks on `chain` with `key` (mode 0600), returns the outcome.
fn run(pki: &Pki, chain: &[CertificateDer<'static>], key: &KeyPair, trust: &Trust) -> Outcome {
    run_as(pki, chain, key, trust, None, Depth::Full)
}

fn run_as(
    pki: &Pki,
    chain: &[CertificateDer<'static>],
    key: &KeyPair,
    trust: &Trust,
    domain: Option<Domain>,
    depth: Depth,
) -> Outcome {
    let key_path = pki.key_file(key, 0o600);
    let signing = signing(key);
    let cert_path = pki.dir.path().join("site.crt");
    let subject = Subject {
        cert_path: &cert_path,
        key_path: &key_path,
        chain,
        key: Some(signing.as_ref()),
        domain,
    };
    check(&subject, trust, now(), depth)
}

fn codes(out: &Outcome) -> Vec<(&'static str, Severity)> {
    out.findings
        .iter()
        .map(|f| (f.code.as_str(), f.severity))
        .collect()
}

#[test]
fn a_good_chain_has_no_findings() {
    let pki = Pki::new();
    let l = leaf(&["a.example.com"], &pki.inter);
    let out = run(
        &pki,
        &[l.der.clone(), pki.inter.der()],
        &l.key,
        &pki.trust(),
    );
    assert!(out.findings.is_empty(), "{:#?}", out.findings);
    assert!(out.chain.is_none());
    assert_eq!(out.leaf.unwrap().dns_names, ["a.example.com"]);
}

#[test]
fn key_mismatch_names_both_files() {
    let pki = Pki::new();
    let l = leaf(&["a.example.com"], &pki.inter);
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let out = run(&pki, &[l.der, pki.inter.der()], &other, &pki.trust());
    assert_eq!(codes(&out), [("key-mismatch", Severity::Error)]);
    let f = &out.findings[0];
    assert!(f.file.ends_with("site.key"));
    assert!(
        f.message.contains("site.key") && f.message.contains("site.crt"),
        "{}",
        f.message
    );
}

/// Several server certificates, only CA certificates, the chain before the certificate:
/// errors, unless the key says which certificate is the server's.
#[test]
fn two_leaves_only_cas_and_swapped_files_are_errors() {
    let pki = Pki::new();
    let a = leaf(&["a.example.com"], &pki.inter);
    let b = leaf(&["b.example.com"], &pki.inter);
    let c = leaf(&["c.example.com"], &pki.inter);
    let trust = pki.trust();
    let out = run(&pki, &[a.der.clone(), b.der.clone()], &c.key, &trust);
    assert!(codes(&out).contains(&("not-one-leaf", Severity::Error)));
    assert!(out.findings[0].message.contains("2 server certificates"));

    let out = run(&pki, &[pki.inter.der(), pki.root.der()], &a.key, &trust);
    assert_eq!(codes(&out), [("not-one-leaf", Severity::Error)]);
    assert!(out.findings[0].message.contains("only CA certificates"));

    let out = run(&pki, &[pki.inter.der(), a.der.clone()], &c.key, &trust);
    assert!(codes(&out).contains(&("not-one-leaf", Severity::Error)));
    assert!(
        out.findings[0].message.contains("look swapped"),
        "{}",
        out.findings[0].message
    );
}

/// The key names the server's certificate: a chain given first, or a second server
/// certificate, is served in order with a warning.
#[test]
fn the_key_says_which_certificate_is_the_servers() {
    let pki = Pki::new();
    let a = leaf(&["a.example.com"], &pki.inter);
    let b = leaf(&["b.example.com"], &pki.inter);
    let trust = pki.trust();
    let out = run(&pki, &[pki.inter.der(), a.der.clone()], &a.key, &trust);
    assert_eq!(codes(&out), [("not-one-leaf", Severity::Warning)]);
    assert!(out.findings[0]
        .message
        .contains("comes after CA certificates"));
    assert_eq!(out.chain.unwrap(), [a.der.clone(), pki.inter.der()]);

    let out = run(
        &pki,
        &[b.der.clone(), a.der.clone(), pki.inter.der()],
        &a.key,
        &trust,
    );
    assert_eq!(codes(&out), [("not-one-leaf", Severity::Warning)]);
    assert!(out.findings[0].message.contains("left out"));
    assert_eq!(out.chain.unwrap(), [a.der, pki.inter.der()]);
}

#[test]
fn a_chain_out_of_order_is_reordered_with_a_warning() {
    let pki = Pki::new();
    let l = leaf(&["a.example.com"], &pki.inter);
    let unrelated = ca("Unrelated CA", None);
    let file = [
        l.der.clone(),
        pki.root.der(),
        unrelated.der(),
        pki.inter.der(),
    ];
    let out = run(&pki, &file, &l.key, &pki.trust());
    assert_eq!(
        codes(&out),
        [
            ("not-one-leaf", Severity::Warning),
            ("root-in-chain", Severity::Warning)
        ]
    );
    assert!(out.findings[0].message.contains("Unrelated CA"));
    let served = out.chain.expect("a reordered chain");
    assert_eq!(served, [l.der, pki.inter.der()], "the root is left out");
}

#[test]
fn a_missing_intermediate_is_named_or_taken_from_issuers_dir() {
    let pki = Pki::new();
    let l = leaf(&["a.example.com"], &pki.inter);
    let mut trust = pki.trust();
    let out = run(&pki, std::slice::from_ref(&l.der), &l.key, &trust);
    assert_eq!(codes(&out), [("chain-incomplete", Severity::Error)]);
    assert!(
        out.findings[0].message.contains("Test Intermediate"),
        "{}",
        out.findings[0].message
    );

    trust.issuers.push(Issuer {
        der: pki.inter.der(),
        facts: CertFacts::parse(&pki.inter.der()).unwrap(),
        path: PathBuf::from("/issuers/inter.pem"),
    });
    let out = run(&pki, std::slice::from_ref(&l.der), &l.key, &trust);
    assert_eq!(codes(&out), [("chain-incomplete", Severity::Warning)]);
    assert!(out.findings[0].message.contains("/issuers/inter.pem"));
    assert_eq!(out.chain.unwrap(), [l.der, pki.inter.der()]);
}

#[test]
fn without_a_trust_store_a_short_chain_is_not_judged() {
    let pki = Pki::new();
    let l = leaf(&["a.example.com"], &pki.inter);
    let out = run(&pki, &[l.der], &l.key, &Trust::none());
    assert!(out.findings.is_empty(), "{:#?}", out.findings);
}

#[test]
fn self_signed_and_untrusted_roots_warn() {
    let pki = Pki::new();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let own = CertificateParams::new(vec!["self.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let out = run(&pki, &[own.der().clone()], &key, &pki.trust());
    assert_eq!(codes(&out), [("self-signed", Severity::Warning)]);

    let private = ca("Private Root", None);
    let l = leaf(&["a.example.com"], &private);
    let out = run(&pki, &[l.der, private.der()], &l.key, &pki.trust());
    assert_eq!(
        codes(&out),
        [
            ("root-in-chain", Severity::Warning),
            ("untrusted-issuer", Severity::Warning)
        ]
    );
    assert!(out.findings[1].message.contains("Private Root"));
}

#[test]
fn names_explicit_guessed_and_the_wildcard_rule() {
    let pki = Pki::new();
    let l = leaf(&["*.example.com"], &pki.inter);
    let chain = [l.der.clone(), pki.inter.der()];
    let trust = pki.trust();
    let domain = |name: &str, explicit| {
        Some(Domain {
            name: name.into(),
            explicit,
        })
    };
    let out = run_as(
        &pki,
        &chain,
        &l.key,
        &trust,
        domain("mail.example.com", true),
        Depth::Full,
    );
    assert!(out.findings.is_empty());
    let out = run_as(
        &pki,
        &chain,
        &l.key,
        &trust,
        domain("example.com", true),
        Depth::Full,
    );
    assert_eq!(codes(&out), [("name-mismatch", Severity::Error)]);
    assert!(
        out.findings[0].message.contains("not example.com itself"),
        "{}",
        out.findings[0].message
    );
    let out = run_as(
        &pki,
        &chain,
        &l.key,
        &trust,
        domain("a.b.example.com", false),
        Depth::Load,
    );
    assert_eq!(codes(&out), [("name-mismatch", Severity::Warning)]);
    assert!(out.findings[0].message.contains("exactly one label"));
}

#[test]
fn dates_expired_not_yet_valid_and_expiring_soon() {
    let pki = Pki::new();
    let trust = pki.trust();
    for (days, code, severity) in [
        ((-40, -3), "expired", Severity::Error),
        ((5, 100), "not-yet-valid", Severity::Error),
        ((-60, 12), "expires-soon", Severity::Warning),
    ] {
        let l = leaf_with(&["a.example.com"], &pki.inter, days, 7);
        let out = run(&pki, &[l.der, pki.inter.der()], &l.key, &trust);
        assert_eq!(
            codes(&out),
            [(code, severity)],
            "{days:?}: {:#?}",
            out.findings
        );
        assert!(out.findings[0].message.contains("days"));
    }
}

/// A CRL signed by `issuer` revoking `serial`.
fn crl_of(issuer: &Ca, serial: u64) -> rcgen::CertificateRevocationList {
    let now = OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - Duration::days(1),
        next_update: now + Duration::days(7),
        crl_number: SerialNumber::from(1),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(serial),
            revocation_time: now - Duration::hours(1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer.cert, &issuer.key)
    .unwrap()
}

#[test]
fn a_revoked_leaf_is_found_through_a_crl_of_its_issuer() {
    let pki = Pki::new();
    let l = leaf_with(&["a.example.com"], &pki.inter, (-10, 365), 4242);
    let crl = crl_of(&pki.inter, l.serial);
    let mut trust = pki.trust();
    let der = crl.der().to_vec();
    trust
        .crls
        .push(super::crl::Crl::from_der(&der, PathBuf::from("/crl/inter.crl")).unwrap());
    // On load too: the leaf is looked up in the CRL its issuer signed.
    let out = run_as(
        &pki,
        &[l.der.clone(), pki.inter.der()],
        &l.key,
        &trust,
        None,
        Depth::Load,
    );
    assert_eq!(codes(&out), [("revoked", Severity::Error)]);
    assert!(out.findings[0].message.contains("a.example.com"));

    // A CRL under the intermediate's name but signed by another key is not believed on
    // load, and makes the path fail to verify in full.
    let impostor = ca("Test Intermediate", Some(&pki.root));
    let forged = crl_of(&impostor, l.serial);
    let mut forged_trust = pki.trust();
    let der = forged.der().to_vec();
    forged_trust
        .crls
        .push(super::crl::Crl::from_der(&der, PathBuf::from("/crl/forged.crl")).unwrap());
    let chain = [l.der.clone(), pki.inter.der()];
    let out = run_as(&pki, &chain, &l.key, &forged_trust, None, Depth::Load);
    assert!(out.findings.is_empty(), "{:#?}", out.findings);
    let out = run(&pki, &chain, &l.key, &forged_trust);
    assert_eq!(codes(&out), [("chain-incomplete", Severity::Error)]);
    assert!(
        out.findings[0].message.contains("did not sign"),
        "{}",
        out.findings[0].message
    );

    let other = leaf_with(&["b.example.com"], &pki.inter, (-10, 365), 5);
    let out = run(&pki, &[other.der, pki.inter.der()], &other.key, &trust);
    assert!(out.findings.is_empty(), "{:#?}", out.findings);
}

#[test]
fn a_readable_key_file_warns() {
    let pki = Pki::new();
    let l = leaf(&["a.example.com"], &pki.inter);
    let key_path = pki.key_file(&l.key, 0o644);
    let signing = signing(&l.key);
    let cert_path = pki.dir.path().join("site.crt");
    let chain = [l.der, pki.inter.der()];
    let subject = Subject {
        cert_path: &cert_path,
        key_path: &key_path,
        chain: &chain,
        key: Some(signing.as_ref()),
        domain: None,
    };
    let out = check(&subject, &pki.trust(), now(), Depth::Load);
    assert_eq!(codes(&out), [("key-permissions", Severity::Warning)]);
    assert!(out.findings[0].fix.contains("chmod 600"));
}

#[test]
fn a_chain_signed_by_another_key_does_not_verify() {
    let pki = Pki::new();
    // Same name as the real intermediate, another key: names match, signatures do not.
    let impostor = ca("Test Intermediate", Some(&pki.root));
    let l = leaf(&["a.example.com"], &impostor);
    let out = run(&pki, &[l.der, pki.inter.der()], &l.key, &pki.trust());
    assert!(
        codes(&out).contains(&("chain-incomplete", Severity::Error)),
        "{:#?}",
        out.findings
    );
}

#[test]
fn domains_guessed_from_entry_names() {
    let d = |id: &str| domain_of_entry(id).map(|d| d.name);
    assert_eq!(d("example.com.pem").as_deref(), Some("example.com"));
    assert_eq!(
        d("Mail.Example.COM.crt").as_deref(),
        Some("mail.example.com")
    );
    assert_eq!(d("live/example.org/").as_deref(), Some("example.org"));
    assert_eq!(
        d("customers/shop.example.net.pem").as_deref(),
        Some("shop.example.net")
    );
    assert_eq!(d("mail.pem"), None);
    assert_eq!(d("k8s/"), None);
    assert_eq!(d("_.example.com.pem"), None);
    assert_eq!(d("host.local1.pem"), None);
}
