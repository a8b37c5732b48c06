//! The server-wide certificate: served when no entry covers the name asked for, or when no
//! name was sent. Hosting panels make a self-signed one on first start; so does mailfront,
//! and it keeps it, so that a client that accepted it once is not warned anew each start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::discover::{Layout, Source};
use super::load::{load, Context, LoadError, Loaded, Role};
use super::CertError;

/// Loads the server-wide certificate, generating it first when neither file exists.
///
/// Returns the certificate and whether it was generated now.
pub fn load_or_generate(
    cert: &Path,
    key: &Path,
    server_name: &str,
    ctx: &Context,
) -> Result<(Loaded, bool), CertError> {
    if let Some(loaded) = load_existing(cert, key, ctx)? {
        return Ok((loaded, false));
    }
    generate(cert, key, server_name)?;
    let loaded = load_existing(cert, key, ctx)?.ok_or_else(|| CertError::Generate {
        path: cert.to_owned(),
        reason: "the files were removed right after being written".into(),
    })?;
    Ok((loaded, true))
}

/// Loads the server-wide certificate if its files exist; `None` when neither does (it
/// would be generated). One file without the other is an error: generating would
/// overwrite what an operator put there.
pub fn load_existing(cert: &Path, key: &Path, ctx: &Context) -> Result<Option<Loaded>, CertError> {
    match (cert.exists(), key.exists()) {
        (false, false) => return Ok(None),
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
    let source = Source {
        id: Arc::from(format!("server-wide ({})", cert.display())),
        cert: cert.to_owned(),
        key: Some(key.to_owned()),
        layout: Layout::Pair,
    };
    load(&source, ctx, Role::ServerWide)
        .map(Some)
        .map_err(CertError::Fallback)
}

/// Makes a self-signed ECDSA P-256 certificate for `server_name`, valid ten years, and
/// writes it with its key (mode 0600), each file replaced atomically.
fn generate(cert: &Path, key: &Path, server_name: &str) -> Result<(), CertError> {
    let rcgen_error = |e: rcgen::Error| CertError::Generate {
        path: cert.to_owned(),
        reason: e.to_string(),
    };
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
    let mut params =
        rcgen::CertificateParams::new(vec![server_name.to_owned()]).map_err(rcgen_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, server_name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let certificate = params.self_signed(&pair).map_err(rcgen_error)?;
    write_atomically(key, pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(cert, certificate.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let io_error = |path: &Path, e: std::io::Error| CertError::Generate {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}
