//! Pairing by content, for the files of a directory that names leave unpaired: a CA's
//! download (`mail_example_com.crt`, `mail_example_com.ca-bundle`, `mail.example.com.key`),
//! a GoDaddy zip (`2f9a8c1b7e3d4a65.crt`, its `.pem` copy, `gd_bundle-g2-g1.crt`), a cloud
//! console's (`NAME_public.crt`, `NAME_chain.crt`, `NAME.key`), acme.sh's `ca.cer`.
//!
//! A key joins the certificate whose public key it has; a file of CA certificates gives
//! them to the certificates beside it whose issuer it holds; a second copy of a
//! certificate or key is reported as such. Every file ends up in an entry or is reported
//! once, with what it holds and why it is not used.
//!
//! Only the loose files are read, and the certificates of the entries names paired only in
//! directories of up to [`READ_NAMED_UP_TO`] files (so that a CA bundle dropped beside
//! acme.sh's `example.com.cer` completes it), so a stray file in a directory of 100,000
//! entries costs a read of the stray files, not of the directory.

use std::path::{Path, PathBuf};

use super::{relative, Layout, Source, Stray};
use crate::certs::limits;
use crate::certs::pieces::{self, Unusable};

/// Directories with at most this many entries have their name-paired certificates read
/// too, so that a CA file beside them can complete their chains.
pub const READ_NAMED_UP_TO: usize = 1_000;

/// What one file holds, for pairing (here, and `mailfront check`'s files).
#[derive(Debug, Default)]
pub(in crate::certs) struct Held {
    /// The first server (non-CA) certificate's DER, its public key and its issuer.
    leaf: Option<Leaf>,
    /// The subjects of every certificate in the file (what it can issue for).
    subjects: Vec<Vec<u8>>,
    /// The issuers of its CA certificates that are not self-issued.
    ca_issuers: Vec<Vec<u8>>,
    /// The public keys of its private keys.
    keys: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Leaf {
    der: Vec<u8>,
    spki: Vec<u8>,
    issuer: Vec<u8>,
}

impl Held {
    fn read(path: &Path) -> Result<Self, String> {
        let bytes =
            limits::read(path, limits::ENTRY).map_err(|e| format!("cannot be read: {e}"))?;
        Self::of(&bytes).map_err(|u| explain(path, &u))
    }

    /// What `bytes` hold.
    pub(in crate::certs) fn of(bytes: &[u8]) -> Result<Self, Unusable> {
        let pieces = pieces::read(bytes)?;
        let mut held = Held::default();
        for der in &pieces.certs {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                continue;
            };
            let subject = cert.subject().as_raw().to_vec();
            let issuer = cert.issuer().as_raw().to_vec();
            let ca = (cert.basic_constraints().ok().flatten()).is_some_and(|b| b.value.ca);
            if !ca && held.leaf.is_none() {
                held.leaf = Some(Leaf {
                    der: der.to_vec(),
                    spki: cert.public_key().raw.to_vec(),
                    issuer,
                });
            } else if ca && subject != issuer {
                held.ca_issuers.push(issuer);
            }
            held.subjects.push(subject);
        }
        let provider = crate::tls::provider();
        for key in pieces.keys {
            let public = crate::certs::resolver::signing_key(key, &provider)
                .ok()
                .and_then(|k| k.public_key().map(|p| p.as_ref().to_vec()));
            if let Some(public) = public {
                held.keys.push(public);
            }
        }
        Ok(held)
    }

    /// Whether it holds a server (non-CA) certificate.
    pub(in crate::certs) fn has_leaf(&self) -> bool {
        self.leaf.is_some()
    }

    /// Whether it holds CA certificates and no other.
    pub(in crate::certs) fn is_ca_only(&self) -> bool {
        self.leaf.is_none() && !self.subjects.is_empty()
    }

    /// Whether it holds a private key.
    pub(in crate::certs) fn has_key(&self) -> bool {
        !self.keys.is_empty()
    }

    fn has_own_key(&self) -> bool {
        self.leaf
            .as_ref()
            .is_some_and(|l| self.keys.contains(&l.spki))
    }
}

/// An entry being made: its certificate file's contents, and what joins it.
struct Made {
    source: Source,
    held: Option<Held>,
    /// Named pairs keep their key; others get one by content.
    needs_key: bool,
}

/// Pairs `loose` (files names left unpaired) by content with each other and with the
/// `named` sources of the same directory, and adds the results to `sources` and `strays`.
pub fn pair(
    root: &Path,
    named: Vec<Source>,
    loose: Vec<PathBuf>,
    sources: &mut Vec<Source>,
    strays: &mut Vec<Stray>,
) {
    let read_named = named.len() + loose.len() <= READ_NAMED_UP_TO;
    let mut made: Vec<Made> = named
        .into_iter()
        .map(|source| Made {
            held: read_named.then(|| Held::read(&source.cert).ok()).flatten(),
            source,
            needs_key: false,
        })
        .collect();
    let mut keys = Vec::new();
    let mut cas = Vec::new();
    let mut others = Vec::new();
    for path in loose {
        match Held::read(&path) {
            Err(reason) => strays.push(Stray { path, reason }),
            Ok(held) if held.leaf.is_some() => others.push((path, held)),
            Ok(held) if held.is_ca_only() => cas.push((path, held)),
            Ok(held) if held.has_key() => keys.push((path, held)),
            Ok(_) => strays.push(Stray {
                path,
                reason: "holds no certificate or private key".into(),
            }),
        }
    }
    // Leaves, the copy with its own key first, then by name.
    others.sort_by_key(|(path, held)| (!held.has_own_key(), path.clone()));
    for (path, held) in others {
        let leaf = held.leaf.as_ref().map(|l| &l.der);
        let copy_of = made.iter().find(|m| {
            m.held
                .as_ref()
                .and_then(|h| h.leaf.as_ref())
                .map(|l| &l.der)
                == leaf
        });
        if let Some(first) = copy_of {
            strays.push(Stray {
                reason: format!(
                    "holds the same certificate as {}, which serves it; not used",
                    first.source.cert.display()
                ),
                path,
            });
            continue;
        }
        let needs_key = !held.has_own_key();
        made.push(Made {
            source: Source {
                id: relative(root, &path).into(),
                cert: path,
                key: None,
                extra: Box::default(),
                layout: Layout::Content,
                ocsp: None,
            },
            held: Some(held),
            needs_key,
        });
    }
    for (path, held) in keys {
        give_key(path, &held, &mut made, strays);
    }
    for (path, held) in cas {
        give_issuers(path, &held, &mut made, strays);
    }
    sources.extend(made.into_iter().map(|m| m.source));
}

/// The key joins the certificate whose public key it has.
fn give_key(path: PathBuf, held: &Held, made: &mut [Made], strays: &mut Vec<Stray>) {
    let owner = made.iter_mut().find(|m| {
        let spki = m
            .held
            .as_ref()
            .and_then(|h| h.leaf.as_ref())
            .map(|l| &l.spki);
        spki.is_some_and(|s| held.keys.contains(s))
    });
    let reason = match owner {
        Some(m) if m.needs_key && m.source.key.is_none() => {
            m.source.key = Some(path);
            return;
        }
        Some(m) => format!(
            "a copy of the private key of {}, which has its key; not used",
            m.source.cert.display()
        ),
        None => "a private key that matches no certificate in this directory (paired by \
                 public key); not used"
            .into(),
    };
    strays.push(Stray { path, reason });
}

/// The CA certificates join every certificate whose chain in its own files stops short of
/// an issuer they hold.
fn give_issuers(path: PathBuf, held: &Held, made: &mut [Made], strays: &mut Vec<Stray>) {
    let mut used = false;
    for m in made.iter_mut() {
        let Some(h) = &m.held else { continue };
        let Some(leaf) = &h.leaf else { continue };
        // The issuers the entry's own certificate file lacks.
        let missing = |issuer: &Vec<u8>| !h.subjects.contains(issuer);
        let wanted = std::iter::once(&leaf.issuer).chain(&h.ca_issuers);
        if wanted
            .filter(|i| missing(i))
            .any(|i| held.subjects.contains(i))
        {
            let mut extra = m.source.extra.to_vec();
            extra.push(path.clone());
            m.source.extra = extra.into_boxed_slice();
            used = true;
        }
    }
    if !used {
        strays.push(Stray {
            path,
            reason: "holds only CA certificates, and none of the certificates beside it \
                     needs them; not used"
                .into(),
        });
    }
}

/// A loose file that cannot be used: what it is and the command that converts it.
fn explain(path: &Path, unusable: &Unusable) -> String {
    let (message, fix) = pieces::explain(path, unusable);
    format!("{message}; {fix}")
}
