//! Pending ACME challenges, answered by every instance of a fleet.
//!
//! The instance that orders a name publishes the challenge's key authorization in memory
//! and as a file under `state_dir/challenges/` (`tls-alpn-01/NAME`, `http-01/TOKEN`); the
//! CA may connect to any instance behind the name's address, and one that did not order
//! reads the file. Files are written whole (temp file and rename) and removed when the
//! order is over.
//!
//! Only the CA asks: a tls-alpn-01 answer is looked up for a ClientHello offering ALPN
//! `acme-tls/1` (no mail client or browser does), an http-01 answer for a request below
//! `/.well-known/acme-challenge/`. A lookup for a name or token with nothing pending costs
//! a map lookup and one failed `open`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::names::Pattern;

/// The ALPN protocol of tls-alpn-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long an answer read from another instance's file is kept in memory.
const BORROWED_FOR: Duration = Duration::from_secs(60);
/// Answers read from other instances' files kept at once; beyond, each lookup reads.
const BORROWED_MAX: usize = 1024;

/// The challenges this instance answers.
#[derive(Debug)]
pub struct Challenges {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Name to the tls-alpn-01 certificate, for this instance's orders.
    tls: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Token to key authorization, for this instance's orders.
    http: HashMap<Box<str>, Arc<str>>,
    /// Certificates made from other instances' files, with when.
    borrowed: HashMap<Box<str>, (Instant, Arc<CertifiedKey>)>,
}

impl Challenges {
    /// Challenges kept under `state_dir/challenges`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("challenges"),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the tls-alpn-01 answer for `name`.
    pub fn publish_tls(&self, name: &str, key_authorization: &str) -> io::Result<()> {
        let certified = alpn_certificate(name, key_authorization)?;
        write_atomic(&self.dir.join("tls-alpn-01"), name, key_authorization)?;
        self.lock().tls.insert(name.into(), certified);
        Ok(())
    }

    /// Publishes the http-01 answer for `token`.
    pub fn publish_http(&self, token: &str, key_authorization: &str) -> io::Result<()> {
        if !is_token(token) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the CA sent a token that is not base64url: {token:?}"),
            ));
        }
        write_atomic(&self.dir.join("http-01"), token, key_authorization)?;
        self.lock()
            .http
            .insert(token.into(), key_authorization.into());
        Ok(())
    }

    /// Withdraws the answers of an order that is over.
    pub fn withdraw(&self, name: &str, token: Option<&str>) {
        let mut inner = self.lock();
        inner.tls.remove(name);
        let _ = std::fs::remove_file(self.dir.join("tls-alpn-01").join(name));
        if let Some(token) = token.filter(|t| is_token(t)) {
            inner.http.remove(token);
            let _ = std::fs::remove_file(self.dir.join("http-01").join(token));
        }
    }

    /// The certificate answering tls-alpn-01 for `name`, if a challenge is pending for it
    /// here or at another instance.
    pub async fn tls_alpn(self: &Arc<Self>, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = match Pattern::parse(name) {
            Ok(Pattern::Exact(name)) => name,
            _ => return None,
        };
        {
            let mut inner = self.lock();
            if let Some(c) = inner.tls.get(&*name) {
                return Some(Arc::clone(c));
            }
            match inner.borrowed.get(&*name) {
                Some((at, c)) if at.elapsed() < BORROWED_FOR => return Some(Arc::clone(c)),
                Some(_) => {
                    inner.borrowed.remove(&*name);
                }
                None => {}
            }
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let key_authorization = read_answer(&this.dir.join("tls-alpn-01").join(&*name))?;
            let certified = alpn_certificate(&name, &key_authorization).ok()?;
            let mut inner = this.lock();
            inner
                .borrowed
                .retain(|_, (at, _)| at.elapsed() < BORROWED_FOR);
            if inner.borrowed.len() < BORROWED_MAX {
                inner
                    .borrowed
                    .insert(name, (Instant::now(), Arc::clone(&certified)));
            }
            Some(certified)
        })
        .await
        .ok()
        .flatten()
    }

    /// The key authorization answering http-01 for `token`, if one is pending here or at
    /// another instance.
    pub async fn http(&self, token: &str) -> Option<Arc<str>> {
        if !is_token(token) {
            return None;
        }
        if let Some(answer) = self.lock().http.get(token) {
            return Some(Arc::clone(answer));
        }
        let path = self.dir.join("http-01").join(token);
        tokio::task::spawn_blocking(move || read_answer(&path))
            .await
            .ok()
            .flatten()
            .map(Into::into)
    }
}

/// Whether `token` is a base64url token (RFC 8555 §8.1: at least 128 bits of entropy;
/// Let's Encrypt's are 43 characters).
fn is_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A published answer: `TOKEN.THUMBPRINT`, one line, small.
fn read_answer(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(512)
        .read_to_string(&mut text)
        .ok()?;
    let text = text.trim();
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| text.to_owned())
}

/// Writes `dir/name` whole: a temporary file beside it, then a rename.
fn write_atomic(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(".challenge")
        .tempfile_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// The self-signed certificate of tls-alpn-01 (RFC 8737 §3): `name` as its only SAN and
/// the critical acmeIdentifier extension holding SHA-256 of the key authorization.
pub fn alpn_certificate(name: &str, key_authorization: &str) -> io::Result<Arc<CertifiedKey>> {
    let invalid = |e: rcgen::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(invalid)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
    let cert = params.self_signed(&key).map_err(invalid)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = crate::tls::provider();
    let signing = crate::certs::signing_key(der, &provider)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn published_answers_are_found_here_and_by_another_instance() {
        let dir = tempfile::tempdir().unwrap();
        let here = Arc::new(Challenges::new(dir.path()));
        let there = Arc::new(Challenges::new(dir.path()));
        let token = "abcdefghijklmnopqrstuvwxyz012345";
        let answer = format!("{token}.thumbprint");
        here.publish_tls("mail.example.com", &answer).unwrap();
        here.publish_http(token, &answer).unwrap();
        assert!(here.tls_alpn("mail.example.com").await.is_some());
        assert!(there.tls_alpn("MAIL.example.com.").await.is_some());
        assert_eq!(there.http(token).await.as_deref(), Some(answer.as_str()));
        assert!(there.tls_alpn("other.example.com").await.is_none());
        assert!(there.tls_alpn("../../etc/passwd").await.is_none());
        assert!(there.http("../../../../etc/passwd").await.is_none());
        here.withdraw("mail.example.com", Some(token));
        assert!(here.tls_alpn("mail.example.com").await.is_none());
        assert!(here.http(token).await.is_none());
        assert!(Arc::new(Challenges::new(dir.path()))
            .tls_alpn("mail.example.com")
            .await
            .is_none());
    }

    #[test]
    fn the_alpn_certificate_carries_the_digest() {
        let certified = alpn_certificate("mail.example.com", "token.thumb").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&certified.cert[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"token.thumb");
        // OCTET STRING (0x04, 32) then the digest.
        assert_eq!(&ext.value[2..], digest.as_ref());
    }
}
