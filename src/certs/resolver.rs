//! The rustls-specific part of the store: what a key can sign with, and the resolver that
//! hands rustls the certificate chosen for one connection.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::SignatureScheme;

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
