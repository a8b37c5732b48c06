use super::*;

fn pair() -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

#[test]
fn plain_pem_needs_no_repair() {
    let (cert, key, der) = pair();
    let pieces = read(format!("{cert}{key}").as_bytes()).unwrap();
    assert_eq!(pieces.certs.len(), 1);
    assert_eq!(pieces.certs[0].as_ref(), der.as_slice());
    assert_eq!(pieces.keys.len(), 1);
    assert!(pieces.repairs.is_empty(), "{:?}", pieces.repairs);
}

/// Each kind of damage with one certain reading is read, and noted once.
#[test]
fn damaged_text_is_repaired_and_noted() {
    let (cert, key, _) = pair();
    let bom = format!("\u{feff}{cert}{key}");
    let joined = format!("{}{key}", cert.trim_end());
    let crlf = format!("{cert}{key}").replace('\n', "\r\n");
    let around = format!("Bag Attributes\n    friendlyName: x\nsubject=CN = a-b\n{cert}\n{key}");
    let inline_end = format!(
        "{}-----END CERTIFICATE-----\n{key}",
        cert.trim_end()
            .trim_end_matches("-----END CERTIFICATE-----")
    );
    for (text, repair) in [
        (bom, Repair::Bom),
        (joined, Repair::JoinedMarkers),
        (crlf, Repair::Crlf),
        (around, Repair::TextAround("Bag Attributes".into())),
        (
            inline_end.replace("\n-----END", "-----END"),
            Repair::JoinedMarkers,
        ),
    ] {
        let pieces = read(text.as_bytes()).unwrap_or_else(|e| panic!("{repair:?}: {e:?}"));
        assert_eq!(pieces.certs.len(), 1, "{repair:?}");
        assert_eq!(pieces.keys.len(), 1, "{repair:?}");
        assert_eq!(pieces.repairs, [repair]);
    }
}

#[test]
fn joined_certificates_are_both_read() {
    let (a, _, _) = pair();
    let (b, _, _) = pair();
    let text = format!("{}{}", a.trim_end(), b);
    let pieces = read(text.as_bytes()).unwrap();
    assert_eq!(pieces.certs.len(), 2);
    assert_eq!(pieces.repairs, [Repair::JoinedMarkers]);
}

#[test]
fn forms_that_need_a_password_are_named() {
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert_eq!(
        read(encrypted.as_bytes()).unwrap_err(),
        Unusable::EncryptedKey
    );
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
    assert_eq!(read(legacy.as_bytes()).unwrap_err(), Unusable::EncryptedKey);
    assert_eq!(read(b"\xff\xfe-\0-\0").unwrap_err(), Unusable::Utf16);
    assert_eq!(read(b"\x30\x03\x04\x01\x00").unwrap_err(), Unusable::Binary);
}

#[test]
fn der_certificates_and_keys_are_read() {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pieces = read(cert.der()).unwrap();
    assert_eq!(pieces.certs.len(), 1);
    let pieces = read(&key.serialize_der()).unwrap();
    assert_eq!(pieces.keys.len(), 1);
    assert!(read(b"").unwrap().certs.is_empty());
    assert!(read(b"hello\n").unwrap().certs.is_empty());
}
