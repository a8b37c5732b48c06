//! Finding entries in the certificate directory: which files make one certificate with its
//! key, in each layout DESIGN.md lists, and which files are not entries at all.
//!
//! | layout | files |
//! | --- | --- |
//! | single file (HAProxy, hitch) | `NAME.pem` holding chain and key |
//! | pair | `NAME.crt` or `NAME.pem` (or `.cer`) with `NAME.key` |
//! | certbot | `DIR/fullchain.pem` + `DIR/privkey.pem` (symlinks into `archive/`) |
//! | Kubernetes secret volume | `DIR/tls.crt` + `DIR/tls.key` (through `..data`) |
//!
//! A subdirectory that is neither certbot's nor Kubernetes' is scanned like the top, so
//! operators may group entries (by customer, say). Symlinks are followed; the depth is
//! bounded so that a symlink loop cannot hang a scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep below the store directory entries are looked for.
const MAX_DEPTH: usize = 8;

/// The files of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Stable name of the entry: its path relative to the store (`example.com.pem`,
    /// `mail.example.org/`), used in logs and as the key when the store changes.
    pub id: Arc<str>,
    /// The file holding the certificate chain (and the key, for a single file).
    pub cert: PathBuf,
    /// The key file; `None` when the key is inside `cert`.
    pub key: Option<PathBuf>,
    /// Which layout the files were found in.
    pub layout: Layout,
}

/// The recognised layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `NAME.pem` with chain and key.
    Single,
    /// `NAME.crt`/`NAME.pem` with `NAME.key`.
    Pair,
    /// certbot's `live/DOMAIN/`.
    Certbot,
    /// A Kubernetes TLS secret mounted as a volume.
    Kubernetes,
}

/// Something found that looks meant as an entry but cannot be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    /// The file or directory.
    pub path: PathBuf,
    /// Why it is not an entry.
    pub reason: String,
}

/// Everything found below a store directory.
#[derive(Debug, Default)]
pub struct Found {
    /// The entries, sorted by id.
    pub sources: Vec<Source>,
    /// Files that looked like entries and are not.
    pub strays: Vec<Stray>,
    /// Directories that could not be listed (out of descriptors, permissions), as id
    /// prefixes (`mail.example.org/`): the entries under them are unknown, not gone.
    pub unlisted: Vec<String>,
}

/// Whether entry `id` lies in one of the `unlisted` directories of a [`Found`].
pub fn in_unlisted(unlisted: &[String], id: &str) -> bool {
    unlisted.iter().any(|dir| id.starts_with(dir.as_str()))
}

/// Lists the entries below `dir`. Fails only when `dir` itself cannot be read.
pub fn discover(dir: &Path) -> std::io::Result<Found> {
    let mut found = Found::default();
    scan_listing(dir, dir, 0, std::fs::read_dir(dir)?, &mut found);
    found.sources.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Lists the entries in and below `dir`, a subdirectory of the store `root`: what a change
/// inside one certbot, Kubernetes or grouping directory can have affected. A directory
/// that no longer exists holds no entries.
pub fn discover_dir(root: &Path, dir: &Path) -> Found {
    let mut found = Found::default();
    let depth = dir
        .strip_prefix(root)
        .map_or(1, |rel| rel.components().count());
    if std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) && depth <= MAX_DEPTH {
        scan(root, dir, depth.max(1), &mut found);
    }
    found.sources.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// Lists the entry a file `STEM.ext` directly in `root` belongs to, by looking only at
/// `STEM.crt`, `STEM.pem`, `STEM.cer` and `STEM.key`: a change to one top-level file costs
/// four `stat`s, not a listing of a directory of 100,000 files.
pub fn discover_stem(root: &Path, stem: &str) -> Found {
    let mut files = BTreeMap::new();
    for ext in ["crt", "pem", "cer", "key"] {
        let name = format!("{stem}.{ext}");
        let path = root.join(&name);
        if !is_ignored(&name) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.insert(name, path);
        }
    }
    let mut found = Found::default();
    pair_files(root, &files, &mut found);
    found
}

/// The stem a top-level file name groups under (`example.com` for `example.com.crt`), or
/// `None` for names that are never part of an entry.
pub fn stem_of(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    let known = matches!(
        ext.to_ascii_lowercase().as_str(),
        "crt" | "pem" | "cer" | "key"
    );
    (known && !is_ignored(name)).then_some(stem)
}

/// Whether a file name is a leftover no tool means as a certificate: dot-files (which
/// also hides Kubernetes' `..data` and `..2024_...` directories), editor backups and swap
/// files, temporary files and the package manager's saved copies.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || [
            ".swp", ".swx", ".tmp", ".rpmnew", ".rpmsave", ".bak", ".orig",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
        || name.contains(".dpkg-")
}

fn scan(root: &Path, dir: &Path, depth: usize, found: &mut Found) {
    match std::fs::read_dir(dir) {
        Ok(read) => scan_listing(root, dir, depth, read, found),
        Err(e) => {
            found.unlisted.push(format!("{}/", relative(root, dir)));
            found.strays.push(Stray {
                path: dir.to_owned(),
                reason: format!("the directory cannot be read ({e}); what it served keeps serving"),
            });
        }
    }
}

fn scan_listing(root: &Path, dir: &Path, depth: usize, read: std::fs::ReadDir, found: &mut Found) {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut dirs = Vec::new();
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ignored(&name) {
            continue;
        }
        let path = entry.path();
        // The listing's own file type costs nothing; only symlinks (certbot's live/ and
        // Kubernetes' volumes are made of them) and file systems that do not report types
        // need a stat, which follows the link.
        let kind = match entry.file_type() {
            Ok(t) if !t.is_symlink() => Ok(t),
            _ => std::fs::metadata(&path).map(|m| m.file_type()),
        };
        match kind {
            Ok(t) if t.is_dir() => dirs.push(path),
            Ok(t) if t.is_file() => {
                files.insert(name, path);
            }
            Ok(_) => {}
            Err(e) => found.strays.push(Stray {
                path,
                reason: format!("cannot be read: {e}"),
            }),
        }
    }
    if depth > 0 {
        if let Some(source) = directory_entry(root, dir, &files) {
            found.sources.push(source);
            return;
        }
    }
    pair_files(root, &files, found);
    if depth < MAX_DEPTH {
        for sub in dirs {
            scan(root, &sub, depth + 1, found);
        }
    }
}

/// A certbot or Kubernetes directory is one entry named after the directory.
fn directory_entry(root: &Path, dir: &Path, files: &BTreeMap<String, PathBuf>) -> Option<Source> {
    let layouts = [
        ("fullchain.pem", "privkey.pem", Layout::Certbot),
        ("tls.crt", "tls.key", Layout::Kubernetes),
    ];
    let (cert, key, layout) = layouts
        .into_iter()
        .find(|(c, k, _)| files.contains_key(*c) && files.contains_key(*k))?;
    Some(Source {
        id: format!("{}/", relative(root, dir)).into(),
        cert: files[cert].clone(),
        key: Some(files[key].clone()),
        layout,
    })
}

/// Groups `NAME.crt`/`NAME.pem`/`NAME.cer` with `NAME.key` by their common stem.
fn pair_files(root: &Path, files: &BTreeMap<String, PathBuf>, found: &mut Found) {
    let mut stems: BTreeMap<&str, [Option<&PathBuf>; 4]> = BTreeMap::new();
    for (name, path) in files {
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let slot = match ext.to_ascii_lowercase().as_str() {
            "crt" => 0,
            "pem" => 1,
            "cer" => 2,
            "key" => 3,
            _ => continue,
        };
        stems.entry(stem).or_default()[slot] = Some(path);
    }
    for (_, [crt, pem, cer, key]) in stems {
        let cert = crt.or(pem).or(cer);
        let source = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, Some(key.clone()), Layout::Pair)),
            (Some(cert), None) => Some((cert, None, Layout::Single)),
            (None, Some(key)) => {
                found.strays.push(Stray {
                    path: key.clone(),
                    reason: "a key with no certificate beside it (expected the same name \
                             ending in .crt or .pem)"
                        .into(),
                });
                None
            }
            (None, None) => None,
        };
        if let Some((cert, key, layout)) = source {
            found.sources.push(Source {
                id: relative(root, cert).into(),
                cert: cert.clone(),
                key,
                layout,
            });
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(dir: &Path, rel: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn every_layout_is_found_and_leftovers_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for f in [
            "single.pem",
            "pair.crt",
            "pair.key",
            "pempair.pem",
            "pempair.key",
            "live/example.com/fullchain.pem",
            "live/example.com/privkey.pem",
            "live/example.com/cert.pem",
            "live/example.com/chain.pem",
            "live/README",
            "k8s/..2024_01_01/tls.crt",
            "k8s/..2024_01_01/tls.key",
            ".hidden.pem",
            "single.pem~",
            ".single.pem.swp",
            "new.pem.tmp",
            "x.pem.dpkg-old",
            "lonely.key",
            "notes.txt",
        ] {
            touch(d, f);
        }
        std::os::unix::fs::symlink("..2024_01_01", d.join("k8s/..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", d.join("k8s/tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", d.join("k8s/tls.key")).unwrap();

        let found = discover(d).unwrap();
        let ids: Vec<(&str, Layout)> = found.sources.iter().map(|s| (&*s.id, s.layout)).collect();
        assert_eq!(
            ids,
            vec![
                ("k8s/", Layout::Kubernetes),
                ("live/example.com/", Layout::Certbot),
                ("pair.crt", Layout::Pair),
                ("pempair.pem", Layout::Pair),
                ("single.pem", Layout::Single),
            ]
        );
        assert_eq!(found.strays.len(), 1);
        assert!(found.strays[0].path.ends_with("lonely.key"));
    }

    #[test]
    fn missing_directory_is_an_error() {
        assert!(discover(Path::new("/nonexistent/mailfront-test")).is_err());
    }
}
