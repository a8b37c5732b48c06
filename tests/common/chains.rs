//! A root -> intermediate PKI made with rcgen for the certificate checks, the cases rcgen
//! cannot make (SHA-1 signatures, 1024-bit RSA) made with openssl, and an atomic writer.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

pub fn ca(name: &str, parent: Option<&Ca>) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = match parent {
        Some(p) => params.signed_by(&key, &p.cert, &p.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Ca { cert, key }
}

/// root -> intermediate, files in a tempdir: `root.pem` (the bundle), `inter.pem`.
pub struct ChainPki {
    pub tmp: tempfile::TempDir,
    pub root: Ca,
    pub inter: Ca,
}

pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub serial: u64,
}

impl ChainPki {
    pub fn new() -> Self {
        let root = ca("Check Root", None);
        let inter = ca("Check Intermediate", Some(&root));
        let pki = Self {
            tmp: tempfile::tempdir().unwrap(),
            root,
            inter,
        };
        pki.write("root.pem", &pki.root.cert.pem());
        pki.write("inter.pem", &pki.inter.cert.pem());
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes `text` to `name`, mode 0600 (as a key should be).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A leaf for `names` issued by the intermediate, valid from `days.0` to `days.1`
    /// days from now.
    pub fn leaf_with(&self, names: &[&str], days: (i64, i64), serial: u64) -> Leaf {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        issue(
            names,
            days,
            serial,
            alg,
            Some((&self.inter.cert, &self.inter.key)),
        )
    }

    /// [`ChainPki::leaf_with`] with an RSA key.
    pub fn rsa_leaf_with(&self, names: &[&str], days: (i64, i64), serial: u64) -> Leaf {
        let alg = &rcgen::PKCS_RSA_SHA256;
        issue(
            names,
            days,
            serial,
            alg,
            Some((&self.inter.cert, &self.inter.key)),
        )
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, (-10, 300), 1)
    }

    /// A CRL of the intermediate that revokes `serial`.
    pub fn crl_revoking(&self, serial: u64) -> rcgen::CertificateRevocationList {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::days(1),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(3),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: now - time::Duration::hours(2),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.inter.cert, &self.inter.key)
        .unwrap()
    }

    /// `leaf + intermediate`, as a CA delivers a full chain.
    pub fn fullchain(&self, leaf: &Leaf) -> String {
        format!("{}{}", leaf.cert, self.inter.cert.pem())
    }
}

/// A leaf for `names` with a key of `alg`, valid from `days.0` to `days.1` days from now,
/// signed by `issuer` (a CA's certificate and key), or self-signed without one.
pub fn issue(
    names: &[&str],
    days: (i64, i64),
    serial: u64,
    alg: &'static rcgen::SignatureAlgorithm,
    issuer: Option<(&Certificate, &KeyPair)>,
) -> Leaf {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let now = OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days.0);
    params.not_after = now + time::Duration::days(days.1);
    params.serial_number = Some(SerialNumber::from(serial));
    let cert = match issuer {
        Some((ca, ca_key)) => params.signed_by(&key, ca, ca_key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
        serial,
    }
}

/// Runs openssl in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SHA-1 signatures need an RSA issuer, and rcgen signs no SHA-1: openssl makes an RSA CA
/// (`rsa-ca.crt`) and `sha1.crt` + `sha1.key` for sha1.example.com under it.
pub fn sha1_leaf(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-sha256",
            "-nodes",
            "-keyout",
            "rsa-ca.key",
            "-out",
            "rsa-ca.crt",
            "-subj",
            "/CN=RSA Check CA",
            "-days",
            "30",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "sha1.key",
            "-out",
            "sha1.csr",
            "-subj",
            "/CN=sha1.example.com",
        ],
    );
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:sha1.example.com\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "sha1.csr",
            "-CA",
            "rsa-ca.crt",
            "-CAkey",
            "rsa-ca.key",
            "-CAcreateserial",
            "-sha1",
            "-days",
            "200",
            "-out",
            "sha1.crt",
            "-extfile",
            "ext",
        ],
    );
}

/// A self-signed certificate for weak.example.com with a 1024-bit RSA key:
/// `weak.crt` + `weak.key`.
pub fn weak_rsa(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "weak.key",
            "-out",
            "weak.crt",
            "-subj",
            "/CN=weak.example.com",
            "-addext",
            "subjectAltName=DNS:weak.example.com",
            "-days",
            "200",
        ],
    );
}

/// Writes `text` to `path` through a dot-file and a rename, mode 0600.
pub fn write_atomically(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
