//! A test PKI made with rcgen: one CA, leaves for any names with ECDSA or RSA keys.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// The key type of a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Ecdsa,
    Rsa,
}

/// A CA whose certificate is written to `dir/ca.pem`.
pub struct Pki {
    pub dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    pub ca_pem: String,
}

/// One issued leaf, as PEM.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// The leaf certificate's DER, to recognise which version a client was served.
    pub fn der(&self) -> Vec<u8> {
        first_der(self.chain_pem.as_bytes())
    }

    /// The leaf certificate alone, as PEM (for `openssl ... -cert`).
    #[allow(dead_code)]
    pub fn cert_pem(&self) -> &str {
        let end = "-----END CERTIFICATE-----\n";
        let at = self.chain_pem.find(end).expect("a certificate") + end.len();
        &self.chain_pem[..at]
    }

    /// Chain and key in one PEM text.
    pub fn combined(&self) -> String {
        format!("{}{}", self.chain_pem, self.key_pem)
    }
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "mailfront test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        let pki = Self {
            dir: dir.to_owned(),
            ca,
            ca_key: key,
            ca_pem,
        };
        // The server-wide certificate, CA-issued so that a verifying client's only
        // complaint is the name.
        let server = pki.leaf(&["server.com"], KeyKind::Ecdsa);
        std::fs::write(dir.join("server.com.crt"), &server.chain_pem).unwrap();
        let key = dir.join("server.com.key");
        std::fs::write(&key, &server.key_pem).unwrap();
        // mailfront refuses a server-wide key every user can read.
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        pki
    }

    /// A leaf for `names` (the first is also the CN), chain = leaf + CA.
    pub fn leaf(&self, names: &[&str], kind: KeyKind) -> Leaf {
        let alg = match kind {
            KeyKind::Ecdsa => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
        };
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// A leaf for `names` that expires `secs` seconds from now.
    pub fn leaf_expiring_in(&self, names: &[&str], secs: i64) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::seconds(secs);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes a leaf into `store` as `NAME.crt` + `NAME.key`.
    pub fn write_pair(&self, store: &Path, file: &str, names: &[&str], kind: KeyKind) {
        let leaf = self.leaf(names, kind);
        std::fs::write(store.join(format!("{file}.crt")), leaf.chain_pem).unwrap();
        std::fs::write(store.join(format!("{file}.key")), leaf.key_pem).unwrap();
    }

    /// Writes a leaf into `store` as one `NAME.pem` with chain and key.
    pub fn write_single(&self, store: &Path, file: &str, names: &[&str], kind: KeyKind) {
        let leaf = self.leaf(names, kind);
        std::fs::write(
            store.join(format!("{file}.pem")),
            format!("{}{}", leaf.chain_pem, leaf.key_pem),
        )
        .unwrap();
    }

    /// The CA's key as a PEM file, for `openssl ocsp` answering as the CA's responder.
    #[allow(dead_code)]
    pub fn ca_key_file(&self) -> PathBuf {
        let path = self.dir.join("ca.key");
        std::fs::write(&path, self.ca_key.serialize_pem()).unwrap();
        path
    }

    /// A certificate for an OCSP responder the CA delegates to (extended key usage
    /// OCSPSigning), chain = responder + CA.
    #[allow(dead_code)]
    pub fn ocsp_responder(&self) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "mailfront test OCSP responder");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// The DER of the first certificate in PEM text.
pub fn first_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let first = rustls::pki_types::CertificateDer::pem_slice_iter(pem).next();
    first.expect("a certificate").unwrap().to_vec()
}
