//! What the store holds between reloads: every entry with the fingerprint of its files and
//! the version that serves. A refresh looks at part of the directory (or all of it),
//! re-reads only files whose metadata changed, re-parses only files whose contents changed,
//! and never drops a serving version for one that fails to load.
//!
//! The catalog is owned by one task (start-up, then the reloader); handshakes only see the
//! [`Index`] built from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::check::Finding;
use super::discover::{self, Found, Source, Stray};
use super::index::{rank, Conflict, Index, Served};
use super::load::{parallel_map, parse, Contents, Context, LoadError, Loaded, Role};
use crate::names::Pattern;

/// The part of the store a refresh looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything: start-up, the periodic rescan, lost events.
    All,
    /// One subdirectory (relative to the store) and everything below it.
    Dir(PathBuf),
    /// The top-level files `STEM.crt|pem|cer|key`.
    Stem(String),
    /// The server-wide certificate's files.
    Fallback,
    /// `ca_bundle`, `issuers_dir` or `crl_dir`: when they changed, every entry.
    Trust,
}

/// How long a refresh that would remove entries waits before it looks at the store
/// directory again (it runs on a blocking thread, off the handshakes).
const REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// File metadata that changes whenever a file is replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// Follows symlinks: a re-pointed certbot or Kubernetes link changes the stamp.
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

type Stamp = (Option<FileStamp>, Option<FileStamp>);

fn stamp_of(source: &Source) -> Stamp {
    (
        FileStamp::of(&source.cert),
        source.key.as_deref().and_then(FileStamp::of),
    )
}

/// One entry as the catalog tracks it.
#[derive(Debug)]
struct Entry {
    source: Source,
    /// The stamp of the files when last looked at.
    stamp: Stamp,
    /// The hash of their contents when last read (`None`: unreadable).
    digest: Option<u64>,
    /// The version that serves, which a failed load leaves in place.
    serving: Option<Loaded>,
}

/// What a refresh changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Entries serving for the first time.
    pub added: Vec<Arc<str>>,
    /// Entries now serving a new version.
    pub replaced: Vec<Arc<str>>,
    /// Entries gone from disk (their names fall back).
    pub removed: Vec<Arc<str>>,
    /// Entries whose new files failed to load, with the reason; the previous version (if
    /// any) still serves.
    pub rejected: Vec<(Arc<str>, LoadError, bool)>,
    /// What the checks found in the versions that now serve (warnings; errors too for the
    /// server-wide certificate).
    pub findings: Vec<(Arc<str>, Vec<Finding>)>,
    /// Serving entries whose certificate has expired, with its notAfter: they keep
    /// serving (the server-wide certificate would help nobody), and every full rescan
    /// says so.
    pub expired: Vec<(Arc<str>, i64)>,
    /// Files that look like entries and are not, reported for the first time.
    pub strays: Vec<Stray>,
    /// The server-wide certificate was replaced.
    pub fallback_replaced: bool,
    /// The store directory could not be read, for the first time since it last could;
    /// nothing was removed.
    pub dir_error: Option<String>,
    /// The store directory can be read again after `dir_error`, and was rescanned.
    pub dir_back: bool,
    /// The trust files changed and every entry was checked again.
    pub trust_reloaded: bool,
    /// The trust files changed and cannot be used; the previous trust stays.
    pub trust_error: Option<String>,
}

impl Changes {
    /// Moves what the checks found in a version that now serves into the report: it is
    /// logged once, not kept with each of 100,000 entries.
    fn note_findings(&mut self, loaded: &mut Loaded) {
        let findings = std::mem::take(&mut loaded.findings);
        if !findings.is_empty() {
            self.findings
                .push((Arc::clone(&loaded.source.id), findings));
        }
    }

    /// Whether the index must be rebuilt.
    pub fn publishes(&self) -> bool {
        self.fallback_replaced
            || !self.added.is_empty()
            || !self.replaced.is_empty()
            || !self.removed.is_empty()
    }
}

/// The entries of a store and the server-wide certificate.
#[derive(Debug)]
pub struct Catalog {
    root: PathBuf,
    ctx: Arc<Context>,
    entries: BTreeMap<Arc<str>, Entry>,
    fallback: Entry,
    /// Which serving entries claim each name (unordered; ranked when indexed).
    claims: HashMap<Pattern, Vec<Arc<Served>>>,
    /// Names whose candidates changed since the last index.
    dirty: HashSet<Pattern>,
    /// Entries serving now.
    serving: usize,
    /// Files already reported as not being entries.
    reported_strays: HashSet<PathBuf>,
    /// The store directory was unreadable at the last refresh (reported then, once).
    root_gone: bool,
}

/// What was found in one source during a refresh, computed in parallel. A full rescan of
/// an unchanged store makes one per entry, all `Same`: the others are boxed so that this
/// list stays at 16 bytes an entry (it was 30 MiB at 100,000 entries unboxed).
enum Look {
    Same,
    Restamped(Box<Stamp>),
    Changed(Box<(Stamp, Option<u64>, Result<Loaded, LoadError>)>),
}

impl Catalog {
    /// A catalog of the store at `root` serving `fallback` until entries are added.
    pub fn new(root: PathBuf, ctx: Arc<Context>, fallback: Loaded) -> Self {
        let source = fallback.source.clone();
        let contents = Contents::read(&source).ok();
        Self {
            root,
            ctx,
            entries: BTreeMap::new(),
            dirty: fallback.names.iter().cloned().collect(),
            fallback: Entry {
                stamp: stamp_of(&source),
                digest: contents.map(|c| c.digest()),
                source,
                serving: Some(fallback),
            },
            claims: HashMap::new(),
            serving: 0,
            reported_strays: HashSet::new(),
            root_gone: false,
        }
    }

    /// Records that `old` stops and `new` starts serving, marking their names for the next
    /// index.
    fn swap_claims(&mut self, old: Option<&Loaded>, new: Option<&Loaded>) {
        if let Some(old) = old {
            self.serving -= 1;
            for name in &old.names {
                if let Some(list) = self.claims.get_mut(name) {
                    list.retain(|s| !Arc::ptr_eq(s, &old.served));
                    if list.is_empty() {
                        self.claims.remove(name);
                    }
                }
                self.dirty.insert(name.clone());
            }
        }
        if let Some(new) = new {
            self.serving += 1;
            for name in &new.names {
                self.claims
                    .entry(name.clone())
                    .or_default()
                    .push(Arc::clone(&new.served));
                self.dirty.insert(name.clone());
            }
        }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server-wide certificate's files.
    pub fn fallback_files(&self) -> (PathBuf, Option<PathBuf>) {
        (
            self.fallback.source.cert.clone(),
            self.fallback.source.key.clone(),
        )
    }

    /// The files of `ca_bundle`, `issuers_dir` and `crl_dir`, to watch.
    pub fn trust_files(&self) -> super::check::TrustFiles {
        self.ctx.trust.files()
    }

    /// Entries serving now.
    pub fn serving(&self) -> usize {
        self.serving
    }

    /// The index of what serves now, made from `current` by updating only the names that
    /// changed since the last call; also the conflicts among those names.
    pub fn next_index(&mut self, current: &Index) -> (Index, Vec<Conflict>) {
        // The fallback entry is created serving and a failed reload keeps that version.
        let fallback = self.fallback.serving.as_ref();
        let fallback = fallback.expect("the server-wide certificate always has a serving version");
        let mut conflicts = Vec::new();
        let mut updates = Vec::with_capacity(self.dirty.len());
        for name in self.dirty.drain() {
            let mut list = self.claims.get(&name).cloned().unwrap_or_default();
            if list.is_empty() && fallback.names.contains(&name) {
                // The server's own names, unless an entry claims them.
                list.push(Arc::clone(&fallback.served));
            }
            rank(&name, &mut list, &mut conflicts);
            updates.push((name, list));
        }
        let index = current.with_updates(Arc::clone(&fallback.served), self.serving, updates);
        (index, conflicts)
    }

    /// Looks at `scope` again and applies what changed on disk.
    pub fn refresh(&mut self, scope: &Scope) -> Changes {
        let mut changes = Changes::default();
        if *scope == Scope::Trust {
            self.reload_trust(&mut changes);
            if !changes.trust_reloaded {
                return changes;
            }
            // Every entry is checked again against the new trust.
            let mut all = self.refresh(&Scope::All);
            all.trust_reloaded = true;
            return all;
        }
        if *scope == Scope::All {
            self.reload_trust(&mut changes);
        }
        if matches!(scope, Scope::Fallback | Scope::All) {
            self.refresh_fallback(&mut changes);
        }
        // A vanished store directory (unmounted, removed, being replaced) keeps serving
        // what it served: removing certificates is done by removing their files, and
        // `rm -rf` of the store shows as its files' removals before the directory's.
        let found = match scope {
            Scope::Fallback | Scope::Trust => return changes,
            Scope::All => discover::discover(&self.root),
            _ if !self.root.is_dir() => Err(std::io::ErrorKind::NotFound.into()),
            // Back after it was gone: what changed meanwhile is anywhere.
            _ if self.root_gone => return self.refresh(&Scope::All),
            Scope::Dir(rel) => Ok(discover::discover_dir(&self.root, &self.root.join(rel))),
            Scope::Stem(stem) => Ok(discover::discover_stem(&self.root, stem)),
        };
        // Looked at again after the listing, and a moment later when entries would go:
        // `rm -rf` of the store removes its files before the directory, and a listing
        // between the two reads an empty store.
        let found = found.and_then(|found| {
            let gone = self.gone(scope, &found);
            if !gone.is_empty() {
                std::thread::sleep(REMOVAL_GRACE);
            }
            match self.root.is_dir() {
                true => Ok((found, gone)),
                false => Err(std::io::ErrorKind::NotFound.into()),
            }
        });
        let (found, gone) = match found {
            Ok(found) => found,
            Err(e) => {
                if !std::mem::replace(&mut self.root_gone, true) {
                    let reason = format!("cannot read {}: {e}", self.root.display());
                    changes.dir_error = Some(reason);
                }
                return changes;
            }
        };
        changes.dir_back = std::mem::take(&mut self.root_gone);
        self.apply(scope, found, gone, &mut changes);
        changes
    }

    /// The known entries in `scope` that `found` no longer has (those in directories
    /// that could not be listed are not gone, only unknown).
    fn gone(&self, scope: &Scope, found: &Found) -> Vec<Arc<str>> {
        let ids: HashSet<&str> = found.sources.iter().map(|s| &*s.id).collect();
        self.entries
            .keys()
            .filter(|id| in_scope(scope, id) && !ids.contains(&***id))
            .filter(|id| !discover::in_unlisted(&found.unlisted, id))
            .cloned()
            .collect()
    }

    /// Applies what a refresh of `scope` found: `found`'s sources looked at and loaded
    /// where they changed, the `gone` entries removed.
    fn apply(&mut self, scope: &Scope, found: Found, gone: Vec<Arc<str>>, changes: &mut Changes) {
        // A stray is reported once, not at every rescan; a full scan forgets the ones gone.
        let paths: HashSet<PathBuf> = found.strays.iter().map(|s| s.path.clone()).collect();
        changes.strays = found
            .strays
            .into_iter()
            .filter(|s| !self.reported_strays.contains(&s.path))
            .collect();
        if *scope == Scope::All {
            self.reported_strays = paths;
        } else {
            self.reported_strays.extend(paths);
        }
        let looks = {
            let (entries, ctx) = (&self.entries, &*self.ctx);
            parallel_map(&found.sources, |source| {
                look(source, entries.get(&source.id), ctx, Role::Entry)
            })
        };
        for (source, look) in found.sources.into_iter().zip(looks) {
            let entry = self
                .entries
                .entry(Arc::clone(&source.id))
                .or_insert_with(|| Entry {
                    source: source.clone(),
                    stamp: (None, None),
                    digest: None,
                    serving: None,
                });
            match look {
                Look::Same => {}
                Look::Restamped(stamp) => entry.stamp = *stamp,
                Look::Changed(changed) => {
                    let (stamp, digest, result) = *changed;
                    entry.source = source;
                    entry.stamp = stamp;
                    entry.digest = digest;
                    match result {
                        Ok(mut loaded) => {
                            changes.note_findings(&mut loaded);
                            let list = if entry.serving.is_some() {
                                &mut changes.replaced
                            } else {
                                &mut changes.added
                            };
                            list.push(Arc::clone(&entry.source.id));
                            let old = entry.serving.replace(loaded);
                            let new = entry.serving.clone();
                            self.swap_claims(old.as_ref(), new.as_ref());
                        }
                        Err(e) => {
                            let kept = entry.serving.is_some();
                            changes
                                .rejected
                                .push((Arc::clone(&entry.source.id), e, kept));
                        }
                    }
                }
            }
        }
        for id in gone {
            if let Some(entry) = self.entries.remove(&id) {
                if entry.serving.is_some() {
                    self.swap_claims(entry.serving.as_ref(), None);
                    changes.removed.push(id);
                }
            }
        }
        if *scope == Scope::All {
            let now = super::check::now();
            changes.expired = self
                .entries
                .values()
                .filter_map(|e| e.serving.as_ref())
                .filter(|l| l.served.not_after < now)
                .map(|l| (Arc::clone(&l.source.id), l.served.not_after))
                .collect();
        }
    }

    /// Loads `ca_bundle`, `issuers_dir` and `crl_dir` again when their files changed, and
    /// then checks every entry again against them: a new CRL can refuse a version (which
    /// keeps serving, as any refused replacement does, with the reason logged), and an
    /// intermediate added to `issuers_dir` can complete a chain that was refused.
    fn reload_trust(&mut self, changes: &mut Changes) {
        let Some(result) = self.ctx.trust.reloaded() else {
            return;
        };
        match result {
            Ok(trust) => {
                self.ctx = Arc::new(Context {
                    provider: Arc::clone(&self.ctx.provider),
                    trust,
                });
                for entry in self.entries.values_mut().chain([&mut self.fallback]) {
                    entry.stamp = (None, None);
                    entry.digest = None;
                }
                changes.trust_reloaded = true;
            }
            Err(e) => changes.trust_error = Some(e.to_string()),
        }
    }

    fn refresh_fallback(&mut self, changes: &mut Changes) {
        let look = look(
            &self.fallback.source,
            Some(&self.fallback),
            &self.ctx,
            Role::ServerWide,
        );
        match look {
            Look::Same => {}
            Look::Restamped(stamp) => self.fallback.stamp = *stamp,
            Look::Changed(changed) => {
                let (stamp, digest, result) = *changed;
                self.fallback.stamp = stamp;
                self.fallback.digest = digest;
                match result {
                    Ok(mut loaded) => {
                        changes.note_findings(&mut loaded);
                        let names = loaded.names.iter();
                        let old = self.fallback.serving.as_ref().map(|o| o.names.iter());
                        let touched: Vec<Pattern> =
                            names.chain(old.into_iter().flatten()).cloned().collect();
                        self.dirty.extend(touched);
                        self.fallback.serving = Some(loaded);
                        changes.fallback_replaced = true;
                    }
                    Err(e) => {
                        changes
                            .rejected
                            .push((Arc::clone(&self.fallback.source.id), e, true))
                    }
                }
            }
        }
    }
}

/// Whether entry `id` lies in `scope`, so that its absence from a scan means it is gone.
fn in_scope(scope: &Scope, id: &str) -> bool {
    match scope {
        Scope::All => true,
        Scope::Fallback | Scope::Trust => false,
        Scope::Dir(rel) => {
            let rel = rel.to_string_lossy();
            id.strip_prefix(rel.as_ref())
                .is_some_and(|rest| rest.starts_with('/'))
        }
        Scope::Stem(stem) => !id.contains('/') && discover::stem_of(id) == Some(stem.as_str()),
    }
}

/// Compares a source with what the catalog knows of it: metadata first (a `stat`), then
/// contents (a read and a hash), and parses only when the contents changed.
fn look(source: &Source, known: Option<&Entry>, ctx: &Context, role: Role) -> Look {
    let stamp = stamp_of(source);
    let same_source = known.is_some_and(|e| e.source == *source);
    if same_source && known.is_some_and(|e| e.stamp == stamp) {
        return Look::Same;
    }
    let contents = Contents::read(source);
    // Unreadable for a passing reason (out of descriptors or memory): the stamp is left
    // unknown, so that the next refresh (the periodic rescan at the latest) reads it again
    // instead of taking it as seen.
    let stamp = match &contents {
        Err(LoadError::Read { error, .. }) if passing(error) => (None, None),
        _ => stamp,
    };
    let digest = contents.as_ref().ok().map(Contents::digest);
    if same_source && digest.is_some() && known.is_some_and(|e| e.digest == digest) {
        return Look::Restamped(Box::new(stamp));
    }
    let result = contents.and_then(|c| parse(source, &c, ctx, role));
    Look::Changed(Box::new((stamp, digest, result)))
}

/// Whether a read failed for a reason of the moment rather than of the file.
fn passing(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR)
    )
}
