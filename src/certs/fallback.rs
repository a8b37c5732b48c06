//! The server-wide certificate: served when no entry covers the name asked for, or when no
//! name was sent. Hosting panels make a self-signed one on first start; so does mailfront,
//! and it keeps it, so that a client that accepted it once is not warned anew each start.

use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tracing::warn;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::catalog::Origin;
use super::discover::{Layout, OcspName, Source};
use super::load::{load, parse, Contents, Context, LoadError, Loaded, Role};
use super::CertError;

/// The organisation a generated server-wide certificate names, which tells it apart from
/// one an operator put there: only a generated certificate may be written over.
const GENERATED_BY: &str = "mailfront self-signed";

/// Loads the server-wide certificate, generating it first when neither file exists (or
/// only the certificate of an earlier generation that was cut short). With `write`
/// false (a report, not a start), a certificate to be generated is made in memory only.
pub fn load_or_generate(
    cert: &Path,
    key: &Path,
    server_name: &str,
    ctx: &Context,
    write: bool,
) -> Result<(Loaded, Origin), CertError> {
    if let Some(loaded) = load_existing(cert, key, ctx)? {
        return Ok((loaded, Origin::Files));
    }
    let (cert_pem, key_pem) = generate(server_name).map_err(|e| CertError::Generate {
        path: cert.to_owned(),
        reason: e.to_string(),
    })?;
    if !write {
        let contents = Contents {
            cert: cert_pem.into_bytes(),
            key: Some(key_pem.into_bytes()),
            extra: Vec::new(),
            ocsp: None,
        };
        let loaded = parse(&source(cert, key), &contents, ctx, Role::ServerWide)
            .map_err(CertError::Fallback)?;
        return Ok((loaded, Origin::Absent));
    }
    if cert.exists() {
        warn!(
            cert = %cert.display(), key = %key.display(),
            "the generated server-wide certificate has no key beside it (its generation was \
             cut short); generating a new pair"
        );
    }
    write_new(cert, cert_pem.as_bytes(), 0o644)?;
    write_new(key, key_pem.as_bytes(), 0o600)?;
    let loaded = load_existing(cert, key, ctx)?.ok_or_else(|| CertError::Generate {
        path: cert.to_owned(),
        reason: "the files were removed right after being written".into(),
    })?;
    Ok((loaded, Origin::Generated))
}

/// The server-wide certificate's OCSP response file, `CERTFILE.ocsp`, when there is one.
pub(super) fn ocsp_of(cert: &Path) -> Option<OcspName> {
    let path = OcspName::Whole.path(cert)?;
    path.is_file().then_some(OcspName::Whole)
}

/// The server-wide certificate's entry.
fn source(cert: &Path, key: &Path) -> Source {
    Source {
        extra: Box::default(),
        id: Arc::from(format!("server-wide ({})", cert.display())),
        cert: cert.to_owned(),
        key: Some(key.to_owned()),
        layout: Layout::Pair,
        ocsp: ocsp_of(cert),
    }
}

/// Loads the server-wide certificate if its files exist; `None` when it is to be
/// generated: neither file exists, or only a generated certificate whose key was never
/// written (the key is written last). Any other file without its partner is an error:
/// generating would overwrite what an operator put there.
pub fn load_existing(cert: &Path, key: &Path, ctx: &Context) -> Result<Option<Loaded>, CertError> {
    match (cert.exists(), key.exists()) {
        (false, false) => return Ok(None),
        (true, false) if generated(cert) => return Ok(None),
        (true, true) => {}
        (cert_exists, _) => {
            let missing = if cert_exists { key } else { cert };
            return Err(CertError::Fallback(LoadError::Read {
                path: missing.to_owned(),
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the other server-wide file exists; refusing to generate over it",
                ),
            }));
        }
    }
    load(&source(cert, key), ctx, Role::ServerWide)
        .map(Some)
        .map_err(CertError::Fallback)
}

/// Whether `cert` holds one self-signed certificate that mailfront generated.
fn generated(cert: &Path) -> bool {
    let Ok(bytes) = super::limits::read(cert, super::limits::ENTRY) else {
        return false;
    };
    let mut ders = CertificateDer::pem_slice_iter(&bytes);
    let (Some(Ok(der)), None) = (ders.next(), ders.next()) else {
        return false;
    };
    let Ok((_, parsed)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let ours = parsed
        .subject()
        .iter_organization()
        .any(|o| o.as_str() == Ok(GENERATED_BY));
    ours && parsed.subject() == parsed.issuer()
}

/// A self-signed ECDSA P-256 certificate for `server_name`, valid ten years, and its key,
/// as PEM. It is written certificate first, key last: a start cut short between the two
/// leaves a certificate alone, which the next start recognises as its own and generates
/// again.
fn generate(server_name: &str) -> Result<(String, String), rcgen::Error> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![server_name.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, server_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, GENERATED_BY);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let certificate = params.self_signed(&pair)?;
    Ok((certificate.pem(), pair.serialize_pem()))
}

/// Writes `bytes` to `path` through a new file of its own (created exclusively, so that
/// nothing already there, a symlink least of all, is opened), synced, renamed into place,
/// and the rename synced too, so that a crash leaves the whole file or none.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let io_error = |path: &Path, e: std::io::Error| CertError::Generate {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    // Created with mode 0600 whatever the umask; the certificate is then opened up.
    let mut file = tempfile::Builder::new()
        .prefix(".mailfront-")
        .tempfile_in(dir)
        .map_err(|e| io_error(dir, e))?;
    let tmp = file.path().to_owned();
    file.write_all(bytes)
        .and_then(|()| file.as_file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    file.persist(path).map_err(|e| io_error(path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}
