//! An OCSP response file with arbitrary bytes (a truncated download, an HTML error page,
//! a response for another certificate): judging it stapling or refusing it with a finding
//! naming the file, never a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailfront::certs::testing::{judge_ocsp, Verdict};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

/// A leaf and its CA, made once.
fn chain() -> &'static (Vec<CertificateDer<'static>>, std::sync::Arc<CryptoProvider>) {
    static CHAIN: OnceLock<(Vec<CertificateDer<'static>>, std::sync::Arc<CryptoProvider>)> =
        OnceLock::new();
    CHAIN.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.example.com".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (
            vec![leaf.der().clone(), ca.der().clone()],
            mailfront::tls::provider(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (chain, provider) = chain();
    let path = Path::new("/nonexistent/a.example.com.pem.ocsp");
    match judge_ocsp(path, data, chain, &[], provider, 1_800_000_000) {
        // Only a response signed by the CA above can be stapled, which random bytes are not.
        Verdict::Staple { .. } => panic!("random bytes stapled"),
        Verdict::Refused { finding, .. } => assert_eq!(finding.file, path),
    }
});
