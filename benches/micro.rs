//! Criterion micro benches of the store and the crypto floor:
//!
//! - `lookup/N`: choosing the entry for a name in an index of N entries (1, 10,000,
//!   100,000): an exact name, a name only a wildcard covers, and a name nothing covers
//!   (the server-wide certificate) — what every handshake pays on top of TLS.
//! - `load/ecdsa`, `load/rsa`: parsing one entry from its PEM bytes with the load-time
//!   checks (chain order, names, key match, trust), what a start or reload pays per file.
//! - `sign/ecdsa-p256`, `sign/rsa-2048-pss`: the one signature of a full TLS 1.3
//!   handshake, with the same provider, to set the proxy's handshake cost beside.
//!
//! `cargo bench --bench micro` (criterion; `-- lookup` for one group).

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mailfront::certs::testing::{self as load, Contents, Context, Layout, Role, Source};
use mailfront::certs::{check, Fixed, Index, Served, Store};
use mailfront::names::Pattern;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::RSA_PSS_SHA256,
];

fn name_of(i: usize) -> String {
    format!("d{i:07}.example.test")
}

/// An index of `n` exact names and one wildcard per thousand, all served by one key.
fn store_of(n: usize) -> Store {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["bench.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der).unwrap();
    let resolver = Arc::new(Fixed(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    ))));
    let served = |id: &str| {
        Arc::new(Served {
            id: id.into(),
            resolver: resolver.clone(),
            algorithm: rustls::SignatureAlgorithm::ECDSA,
            schemes: vec![SignatureScheme::ECDSA_NISTP256_SHA256].into(),
            not_after: 0,
            not_before: 0,
            problems: Default::default(),
            trusted: true,
        })
    };
    let fallback = served("server");
    let mut updates: Vec<_> = (0..n)
        .map(|i| {
            let name = name_of(i);
            (Pattern::parse(&name).unwrap(), vec![served(&name)])
        })
        .collect();
    for i in 0..n.div_ceil(1000) {
        let name = format!("*.w{i}.example.test");
        updates.push((Pattern::parse(&name).unwrap(), vec![served(&name)]));
    }
    let entries = updates.len();
    Store::new(Index::empty(fallback.clone()).with_updates(fallback, entries, updates))
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [1usize, 10_000, 100_000] {
        let store = store_of(n);
        let exact: Vec<String> = (0..1024).map(|i| name_of(i * 7919 % n)).collect();
        let wildcard = "imap.w0.example.test";
        let missing = "mail.not-served.example";
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % exact.len();
                let index = store.index();
                let (served, _) = index.select(Some(black_box(&exact[i])), SCHEMES);
                black_box(Arc::clone(&served.resolver));
            })
        });
        group.bench_with_input(BenchmarkId::new("wildcard", n), &n, |b, _| {
            b.iter(|| {
                let index = store.index();
                let (served, _) = index.select(Some(black_box(wildcard)), SCHEMES);
                black_box(Arc::clone(&served.resolver));
            })
        });
        group.bench_with_input(BenchmarkId::new("fallback", n), &n, |b, _| {
            b.iter(|| {
                let index = store.index();
                let (served, _) = index.select(Some(black_box(missing)), SCHEMES);
                black_box(Arc::clone(&served.resolver));
            })
        });
    }
    group.finish();
}

/// A CA and, under it, a leaf of each kind written as a single-file entry.
fn write_entries(dir: &Path) -> Vec<(&'static str, Source)> {
    let (ca, ca_key) = common::bench_ca(dir);
    [
        ("ecdsa", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("rsa", &rcgen::PKCS_RSA_SHA256),
    ]
    .into_iter()
    .map(|(kind, alg)| {
        let key = KeyPair::generate_for(alg).unwrap();
        let name = format!("{kind}.bench.test");
        let cert = CertificateParams::new(vec![name.clone()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let path = dir.join(format!("{name}.pem"));
        let text = format!("{}{}{}", cert.pem(), ca.pem(), key.serialize_pem());
        std::fs::write(&path, text).unwrap();
        let source = Source {
            id: format!("{name}.pem").into(),
            cert: path,
            key: None,
            extra: Box::default(),
            layout: Layout::Single,
            ocsp: None,
        };
        (kind, source)
    })
    .collect()
}

fn entry_load(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let entries = write_entries(tmp.path());
    let ctx = Context {
        provider: mailfront::tls::provider(),
        trust: check::Trust::load(Some(&tmp.path().join("ca.pem")), None, None).unwrap(),
    };
    let mut group = c.benchmark_group("load");
    for (kind, source) in &entries {
        let contents = Contents::read(source).unwrap();
        let loaded = load::parse(source, &contents, &ctx, Role::Entry);
        assert!(loaded.is_ok(), "{kind}: {:?}", loaded.err());
        group.bench_function(*kind, |b| {
            b.iter(|| load::parse(source, black_box(&contents), &ctx, Role::Entry).unwrap())
        });
    }
    group.finish();
}

fn sign(c: &mut Criterion) {
    let provider = mailfront::tls::provider();
    let mut group = c.benchmark_group("sign");
    for (label, alg, scheme) in [
        (
            "ecdsa-p256",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ),
        (
            "rsa-2048-pss",
            &rcgen::PKCS_RSA_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = provider.key_provider.load_private_key(der).unwrap();
        let signer = signing.choose_scheme(&[scheme]).unwrap();
        // What a TLS 1.3 CertificateVerify signs: 64 spaces, a context, a transcript hash.
        let message = [0x20u8; 130];
        group.bench_function(label, |b| {
            b.iter(|| signer.sign(black_box(&message)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, entry_load, sign);
criterion_main!(benches);
