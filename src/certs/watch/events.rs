//! From inotify to the scopes a refresh looks at: which events concern the store (the
//! others are dropped on notify's thread), how a burst is gathered (and how long a burst
//! that removes entries waits), and what part of the store each path can affect.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

use crate::certs::catalog::{Catalog, Scope};
use crate::certs::check::trust::is_or_beside;
use crate::certs::check::TrustFiles;
use crate::certs::discover::{self, Link};

/// After an event, wait this long without another before reloading: a burst (certbot's
/// four symlinks, `tar x` of a batch) becomes one reload.
const QUIET: Duration = Duration::from_millis(25);
/// ...but never delay a reload longer than this behind a steady stream of events.
const MAX_DELAY: Duration = Duration::from_millis(250);
/// A burst that removes entries waits longer, and for as long as removals go on: `rm -rf`
/// of the store shows as its files' removals first and the directory's own last, and
/// applying the first ones before the last arrives would take down names that a vanished
/// store keeps serving. Only events that concern the store get here (see
/// [`Watched::concerns`]): a busy file beside it does not keep a removal waiting.
const QUIET_REMOVING: Duration = Duration::from_millis(250);
/// ...up to this long, the time a `rm -rf` of 100,000 entries takes.
const MAX_DELAY_REMOVING: Duration = Duration::from_secs(5);
/// Events queued between notify's thread and the reloader. When it is full, events are
/// dropped and the next refresh is a full rescan, as after the kernel's own overflow.
pub(super) const QUEUE: usize = 4096;

type Events = mpsc::Receiver<notify::Result<Event>>;

/// The paths whose changes concern the store: the store directory and everything below
/// it (the targets of its symlinked directories too), the server-wide certificate's two
/// files, and the trust files. The other files of the directories watched for them (the
/// store's parent, the server-wide files' directory, `/etc/ssl/certs`) do not.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    root: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    trust: TrustFiles,
    /// The symlinked directories the store's scans read, as watched now. Replaced by the
    /// reloader when a scan finds them changed; read on notify's thread.
    links: Arc<ArcSwap<Links>>,
}

impl Watched {
    pub(super) fn of(catalog: &Catalog) -> Self {
        let (cert, key) = catalog.fallback_files();
        Self {
            root: catalog.root().to_owned(),
            key: key.unwrap_or_else(|| cert.clone()),
            cert,
            trust: catalog.trust_files(),
            links: Arc::new(ArcSwap::from_pointee(Links::new(
                catalog.root(),
                real_root(catalog.root()),
                catalog.links(),
            ))),
        }
    }

    /// The parts of the store a change at `path` can affect; `rewatch` with the one that
    /// is the store directory itself (removed, moved or recreated). A path below a
    /// symlinked directory is looked at under each name it has: through the store's links
    /// and as its real path (inotify reports a directory watched twice under one name).
    pub(super) fn scopes(&self, path: &Path, scopes: &mut Vec<(Scope, bool)>) {
        let links = self.links.load();
        for path in links.aliases(path) {
            if path == self.root {
                scopes.push((Scope::All, true));
            } else if let Ok(rel) = path.strip_prefix(&self.root) {
                scopes.extend(scope_of(&self.root, rel).map(|scope| (scope, false)));
            }
            if is_or_beside(&path, &self.cert)
                || is_or_beside(&path, &self.key)
                || is_ocsp_of(&path, &self.cert)
            {
                scopes.push((Scope::Fallback, false));
            }
            if self.trust.concerns(&path) {
                scopes.push((Scope::Trust, false));
            }
        }
    }

    /// Whether `event` is to be queued: it can mean a new version of something the store
    /// reads, or it is notify's own trouble (an error, the kernel's overflow).
    fn concerns(&self, event: &notify::Result<Event>) -> bool {
        let Ok(event) = event else {
            return true;
        };
        let mut scopes = Vec::new();
        event.need_rescan()
            || (relevant(event)
                && event.paths.iter().any(|p| {
                    self.scopes(p, &mut scopes);
                    !scopes.is_empty()
                }))
    }

    /// Directories to watch besides the store: its parent (for the store directory being
    /// replaced), the server-wide files' and the trust files' directories.
    ///
    /// Those below the store or one of its links are left out: the recursive watches hold
    /// them, and a second, non-recursive watch of one would end notify's watching of the
    /// directories made in it.
    fn dirs(&self) -> Vec<PathBuf> {
        let links = self.links.load();
        let held = |dir: &Path| {
            dir.starts_with(&self.root) || dir.ancestors().any(|d| links.by_target.contains_key(d))
        };
        let mut dirs: Vec<PathBuf> = [&self.root, &self.cert, &self.key]
            .into_iter()
            .filter_map(|p| p.parent())
            .map(Path::to_owned)
            .chain(self.trust.watch_dirs())
            .filter(|dir| !held(dir))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// Where the store's directories really are. inotify watches a directory, not a name, and
/// notify reports a change under the path it was asked to watch; it does not watch a
/// symlink given to it as the top of a recursive watch (only the directories below). So
/// the store and each symlinked directory its scans read are watched at their real paths,
/// and a change reported there is mapped back to the paths the store knows.
#[derive(Debug)]
pub(super) struct Links {
    /// The store directory's real path (itself, unless it is reached through a link).
    real_root: Arc<Path>,
    /// The symlinked directories read, by path (the store's own link not among them).
    links: HashMap<Arc<Path>, Arc<Path>>,
    /// Path by real path, the store directory's included: one each, since a scan follows
    /// one link to a directory and never one to the store or into it.
    by_target: HashMap<Arc<Path>, Arc<Path>>,
}

impl Links {
    /// The links of the store at `root`, whose real path is `real_root`.
    fn new(root: &Path, real_root: Arc<Path>, list: Vec<Link>) -> Self {
        let mut by_target = HashMap::with_capacity(list.len() + 1);
        if *real_root != *root {
            by_target.insert(Arc::clone(&real_root), Arc::from(root));
        }
        let mut links = HashMap::with_capacity(list.len());
        for Link { path, target } in list {
            by_target.insert(Arc::clone(&target), Arc::clone(&path));
            links.insert(path, target);
        }
        Self {
            real_root,
            links,
            by_target,
        }
    }

    /// The names of `path`: itself, its real path when it lies below a link, and its path
    /// through each link whose target holds that real path. A lookup per component of
    /// the path, and nothing at all for a store without links.
    fn aliases<'a>(&self, path: &'a Path) -> Vec<Cow<'a, Path>> {
        let mut names = vec![Cow::Borrowed(path)];
        if self.by_target.is_empty() {
            return names;
        }
        let real = path
            .ancestors()
            .find_map(|dir| Some(self.links.get(dir)?.join(path.strip_prefix(dir).ok()?)))
            .unwrap_or_else(|| path.to_owned());
        // Several links may lead to directories holding it (`live` and `live/DOMAIN`).
        for dir in real.ancestors() {
            if let Some(link) = self.by_target.get(dir) {
                let name = link.join(real.strip_prefix(dir).expect("an ancestor"));
                if !names.iter().any(|n| **n == *name) {
                    names.push(Cow::Owned(name));
                }
            }
        }
        if !names.iter().any(|n| **n == *real) {
            names.push(Cow::Owned(real));
        }
        names
    }
}

/// The real path of the store directory `root`, or `root` when it has none (gone).
fn real_root(root: &Path) -> Arc<Path> {
    std::fs::canonicalize(root).map_or_else(|_| root.into(), Into::into)
}

/// The watches on the store and their events.
///
/// They are set up after the first load, not before: inotify reports every file opened in
/// a watched directory, and the load opens them all (100,000 events that overflow the
/// kernel's queue and cost a tenth of the load's CPU). A full refresh right after the
/// watches are in place catches whatever changed while the store loaded.
pub(super) struct Watch {
    pub(super) watcher: Option<RecommendedWatcher>,
    pub(super) events: Events,
    /// Set on notify's thread when the queue was full and an event was dropped.
    pub(super) overflowed: Arc<AtomicBool>,
}

impl Watch {
    /// No watch at all (`certs.watch = false`): no event ever comes.
    pub(super) fn none() -> Self {
        let (_, events) = mpsc::channel(1);
        Self {
            watcher: None,
            events,
            overflowed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Watches what `watched` names. Failure to watch is logged; the periodic rescan still
    /// works. Blocks while notify walks the store to watch its subdirectories.
    pub(super) fn start(watched: &Watched) -> Self {
        let (tx, events) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let (filter, full) = (watched.clone(), Arc::clone(&overflowed));
        let watcher = RecommendedWatcher::new(
            move |event: notify::Result<Event>| {
                // Dropped here, on notify's thread: every open and read of a store file
                // (our own reloads among them), partial writes, and whatever else happens
                // in the directories watched for a few files.
                if filter.concerns(&event) {
                    queue(&tx, &full, event);
                }
            },
            // notify's recursive watch would otherwise walk every symlinked directory and
            // watch all it finds: a link to `/` in the store would watch the whole system.
            notify::Config::default().with_follow_symlinks(false),
        );
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(reason = %e, "cannot watch the certificate store; relying on the periodic rescan");
                None
            }
        };
        if let Some(w) = watcher.as_mut() {
            watch(w, watched);
        }
        Self {
            watcher,
            events,
            overflowed,
        }
    }
}

/// Queues `event` for the reloader without waiting (this runs on notify's thread); when
/// the queue is full the event is dropped and `overflowed` set, which makes the next
/// refresh a full rescan.
fn queue(
    tx: &mpsc::Sender<notify::Result<Event>>,
    overflowed: &AtomicBool,
    event: notify::Result<Event>,
) {
    match tx.try_send(event) {
        Err(mpsc::error::TrySendError::Full(_)) => overflowed.store(true, Ordering::Relaxed),
        // The receiver is gone only during shutdown.
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// (Re)establishes the watches: the store recursively, its symlinked directories (notify
/// does not follow links, and must not: a link to `/` would watch the whole system; the
/// scans read each link's target once, within bounds, and those are watched), and
/// [`Watched::dirs`]. Each at its real path ([`Links`]), found again here: the store
/// directory may now be another one, or reached through another link.
pub(super) fn watch(watcher: &mut RecommendedWatcher, watched: &Watched) {
    let root = &watched.root;
    // The directories around the store first: a store directory replaced from now on is
    // an event there (and a rewatch), whatever happens to the watch below.
    watch_dirs(watcher, watched);
    let old = watched.links.load_full();
    // Also removes the watches below it.
    let _ = watcher.unwatch(&old.real_root);
    let list = || {
        let links = old.links.iter();
        let link = |(path, target): (&Arc<Path>, &Arc<Path>)| Link {
            path: Arc::clone(path),
            target: Arc::clone(target),
        };
        links.map(link).collect()
    };
    let mut links = Links::new(root, real_root(root), list());
    let mut watching = watcher.watch(&links.real_root, RecursiveMode::Recursive);
    if watching.is_err() && root.is_dir() {
        // Replaced while being watched (renamed away, another renamed in): once more.
        links = Links::new(root, real_root(root), list());
        watching = watcher.watch(&links.real_root, RecursiveMode::Recursive);
    }
    if let Err(e) = watching {
        // Gone: the refresh says so, and the watch on its parent sees it return.
        if root.is_dir() {
            warn!(dir = %root.display(), reason = %e, "cannot watch the certificate store; relying on the periodic rescan");
        }
    }
    for (path, target) in &links.links {
        watch_link(watcher, path, target);
    }
    watched.links.store(Arc::new(links));
}

/// Watches the symlinked directories `links`, which a scan found, in place of those watched
/// until now: the links gone or re-pointed are no longer watched, the new ones are.
pub(super) fn relink(watcher: &mut RecommendedWatcher, watched: &Watched, links: Vec<Link>) {
    let old = watched.links.load_full();
    let new = Links::new(&watched.root, Arc::clone(&old.real_root), links);
    let gone: Vec<&Arc<Path>> = old
        .links
        .iter()
        .filter(|(path, target)| new.links.get(*path) != Some(*target))
        .map(|(_, target)| target)
        .collect();
    for target in &gone {
        // Also removes the watches below it: of links whose targets it holds among them.
        let _ = watcher.unwatch(target);
    }
    // A directory has one watch however many paths lead to it: those of the links left
    // whose targets overlap one no longer watched are watched again.
    let overlaps = |t: &Path| gone.iter().any(|g| t.starts_with(g) || g.starts_with(t));
    for (path, target) in &new.links {
        if old.links.get(path) != Some(target) || overlaps(target) {
            watch_link(watcher, path, target);
        }
    }
    tracing::debug!(
        links = new.links.len(),
        unwatched = gone.len(),
        "watching the store's symlinked directories"
    );
    let gone = !gone.is_empty();
    watched.links.store(Arc::new(new));
    if gone {
        // The same for the server-wide certificate's directory, which a link's target may
        // have held (the store's own never overlaps a link's: a link into the store, or to
        // a directory holding it, is not followed).
        watch_dirs(watcher, watched);
    }
}

/// Watches the symlinked directory `path` of the store at its real path `target`,
/// recursively (the links below it are not followed there: the scans found them, and
/// they are watched too).
fn watch_link(watcher: &mut RecommendedWatcher, path: &Path, target: &Path) {
    if let Err(e) = watcher.watch(target, RecursiveMode::Recursive) {
        // Gone since the scan: the next one says so.
        if path.is_dir() {
            warn!(dir = %path.display(), target = %target.display(), reason = %e,
                "cannot watch a symlinked directory of the certificate store; relying on the periodic rescan");
        }
    }
}

fn watch_dirs(watcher: &mut RecommendedWatcher, watched: &Watched) {
    for dir in watched.dirs() {
        // Already watched directories answer with an error we can ignore.
        let _ = watcher.watch(&dir, RecursiveMode::NonRecursive);
    }
}

/// Gathers a burst of events into the scopes to refresh; `true` when the watches must be
/// set up again (the store directory itself was removed, moved or recreated).
pub(super) async fn collect(
    watched: &Watched,
    first: notify::Result<Event>,
    events: &mut Events,
) -> (HashSet<Scope>, bool) {
    let mut scopes = HashSet::new();
    let (mut rewatch, mut removing) = (false, false);
    let started = tokio::time::Instant::now();
    let mut next = Some(first);
    while let Some(event) = next.take() {
        removing |= removes_an_entry(watched, &event);
        rewatch |= classify(watched, event, &mut scopes);
        let (quiet, max) = match removing {
            true => (QUIET_REMOVING, MAX_DELAY_REMOVING),
            false => (QUIET, MAX_DELAY),
        };
        let deadline = (tokio::time::Instant::now() + quiet).min(started + max);
        next = tokio::time::timeout_at(deadline, events.recv())
            .await
            .ok()
            .flatten();
    }
    (scopes, rewatch)
}

/// Whether `event` removes a file or directory in the store that can be an entry (not a
/// dot-file or another leftover: tools remove their temporary files all the time).
fn removes_an_entry(watched: &Watched, event: &notify::Result<Event>) -> bool {
    let Ok(event) = event else {
        return false;
    };
    let links = watched.links.load();
    let in_store = |p: &Path| {
        p.strip_prefix(&watched.root).is_ok_and(|rel| {
            rel.components()
                .all(|c| !discover::is_ignored(&c.as_os_str().to_string_lossy()))
        })
    };
    matches!(event.kind, EventKind::Remove(_))
        && event
            .paths
            .iter()
            .any(|p| links.aliases(p).iter().any(|p| in_store(p)))
}

fn classify(watched: &Watched, event: notify::Result<Event>, scopes: &mut HashSet<Scope>) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            warn!(reason = %e, "certificate store watch error; rescanning everything");
            scopes.insert(Scope::All);
            return true;
        }
    };
    if event.need_rescan() {
        scopes.insert(Scope::All);
        return false;
    }
    tracing::trace!(kind = ?event.kind, paths = ?event.paths, "certificate store event");
    let mut found = Vec::new();
    for path in &event.paths {
        watched.scopes(path, &mut found);
    }
    let mut rewatch = false;
    for (scope, again) in found {
        scopes.insert(scope);
        rewatch |= again;
    }
    rewatch
}

/// Whether an event can mean a new version: writes count when the writer closes the file
/// (a file being written is half-written), and a newly created empty file is a writer that
/// has not written yet.
fn relevant(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Data(_)) => false,
        EventKind::Create(CreateKind::File) => event
            .paths
            .iter()
            .any(|p| std::fs::symlink_metadata(p).map_or(true, |m| m.len() > 0 || m.is_symlink())),
        _ => true,
    }
}

/// Whether `path` is `cert`'s OCSP response file (`CERTFILE.ocsp`).
fn is_ocsp_of(path: &Path, cert: &Path) -> bool {
    discover::OcspName::Whole
        .path(cert)
        .is_some_and(|p| p == path)
}

/// The part of the store a change at `rel` (relative to the store) can affect.
fn scope_of(root: &Path, rel: &Path) -> Option<Scope> {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    // Dot-names are temporary files and Kubernetes' `..data` machinery: a change there
    // concerns the directory holding them, and a top-level one shows again under its real
    // name when renamed into place.
    let cut = parts
        .iter()
        .position(|p| p.starts_with('.'))
        .unwrap_or(parts.len());
    match cut {
        0 => None,
        1 if parts.len() == 1 => {
            let name = &parts[0];
            let is_dir = std::fs::metadata(root.join(name)).is_ok_and(|m| m.is_dir());
            match discover::stem_of(name) {
                Some(stem) if !is_dir => Some(Scope::Stem(stem.to_owned())),
                // A directory (new, gone or renamed), or a name that is never an entry
                // itself but may have been one's directory.
                _ => Some(Scope::Dir(PathBuf::from(name))),
            }
        }
        _ => {
            let end = cut.min(parts.len() - 1).max(1);
            Some(Scope::Dir(parts[..end].iter().collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events that concern neither the store, the server-wide files nor the trust files
    /// are not queued; nor are reads; a full queue drops the event and says so.
    #[test]
    fn only_events_that_concern_the_store_are_queued() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        std::fs::create_dir_all(&root).unwrap();
        let watched = Watched {
            root: root.clone(),
            cert: tmp.path().join("default/fullchain.pem"),
            key: tmp.path().join("default/privkey.pem"),
            trust: TrustFiles {
                bundle: Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
                dirs: vec![tmp.path().join("issuers")],
            },
            links: Arc::new(ArcSwap::from_pointee(Links::new(
                &root,
                root.clone().into(),
                vec![Link {
                    path: root.join("live").into(),
                    target: tmp.path().join("le/live").into(),
                }],
            ))),
        };
        let written = |path: PathBuf| {
            Ok(Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write))).add_path(path))
        };
        let removed = |path: PathBuf| {
            Ok(Event::new(EventKind::Remove(notify::event::RemoveKind::File)).add_path(path))
        };
        let queued = [
            written(root.join("mail.pem")),
            removed(root.join("live/a.com/privkey.pem")),
            removed(root.clone()),
            written(tmp.path().join("default/privkey.pem")),
            written(tmp.path().join("default/..data")),
            written(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
            written(tmp.path().join("issuers/r3.pem")),
            written(tmp.path().join("le/live/b.com/fullchain.pem")),
        ];
        for event in &queued {
            assert!(watched.concerns(event), "{event:?}");
        }
        let read = Ok(
            Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
                .add_path(root.join("mail.pem")),
        );
        let dropped = [
            written(tmp.path().join("mailfront.log")),
            written(tmp.path().join("default/notes.txt")),
            written(PathBuf::from("/etc/ssl/certs/ssl-cert-snakeoil.pem")),
            written(root.join(".mail.pem.tmp")),
            written(tmp.path().join("le/archive/b.com/fullchain2.pem")),
            read,
        ];
        for event in &dropped {
            assert!(!watched.concerns(event), "{event:?}");
        }

        let (tx, mut rx) = mpsc::channel(2);
        let overflowed = AtomicBool::new(false);
        for event in queued.into_iter().take(3) {
            queue(&tx, &overflowed, event);
        }
        assert!(overflowed.load(Ordering::Relaxed), "the third did not fit");
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
    }

    /// A change reported at a real path is one below each link leading there, and one
    /// below a link is also one at its real path (the server-wide certificate's, here).
    #[test]
    fn changes_below_links_are_known_by_every_name() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for dir in ["srv/certs/live", "le/live/a.com", "le/live/server.com"] {
            std::fs::create_dir_all(t.join(dir)).unwrap();
        }
        let root = t.join("certs");
        let link = |path: &str, target: &str| Link {
            path: root.join(path).into(),
            target: t.join(target).into(),
        };
        let links = Links::new(
            &root,
            t.join("srv/certs").into(),
            vec![link("live", "le/live"), link("a.com", "le/live/a.com")],
        );
        let mut names: Vec<PathBuf> = links
            .aliases(&t.join("le/live/a.com/privkey.pem"))
            .into_iter()
            .map(Cow::into_owned)
            .collect();
        names.sort();
        let expected = [
            root.join("a.com/privkey.pem"),
            root.join("live/a.com/privkey.pem"),
            t.join("le/live/a.com/privkey.pem"),
        ];
        assert_eq!(names, expected);
        let real = t.join("srv/certs/x.pem");
        let names = links.aliases(&real);
        assert_eq!(names[1], root.join("x.pem"), "the store's real path");
        assert_eq!(links.aliases(&t.join("etc/other")).len(), 1);

        let watched = Watched {
            root: root.clone(),
            cert: t.join("le/live/server.com/fullchain.pem"),
            key: t.join("le/live/server.com/privkey.pem"),
            trust: TrustFiles::default(),
            links: Arc::new(ArcSwap::from_pointee(links)),
        };
        let mut scopes = Vec::new();
        watched.scopes(&root.join("live/server.com/privkey.pem"), &mut scopes);
        scopes.sort_by_key(|s| format!("{s:?}"));
        let expected = [
            (Scope::Dir("live/server.com".into()), false),
            (Scope::Fallback, false),
        ];
        assert_eq!(scopes, expected);
        scopes.clear();
        watched.scopes(&t.join("srv/certs"), &mut scopes);
        assert_eq!(scopes, [(Scope::All, true)], "the store's real directory");
    }

    #[test]
    fn scopes_of_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("live/a.com")).unwrap();
        let s = |rel: &str| scope_of(root, Path::new(rel));
        assert_eq!(s("a.com.pem"), Some(Scope::Stem("a.com".into())));
        assert_eq!(s("a.com.key"), Some(Scope::Stem("a.com".into())));
        assert_eq!(s(".a.com.pem.tmp"), None);
        assert_eq!(s("live"), Some(Scope::Dir("live".into())));
        assert_eq!(s("gone-dir"), Some(Scope::Dir("gone-dir".into())));
        assert_eq!(
            s("live/a.com/fullchain.pem"),
            Some(Scope::Dir("live/a.com".into()))
        );
        assert_eq!(s("k8s/..data"), Some(Scope::Dir("k8s".into())));
        assert_eq!(
            s("k8s/..2026_01_01/tls.crt"),
            Some(Scope::Dir("k8s".into()))
        );
        assert_eq!(s("a.com.pem~"), Some(Scope::Dir("a.com.pem~".into())));
        // OCSP responses belong to their certificate's entry.
        assert_eq!(s("a.com.pem.ocsp"), Some(Scope::Stem("a.com".into())));
        assert_eq!(s("a.com.ocsp"), Some(Scope::Stem("a.com".into())));
        assert_eq!(
            s("live/a.com/fullchain.pem.ocsp"),
            Some(Scope::Dir("live/a.com".into()))
        );
        let cert = Path::new("/etc/mf/default/fullchain.pem");
        assert!(is_ocsp_of(
            Path::new("/etc/mf/default/fullchain.pem.ocsp"),
            cert
        ));
        assert!(!is_ocsp_of(
            Path::new("/etc/mf/default/other.pem.ocsp"),
            cert
        ));
        assert!(!is_ocsp_of(Path::new("/etc/mf/fullchain.pem.ocsp"), cert));
    }
}
