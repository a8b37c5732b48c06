//! OCSP stapling: a DER OCSP response beside an entry's certificate (`NAME.ocsp` or
//! `CERTFILE.ocsp`, HAProxy's convention; `fullchain.pem.ocsp` in certbot's layout) is
//! judged when the entry loads, and stapled only while it is a good answer for that very
//! certificate: a successful basic response, a single response whose CertID names its
//! issuer and serial, signed by the issuer or a responder the issuer delegated to, and
//! current. Anything else is a warning finding of the catalogue and the certificate serves
//! unstapled, as it did before the file was there; a response saying the certificate is
//! revoked is the catalogue's `revoked`, as a CRL saying so is.
//!
//! The judgement is made off the handshake path; handshakes send the bytes the entry's
//! `CertifiedKey` holds. The store loads the entry again when its response stops being
//! current (its nextUpdate) or becomes so (its thisUpdate), so a stale response is never
//! stapled for longer than it takes to notice the time.

use std::path::Path;

use der::{Decode, Encode};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use x509_cert::Certificate;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};

use super::check::der::element;
use super::check::{Code, Finding, Severity};

/// A response file larger than this is not read: responses are a few kilobytes, with
/// their responder's certificate.
pub const MAX_RESPONSE: u64 = 64 * 1024;

/// How far in the future a response's thisUpdate may be and still be stapled: the clocks
/// of the responder and of this host differ a little.
const SKEW: i64 = 5 * 60;

/// How long a response without nextUpdate is current after its thisUpdate (as Firefox
/// takes it).
const NO_NEXT_UPDATE: i64 = 24 * 60 * 60;

/// `id-pkix-ocsp-basic`.
const BASIC: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// `id-kp-OCSPSigning`.
const OCSP_SIGNING: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");

/// What a response file means for the entry.
#[derive(Debug)]
pub enum Verdict {
    /// Stapled until `until` (seconds since the epoch).
    Staple { until: i64 },
    /// Not stapled, for the reason the finding gives; `recheck` when it becomes good by
    /// itself (a thisUpdate ahead of this host's clock).
    Refused {
        finding: Finding,
        recheck: Option<i64>,
    },
}

/// Judges the response `der` (read from `path`) for the leaf of `chain` (the chain
/// served), at `now`. The issuer is looked for in the chain, then among `more` (the
/// entry's files: a root left out of what is served can be the issuer).
pub fn judge(
    path: &Path,
    der: &[u8],
    chain: &[CertificateDer<'_>],
    more: &[CertificateDer<'_>],
    provider: &CryptoProvider,
    now: i64,
) -> Verdict {
    match judged(path, der, chain, more, provider, now) {
        Ok(until) => Verdict::Staple { until },
        Err((finding, recheck)) => Verdict::Refused { finding, recheck },
    }
}

type Refusal = (Finding, Option<i64>);

fn judged(
    path: &Path,
    der: &[u8],
    chain: &[CertificateDer<'_>],
    more: &[CertificateDer<'_>],
    provider: &CryptoProvider,
    now: i64,
) -> Result<i64, Refusal> {
    let refuse = |code: Code, message: String, fix: &str| {
        let severity = match code {
            Code::Revoked => Severity::Error,
            _ => Severity::Warning,
        };
        let finding = Finding {
            code,
            severity,
            file: path.to_owned(),
            message,
            fix: fix.to_owned(),
        };
        (finding, None)
    };
    let fetch = "fetch a new response from the CA's responder (openssl ocsp -issuer \
                 ISSUER.pem -cert CERT.pem -url URL -respout FILE), and write it over this file";
    let unusable = |message: String| refuse(Code::OcspUnusable, message, fetch);
    let response = OcspResponse::from_der(der)
        .map_err(|e| unusable(format!("not a DER OCSP response ({e})")))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(unusable(format!(
            "the responder answered {:?}, not a response",
            response.response_status
        )));
    }
    let bytes = response
        .response_bytes
        .filter(|b| b.response_type == BASIC)
        .ok_or_else(|| unusable("not a basic OCSP response".into()))?;
    let signed = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(signed)
        .map_err(|e| unusable(format!("the basic response cannot be read ({e})")))?;
    let leaf = parse_cert(&chain[0]).ok_or_else(|| unusable("the leaf cannot be read".into()))?;
    let issuer = chain[1..]
        .iter()
        .chain(more)
        .filter_map(parse_cert)
        .find(|i| i.tbs_certificate.subject == leaf.tbs_certificate.issuer);
    let Some(issuer) = issuer else {
        return Err(refuse(
            Code::OcspUnusable,
            "the entry has no issuer certificate to check the response against".into(),
            "serve the chain with its intermediate (or put it in issuers_dir)",
        ));
    };
    let serial = leaf.tbs_certificate.serial_number.as_bytes();
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| names_certificate(r, &leaf, &issuer))
        .ok_or_else(|| {
            let theirs: Vec<String> = basic
                .tbs_response_data
                .responses
                .iter()
                .map(|r| hex(r.cert_id.serial_number.as_bytes()))
                .collect();
            refuse(
                Code::OcspForeign,
                format!(
                    "the response is for another certificate (serial {}), not serial {} of {}",
                    theirs.join(", "),
                    hex(serial),
                    issuer.tbs_certificate.subject
                ),
                "fetch the response for this certificate, and name the file after it",
            )
        })?;
    if !signed_by_issuer_or_delegate(signed, &basic, &issuer, provider) {
        return Err(refuse(
            Code::OcspBadSignature,
            format!(
                "the response is not signed by {} or a responder it certified",
                issuer.tbs_certificate.subject
            ),
            fetch,
        ));
    }
    if let CertStatus::Revoked(info) = &single.cert_status {
        return Err(refuse(
            Code::Revoked,
            format!(
                "the CA's OCSP response says serial {} is revoked since {}",
                hex(serial),
                time_of(unix(&info.revocation_time.0))
            ),
            "replace the certificate: have it reissued",
        ));
    }
    if let CertStatus::Unknown(_) = single.cert_status {
        return Err(unusable(format!(
            "the responder does not know serial {} (status unknown)",
            hex(serial)
        )));
    }
    let this_update = unix(&single.this_update.0);
    let until = single
        .next_update
        .as_ref()
        .map_or(this_update + NO_NEXT_UPDATE, |t| unix(&t.0));
    if this_update > now + SKEW {
        let (finding, _) = refuse(
            Code::OcspNotYetValid,
            format!("the response is valid from {} only", time_of(this_update)),
            "check this host's clock; it is stapled from then on",
        );
        return Err((finding, Some(this_update - SKEW)));
    }
    if until <= now {
        return Err(refuse(
            Code::OcspExpired,
            format!(
                "the response expired at {} (its thisUpdate {})",
                time_of(until),
                time_of(this_update)
            ),
            fetch,
        ));
    }
    Ok(until)
}

fn parse_cert(der: &CertificateDer<'_>) -> Option<Certificate> {
    Certificate::from_der(der.as_ref()).ok()
}

/// Whether `single`'s CertID is the leaf's: its serial, and its issuer's name and key
/// hashed with the response's algorithm.
fn names_certificate(
    single: &x509_ocsp::SingleResponse,
    leaf: &Certificate,
    issuer: &Certificate,
) -> bool {
    let id = &single.cert_id;
    if id.serial_number != leaf.tbs_certificate.serial_number {
        return false;
    }
    let algorithm = match id.hash_algorithm.oid.to_string().as_str() {
        "1.3.14.3.2.26" => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        "2.16.840.1.101.3.4.2.1" => &aws_lc_rs::digest::SHA256,
        "2.16.840.1.101.3.4.2.2" => &aws_lc_rs::digest::SHA384,
        "2.16.840.1.101.3.4.2.3" => &aws_lc_rs::digest::SHA512,
        _ => return false,
    };
    let Ok(name) = leaf.tbs_certificate.issuer.to_der() else {
        return false;
    };
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    aws_lc_rs::digest::digest(algorithm, &name).as_ref() == id.issuer_name_hash.as_bytes()
        && aws_lc_rs::digest::digest(algorithm, key).as_ref() == id.issuer_key_hash.as_bytes()
}

/// Whether the basic response (`signed`, its DER) is signed by the issuer, or by a
/// certificate it carries that the issuer signed for OCSP signing (RFC 6960 §4.2.2.2).
fn signed_by_issuer_or_delegate(
    signed: &[u8],
    basic: &BasicOcspResponse,
    issuer: &Certificate,
    provider: &CryptoProvider,
) -> bool {
    let Some(tbs) = first_element(signed) else {
        return false;
    };
    let Ok(algorithm) = basic.signature_algorithm.to_der() else {
        return false;
    };
    let Some(signature) = basic.signature.as_bytes() else {
        return false;
    };
    if verifies(provider, issuer, &algorithm, tbs, signature) {
        return true;
    }
    let delegates = basic.certs.iter().flatten().filter(|c| {
        c.tbs_certificate.issuer == issuer.tbs_certificate.subject && for_ocsp_signing(c)
    });
    for delegate in delegates {
        let (Ok(der), Ok(its_algorithm)) =
            (delegate.to_der(), delegate.signature_algorithm.to_der())
        else {
            continue;
        };
        let Some(its_tbs) = first_element(&der) else {
            continue;
        };
        let Some(its_signature) = delegate.signature.as_bytes() else {
            continue;
        };
        if verifies(provider, issuer, &its_algorithm, its_tbs, its_signature)
            && verifies(provider, delegate, &algorithm, tbs, signature)
        {
            return true;
        }
    }
    false
}

/// Whether `cert` has the extended key usage `id-kp-OCSPSigning`.
fn for_ocsp_signing(cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE)
        .filter_map(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .any(|eku| eku.0.contains(&OCSP_SIGNING))
}

/// Whether `signature` over `message` verifies with `signer`'s key, by the algorithm
/// `algorithm` (an AlgorithmIdentifier's DER), among those rustls' provider verifies.
fn verifies(
    provider: &CryptoProvider,
    signer: &Certificate,
    algorithm: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let (Ok(key_algorithm), Some(key)) =
        (spki.algorithm.to_der(), spki.subject_public_key.as_bytes())
    else {
        return false;
    };
    let (Some(algorithm), Some(key_algorithm)) = (contents(algorithm), contents(&key_algorithm))
    else {
        return false;
    };
    provider
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|a| *a.signature_alg_id() == *algorithm && *a.public_key_alg_id() == *key_algorithm)
        .any(|a| a.verify_signature(key, message, signature).is_ok())
}

/// The contents of the DER element `der`.
fn contents(der: &[u8]) -> Option<&[u8]> {
    element(der).map(|(_, contents, _, _)| contents)
}

/// The first element inside the SEQUENCE `der`, whole: the signed part of a signed
/// structure, as its bytes were signed.
fn first_element(der: &[u8]) -> Option<&[u8]> {
    let (_, inner, _, _) = element(der)?;
    element(inner).map(|(_, _, whole, _)| whole)
}

fn unix(t: &der::asn1::GeneralizedTime) -> i64 {
    t.to_unix_duration().as_secs() as i64
}

fn time_of(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Vec<CertificateDer<'static>> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        vec![cert.der().clone()]
    }

    /// Bytes that are not a response, or a response cut anywhere, are refused as
    /// unusable with the reason, never a panic.
    #[test]
    fn garbage_is_unusable() {
        let provider = crate::tls::provider();
        let chain = chain();
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new(), b"not der".to_vec(), vec![0x30, 0x80]];
        // A successful-status response cut at every length.
        let whole = [
            0x30, 0x0a, 0x0a, 0x01, 0x00, 0xa0, 0x05, 0x30, 0x03, 0x06, 0x01, 0x00,
        ];
        inputs.extend((0..whole.len()).map(|n| whole[..n].to_vec()));
        for der in inputs {
            match judge(Path::new("x.ocsp"), &der, &chain, &[], &provider, 0) {
                Verdict::Refused { finding, recheck } => {
                    assert_eq!(finding.code, Code::OcspUnusable, "{der:?}: {finding}");
                    assert_eq!(finding.severity, Severity::Warning);
                    assert!(recheck.is_none());
                }
                Verdict::Staple { .. } => panic!("{der:?} stapled"),
            }
        }
        // A responder's refusal (tryLater) says so.
        let try_later = [0x30, 0x03, 0x0a, 0x01, 0x03];
        let Verdict::Refused { finding, .. } =
            judge(Path::new("x.ocsp"), &try_later, &chain, &[], &provider, 0)
        else {
            panic!("stapled");
        };
        assert!(finding.message.contains("TryLater"), "{}", finding.message);
    }
}
