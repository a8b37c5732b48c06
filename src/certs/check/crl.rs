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

use super::trust::name_contents;

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

/// The contents of a SubjectPublicKeyInfo DER (what [`Crl::signed_by`] takes).
pub fn spki_contents(der: &[u8]) -> &[u8] {
    element(der).map_or(der, |(_, contents, _, _)| contents)
}

/// One DER element: its tag, its contents, the whole element, and what follows it.
pub(super) type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The DER element at the start of `input`. Single-byte tags and definite lengths, which
/// is all DER has for these structures.
pub(super) fn element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, after_len) = after_tag.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, body) = (after_len.get(..n)?, after_len.get(n..)?);
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            body,
        )
    };
    let contents = body.get(..len)?;
    let whole_len = input.len() - body.len() + len;
    Some((tag, contents, &input[..whole_len], &body[len..]))
}

#[cfg(test)]
mod tests {
    use super::element;

    #[test]
    fn elements_short_and_long() {
        let (tag, contents, whole, rest) = element(&[0x30, 2, 1, 2, 9]).unwrap();
        assert_eq!(
            (tag, contents, whole, rest),
            (0x30, &[1u8, 2][..], &[0x30u8, 2, 1, 2][..], &[9u8][..])
        );
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7, 0x100));
        let (_, contents, whole, rest) = element(&long).unwrap();
        assert_eq!((contents.len(), whole.len(), rest.len()), (0x100, 0x104, 0));
        assert!(element(&[0x30, 5, 1]).is_none());
        assert!(element(&[0x30, 0x80]).is_none());
    }
}
