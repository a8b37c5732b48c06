//! CRLs from `crl_dir`, and revocation on load without webpki's per-path cost.
//!
//! webpki verifies a CRL's signature every time it checks a certificate against it; a
//! public CA's CRL runs to megabytes, and a store holds thousands of that CA's
//! certificates. Here each CRL's signature is verified once per issuer key (with the
//! provider's own signature algorithms) and remembered, and a certificate is then looked
//! up by serial. `mailfront check` still goes through webpki for the whole path.

use std::path::PathBuf;
use std::sync::Mutex;

use rustls::pki_types::SignatureVerificationAlgorithm;
use webpki::{CertRevocationList, OwnedCertRevocationList};

use super::der::{element, name_contents};

/// One CRL with the parts its signature covers.
#[derive(Debug)]
pub struct Crl {
    /// For webpki's path verification and the serial lookup.
    pub list: CertRevocationList<'static>,
    /// The file it came from.
    pub path: PathBuf,
    /// `tbsCertList` as signed, the signature algorithm (contents of its
    /// AlgorithmIdentifier) and the signature.
    tbs: Vec<u8>,
    algorithm: Vec<u8>,
    signature: Vec<u8>,
    /// Issuer keys (SubjectPublicKeyInfo DER) already tried, and whether they signed it.
    verified: Mutex<Vec<(Vec<u8>, bool)>>,
}

impl Crl {
    /// Parses one DER CRL.
    pub fn from_der(der: &[u8], path: PathBuf) -> Result<Self, String> {
        let list = OwnedCertRevocationList::from_der(der)
            .map_err(|e| format!("not a CRL: {e:?}"))?
            .into();
        let parts = || -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
            let (_, outer, _, _) = element(der)?;
            let (_, _, tbs, rest) = element(outer)?;
            let (_, algorithm, _, rest) = element(rest)?;
            let (tag, bits, _, _) = element(rest)?;
            let signature = bits.strip_prefix(&[0])?;
            (tag == 0x03).then(|| (tbs.to_vec(), algorithm.to_vec(), signature.to_vec()))
        };
        let (tbs, algorithm, signature) = parts().ok_or("malformed CRL")?;
        Ok(Self {
            list,
            path,
            tbs,
            algorithm,
            signature,
            verified: Mutex::new(Vec::new()),
        })
    }

    /// Whether this CRL is the one of the issuer named `issuer_der` (a DER Name).
    pub fn names(&self, issuer_der: &[u8]) -> bool {
        self.list.issuer() == name_contents(issuer_der).unwrap_or(issuer_der)
    }

    /// Whether the key `issuer_spki` (the contents of a SubjectPublicKeyInfo, as trust
    /// anchors hold it) signed this CRL; the answer is kept, so each issuer key costs one
    /// verification.
    pub fn signed_by(&self, issuer_spki: &[u8]) -> bool {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, ok)) = verified.iter().find(|(k, _)| k == issuer_spki) {
            return *ok;
        }
        let ok = self.verify(issuer_spki);
        verified.push((issuer_spki.to_vec(), ok));
        ok
    }

    fn verify(&self, issuer_spki: &[u8]) -> bool {
        let parts = || -> Option<(&[u8], &[u8])> {
            let (_, key_algorithm, _, rest) = element(issuer_spki)?;
            let (tag, bits, _, _) = element(rest)?;
            (tag == 0x03).then_some((key_algorithm, bits.strip_prefix(&[0])?))
        };
        let Some((key_algorithm, key)) = parts() else {
            return false;
        };
        let algorithms: &[&dyn SignatureVerificationAlgorithm] =
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .all;
        algorithms
            .iter()
            .filter(|a| {
                a.public_key_alg_id().as_ref() == key_algorithm
                    && a.signature_alg_id().as_ref() == self.algorithm.as_slice()
            })
            .any(|a| a.verify_signature(key, &self.tbs, &self.signature).is_ok())
    }

    /// Whether the certificate with serial `serial` (its DER bytes) is listed.
    pub fn lists(&self, serial: &[u8]) -> bool {
        self.list.find_serial(serial).ok().flatten().is_some()
    }
}
