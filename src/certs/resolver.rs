//! The rustls-specific part of the store: what a key can sign with, and the resolver that
//! hands rustls the certificate chosen for one connection.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::SignatureScheme;
use x509_parser::der_parser::asn1_rs::{FromDer, Integer, Sequence};
use x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY;
use x509_parser::x509::AlgorithmIdentifier;

/// Every scheme rustls can sign with; a key is asked once, at load time, which it serves.
const ALL_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// Turns a private key into a signing key.
///
/// rustls' own loader tries RSA first, then each curve, and aws-lc parses (and checks) the
/// whole key at every try: an ECDSA key costs two full parses that way, which is a third
/// of the time it takes to load a store of ECDSA entries. Keys that say they are EC go
/// straight to the ECDSA loader; anything else, and an EC key that loader refuses (for its
/// error message), goes the general way.
pub fn signing_key(
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    let ec = match &key {
        PrivateKeyDer::Sec1(_) => true,
        PrivateKeyDer::Pkcs8(der) => pkcs8_is_ec(der.secret_pkcs8_der()),
        _ => false,
    };
    if ec {
        if let Ok(signing) = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key) {
            return Ok(signing);
        }
    }
    provider.key_provider.load_private_key(key)
}

/// Whether a PKCS#8 `PrivateKeyInfo` is for an elliptic-curve key (RFC 5208:
/// `SEQUENCE { version INTEGER, privateKeyAlgorithm AlgorithmIdentifier, ... }`).
fn pkcs8_is_ec(der: &[u8]) -> bool {
    let algorithm = || -> Option<bool> {
        let (_, info) = Sequence::from_der(der).ok()?;
        let (rest, _version) = Integer::from_der(&info.content).ok()?;
        let (_, algorithm) = AlgorithmIdentifier::from_der(rest).ok()?;
        Some(algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY)
    };
    algorithm().unwrap_or(false)
}

/// The signature schemes `key` can produce, so that the handshake path only compares
/// lists instead of asking the key (which allocates a signer).
pub fn schemes_of(key: &dyn SigningKey) -> Box<[SignatureScheme]> {
    ALL_SCHEMES
        .iter()
        .copied()
        .filter(|s| key.choose_scheme(&[*s]).is_some())
        .collect()
}

/// Hands rustls the one certificate already chosen for a connection.
///
/// The choice is made from the ClientHello before the handshake starts (see
/// [`crate::tls`]), so that the connection knows which entry it serves, strict SNI can
/// answer with the right alert, and rustls never waits on our index.
#[derive(Debug)]
pub struct Fixed(pub Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Hands rustls a certificate with its stapled OCSP response while the response is
/// current (before its nextUpdate), and the same certificate without it after: a stale
/// response is never stapled, even before the store has loaded the entry again (which it
/// does at that time). Only entries with a response pay the reading of the clock; the
/// copy without the response is made only by handshakes after the nextUpdate and before
/// that reload, so an entry keeps one copy of its chain.
#[derive(Debug)]
pub struct Stapled {
    /// The certificate with the response.
    pub with: Arc<CertifiedKey>,
    /// The response's nextUpdate, in seconds since the epoch.
    pub until: i64,
}

impl ResolvesServerCert for Stapled {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if super::check::now() < self.until {
            return Some(Arc::clone(&self.with));
        }
        let mut without = CertifiedKey::clone(&self.with);
        without.ocsp = None;
        Some(Arc::new(without))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivatePkcs8KeyDer, PrivateSec1KeyDer};
    use rustls::SignatureAlgorithm;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    fn pkcs8(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        rcgen::KeyPair::generate_for(alg).unwrap().serialize_der()
    }

    #[test]
    fn keys_of_every_kind_load() {
        let cases = [
            (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                SignatureAlgorithm::ECDSA,
                true,
            ),
            (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                SignatureAlgorithm::ECDSA,
                true,
            ),
            (&rcgen::PKCS_ED25519, SignatureAlgorithm::ED25519, false),
            (&rcgen::PKCS_RSA_SHA256, SignatureAlgorithm::RSA, false),
        ];
        for (alg, want, ec) in cases {
            let der = pkcs8(alg);
            assert_eq!(pkcs8_is_ec(&der), ec, "{alg:?}");
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der));
            assert_eq!(signing_key(key, &provider()).unwrap().algorithm(), want);
        }
    }

    #[test]
    fn a_sec1_key_loads_and_garbage_is_refused() {
        // The SEC1 `ECPrivateKey` is the OCTET STRING inside the PKCS#8 wrapper.
        let der = pkcs8(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, info) = Sequence::from_der(&der).unwrap();
        let (rest, _) = Integer::from_der(&info.content).unwrap();
        let (rest, _) = AlgorithmIdentifier::from_der(rest).unwrap();
        let (_, octets) = x509_parser::der_parser::asn1_rs::OctetString::from_der(rest).unwrap();
        let sec1 = octets.as_cow().to_vec();
        let key = PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(sec1));
        let signing = signing_key(key, &provider()).unwrap();
        assert_eq!(signing.algorithm(), SignatureAlgorithm::ECDSA);

        assert!(!pkcs8_is_ec(b"\x30\x03\x02\x01"));
        let junk = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0x30, 0x00]));
        assert!(signing_key(junk, &provider()).is_err());
    }
}
