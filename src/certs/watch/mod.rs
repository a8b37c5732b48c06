//! Live reload: notify (inotify) events on the store, debounced into the few places that
//! changed, refreshed off the async threads, and published with one `ArcSwap::store`. A
//! periodic full rescan catches what events miss (NFS, an overflowed inotify queue, a store
//! directory replaced wholesale). The store and its symlinked directories are watched at
//! their real paths, each change mapped back to the store's paths ([`events`]).

mod events;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::catalog::{log_conflicts, Catalog, Scope};
use super::install::{Change, Installer};
use super::report::Report;
use super::Store;
use events::{collect, relink, watch, Watch, Watched, QUEUE};

/// Keeps a [`Store`] in step with its directory: watches it (inotify), refreshes what
/// changed off the async threads, publishes a new index when anything did, and rescans
/// everything every `rescan` interval.
#[derive(Debug)]
pub struct Reloader {
    catalog: Catalog,
    store: Arc<Store>,
    rescan: Duration,
    per_entry: bool,
    /// `certs.watch`: inotify, or only the rescan.
    watching: bool,
    requests: (mpsc::Sender<Request>, mpsc::Receiver<Request>),
}

/// What the reloader is asked between refreshes.
#[derive(Debug)]
pub(in crate::certs) enum Request {
    /// The report.
    Report(Ask),
    /// An install or a removal ([`super::install`]).
    Change(Change),
}

/// A request for the report.
type Ask = oneshot::Sender<Arc<Report>>;

/// Asks the running reloader for the store's report: the one the catalog that serves
/// makes, as `mailfront certs` prints it (never a second scan).
#[derive(Debug, Clone)]
pub struct Reports(mpsc::Sender<Request>);

impl Reports {
    /// The report, once the reloader is between refreshes; `None` when it has stopped.
    pub async fn get(&self) -> Option<Arc<Report>> {
        let (tx, rx) = oneshot::channel();
        self.0.send(Request::Report(tx)).await.ok()?;
        rx.await.ok()
    }
}

impl Reloader {
    pub(super) fn new(catalog: Catalog, store: Arc<Store>, rescan: Duration) -> Self {
        store.set_summary(catalog.summary(false));
        Self {
            catalog,
            store,
            rescan,
            per_entry: false,
            watching: true,
            requests: mpsc::channel(64),
        }
    }

    /// A handle that asks for the report while the reloader runs.
    pub fn reports(&self) -> Reports {
        Reports(self.requests.0.clone())
    }

    /// A handle that installs and removes entries through the running reloader: the
    /// store's one writer.
    pub fn installer(&self) -> Installer {
        Installer(self.requests.0.clone())
    }

    /// Whether inotify watches the store (`certs.watch`); without it, only the rescan
    /// every `rescan_interval` sees changes.
    pub fn watching(mut self, on: bool) -> Self {
        self.watching = on;
        self
    }

    /// Publishes each serving entry's notAfter in the store's summary, for the per-entry
    /// metrics (`per_certificate_metrics`).
    pub fn per_entry_metrics(mut self, on: bool) -> Self {
        self.per_entry = on;
        // From the start, not from the first refresh.
        self.store.set_summary(self.catalog.summary(on));
        self
    }

    /// The store's report, as loaded.
    pub fn report(&self) -> Report {
        self.catalog.report()
    }

    /// Watches the store and applies its changes until `stop` is cancelled. The first
    /// refresh catches up with what changed since the store was loaded.
    pub async fn run(self, stop: CancellationToken) {
        run(self, stop).await;
    }
}

/// Refreshes that changed something, refused a version, could not read the store.
#[derive(Debug, Default, Clone, Copy)]
struct Reloads([u64; 3]);

/// What one reload did: entries added, replaced, removed, and versions rejected.
type Stats = (usize, usize, usize, usize);

impl Reloads {
    /// Counts one `reload` by what it said: changed something, refused a version, could
    /// not read the store.
    fn count(&mut self, stats: Option<Stats>, unreadable: bool) {
        if let Some(stats) = stats {
            self.0[0] += u64::from(stats.0 + stats.1 + stats.2 > 0);
            self.0[1] += u64::from(stats.3 > 0);
        }
        self.0[2] += u64::from(unreadable);
    }

    /// Publishes what the metrics say of the store now, with these counts.
    fn publish(self, catalog: &Catalog, store: &Store, per_entry: bool) {
        let mut summary = catalog.summary(per_entry);
        summary.reloads = self.0;
        summary.last_refresh = crate::certs::now();
        store.set_summary(summary);
    }
}

async fn run(reloader: Reloader, stop: CancellationToken) {
    let Reloader {
        mut catalog,
        store,
        rescan,
        per_entry,
        watching,
        requests: (_, mut requests),
    } = reloader;
    let mut reloads = Reloads::default();
    let watched = Watched::of(&catalog);
    let start = if watching {
        let watched = watched.clone();
        tokio::task::spawn_blocking(move || Watch::start(&watched)).await
    } else {
        info!(rescan = ?rescan, "certs.watch is off: the store is read again every rescan_interval");
        Ok(Watch::none())
    };
    let Ok(Watch {
        mut watcher,
        mut events,
        overflowed,
    }) = start
    else {
        warn!("cannot watch the certificate store: the watcher panicked; live reload stopped");
        return;
    };
    let mut ticker = tokio::time::interval(rescan.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut catch_up = Some((HashSet::from([Scope::All]), false));
    let mut last_report: LastReport = None;
    // When an entry's OCSP response is next to be judged again (it expires, or becomes
    // current): known after each refresh.
    let mut ocsp_at: Option<i64> = None;
    loop {
        // Not kept once stale: at 100,000 entries a report is tens of megabytes.
        if last_report
            .as_ref()
            .is_some_and(|(_, when, _)| when.elapsed() >= REPORT_FRESH)
        {
            last_report = None;
            // Its memory, and that of the answers made from it, back to the system.
            tokio::task::spawn_blocking(super::release_free_memory);
        }
        let stale = last_report
            .as_ref()
            .map(|(_, when, _)| tokio::time::Instant::from_std(*when + REPORT_FRESH));
        let (mut scopes, rewatch) = match catch_up.take() {
            Some(first) => first,
            None => tokio::select! {
                Some(event) = events.recv() => collect(&watched, event, &mut events).await,
                _ = ticker.tick() => (HashSet::from([Scope::All]), false),
                Some(request) = requests.recv() => {
                    let answered = match request {
                        Request::Report(ask) => {
                            answer(catalog, ask, &mut last_report, store.generation()).await
                        }
                        Request::Change(change) => {
                            // What the report said may change.
                            last_report = None;
                            let changed = apply(catalog, change, &store, per_entry, reloads).await;
                            changed.map(|(c, counted)| {
                                reloads = counted;
                                c
                            })
                        }
                    };
                    match answered {
                        Some(c) => catalog = c,
                        None => return,
                    }
                    continue;
                }
                () = async {
                    match stale {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => continue,
                () = until_unix(ocsp_at) => {
                    // As if their certificate files had changed.
                    let mut due = Vec::new();
                    for cert in catalog.ocsp_due(super::check::now()) {
                        watched.scopes(&cert, &mut due);
                    }
                    ocsp_at = catalog.next_ocsp_check();
                    (due.into_iter().map(|(scope, _)| scope).collect(), false)
                }
                () = stop.cancelled() => return,
            },
        };
        if overflowed.swap(false, Ordering::Relaxed) {
            warn!(
                queued = QUEUE,
                "more certificate store events than could be queued; rescanning everything"
            );
            scopes.insert(Scope::All);
        }
        if scopes.is_empty() {
            continue;
        }
        tracing::debug!(?scopes, rewatch, "refreshing the certificate store");
        let started = Instant::now();
        let store2 = Arc::clone(&store);
        let mut w = watcher.take();
        let watched2 = watched.clone();
        let refreshed = tokio::task::spawn_blocking(move || {
            // Re-watching walks the store, so it is done here, off the async threads.
            if let (true, Some(w)) = (rewatch, w.as_mut()) {
                watch(w, &watched2);
            }
            let full = scopes.contains(&Scope::All);
            let (stats, unreadable) = reload(&mut catalog, &scopes, &store2);
            reloads.count(stats, unreadable);
            if stats.is_some() || unreadable || full {
                reloads.publish(&catalog, &store2, per_entry);
            }
            store2.refreshed(started);
            // A symlinked directory found, gone or re-pointed: its target is what changes.
            if let (Some(links), Some(w)) = (catalog.links_changed(), w.as_mut()) {
                relink(w, &watched2, links);
            }
            (catalog, w, stats, reloads)
        })
        .await;
        // What the report said may have changed.
        last_report = None;
        match refreshed {
            Ok((c, w, stats, counted)) => {
                catalog = c;
                ocsp_at = catalog.next_ocsp_check();
                watcher = w;
                reloads = counted;
                if let Some(stats) = stats {
                    info!(
                        added = stats.0,
                        replaced = stats.1,
                        removed = stats.2,
                        rejected = stats.3,
                        entries = catalog.serving(),
                        ms = started.elapsed().as_millis() as u64,
                        "reloaded"
                    );
                }
            }
            Err(e) => {
                // A panic outside an entry's load (each of which is caught) is a bug; the
                // store keeps serving the last index published, but the catalog is lost,
                // so no further reloads happen.
                tracing::error!(reason = %e, "certificate reload failed; live reload stopped");
                return;
            }
        }
    }
}

/// Carries out an install or a removal on a blocking thread: the writer's files are
/// written, the entry refreshed and the index published there, as a refresh does; returns
/// the catalog and the counts (`None` if it panicked, a bug that stops the reloader as a
/// failed refresh does).
async fn apply(
    mut catalog: Catalog,
    change: Change,
    store: &Arc<Store>,
    per_entry: bool,
    mut reloads: Reloads,
) -> Option<(Catalog, Reloads)> {
    let started = Instant::now();
    let store = Arc::clone(store);
    let changed = tokio::task::spawn_blocking(move || {
        let mut refresh = |catalog: &mut Catalog, scope: &Scope| {
            let (stats, unreadable) = reload(catalog, &HashSet::from([scope.clone()]), &store);
            reloads.count(stats, unreadable);
        };
        super::install::apply(&mut catalog, change, &mut refresh);
        reloads.publish(&catalog, &store, per_entry);
        store.refreshed(started);
        (catalog, reloads)
    })
    .await;
    match changed {
        Ok(changed) => Some(changed),
        Err(e) => {
            tracing::error!(reason = %e, "installing a certificate failed; live reload stopped");
            None
        }
    }
}

/// Resolves at the time `at` (seconds since the epoch, so within a second after it), or
/// at once when it is past; never without one.
async fn until_unix(at: Option<i64>) {
    match at {
        Some(at) => {
            let wait = (at - super::check::now()).clamp(0, i64::from(u32::MAX)) as u64;
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
        None => std::future::pending().await,
    }
}

/// Makes the report on a blocking thread (at 100,000 entries it takes a while), or gives
/// the last one again while fresh (so that requests queued meanwhile cost nothing), and
/// sends it to `ask`; returns the catalog (`None` if the report panicked, a bug that
/// stops the reloader as a failed refresh does).
/// A report made within this long, with no refresh since, is given again rather than made
/// anew (at 100,000 entries making one takes most of a second; its days left move slowly).
const REPORT_FRESH: Duration = Duration::from_secs(10);

/// The last report made: the store's generation then, and when.
type LastReport = Option<(u64, Instant, Arc<Report>)>;

async fn answer(
    catalog: Catalog,
    ask: Ask,
    last: &mut LastReport,
    generation: u64,
) -> Option<Catalog> {
    let fresh = last
        .as_ref()
        .filter(|(made_at, when, _)| *made_at == generation && when.elapsed() < REPORT_FRESH)
        .map(|(_, _, report)| Arc::clone(report));
    let (catalog, report) = match fresh {
        Some(report) => (catalog, report),
        None => {
            let made = tokio::task::spawn_blocking(move || {
                let report = Arc::new(catalog.report());
                (catalog, report)
            })
            .await;
            let (catalog, report) = match made {
                Ok(made) => made,
                Err(e) => {
                    tracing::error!(reason = %e, "making the certificate report failed; live reload stopped");
                    return None;
                }
            };
            *last = Some((generation, Instant::now(), Arc::clone(&report)));
            (catalog, report)
        }
    };
    let _ = ask.send(report);
    Some(catalog)
}

/// Refreshes `scopes`, publishes a new index if anything changed, and returns the counts
/// (added, replaced, removed, rejected) for the `reloaded` line, and whether the store
/// directory could not be read.
fn reload(catalog: &mut Catalog, scopes: &HashSet<Scope>, store: &Store) -> (Option<Stats>, bool) {
    let full = scopes.contains(&Scope::All);
    let scopes: Vec<&Scope> = if full {
        vec![&Scope::All]
    } else {
        scopes.iter().collect()
    };
    let (mut added, mut replaced, mut removed, mut rejected) = (0, 0, 0, 0);
    let (mut publish, mut unreadable) = (false, false);
    for scope in scopes {
        let changes = catalog.refresh(scope);
        unreadable |= changes.dir_error.is_some();
        changes.log();
        publish |= changes.publishes();
        added += changes.added.len();
        replaced += changes.replaced.len() + usize::from(changes.fallback_replaced);
        removed += changes.removed.len();
        rejected += changes.rejected.len();
    }
    if publish {
        let (index, conflicts) = catalog.next_index(Some(&store.index()));
        store.publish(index);
        log_conflicts(&conflicts);
    }
    if full {
        super::release_free_memory();
    }
    let stats = (publish || rejected > 0).then_some((added, replaced, removed, rejected));
    (stats, unreadable)
}
