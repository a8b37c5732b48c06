//! What the store holds between reloads: every entry with the fingerprint of its files and
//! the version that serves. A refresh looks at part of the directory (or all of it),
//! re-reads only files whose metadata changed, re-parses only files whose contents changed
//! ([`look`]), and applies the store's rule: a version that cannot serve is refused, and
//! one that serves badly is loaded only when nothing better serves its names (never make
//! things worse).
//!
//! The catalog is owned by one task (start-up, then the reloader); handshakes only see the
//! [`Index`] built from it, and everything else its [`report`](Catalog::report).

mod changes;
mod contest;
mod look;
mod report;
mod rule;
mod staples;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::check::{self, Codes, Problems, TrustFiles};
use super::discover::{self, Found, Link, Source};
use super::index::{Conflict, Index, Served};
use super::load::{parallel_map, Contents, Context, LoadError, Loaded, Role};
use crate::names::Pattern;
pub use changes::{log_conflicts, Changes, Rejected};
use look::{look, stamp_of, Look, Stamp};
use rule::{worse, Refused};

/// The part of the store a refresh looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything: start-up, the periodic rescan, lost events.
    All,
    /// One subdirectory (relative to the store) and everything below it.
    Dir(PathBuf),
    /// The top-level files `STEM.crt|pem|cer|key`.
    Stem(String),
    /// The files directly in the store, not its subdirectories: a top-level change that
    /// names do not pair, to be paired by content.
    Top,
    /// The server-wide certificate's files.
    Fallback,
    /// `ca_bundle`, `issuers_dir` or `crl_dir`: when they changed, every entry.
    Trust,
}

/// How long a refresh that would remove entries waits before it looks at the store
/// directory again (it runs on a blocking thread, off the handshakes).
const REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// One entry as the catalog tracks it.
#[derive(Debug)]
struct Entry {
    source: Source,
    /// The stamp of the files when last looked at.
    stamp: Stamp,
    /// The hash of their contents when last read (`None`: unreadable).
    digest: Option<u64>,
    /// The version that serves, which a refused version leaves in place. Its `findings`
    /// are kept only when it serves with errors.
    serving: Option<Loaded>,
    /// The codes of everything the checks found in the serving version.
    codes: Codes,
    /// Its problems, dates included, when its names were last ranked: a change (it
    /// expired) ranks them again.
    ranked: Problems,
    /// The last version refused, while this one serves or with nothing serving.
    refused: Option<Box<Refused>>,
}

impl Entry {
    fn new(source: Source) -> Self {
        Self {
            source,
            stamp: Stamp::default(),
            digest: None,
            serving: None,
            codes: Codes::default(),
            ranked: Problems::default(),
            refused: None,
        }
    }
}

/// Where the server-wide certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Its files.
    Files,
    /// Generated now, and written.
    Generated,
    /// Generated in memory only, for a report: its files do not exist yet.
    Absent,
}

/// The entries of a store and the server-wide certificate.
#[derive(Debug)]
pub struct Catalog {
    root: PathBuf,
    ctx: Arc<Context>,
    entries: BTreeMap<Arc<str>, Entry>,
    fallback: Entry,
    origin: Origin,
    /// Which serving entries claim each name (unordered; ranked when indexed).
    claims: HashMap<Pattern, Vec<Arc<Served>>>,
    /// Names whose candidates changed since the last index.
    dirty: HashSet<Pattern>,
    /// Entries serving now.
    serving: usize,
    /// Files found not to be entries by the last full scan (and since), each logged once.
    strays: BTreeMap<PathBuf, String>,
    /// The store directory was unreadable at the last refresh (reported then, once).
    root_gone: Option<String>,
    /// The symlinked directories read, by path: the watcher watches their targets.
    links: BTreeMap<Arc<Path>, Arc<Path>>,
    /// Whether `links` changed since [`Catalog::links_changed`] last said so.
    links_changed: bool,
}

impl Catalog {
    /// The catalog of the store at `root`, loaded, with `fallback` as the server-wide
    /// certificate; also what the load found (the server-wide certificate's findings
    /// first).
    pub fn open(
        root: PathBuf,
        ctx: Arc<Context>,
        fallback: Loaded,
        origin: Origin,
    ) -> (Self, Changes) {
        let findings = (Arc::clone(&fallback.source.id), fallback.findings.clone());
        let mut catalog = Self::new(root, ctx, fallback, origin);
        let mut changes = catalog.refresh(&Scope::All);
        if !findings.1.is_empty() {
            changes.findings.insert(0, findings);
        }
        // Logged once, with the load's findings, not again as serving with errors.
        changes.degraded.clear();
        (catalog, changes)
    }

    fn new(root: PathBuf, ctx: Arc<Context>, fallback: Loaded, origin: Origin) -> Self {
        let source = fallback.source.clone();
        let contents = Contents::read(&source).ok();
        let mut entry = Entry::new(source);
        entry.stamp = stamp_of(&entry.source);
        entry.digest = contents.map(|c| c.digest());
        entry.codes = fallback.findings.iter().map(|f| f.code).collect();
        let mut fallback = fallback;
        if fallback.served.problems.is_empty() {
            fallback.findings = Vec::new();
        }
        let dirty = fallback.names.iter().cloned().collect();
        entry.serving = Some(fallback);
        Self {
            root,
            ctx,
            entries: BTreeMap::new(),
            fallback: entry,
            origin,
            claims: HashMap::new(),
            dirty,
            serving: 0,
            strays: BTreeMap::new(),
            root_gone: None,
            links: BTreeMap::new(),
            links_changed: false,
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
    pub fn trust_files(&self) -> TrustFiles {
        self.ctx.trust.files()
    }

    /// The symlinked directories of the store that were read, as of the last refresh.
    pub fn links(&self) -> Vec<Link> {
        let links = self.links.iter();
        let link = |(path, target): (&Arc<Path>, &Arc<Path>)| Link {
            path: Arc::clone(path),
            target: Arc::clone(target),
        };
        links.map(link).collect()
    }

    /// The links, when they changed since the last call.
    pub fn links_changed(&mut self) -> Option<Vec<Link>> {
        std::mem::take(&mut self.links_changed).then(|| self.links())
    }

    /// Entries serving now.
    pub fn serving(&self) -> usize {
        self.serving
    }

    /// The server-wide certificate's serving version.
    fn fallback(&self) -> &Loaded {
        // The fallback entry is created serving and a refused version leaves it in place.
        let fallback = self.fallback.serving.as_ref();
        fallback.expect("the server-wide certificate always has a serving version")
    }

    /// The index of what serves now, made from `current` (or from nothing) by updating
    /// only the names that changed since the last call; also the conflicts among those
    /// names.
    pub fn next_index(&mut self, current: Option<&Index>) -> (Index, Vec<Conflict>) {
        let fallback = Arc::clone(&self.fallback().served);
        let own: HashSet<Pattern> = self.fallback().names.iter().cloned().collect();
        let now = check::now();
        let mut conflicts = Vec::new();
        let mut updates = Vec::with_capacity(self.dirty.len());
        let dirty = std::mem::take(&mut self.dirty);
        for name in dirty {
            let list = self.claims.get(&name).cloned().unwrap_or_default();
            let list = self.ranked(&name, list, own.contains(&name), now, &mut conflicts);
            updates.push((name, list));
        }
        let empty;
        let current = match current {
            Some(index) => index,
            None => {
                empty = Index::empty(Arc::clone(&fallback));
                &empty
            }
        };
        let index = current.with_updates(fallback, self.serving, updates);
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
            _ if self.root_gone.is_some() => return self.refresh(&Scope::All),
            Scope::Dir(rel) => Ok(discover::discover_dir(&self.root, &self.root.join(rel))),
            Scope::Stem(stem) => match discover::discover_stem(&self.root, stem) {
                found if found.widen => return self.refresh(&Scope::Top),
                found => Ok(found),
            },
            Scope::Top => discover::discover_top(&self.root),
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
                if self.root_gone.is_none() {
                    let reason = format!("cannot read {}: {e}", self.root.display());
                    changes.dir_error = Some(reason.clone());
                    self.root_gone = Some(reason);
                }
                return changes;
            }
        };
        changes.dir_back = self.root_gone.take().is_some();
        self.apply(scope, found, gone, &mut changes);
        if *scope == Scope::All {
            self.judge_dates(&mut changes);
        }
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
        self.note_links(scope, &found);
        self.note_strays(scope, found.strays, changes);
        let looks = {
            let (entries, ctx) = (&self.entries, &*self.ctx);
            parallel_map(&found.sources, |source| {
                look(source, entries.get(&source.id), ctx, Role::Entry)
            })
        };
        for (source, look) in found.sources.into_iter().zip(looks) {
            let id = Arc::clone(&source.id);
            let entry = self
                .entries
                .entry(Arc::clone(&id))
                .or_insert_with(|| Entry::new(source.clone()));
            match look {
                Look::Same => {}
                Look::Restamped(stamp) => entry.stamp = *stamp,
                Look::Changed(changed) => {
                    let (stamp, digest, result) = *changed;
                    entry.source = source;
                    entry.stamp = stamp;
                    entry.digest = digest;
                    self.take(id, result, changes);
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
    }

    /// Replaces the links known in `scope` by those `found` read. A look at top-level
    /// files follows no directory, and links below a directory that could not be listed
    /// are unknown, not gone.
    fn note_links(&mut self, scope: &Scope, found: &Found) {
        let dir = match scope {
            Scope::All => self.root.clone(),
            Scope::Dir(rel) => self.root.join(rel),
            _ => return,
        };
        let mut fresh: BTreeMap<&Path, &Link> = found.links.iter().map(|l| (&*l.path, l)).collect();
        let (root, mut changed) = (&self.root, false);
        self.links.retain(|path, target| {
            let id = path.strip_prefix(root).unwrap_or(path).to_string_lossy();
            if !path.starts_with(&dir) || discover::in_unlisted(&found.unlisted, &format!("{id}/"))
            {
                return true;
            }
            // Kept when read again with the same target; a new target is added below.
            let same = fresh.get(&**path).is_some_and(|l| l.target == *target);
            if same {
                fresh.remove(&**path);
            }
            changed |= !same;
            same
        });
        changed |= !fresh.is_empty();
        let fresh = fresh.into_values();
        self.links
            .extend(fresh.map(|l| (Arc::clone(&l.path), Arc::clone(&l.target))));
        self.links_changed |= changed;
    }

    /// Serves a new version of entry `id`, or records why not.
    fn take(&mut self, id: Arc<str>, result: Result<Loaded, LoadError>, changes: &mut Changes) {
        let now = check::now();
        let fallback = self.fallback();
        let result = result.and_then(|loaded| match worse(&self.claims, fallback, &loaded, now) {
            Some((serving, why)) => Err(LoadError::Worse {
                findings: loaded.findings,
                serving: Arc::clone(&serving.id),
                why,
            }),
            None => Ok(loaded),
        });
        let mut loaded = match result {
            Ok(loaded) => loaded,
            Err(error) => {
                let entry = self.entries.get_mut(&id).expect("inserted by apply");
                entry.refused = Some(Box::new(Refused::from(&error)));
                let kept = match &error {
                    LoadError::Worse { serving, .. } => Some(Arc::clone(serving)),
                    _ => entry.serving.as_ref().map(|_| Arc::clone(&id)),
                };
                changes.rejected.push(Rejected { id, error, kept });
                return;
            }
        };
        let codes = loaded.findings.iter().map(|f| f.code).collect();
        changes.note_findings(&mut loaded);
        let entry = self.entries.get_mut(&id).expect("inserted by apply");
        let list = match entry.serving.is_some() {
            true => &mut changes.replaced,
            false => &mut changes.added,
        };
        list.push(id);
        entry.codes = codes;
        entry.ranked = loaded.served.problems_at(now);
        entry.refused = None;
        let old = entry.serving.replace(loaded);
        let new = entry.serving.clone();
        self.swap_claims(old.as_ref(), new.as_ref());
    }

    /// Loads `ca_bundle`, `issuers_dir` and `crl_dir` again when their files changed, and
    /// then checks every entry again against them: a new CRL can refuse a version (which
    /// keeps serving, as any refused replacement does, with the reason logged), and an
    /// intermediate added to `issuers_dir` can complete a chain.
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
                    entry.stamp = Stamp::default();
                    entry.digest = None;
                }
                changes.trust_reloaded = true;
            }
            Err(e) => changes.trust_error = Some(e.to_string()),
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
        Scope::Top => !id.contains('/'),
    }
}
