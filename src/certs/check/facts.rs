//! What the checks need to know of one certificate, read once with x509-parser: names,
//! dates, whether it is a CA, how it is signed, its key, and the identifiers that link
//! it to its issuer.

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// One certificate of a file, as the checks see it.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// The subject, as `CN=..., O=...`.
    pub subject: String,
    /// The issuer, likewise.
    pub issuer: String,
    /// The subject's DER, to find a certificate's issuer by name.
    pub subject_der: Vec<u8>,
    /// The issuer's DER.
    pub issuer_der: Vec<u8>,
    /// basicConstraints says CA.
    pub is_ca: bool,
    /// Validity (Unix seconds).
    pub not_before: i64,
    pub not_after: i64,
    /// The signature algorithm's name and whether it is broken (SHA-1, MD5, MD2).
    pub signature: &'static str,
    pub weak_signature: bool,
    /// The key, as `ECDSA P-256` or `RSA 2048`.
    pub key: String,
    /// Why the key is unacceptable (short RSA, unknown curve), if it is.
    pub weak_key: Option<String>,
    /// Subject and authority key identifiers.
    pub ski: Option<Vec<u8>>,
    pub aki: Option<Vec<u8>>,
    /// DNS names of the subjectAltName.
    pub dns_names: Vec<String>,
    /// The serial number, in hex, and its bytes (to look it up in CRLs).
    pub serial: String,
    pub serial_der: Vec<u8>,
    /// The SubjectPublicKeyInfo, to compare with the private key's.
    pub spki: Vec<u8>,
}

impl CertFacts {
    /// Reads `der`; the error is x509-parser's reason.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let (signature, weak_signature) = signature_name(&cert);
        let (key, weak_key) = key_facts(&cert);
        let mut ski = None;
        let mut aki = None;
        let mut dns_names = Vec::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|id| id.0.to_vec());
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let GeneralName::DNSName(dns) = name {
                            dns_names.push((*dns).to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            subject_der: cert.subject().as_raw().to_vec(),
            issuer_der: cert.issuer().as_raw().to_vec(),
            is_ca: cert.is_ca(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            signature,
            weak_signature,
            key,
            weak_key,
            ski,
            aki,
            dns_names,
            serial: cert.raw_serial_as_string(),
            serial_der: cert.raw_serial().to_vec(),
            spki: cert.public_key().raw.to_vec(),
        })
    }

    /// Issued by itself: subject and issuer are the same name.
    pub fn self_issued(&self) -> bool {
        self.subject_der == self.issuer_der
    }

    /// Whether `issuer` can be this certificate's issuer: its subject is our issuer and,
    /// when both carry key identifiers, they agree.
    pub fn issued_by(&self, issuer: &CertFacts) -> bool {
        self.issuer_der == issuer.subject_der
            && match (&self.aki, &issuer.ski) {
                (Some(aki), Some(ski)) => aki == ski,
                _ => true,
            }
    }

    /// The issuer's CN, else its whole name.
    pub fn issuer_label(&self) -> String {
        common_name(&self.issuer).map_or_else(|| self.issuer.clone(), str::to_owned)
    }

    /// The first name a person would recognise it by: the CN, else the first DNS name,
    /// else the whole subject.
    pub fn label(&self) -> String {
        common_name(&self.subject)
            .map(str::to_owned)
            .or_else(|| self.dns_names.first().cloned())
            .unwrap_or_else(|| self.subject.clone())
    }
}

/// The CN of a name printed as `CN=..., O=...`.
fn common_name(name: &str) -> Option<&str> {
    name.split(", ").find_map(|rdn| rdn.strip_prefix("CN="))
}

/// Signature algorithms by OID: name, and whether the hash is broken.
const SIGNATURES: &[(&str, &str, bool)] = &[
    ("1.2.840.113549.1.1.11", "sha256WithRSAEncryption", false),
    ("1.2.840.113549.1.1.12", "sha384WithRSAEncryption", false),
    ("1.2.840.113549.1.1.13", "sha512WithRSAEncryption", false),
    ("1.2.840.113549.1.1.10", "RSASSA-PSS", false),
    ("1.2.840.10045.4.3.2", "ecdsa-with-SHA256", false),
    ("1.2.840.10045.4.3.3", "ecdsa-with-SHA384", false),
    ("1.2.840.10045.4.3.4", "ecdsa-with-SHA512", false),
    ("1.3.101.112", "Ed25519", false),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption", true),
    ("1.3.14.3.2.29", "sha1WithRSAEncryption", true),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1", true),
    ("1.2.840.10040.4.3", "dsa-with-sha1", true),
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption", true),
    ("1.2.840.113549.1.1.2", "md2WithRSAEncryption", true),
];

fn signature_name(cert: &X509Certificate<'_>) -> (&'static str, bool) {
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    SIGNATURES
        .iter()
        .find(|(id, _, _)| *id == oid)
        .map_or(("an unknown algorithm", false), |(_, name, weak)| {
            (*name, *weak)
        })
}

/// Curves clients accept, by OID.
const CURVES: &[(&str, &str)] = &[
    ("1.2.840.10045.3.1.7", "P-256"),
    ("1.3.132.0.34", "P-384"),
    ("1.3.132.0.35", "P-521"),
];

/// The smallest RSA modulus served.
pub const MIN_RSA_BITS: usize = 2048;

fn key_facts(cert: &X509Certificate<'_>) -> (String, Option<String>) {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            let weak = (bits < MIN_RSA_BITS)
                .then(|| format!("RSA {bits} bits, under the {MIN_RSA_BITS} clients require"));
            (format!("RSA {bits}"), weak)
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve
                .as_deref()
                .and_then(|c| CURVES.iter().find(|(id, _)| *id == c))
            {
                Some((_, name)) => (format!("ECDSA {name}"), None),
                None => {
                    let curve = curve.unwrap_or_else(|| "unnamed".into());
                    let weak = format!(
                        "elliptic curve {curve}, which TLS clients do not accept (use P-256 or P-384)"
                    );
                    (format!("ECDSA curve {curve}"), Some(weak))
                }
            }
        }
        Ok(PublicKey::Unknown(_)) if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            ("Ed25519".into(), None)
        }
        Ok(other) => {
            let name = format!("{other:?}");
            let name = name.split('(').next().unwrap_or("unknown").to_owned();
            let weak = format!("a {name} key, which TLS clients do not accept");
            (name, Some(weak))
        }
        Err(e) => (
            "unreadable key".into(),
            Some(format!("the public key cannot be read: {e}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_a_ca_and_its_leaf() {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let ca = CertFacts::parse(ca.der()).unwrap();
        let leaf = CertFacts::parse(leaf.der()).unwrap();
        assert!(ca.is_ca && ca.self_issued() && !leaf.is_ca && !leaf.self_issued());
        assert!(leaf.issued_by(&ca) && !ca.issued_by(&leaf));
        assert_eq!(ca.label(), "Test CA");
        assert_eq!(leaf.dns_names, ["a.example.com"]);
        assert_eq!(leaf.key, "RSA 2048");
        assert_eq!(ca.key, "ECDSA P-256");
        assert_eq!(leaf.signature, "ecdsa-with-SHA256");
        assert!(!leaf.weak_signature && leaf.weak_key.is_none());
    }
}
