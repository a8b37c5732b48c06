//! The chain of one entry: which certificate is the server's, the order the others must be
//! served in, the issuer that is missing (or the one `issuers_dir` supplies), and whether
//! the path ends at a trusted root, with signatures and revocation verified by webpki.

use std::path::Path;

use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, RevocationOptionsBuilder, UnknownStatusPolicy};

use super::der::spki_contents;
use super::facts::CertFacts;
use super::trust::Trust;
use super::{describe, Code, Depth, Finding, Outcome, Severity, Subject};

/// How long a chain can be before we stop following issuers.
const MAX_DEPTH: usize = 8;

/// The path served: the leaf, the file's certificates in issuing order, then issuers from
/// `issuers_dir`.
#[derive(Debug)]
pub struct ChainPath {
    /// The leaf's position in the file.
    pub leaf: usize,
    /// File positions, leaf first, each the issuer of the one before.
    pub from_file: Vec<usize>,
    /// Positions in the trust's issuers, appended after the file's.
    pub added: Vec<usize>,
    /// The leaf comes after CA certificates in the file and no key says it is the leaf:
    /// the certificate and chain files look swapped (an error).
    pub swapped: bool,
}

impl ChainPath {
    /// The facts of each served certificate, in order.
    pub fn served_facts<'a>(&self, facts: &'a [CertFacts], trust: &'a Trust) -> Vec<&'a CertFacts> {
        let file = self.from_file.iter().map(|&i| &facts[i]);
        file.chain(self.added.iter().map(|&i| &trust.issuers[i].facts))
            .collect()
    }

    /// The certificates to serve, in order.
    pub fn served_ders(
        &self,
        subject: &Subject<'_>,
        trust: &Trust,
    ) -> Vec<CertificateDer<'static>> {
        let file = self.from_file.iter().map(|&i| subject.chain[i].clone());
        file.chain(self.added.iter().map(|&i| trust.issuers[i].der.clone()))
            .collect()
    }
}

fn names(facts: &[CertFacts], at: impl Iterator<Item = usize>) -> String {
    at.map(|i| format!("\"{}\"", facts[i].label()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the leaf and the served order; `None` when there is no single leaf to serve.
pub fn order(
    subject: &Subject<'_>,
    facts: &[CertFacts],
    trust: &Trust,
    out: &mut Outcome,
) -> Option<ChainPath> {
    let file = subject.cert_path;
    // The key's public key, only when a leaf is in question (it costs an encoding).
    let key = std::cell::OnceCell::new();
    let keyed = |i: usize| {
        let key = key.get_or_init(|| subject.key.and_then(|k| k.public_key()));
        key.as_ref().is_some_and(|k| k.as_ref() == facts[i].spki)
    };
    let mut leaves: Vec<usize> = (0..facts.len()).filter(|&i| !facts[i].is_ca).collect();
    if leaves.is_empty() && !facts[0].dns_names.is_empty() {
        // `openssl req -x509` marks the self-signed certificates it makes as CAs; one
        // that names hosts is meant as the server's own.
        leaves.push(0);
    }
    if leaves.len() > 1 {
        // Of several server certificates, the key names the one served; the others issued
        // nothing in its chain and are left out, with the warning below.
        let by_key: Vec<usize> = leaves.iter().copied().filter(|&i| keyed(i)).collect();
        if by_key.len() == 1 {
            leaves = by_key;
        }
    }
    let error = |message: String, fix: &str| Finding {
        code: Code::NotOneLeaf,
        severity: Severity::Error,
        file: file.to_owned(),
        message,
        fix: fix.to_owned(),
    };
    let leaf = match leaves.as_slice() {
        [] => {
            out.findings.push(error(
                format!(
                    "{} holds only CA certificates ({}): the server's own certificate is \
                     missing, as if the chain file had been given in its place",
                    file.display(),
                    names(facts, 0..facts.len())
                ),
                "use the certificate issued for your domain, followed by this chain \
                 (certbot: fullchain.pem)",
            ));
            return None;
        }
        [leaf] => *leaf,
        many => {
            out.findings.push(error(
                format!(
                    "{} holds {} server certificates ({}); an entry serves one",
                    file.display(),
                    many.len(),
                    names(facts, many.iter().copied())
                ),
                "keep this entry's certificate first, followed by its CA certificates, and \
                 give each other certificate its own file",
            ));
            return None;
        }
    };
    let swapped = leaf != 0 && !keyed(leaf);
    if swapped {
        out.findings.push(error(
            format!(
                "the first certificate in {} is the CA certificate \"{}\" and the server's \
                 certificate \"{}\" comes later: the certificate and the chain look swapped",
                file.display(),
                facts[0].label(),
                facts[leaf].label()
            ),
            "put the server's certificate first, then the chain \
             (cat certificate.crt chain.crt > fullchain.pem)",
        ));
    }
    let mut path = ChainPath {
        leaf,
        from_file: vec![leaf],
        added: Vec::new(),
        swapped,
    };
    while path.from_file.len() < MAX_DEPTH {
        let current = &facts[*path.from_file.last().expect("starts with the leaf")];
        if current.self_issued() {
            break;
        }
        let next =
            (0..facts.len()).find(|i| !path.from_file.contains(i) && current.issued_by(&facts[*i]));
        match next {
            Some(i) => path.from_file.push(i),
            None => break,
        }
    }
    let extras: Vec<usize> = (0..facts.len())
        .filter(|i| !path.from_file.contains(i))
        .collect();
    let in_order = path.from_file.iter().enumerate().all(|(pos, &i)| pos == i);
    if !swapped && (!in_order || !extras.is_empty()) {
        out.findings
            .push(order_warning(file, facts, &path, in_order, &extras));
    }
    complete(subject, facts, trust, &mut path, out);
    let last = *path.from_file.last().expect("starts with the leaf");
    let root = path.from_file.len() > 1 && path.added.is_empty() && facts[last].self_issued();
    if root {
        out.findings.push(Finding {
            code: Code::RootInChain,
            severity: Severity::Warning,
            file: file.to_owned(),
            message: format!(
                "{} includes the root \"{}\": clients use their own copy of a root, so it is \
                 left out of what is served",
                file.display(),
                facts[last].label()
            ),
            fix: "leave the root out of the file: the server's certificate, then the \
                  intermediates"
                .into(),
        });
    }
    if !swapped && (!in_order || !extras.is_empty() || !path.added.is_empty() || root) {
        let mut served = path.served_ders(subject, trust);
        if root {
            served.pop();
        }
        out.chain = Some(served);
    }
    Some(path)
}

/// The warning for a chain served in another order than the file's, or without some of
/// its certificates.
fn order_warning(
    file: &Path,
    facts: &[CertFacts],
    path: &ChainPath,
    in_order: bool,
    extras: &[usize],
) -> Finding {
    let mut message = if path.leaf != 0 {
        format!(
            "the server's certificate \"{}\" comes after CA certificates in {} (its key says \
             which it is)",
            facts[path.leaf].label(),
            file.display()
        )
    } else if in_order {
        format!(
            "{} holds certificates that are not part of the chain",
            file.display()
        )
    } else {
        format!("the chain in {} is not in issuing order", file.display())
    };
    if !extras.is_empty() {
        message.push_str(&format!(
            "; {} issued nothing in it and is left out",
            names(facts, extras.iter().copied())
        ));
    }
    message.push_str(&format!(
        "; served as {}",
        names(facts, path.from_file.iter().copied())
    ));
    Finding {
        code: Code::NotOneLeaf,
        severity: Severity::Warning,
        file: file.to_owned(),
        message,
        fix: "write the file in that order: the server's certificate, then each issuer".into(),
    }
}

/// Appends issuers from `issuers_dir` while the path ends short of a root, and reports
/// the issuer nobody has.
fn complete(
    subject: &Subject<'_>,
    facts: &[CertFacts],
    trust: &Trust,
    path: &mut ChainPath,
    out: &mut Outcome,
) {
    let file = subject.cert_path;
    loop {
        let served = path.served_facts(facts, trust);
        let last = *served.last().expect("starts with the leaf");
        if last.self_issued() || reaches_trust(last, trust) {
            return;
        }
        let found = trust
            .issuers
            .iter()
            .position(|i| last.issued_by(&i.facts))
            .filter(|i| !path.added.contains(i));
        match found {
            Some(i) if served.len() < MAX_DEPTH => {
                let issuer = &trust.issuers[i];
                out.findings.push(Finding {
                    code: Code::ChainIncomplete,
                    severity: Severity::Warning,
                    file: file.to_owned(),
                    message: format!(
                        "{} lacks \"{}\", the issuer of \"{}\"; it is served with the copy in {}",
                        file.display(),
                        issuer.facts.label(),
                        last.label(),
                        issuer.path.display()
                    ),
                    fix: format!(
                        "append it to the file (cat {} >> {})",
                        issuer.path.display(),
                        file.display()
                    ),
                });
                path.added.push(i);
            }
            _ => {
                if let Some(bundle) = &trust.bundle {
                    out.findings
                        .push(unknown_issuer(file, last, served.len(), bundle));
                }
                return;
            }
        }
    }
}

/// What it means that nobody has the issuer of `last`, the end of a path of `len`
/// certificates: when the leaf's own issuer is missing, the chain is incomplete (an
/// error); when the path reaches a CA certificate whose issuer is unknown (a private CA,
/// a root clients lack), clients that do not trust that issuer will warn, and the fix is
/// `ca_bundle` (a warning: the chain is all there).
fn unknown_issuer(file: &Path, last: &CertFacts, len: usize, bundle: &Path) -> Finding {
    if len == 1 {
        return Finding {
            code: Code::ChainIncomplete,
            severity: Severity::Error,
            file: file.to_owned(),
            message: format!(
                "no path to a trusted root: \"{}\" was issued by \"{}\", which is neither \
                 in {}, nor in issuers_dir, nor a root in {}",
                last.label(),
                last.issuer,
                file.display(),
                bundle.display()
            ),
            fix: "append the intermediate certificates your CA provides (often chain.pem or \
                  ca-bundle.crt) to the file, or put them in issuers_dir"
                .into(),
        };
    }
    Finding {
        code: Code::UntrustedIssuer,
        severity: Severity::Warning,
        file: file.to_owned(),
        message: format!(
            "the chain ends at the CA certificate \"{}\", issued by \"{}\", which is not a \
             root in {}: clients that do not trust \"{}\" will warn",
            last.label(),
            last.issuer,
            bundle.display(),
            last.issuer
        ),
        fix: format!(
            "if \"{}\" is your own CA's root, set ca_bundle (mailfront check: --ca-bundle) \
             to a file holding it, and install it on the clients; otherwise append the \
             intermediate it names to the file",
            last.issuer
        ),
    }
}

/// Judges the path's end (self-signed, untrusted root) and, when `depth` asks or a CRL
/// applies, verifies signatures and revocation with webpki.
pub fn verify(
    subject: &Subject<'_>,
    facts: &[CertFacts],
    path: &ChainPath,
    trust: &Trust,
    now: i64,
    depth: Depth,
    out: &mut Outcome,
) {
    let file = subject.cert_path;
    let served = path.served_facts(facts, trust);
    let last = *served.last().expect("starts with the leaf");
    if served.len() == 1 && last.self_issued() {
        out.findings.push(Finding {
            code: Code::SelfSigned,
            severity: Severity::Warning,
            file: file.to_owned(),
            message: format!(
                "{} is self-signed: clients will warn that it is not trusted",
                describe(last)
            ),
            fix: "use a certificate from a certificate authority (Let's Encrypt issues them free)"
                .into(),
        });
        return;
    }
    let ends_at_own_root = last.self_issued();
    if ends_at_own_root {
        if let Some(bundle) = &trust.bundle {
            if !trust.has_root_named(&last.subject_der) {
                out.findings.push(Finding {
                    code: Code::UntrustedIssuer,
                    severity: Severity::Warning,
                    file: file.to_owned(),
                    message: format!(
                        "the chain ends at the root \"{}\", which is not in {}: clients that do \
                         not trust it will warn",
                        last.label(),
                        bundle.display()
                    ),
                    fix: "if this is your own CA's root, set ca_bundle (mailfront check: \
                          --ca-bundle) to a file holding it and install it on every client; \
                          otherwise use a certificate from a publicly trusted CA"
                        .into(),
                });
            }
        }
    }
    let reaches_root = ends_at_own_root || reaches_trust(last, trust);
    if depth == Depth::Load {
        revoked_on_load(subject, &served, trust, out);
        return;
    }
    if path.swapped || !reaches_root {
        return;
    }
    let ders = path.served_ders(subject, trust);
    let mut anchors = trust.roots.clone();
    if ends_at_own_root {
        // Verify the chain as if its own root were trusted: whether it is trusted was
        // judged above; signatures and revocation are judged here.
        if let Ok(own) = webpki::anchor_from_trusted_cert(ders.last().expect("not empty")) {
            anchors.push(own.to_owned());
        }
    }
    let Ok(ee) = EndEntityCert::try_from(&ders[0]) else {
        return;
    };
    // A time inside every certificate's validity, so that dates (reported on their own)
    // do not hide what else is wrong.
    let start = served.iter().map(|c| c.not_before).max().unwrap_or(now);
    let end = served.iter().map(|c| c.not_after).min().unwrap_or(now);
    let at = if start <= end {
        now.clamp(start, end)
    } else {
        now
    };
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64));
    let crls: Vec<_> = trust.crls.iter().map(|c| &c.list).collect();
    let revocation = RevocationOptionsBuilder::new(&crls)
        .ok()
        .map(|b| b.with_status_policy(UnknownStatusPolicy::Allow).build());
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let result = ee.verify_for_usage(
        algorithms,
        &anchors,
        &ders[1..],
        time,
        KeyUsage::server_auth(),
        revocation,
        None,
    );
    match result {
        Ok(_) => {}
        Err(webpki::Error::CertRevoked) => revoked(subject, &served, trust, out),
        Err(
            webpki::Error::CertExpired { .. }
            | webpki::Error::CertNotValidYet { .. }
            | webpki::Error::InvalidCertValidity,
        ) => {}
        // Reported as weak-signature already.
        Err(webpki::Error::UnsupportedSignatureAlgorithmContext(_))
            if served.iter().any(|c| c.weak_signature) => {}
        Err(e) => out.findings.push(Finding {
            code: Code::ChainIncomplete,
            severity: Severity::Error,
            file: file.to_owned(),
            message: format!(
                "the chain of \"{}\" does not verify: {}",
                served[0].label(),
                reason(&e)
            ),
            fix: "the file's certificates do not belong together; download the certificate \
                  and chain again from your CA"
                .into(),
        }),
    }
}

/// Whether `last` is itself trusted, or issued by a trusted root.
fn reaches_trust(last: &CertFacts, trust: &Trust) -> bool {
    trust.has_root_named(&last.subject_der) || trust.has_root_named(&last.issuer_der)
}

/// webpki's error in words (its `Display` lists every algorithm it supports).
fn reason(e: &webpki::Error) -> String {
    use webpki::Error::*;
    match e {
        InvalidSignatureForPublicKey => {
            "a signature in it is not made by the key of the certificate that should have \
             made it"
                .into()
        }
        UnsupportedSignatureAlgorithmContext(_)
        | UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "it is signed with an algorithm TLS clients do not accept".into()
        }
        UnknownIssuer => "no certificate it names as issuer verifies it".into(),
        InvalidCrlSignatureForPublicKey => {
            "a CRL in crl_dir names an issuer of the chain but that issuer did not sign it".into()
        }
        CaUsedAsEndEntity => "the first certificate is a CA certificate".into(),
        EndEntityUsedAsCa => "a server certificate stands where a CA should".into(),
        RequiredEkuNotFoundContext(_) => {
            "the certificate is not for TLS servers (its extended key usage lacks serverAuth)"
                .into()
        }
        other => format!("{other:?}").chars().take(200).collect(),
    }
}

/// Names the revoked certificate: the first whose serial a CRL from its issuer lists.
fn revoked(subject: &Subject<'_>, served: &[&CertFacts], trust: &Trust, out: &mut Outcome) {
    let listed = served.iter().find(|c| {
        trust
            .crls
            .iter()
            .any(|crl| crl.names(&c.issuer_der) && crl.lists(&c.serial_der))
    });
    push_revoked(subject, listed.copied(), out);
}

/// Revocation without webpki: each served certificate (the root aside) is looked up in the
/// CRLs that name its issuer and that its issuer's key signed.
fn revoked_on_load(subject: &Subject<'_>, served: &[&CertFacts], trust: &Trust, out: &mut Outcome) {
    if trust.crls.is_empty() {
        return;
    }
    for (i, cert) in served.iter().enumerate() {
        if i > 0 && cert.self_issued() {
            break;
        }
        let next = served.get(i + 1).filter(|n| cert.issued_by(n));
        let issuer_key: Option<&[u8]> = match next {
            Some(n) => Some(spki_contents(&n.spki)),
            None => trust.root_key_named(&cert.issuer_der),
        };
        let Some(key) = issuer_key else { continue };
        let revoked = trust.crls.iter().any(|crl| {
            crl.names(&cert.issuer_der) && crl.lists(&cert.serial_der) && crl.signed_by(key)
        });
        if revoked {
            push_revoked(subject, Some(*cert), out);
            return;
        }
    }
}

fn push_revoked(subject: &Subject<'_>, cert: Option<&CertFacts>, out: &mut Outcome) {
    let what = cert.map_or_else(|| "a certificate of the chain".to_owned(), describe);
    out.findings.push(Finding {
        code: Code::Revoked,
        severity: Severity::Error,
        file: subject.cert_path.to_owned(),
        message: format!("{what} is revoked: a CRL from crl_dir lists it"),
        fix: "have a new certificate issued; a revoked one cannot be reinstated".into(),
    });
}
