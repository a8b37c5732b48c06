//! Finding entries in the certificate directory: which files make one certificate with its
//! key, in each layout DESIGN.md lists, and which files are not entries at all.
//!
//! | layout | files |
//! | --- | --- |
//! | single file (HAProxy, hitch) | `NAME.pem` holding chain and key |
//! | pair | `NAME.crt`, `NAME.pem`, `NAME.cer` or `NAME.der` with `NAME.key` |
//! | certbot | `DIR/fullchain.pem` + `DIR/privkey.pem` (symlinks into `archive/`) |
//! | Kubernetes secret volume | `DIR/tls.crt` + `DIR/tls.key` (through `..data`) |
//! | as a CA delivers it | a certificate, a CA bundle and a key whose names differ ([`content`]) |
//!
//! Files are paired by name first; what names leave unpaired is paired by content.
//! A subdirectory that is neither certbot's nor Kubernetes' is scanned like the top, so
//! operators may group entries (by customer, say).
//!
//! Symlinks are followed, with bounds so that no link can make a scan hang or wander: a
//! symlinked directory is not followed when it leads back into the store (its contents
//! are read under their own path) or to a directory the walk is already inside (`ln -s .
//! loop`, a link to `/`); a directory outside the store reached by several links is read
//! once; and one scan reads at most [`MAX_DIRS`] directories, [`MAX_DEPTH`] deep. The
//! links read are listed ([`Found::links`]) for the watcher, which watches their targets.

mod content;

pub(super) use content::Held;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep below the store directory entries are looked for.
const MAX_DEPTH: usize = 8;
/// Directories one scan reads at most: three per customer domain at 100,000 domains
/// (certbot's `live/DOMAIN`, a grouping directory, a Kubernetes volume), and a bound on
/// what a link to a large tree (`/usr`) can cost each rescan.
pub const MAX_DIRS: usize = 300_000;

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
    /// Further files that hold CA certificates for it (a CA's bundle, paired by content).
    pub extra: Box<[PathBuf]>,
    /// Which layout the files were found in.
    pub layout: Layout,
    /// A DER OCSP response to staple beside the certificate file, and how it is named
    /// ([`Source::ocsp_path`]); a byte, in what was padding.
    pub ocsp: Option<OcspName>,
}

/// How an entry's OCSP response file is named after its certificate file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspName {
    /// `CERTFILE.ocsp` (HAProxy's `example.com.pem.ocsp`, `fullchain.pem.ocsp`).
    Whole,
    /// `NAME.ocsp` for a certificate file `NAME.EXT`.
    Stem,
}

impl OcspName {
    /// Every naming, in the order a response is looked for.
    const ALL: [Self; 2] = [Self::Whole, Self::Stem];

    /// The response file's name this gives for a certificate file named `cert`.
    fn file_name(self, cert: &str) -> Option<String> {
        match self {
            Self::Whole => Some(format!("{cert}{OCSP_SUFFIX}")),
            Self::Stem => Some(format!("{}{OCSP_SUFFIX}", cert.rsplit_once('.')?.0)),
        }
    }

    /// The response file this name gives for the certificate file `cert`.
    pub fn path(self, cert: &Path) -> Option<PathBuf> {
        let name = self.file_name(&cert.file_name()?.to_string_lossy())?;
        Some(cert.with_file_name(name))
    }
}

impl Source {
    /// Its files: the certificate, the extra CA files, the key.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.cert)
            .chain(self.extra.iter())
            .chain(self.key.iter())
    }

    /// Its OCSP response file, when it has one.
    pub fn ocsp_path(&self) -> Option<PathBuf> {
        self.ocsp.and_then(|name| name.path(&self.cert))
    }

    /// Its files, the OCSP response included.
    pub fn all_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.files().cloned().collect();
        files.extend(self.ocsp_path());
        files
    }
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
    /// Files whose names do not pair, paired by what they hold: a certificate, the key
    /// whose public key it has, the CA files that issued it (as CAs deliver them).
    Content,
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
    /// A look at one stem found files that names do not pair: the top-level directory
    /// must be paired by content ([`discover_top`]).
    pub widen: bool,
    /// The symlinked directories that were read, by the path they were read under:
    /// changes below them happen at their targets, which the watcher watches too.
    pub links: Vec<Link>,
}

/// A symlinked directory of the store that a scan read, and that is to be watched: one
/// below which it found entries, or a small one (an empty certbot `live/`), not a large
/// tree without certificates (a link to `/usr` by mistake would cost a watch of each of
/// its directories). No two links of one scan have the same target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    /// The link, as the store's path to it (`STORE/live`).
    pub path: Arc<Path>,
    /// Its real path (`/etc/letsencrypt/live`).
    pub target: Arc<Path>,
}

/// Directories a symlinked directory without entries may hold and still be watched.
const WATCH_EMPTY_UP_TO: usize = 64;

/// Whether entry `id` lies in one of the `unlisted` directories of a [`Found`].
pub fn in_unlisted(unlisted: &[String], id: &str) -> bool {
    unlisted.iter().any(|dir| id.starts_with(dir.as_str()))
}

/// Lists the entries below `dir`. Fails only when `dir` itself cannot be read.
pub fn discover(dir: &Path) -> std::io::Result<Found> {
    let listing = std::fs::read_dir(dir)?;
    let mut walk = Walk::new(dir);
    let real = walk.store.clone();
    walk.scan_listing(dir, &real, 0, listing);
    Ok(walk.finish())
}

/// Lists the entries in and below `dir`, a subdirectory of the store `root`: what a change
/// inside one certbot, Kubernetes or grouping directory can have affected. A directory
/// that no longer exists holds no entries.
pub fn discover_dir(root: &Path, dir: &Path) -> Found {
    let mut walk = Walk::new(root);
    let depth = dir
        .strip_prefix(root)
        .map_or(1, |rel| rel.components().count());
    if std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) && depth <= MAX_DEPTH {
        // Its real path, through whatever links lead to it from the store; a link itself
        // is followed as a full scan follows it, or not at all.
        match std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_symlink()) {
            true => walk.scan_link(dir, depth.max(1)),
            false => {
                let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
                walk.scan(dir, &real, depth.max(1));
            }
        }
    }
    walk.finish()
}

/// Lists the entry a file `STEM.ext` directly in `root` belongs to, by looking only at
/// the files `STEM` with each known extension: a change to one top-level file costs a few
/// `stat`s, not a listing of a directory of 100,000 files. When names do not pair them
/// (a key alone, a certificate without its key, a CA bundle), [`Found::widen`] says that
/// the top-level directory is to be paired by content.
pub fn discover_stem(root: &Path, stem: &str) -> Found {
    let mut files = BTreeMap::new();
    for ext in CERT_EXTENSIONS.iter().chain(&OTHER_EXTENSIONS) {
        let name = format!("{stem}.{ext}");
        let path = root.join(&name);
        if !is_ignored(&name) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.insert(name, path);
        }
    }
    let mut named = Vec::new();
    let loose = pair_names(root, &files, &mut named);
    for source in &mut named {
        source.ocsp = (OcspName::ALL.into_iter())
            .find(|how| how.path(&source.cert).is_some_and(|p| p.is_file()));
    }
    Found {
        widen: !loose.is_empty(),
        sources: if loose.is_empty() { named } else { Vec::new() },
        ..Found::default()
    }
}

/// The paths `root/STEM.EXT` that exist, of any kind (a file, a directory, a link), for
/// every extension the store pairs by name: what a top-level entry named `STEM` is made
/// of, or would be paired with.
pub fn stem_paths(root: &Path, stem: &str) -> Vec<PathBuf> {
    let paths = CERT_EXTENSIONS.iter().chain(&OTHER_EXTENSIONS);
    let paths = paths.map(|ext| root.join(format!("{stem}.{ext}")));
    paths
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect()
}

/// Lists the entries of the files directly in `root`, not of its subdirectories: what a
/// change to a top-level file that names do not pair can have affected.
pub fn discover_top(root: &Path) -> std::io::Result<Found> {
    let listing = std::fs::read_dir(root)?;
    let mut walk = Walk::new(root);
    walk.recurse = false;
    let real = walk.store.clone();
    walk.scan_listing(root, &real, 0, listing);
    Ok(walk.finish())
}

/// Extensions of files holding a certificate (perhaps with its chain and key), in the
/// order one stem's files are preferred as its certificate.
const CERT_EXTENSIONS: [&str; 4] = ["crt", "pem", "cer", "der"];
/// Extensions of files that are never an entry by their name: keys, CA bundles, PKCS#7
/// chains and PKCS#12 bundles.
const OTHER_EXTENSIONS: [&str; 6] = ["key", "ca-bundle", "p7b", "p7c", "pfx", "p12"];

/// The stem a top-level file name groups under (`example.com` for `example.com.crt`), or
/// `None` for names that are never part of an entry.
pub fn stem_of(name: &str) -> Option<&str> {
    // `NAME.EXT.ocsp` and `NAME.ocsp` belong to `NAME`'s entry.
    if let Some(base) = name.strip_suffix(OCSP_SUFFIX).filter(|b| !b.is_empty()) {
        return match stem_of(base) {
            Some(stem) => Some(stem),
            None => (!is_ignored(name)).then_some(base),
        };
    }
    let (stem, ext) = name.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    let known = CERT_EXTENSIONS
        .iter()
        .chain(&OTHER_EXTENSIONS)
        .any(|e| *e == ext);
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

/// One scan: what it found, and what bounds its walk.
struct Walk {
    /// The store as given (entry ids are relative to it) and its real path.
    root: PathBuf,
    store: PathBuf,
    /// The real paths of the directories the walk is inside, the store first.
    inside: Vec<PathBuf>,
    /// Directories outside the store already read through a link.
    linked: HashSet<PathBuf>,
    /// Directories read so far, and how many may be.
    dirs: usize,
    budget: usize,
    /// Whether subdirectories are read ([`discover_top`] reads only the top).
    recurse: bool,
    found: Found,
}

impl Walk {
    fn new(root: &Path) -> Self {
        let store = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        Self {
            root: root.to_owned(),
            inside: vec![store.clone()],
            store,
            linked: HashSet::new(),
            dirs: 0,
            budget: MAX_DIRS,
            recurse: true,
            found: Found::default(),
        }
    }

    fn finish(mut self) -> Found {
        self.found.sources.sort_by(|a, b| a.id.cmp(&b.id));
        self.found
    }

    /// Entries under `dir` are unknown, not gone: reported with `reason`.
    fn unlisted(&mut self, dir: &Path, reason: String) {
        let prefix = format!("{}/", relative(&self.root, dir));
        self.found.unlisted.push(prefix);
        self.found.strays.push(Stray {
            path: dir.to_owned(),
            reason,
        });
    }

    /// Reads `dir`, whose real path is `real`.
    fn scan(&mut self, dir: &Path, real: &Path, depth: usize) {
        if self.dirs >= self.budget {
            let reason = format!(
                "not read: one scan reads at most {} directories; what it served keeps \
                 serving",
                self.budget
            );
            return self.unlisted(dir, reason);
        }
        match std::fs::read_dir(dir) {
            Ok(read) => self.scan_listing(dir, real, depth, read),
            Err(e) => {
                let reason =
                    format!("the directory cannot be read ({e}); what it served keeps serving");
                self.unlisted(dir, reason);
            }
        }
    }

    fn scan_listing(&mut self, dir: &Path, real: &Path, depth: usize, read: std::fs::ReadDir) {
        self.dirs += 1;
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut dirs = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_ignored(&name) {
                continue;
            }
            let path = entry.path();
            // The listing's own file type costs nothing; only symlinks (certbot's live/ and
            // Kubernetes' volumes are made of them) and file systems that do not report
            // types need a stat, which follows the link.
            let (kind, linked) = match entry.file_type() {
                Ok(t) if !t.is_symlink() => (Ok(t), false),
                _ => (std::fs::metadata(&path).map(|m| m.file_type()), true),
            };
            match kind {
                Ok(t) if t.is_dir() => dirs.push((path, linked)),
                Ok(t) if t.is_file() => {
                    files.insert(name, path);
                }
                Ok(_) => {}
                Err(e) => self.found.strays.push(Stray {
                    reason: unreadable(&path, &e),
                    path,
                }),
            }
        }
        if depth > 0 {
            if let Some(source) = directory_entry(&self.root, dir, &files) {
                let mut one = [source];
                let orphans = attach_ocsp(&mut one, &files);
                let [source] = one;
                self.found.sources.push(source);
                self.orphan_ocsp(orphans);
                return;
            }
        }
        // Into the scan's list directly: a directory of 100,000 entries is not collected
        // twice.
        let start = self.found.sources.len();
        let loose = pair_names(&self.root, &files, &mut self.found.sources);
        if !loose.is_empty() {
            let found = &mut self.found;
            let named = found.sources.split_off(start);
            content::pair(
                &self.root,
                named,
                loose,
                &mut found.sources,
                &mut found.strays,
            );
        }
        let orphans = attach_ocsp(&mut self.found.sources[start..], &files);
        self.orphan_ocsp(orphans);
        if depth >= MAX_DEPTH || !self.recurse {
            return;
        }
        // In name order, so that of two links to one directory the same one is read at
        // every scan (the entries' ids come from it).
        dirs.sort_unstable();
        self.inside.push(real.to_owned());
        for (sub, linked) in dirs {
            match linked {
                false => {
                    let name = sub.file_name().unwrap_or_default();
                    self.scan(&sub, &real.join(name), depth + 1);
                }
                true => self.scan_link(&sub, depth + 1),
            }
        }
        self.inside.pop();
    }

    /// Reports OCSP response files that no entry of their directory took.
    fn orphan_ocsp(&mut self, orphans: Vec<PathBuf>) {
        for path in orphans {
            self.found.strays.push(Stray {
                path,
                reason: "an OCSP response for no certificate here: name it after the \
                         certificate file (CERTFILE.ocsp or NAME.ocsp)"
                    .into(),
            });
        }
    }

    /// Reads the symlinked directory `link` if it is to be read ([`Walk::follow`]), and
    /// notes it as a [`Link`] to watch.
    fn scan_link(&mut self, link: &Path, depth: usize) {
        let Some(target) = self.follow(link) else {
            return;
        };
        let (sources, dirs) = (self.found.sources.len(), self.dirs);
        self.scan(link, &target, depth);
        if self.found.sources.len() > sources || self.dirs - dirs <= WATCH_EMPTY_UP_TO {
            self.found.links.push(Link {
                path: link.into(),
                target: target.into(),
            });
        }
    }

    /// The real path of the symlinked directory `link` when it is to be read: not when it
    /// leads into the store (read under its own path), to a directory the walk is inside
    /// (a loop), or to one already read through another link. Reported when not.
    fn follow(&mut self, link: &Path) -> Option<PathBuf> {
        let target = std::fs::canonicalize(link).ok()?;
        let why = if self.inside.iter().any(|d| d.starts_with(&target)) {
            "it leads to a directory that holds it (a symlink loop)"
        } else if target.starts_with(&self.store) {
            "it leads to a directory of the store, which is read under its own path"
        } else if !self.linked.insert(target.clone()) {
            "another link to the same directory was read"
        } else {
            return Some(target);
        };
        self.found.strays.push(Stray {
            path: link.to_owned(),
            reason: format!("not followed: {why} ({})", target.display()),
        });
        None
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
        extra: Box::default(),
        layout,
        ocsp: None,
    })
}

/// Pairs a directory's files by name into `named`: `NAME.crt`/`.pem`/`.cer`/`.der` with
/// `NAME.key`, and a `NAME.pem` alone as one file holding both. Returns the rest, loose,
/// for content pairing: a key alone, a certificate of another extension without its key
/// (and every other certificate file of its stem), CA bundles, PKCS#7 and PKCS#12 files.
fn pair_names(
    root: &Path,
    files: &BTreeMap<String, PathBuf>,
    named: &mut Vec<Source>,
) -> Vec<PathBuf> {
    let mut stems: BTreeMap<&str, [Option<&PathBuf>; 5]> = BTreeMap::new();
    let mut loose = Vec::new();
    for (name, path) in files {
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let ext = ext.to_ascii_lowercase();
        match CERT_EXTENSIONS.iter().position(|e| *e == ext) {
            Some(slot) => stems.entry(stem).or_default()[slot] = Some(path),
            None if ext == "key" => stems.entry(stem).or_default()[4] = Some(path),
            None if OTHER_EXTENSIONS.contains(&ext.as_str()) => loose.push(path.clone()),
            None => {}
        }
    }
    for (_, [crt, pem, cer, der, key]) in stems {
        let certs = [crt, pem, cer, der];
        let Some(cert) = certs.iter().flatten().next() else {
            loose.extend(key.cloned());
            continue;
        };
        let (key, layout) = match key {
            Some(key) => (Some(key.clone()), Layout::Pair),
            // `NAME.pem` alone: one file with chain and key, as HAProxy and hitch take.
            None if certs.iter().flatten().count() == 1 && pem.is_some() => (None, Layout::Single),
            None => {
                loose.extend(certs.iter().flatten().map(|p| (*p).clone()));
                continue;
            }
        };
        named.push(Source {
            id: relative(root, cert).into(),
            cert: (*cert).clone(),
            key,
            extra: Box::default(),
            layout,
            ocsp: None,
        });
    }
    loose
}

/// What an OCSP response file's name ends with.
pub const OCSP_SUFFIX: &str = ".ocsp";

/// Gives each of `sources`, found in one directory whose files are `files`, the OCSP
/// response named after its certificate file: `CERTFILE.ocsp` (HAProxy's
/// `example.com.pem.ocsp`, `fullchain.pem.ocsp`) or else `NAME.ocsp` for a certificate
/// file `NAME.EXT`. Returns the response files no entry took.
fn attach_ocsp(sources: &mut [Source], files: &BTreeMap<String, PathBuf>) -> Vec<PathBuf> {
    // Most directories have none: no name is made for their entries.
    if !files.keys().any(|n| n.ends_with(OCSP_SUFFIX)) {
        return Vec::new();
    }
    let mut taken = HashSet::new();
    for source in sources {
        let Some(name) = source.cert.file_name().map(|n| n.to_string_lossy()) else {
            continue;
        };
        let found = OcspName::ALL.into_iter().find_map(|how| {
            let file = how.file_name(&name)?;
            files.contains_key(&file).then_some((how, file))
        });
        if let Some((how, found)) = found {
            source.ocsp = Some(how);
            taken.insert(found);
        }
    }
    files
        .iter()
        .filter(|(name, _)| name.ends_with(OCSP_SUFFIX) && !taken.contains(*name))
        .map(|(_, path)| path.clone())
        .collect()
}

/// Why a listed file cannot be read, saying so plainly when it is a dangling symlink.
fn unreadable(path: &Path, e: &std::io::Error) -> String {
    let dangling = e.kind() == std::io::ErrorKind::NotFound
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match (dangling, std::fs::read_link(path)) {
        (true, Ok(target)) => format!(
            "a dangling symlink: its target {} does not exist (copied without what it points \
             to? certbot's live/ links into ../../archive/; copy with cp -L, or link to the \
             live/ directory itself)",
            target.display()
        ),
        _ => format!("cannot be read: {e}"),
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

    /// Links back into the store or to a directory holding it are not followed, each
    /// reported; a directory outside reached by two links is read once; a scan stops at
    /// its directory budget, and what it did not read is unknown rather than gone.
    #[test]
    fn links_are_followed_once_and_never_in_a_loop() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, outside) = (tmp.path().join("store"), tmp.path().join("outside"));
        touch(&outside, "a.example.com.pem");
        touch(&store, "sub/b.example.com.pem");
        for (link, target) in [
            ("loop", "."),
            ("sub/up", ".."),
            ("root", "/"),
            ("sibling", "sub"),
            ("out1", "../outside"),
            ("out2", "../outside"),
        ] {
            std::os::unix::fs::symlink(target, store.join(link)).unwrap();
        }
        let found = discover(&store).unwrap();
        let ids: Vec<&str> = found.sources.iter().map(|s| &*s.id).collect();
        assert_eq!(ids, ["out1/a.example.com.pem", "sub/b.example.com.pem"]);
        let mut strays: Vec<String> = found
            .strays
            .iter()
            .map(|s| relative(&store, &s.path))
            .collect();
        strays.sort();
        assert_eq!(strays, ["loop", "out2", "root", "sibling", "sub/up"]);
        assert!(found
            .strays
            .iter()
            .all(|s| s.reason.starts_with("not followed")));
        let out1 = Link {
            path: store.join("out1").into(),
            target: std::fs::canonicalize(&outside).unwrap().into(),
        };
        assert_eq!(
            found.links,
            std::slice::from_ref(&out1),
            "the links read, to be watched"
        );

        // A link to a large tree without certificates is read, not watched; one to a small
        // or empty directory (certbot's live/ before the first name) is watched.
        let (big, small) = (tmp.path().join("big"), tmp.path().join("small"));
        for n in 0..=WATCH_EMPTY_UP_TO {
            std::fs::create_dir_all(big.join(n.to_string())).unwrap();
        }
        std::fs::create_dir_all(&small).unwrap();
        std::os::unix::fs::symlink(&big, store.join("big")).unwrap();
        std::os::unix::fs::symlink(&small, store.join("small")).unwrap();
        let linked: Vec<_> = discover(&store)
            .unwrap()
            .links
            .into_iter()
            .map(|l| l.path)
            .collect();
        let expected: [Arc<Path>; 2] = [store.join("out1").into(), store.join("small").into()];
        assert_eq!(linked, expected);
        std::fs::remove_file(store.join("big")).unwrap();
        std::fs::remove_file(store.join("small")).unwrap();

        // A look at one directory follows a link as the full scan does, or not at all.
        let found = discover_dir(&store, &store.join("out1"));
        assert_eq!(found.sources[0].id.as_ref(), "out1/a.example.com.pem");
        assert_eq!(found.links, [out1]);
        for link in ["sibling", "loop"] {
            let found = discover_dir(&store, &store.join(link));
            assert!(found.sources.is_empty() && found.links.is_empty(), "{link}");
            assert_eq!(found.strays.len(), 1, "{link}");
        }

        let mut walk = Walk::new(&store);
        walk.budget = 2;
        let real = walk.store.clone();
        walk.scan(&store, &real, 0);
        let found = walk.finish();
        assert_eq!(found.sources.len(), 1, "{:?}", found.sources);
        assert_eq!(found.unlisted, ["sub/"]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        assert!(discover(Path::new("/nonexistent/mailfront-test")).is_err());
    }
}

#[cfg(test)]
mod ocsp_tests {
    use super::*;

    /// Responses go with the entry whose certificate file names them, in each layout,
    /// by the whole file name first; one that names no certificate is reported.
    #[test]
    fn responses_go_with_their_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for f in [
            "a.pem",
            "a.pem.ocsp",
            "b.crt",
            "b.key",
            "b.ocsp",
            "c.pem",
            "c.ocsp",
            "c.pem.ocsp",
            "live/x.com/fullchain.pem",
            "live/x.com/privkey.pem",
            "live/x.com/fullchain.pem.ocsp",
            "nobody.pem.ocsp",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let found = discover(d).unwrap();
        let ocsp = |id: &str| {
            let source = found.sources.iter().find(|s| &*s.id == id).unwrap();
            let path = source.ocsp_path();
            path.map(|p| p.strip_prefix(d).unwrap().display().to_string())
        };
        assert_eq!(ocsp("a.pem").as_deref(), Some("a.pem.ocsp"));
        assert_eq!(ocsp("b.crt").as_deref(), Some("b.ocsp"));
        assert_eq!(
            ocsp("c.pem").as_deref(),
            Some("c.pem.ocsp"),
            "the whole name first"
        );
        assert_eq!(
            ocsp("live/x.com/").as_deref(),
            Some("live/x.com/fullchain.pem.ocsp")
        );
        let strays: Vec<_> = found
            .strays
            .iter()
            .map(|s| s.path.strip_prefix(d).unwrap())
            .collect();
        assert!(strays.contains(&Path::new("nobody.pem.ocsp")), "{strays:?}");
        assert!(strays.contains(&Path::new("c.ocsp")), "{strays:?}");
        // A change to one stem's files finds its response too.
        let one = discover_stem(d, "b");
        assert_eq!(one.sources[0].ocsp_path(), Some(d.join("b.ocsp")));
        assert_eq!(stem_of("a.pem.ocsp"), Some("a"));
        assert_eq!(stem_of("b.ocsp"), Some("b"));
        assert_eq!(stem_of(".b.ocsp"), None);
    }
}
