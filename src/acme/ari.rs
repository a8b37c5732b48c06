//! ACME Renewal Information (RFC 9773): the CA says when each certificate should be
//! renewed (earlier than planned when it must revoke), and the renewal order says which
//! certificate it replaces.
//!
//! Each certificate's window is asked for when it is found or issued (spread over an
//! hour at start-up), then again when the CA's Retry-After says (between a minute and a
//! day). A CA without ARI is noticed at the first answer and never asked again; renewal
//! then stays two thirds into the lifetime.

use std::time::Duration;

use instant_acme::CertificateIdentifier;
use rustls::pki_types::Der;

/// Requests in flight at once.
pub const IN_FLIGHT: usize = 2;
/// The bounds put on the CA's Retry-After.
pub const RETRY_MIN: Duration = Duration::from_secs(60);
pub const RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// Wait after a failed request.
pub const AFTER_ERROR: Duration = Duration::from_secs(3600);
/// Wait between tries to reach the account while there is none.
pub const ACCOUNT_RETRY: Duration = Duration::from_secs(300);

/// The identifier of the certificate `leaf` (its AKI key identifier and serial), if it
/// has an Authority Key Identifier.
pub fn identifier(leaf: &[u8]) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })?;
    Some(
        CertificateIdentifier::new(Der::from_slice(aki), Der::from_slice(cert.raw_serial()))
            .into_owned(),
    )
}

/// The renewal time picked in the window `[start, end]` (Unix times): uniformly at random
/// (RFC 9773 §4.2), `random` being a random number; the start when the window is empty
/// or reversed.
pub fn pick(start: i64, end: i64, random: u64) -> i64 {
    if end <= start {
        return start;
    }
    let span = (end - start) as u64;
    start + (random % (span + 1)) as i64
}

/// A random number from aws-lc.
pub fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// When to ask again, from the CA's Retry-After.
pub fn next_poll(retry_after: Duration) -> Duration {
    retry_after.clamp(RETRY_MIN, RETRY_MAX)
}

/// The first poll for one of `count` certificates found at start-up: spread over up to an
/// hour (a tenth of a second per certificate), a fixed place per name.
pub fn first_poll(name: &str, count: usize) -> Duration {
    let spread = (count as u64 / 10).clamp(1, 3600);
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    Duration::from_secs(hash % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_in_the_window() {
        for r in [0, 1, 7, u64::MAX, random()] {
            let t = pick(1000, 2000, r);
            assert!((1000..=2000).contains(&t));
        }
        assert_eq!(pick(5000, 4000, 3), 5000);
        assert_eq!(next_poll(Duration::from_secs(1)), RETRY_MIN);
        assert_eq!(
            next_poll(Duration::from_secs(6 * 3600)),
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(next_poll(Duration::from_secs(9 * 86_400)), RETRY_MAX);
        assert!(first_poll("a.example.com", 100_000) < Duration::from_secs(3600));
        assert_eq!(first_poll("a.example.com", 3), Duration::ZERO);
    }

    #[test]
    fn the_identifier_is_the_aki_and_serial_in_base64url() {
        // rcgen writes an AKI when the issuer has a key identifier.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1, 2, 3, 4]);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x87, 0x65]));
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let id = identifier(cert.der()).unwrap();
        // RFC 9773's encoding: base64url of the key identifier's bytes and of the
        // serial's DER content bytes, no padding.
        assert_eq!(id.authority_key_identifier, "AQIDBA");
        assert_eq!(id.serial, "AIdl");
    }
}
