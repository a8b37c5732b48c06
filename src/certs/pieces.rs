//! What one file of an entry holds, in whatever form a CA, a panel or a tool wrote it:
//! PEM (with the damage editors and shell concatenation do to it repaired, each repair
//! noted), a DER certificate or key, a PKCS#7 chain (`.p7b`, `.p7c`, DER or PEM). The
//! forms that cannot be used without the operator, an encrypted key or a PKCS#12 bundle
//! (both need a password the store does not have), are named as such, so that the
//! message can give the command that converts them. The store's loader and `mailfront
//! check` read every file through here: one parser, one verdict.

use cms::cert::x509::der::{Decode, Encode};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates and keys of one file, in file order, and what had to be repaired to
/// read them.
#[derive(Debug, Default)]
pub struct Pieces {
    pub certs: Vec<CertificateDer<'static>>,
    pub keys: Vec<PrivateKeyDer<'static>>,
    pub repairs: Vec<Repair>,
}

/// Damage to a PEM file that has one certain reading: repaired, with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// A UTF-8 byte-order mark before the first line (Windows Notepad).
    Bom,
    /// A `-----BEGIN`/`-----END` line run into the line before or after it (files
    /// concatenated without a final newline).
    JoinedMarkers,
    /// Windows line ends.
    Crlf,
    /// Text outside the PEM blocks (`Bag Attributes`, `subject=` lines, notes); the
    /// first such line.
    TextAround(String),
}

impl Repair {
    /// What was found and done, for the warning.
    pub fn describe(&self) -> String {
        match self {
            Self::Bom => {
                "it starts with a byte-order mark (as Windows Notepad writes), skipped".into()
            }
            Self::JoinedMarkers => "a BEGIN or END line is joined to the line before or after \
                                    it (a file concatenated without its final newline), read \
                                    as two lines"
                .into(),
            Self::Crlf => "it has Windows line ends (CRLF)".into(),
            Self::TextAround(line) => {
                format!("it has text outside the PEM blocks (\"{line}\"), ignored")
            }
        }
    }
}

/// A file that cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// A PEM block is malformed or cut short (the reason, in words).
    Pem(String),
    /// An encrypted private key (`ENCRYPTED PRIVATE KEY`, or OpenSSL's `Proc-Type:
    /// 4,ENCRYPTED`): it needs its passphrase.
    EncryptedKey,
    /// A PKCS#12 bundle (`.pfx`, `.p12`): it needs its password.
    Pkcs12,
    /// Saved as UTF-16 (some Windows editors).
    Utf16,
    /// Binary data that is not a DER certificate, key, PKCS#7 or PKCS#12.
    Binary,
}

/// Reads what `bytes` hold. A file with neither PEM blocks nor DER holds nothing: the
/// caller says what was missing.
pub fn read(bytes: &[u8]) -> Result<Pieces, Unusable> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Unusable::Utf16);
    }
    let mut repairs = Vec::new();
    let text = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => {
            repairs.push(Repair::Bom);
            rest
        }
        None => bytes,
    };
    if !contains(text, b"-----BEGIN ") {
        return binary(text);
    }
    let scan = scan_lines(text);
    if scan.encrypted {
        return Err(Unusable::EncryptedKey);
    }
    let mut owned;
    let mut text = text;
    if scan.joined {
        repairs.push(Repair::JoinedMarkers);
        owned = separate_markers(text);
        text = &owned;
    }
    if scan.pkcs7 {
        // pki-types reads only the labels it knows: a PKCS#7 block is read as a
        // certificate block and taken apart below.
        owned = relabel_pkcs7(text);
        text = &owned;
    }
    if scan.crlf {
        repairs.push(Repair::Crlf);
    }
    if let Some(line) = scan.text_around {
        repairs.push(Repair::TextAround(line));
    }
    let mut pieces = Pieces {
        repairs,
        ..Pieces::default()
    };
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(text) {
        let (kind, der) = item.map_err(|e| Unusable::Pem(describe_pem(&e)))?;
        match kind {
            SectionKind::Certificate => match pkcs7_certificates(&der) {
                Some(certs) => pieces.certs.extend(certs),
                None => pieces.certs.push(CertificateDer::from(der)),
            },
            SectionKind::PrivateKey => pieces.keys.push(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => pieces.keys.push(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => pieces.keys.push(PrivateKeyDer::Sec1(der.into())),
            // CRLs, requests, public keys: not part of an entry.
            _ => {}
        }
    }
    Ok(pieces)
}

/// A file without PEM blocks: DER, in one of the forms CAs and Windows tools write.
fn binary(bytes: &[u8]) -> Result<Pieces, Unusable> {
    let mut pieces = Pieces::default();
    if bytes.first() != Some(&0x30) {
        // Empty, or text without any block: nothing in it.
        return match bytes.contains(&0) {
            true => Err(Unusable::Binary),
            false => Ok(pieces),
        };
    }
    if let Some(certs) = pkcs7_certificates(bytes) {
        pieces.certs = certs;
    } else if pkcs12::pfx::Pfx::from_der(bytes).is_ok() {
        return Err(Unusable::Pkcs12);
    } else if x509_parser::parse_x509_certificate(bytes).is_ok_and(|(rest, _)| rest.is_empty()) {
        pieces.certs.push(CertificateDer::from(bytes.to_vec()));
    } else if let Ok(key) = PrivateKeyDer::try_from(bytes) {
        pieces.keys.push(key.clone_key());
    } else {
        return Err(Unusable::Binary);
    }
    Ok(pieces)
}

/// The certificates of a PKCS#7 (CMS) SignedData, the "certs-only" form of `.p7b`
/// files; `None` when `der` is not one.
fn pkcs7_certificates(der: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    // A certificate's first element is a SEQUENCE, a ContentInfo's an OID: most blocks
    // are certificates, and are told apart without a parse.
    let header = match der.get(1)? {
        n if *n < 0x80 => 2,
        n => 2 + usize::from(n & 0x7f),
    };
    if der.get(header) != Some(&0x06) {
        return None;
    }
    let info = ContentInfo::from_der(der).ok()?;
    if info.content_type != const_oid::db::rfc5911::ID_SIGNED_DATA {
        return None;
    }
    let signed = info.content.decode_as::<SignedData>().ok()?;
    let set = signed.certificates?;
    let certs = set.0.iter().filter_map(|choice| match choice {
        CertificateChoices::Certificate(cert) => cert.to_der().ok(),
        CertificateChoices::Other(_) => None,
    });
    Some(certs.map(CertificateDer::from).collect())
}

/// What is wrong with a file that cannot be used, and the command that fixes it.
pub fn explain(path: &std::path::Path, unusable: &Unusable) -> (String, String) {
    let p = path.display();
    match unusable {
        Unusable::Pem(reason) => (
            format!("{p}: {reason}"),
            "write the file again in full from what your certificate authority issued".into(),
        ),
        Unusable::EncryptedKey => (
            format!(
                "the private key in {p} is encrypted with a passphrase, which mailfront does \
                 not have"
            ),
            format!(
                "decrypt it once: openssl pkey -in {p} -out {p}.plain (it asks for the \
                 passphrase), then replace {p} with {p}.plain and chmod 600 it"
            ),
        ),
        Unusable::Pkcs12 => (
            format!(
                "{p} is a PKCS#12 bundle (.pfx/.p12): its certificate and key are locked with a \
                 password mailfront does not have"
            ),
            format!(
                "convert it: openssl pkcs12 -in {p} -nodes -out NAME.pem (it asks for the \
                 password; add -legacy for bundles made by older Windows), put NAME.pem in its \
                 place and chmod 600 it"
            ),
        ),
        Unusable::Utf16 => (
            format!("{p} is saved as UTF-16 text"),
            "save it as UTF-8 (or plain ASCII) text".into(),
        ),
        Unusable::Binary => (
            format!(
                "{p} is binary data that is not a DER certificate, key, PKCS#7 chain or PKCS#12 \
                 bundle"
            ),
            "give the PEM (or DER) files your certificate authority issued".into(),
        ),
    }
}

/// What a pass over the lines found.
#[derive(Debug, Default)]
struct Scan {
    encrypted: bool,
    joined: bool,
    pkcs7: bool,
    crlf: bool,
    text_around: Option<String>,
}

/// One pass over the lines; those without a `-` (base64 and most text) cost a `memchr`.
fn scan_lines(text: &[u8]) -> Scan {
    let mut scan = Scan {
        crlf: text.contains(&b'\r'),
        ..Scan::default()
    };
    let mut inside = false;
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'-') {
            // The usual marker line, told without a search.
            let marker = line.starts_with(b"-----BEGIN ") || line.starts_with(b"-----END ");
            let closed = line.len() > 10 && line.ends_with(b"-----");
            if marker && closed && !line[5..line.len() - 5].windows(5).any(|w| w == b"-----") {
                let begin = line[5] == b'B';
                scan.pkcs7 |= line == b"-----BEGIN PKCS7-----";
                scan.encrypted |= line == b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
                inside = begin;
                continue;
            }
            let begin = memchr::memmem::rfind(line, b"-----BEGIN ");
            let end = memchr::memmem::rfind(line, b"-----END ");
            let markers = count(line, b"-----BEGIN ") + count(line, b"-----END ");
            let at_start = begin == Some(0) || end == Some(0);
            if markers > 1 || (markers == 1 && (!at_start || !line.ends_with(b"-----"))) {
                scan.joined = true;
            }
            scan.pkcs7 |= contains(line, b"-----BEGIN PKCS7-----");
            scan.encrypted |= contains(line, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || line.starts_with(b"Proc-Type: 4,ENCRYPTED");
            if markers > 0 {
                // Inside a block after a line whose last marker is a BEGIN.
                inside = begin > end;
                continue;
            }
        }
        if !inside && scan.text_around.is_none() && line.iter().any(|b| !b.is_ascii_whitespace()) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
            scan.text_around = Some(shown);
        }
    }
    scan
}

/// `text` with every BEGIN and END line on a line of its own.
fn separate_markers(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with(b"-----BEGIN ") || rest.starts_with(b"-----END ") {
            if !matches!(out.last(), None | Some(b'\n')) {
                out.push(b'\n');
            }
            if let Some(close) = find(&rest[5..], b"-----") {
                let len = 5 + close + 5;
                out.extend_from_slice(&rest[..len]);
                i += len;
                if !matches!(text.get(i), None | Some(b'\n' | b'\r')) {
                    out.push(b'\n');
                }
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn relabel_pkcs7(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    text.replace("-----BEGIN PKCS7-----", "-----BEGIN CERTIFICATE-----")
        .replace("-----END PKCS7-----", "-----END CERTIFICATE-----")
        .into_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}

/// pki-types prints byte vectors; say it in words, with the likely cause.
pub fn describe_pem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "the file ends inside a PEM block (no \"{}\" line): it looks truncated or half-written",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed PEM line {:?}", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(e) => format!("bad base64 inside a PEM block: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
