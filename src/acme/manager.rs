//! The task that decides what to order and when: names asked for at handshakes, names
//! listed by the operator, renewals; within the limits of `[acme]`.
//!
//! Everything here runs on one task and owns its state; orders and `ask` requests run as
//! tasks of their own and report back. The handshake path only ever `try_send`s a name
//! into a bounded queue (a full queue drops it: the next handshake asks again).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use instant_acme::{CertificateIdentifier, RenewalInfo};

use super::ari;
use super::ask::{Ask, Verdict};
use super::order::{self, Answers, Issued, OrderError};
use super::{renewal_due, Acme, OrderStats};
use crate::certs::check::Code;
use crate::certs::{InstallError, Installer, Match, Parts, Store};
use crate::config::AcmeSettings;
use crate::names::Pattern;

/// Names waiting for a decision (handshakes' requests); beyond, requests are dropped.
pub const DEMAND_QUEUE: usize = 1024;
/// `ask` requests in flight at once, and started per second; names beyond wait for their
/// next handshake (a flood of random names costs the `ask` service at most this much).
const ASK_IN_FLIGHT: usize = 8;
const ASK_PER_SECOND: u32 = 20;
/// How often the names file is looked at and due renewals are started.
const TICK: Duration = Duration::from_secs(1);
/// How often listed names without a certificate are looked for besides when the names
/// file changes (a safety net: an `acme/NAME/` removed by hand is ordered again).
const SWEEP: Duration = Duration::from_secs(300);
/// When a name another entry serves better (the operator's own certificate) is looked at
/// again for renewal.
const OUTRANKED_RECHECK: Duration = Duration::from_secs(86_400);
/// Wait before asking again for a name whose lock another instance holds.
const BUSY_RETRY: Duration = Duration::from_secs(15);

/// An order's name, why it was made, and how it ended (`None`: left to another instance).
type Done = (Box<str>, Why, Result<Option<Issued>, OrderError>);
/// A name and the CA's renewal information for its certificate.
type Window = (
    Box<str>,
    Result<(RenewalInfo, Duration), instant_acme::Error>,
);

/// What the manager knows of one name.
#[derive(Debug, Default)]
struct Name {
    /// When its certificate is due for renewal (Unix time), once one was issued here or
    /// found in `acme/`.
    due: Option<i64>,
    /// Not before this (after a failure, or while another instance holds its lock).
    not_before: Option<Instant>,
    /// Failed orders within the last hour.
    failures: VecDeque<Instant>,
    /// Consecutive failures, for the backoff.
    streak: u32,
    /// Queued or running.
    busy: bool,
    /// Ordered again once `not_before` has passed (after a failure, or a lock held
    /// elsewhere), for this reason.
    retry: Option<Why>,
    /// Its certificate's ARI identifier.
    id: Option<CertificateIdentifier<'static>>,
    /// When to ask the CA for its renewal window next (`None` while asking).
    ari_next: Option<Instant>,
    /// Due, but no longer allowed: not renewed (logged once).
    not_renewed: bool,
}

/// Why a name is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A handshake asked for it.
    Demand,
    /// Listed (names_file or a route) and not covered by any certificate.
    Listed,
    /// Its certificate is due.
    Renewal,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Self::Demand => "on-demand",
            Self::Listed => "listed",
            Self::Renewal => "renewal",
        }
    }
}

pub struct Manager {
    settings: AcmeSettings,
    acme_dir: PathBuf,
    store: Arc<Store>,
    /// The store's writer, which installs what the CA issues.
    installer: Installer,
    handle: Arc<Acme>,
    answers: Answers,
    routes: Vec<String>,
    demand: mpsc::Receiver<Box<str>>,
    account: order::SharedAccount,
    // State.
    names: HashMap<Box<str>, Name>,
    listed: HashSet<Box<str>>,
    /// The names file as last looked at (`None`: not yet).
    listed_stamp: Option<Stamp>,
    queue: VecDeque<(Box<str>, Why)>,
    started: VecDeque<Instant>,
    ask: Option<Ask>,
    asking: JoinSet<(Box<str>, Verdict)>,
    /// The names `asking` is asking for.
    asked: HashSet<Box<str>>,
    /// Asks started in the current second, and when it began.
    ask_budget: (Instant, u32),
    orders: JoinSet<Done>,
    hour_capped_logged: Option<Instant>,
    /// Whether the CA offers renewal information (unknown until it first answers).
    ari: Option<bool>,
    /// Without an account yet, renewal information is asked for one certificate at a time,
    /// not before this (the CA may be unreachable: one try every few minutes, not one a
    /// second per certificate).
    ari_account_retry: Option<Instant>,
    windows: JoinSet<Window>,
    /// When the next retry, renewal or renewal-information request falls due.
    next_scan: Instant,
    /// Something changed that may bring that time forward.
    rescan: bool,
}

impl Manager {
    pub fn new(
        settings: AcmeSettings,
        store_dir: &Path,
        (store, installer): (Arc<Store>, Installer),
        handle: Arc<Acme>,
        answers: Answers,
        routes: Vec<String>,
        demand: mpsc::Receiver<Box<str>>,
    ) -> Self {
        let ask = settings.ask.as_ref().map(|url| Ask::new(url, &settings));
        Self {
            acme_dir: store_dir.join("acme"),
            store,
            installer,
            handle,
            answers,
            routes,
            demand,
            account: Arc::default(),
            names: HashMap::new(),
            listed: HashSet::new(),
            listed_stamp: None,
            queue: VecDeque::new(),
            started: VecDeque::new(),
            ask,
            asking: JoinSet::new(),
            asked: HashSet::new(),
            ask_budget: (Instant::now(), 0),
            orders: JoinSet::new(),
            hour_capped_logged: None,
            ari: None,
            ari_account_retry: None,
            windows: JoinSet::new(),
            next_scan: Instant::now(),
            rescan: true,
            settings,
        }
    }

    /// Runs until `stop`; orders under way are dropped then (their lock files are released
    /// and a later start orders again).
    pub async fn run(mut self, stop: CancellationToken) {
        let found = {
            let dir = self.acme_dir.clone();
            tokio::task::spawn_blocking(move || issued_in(&dir))
                .await
                .unwrap_or_default()
        };
        info!(issued = found.len(), dir = %self.acme_dir.display(), "ACME: certificates found; renewals scheduled");
        let challenges = self.settings.state_dir.join("challenges");
        tokio::task::spawn_blocking(move || remove_stale_answers(&challenges));
        let count = found.len();
        for (name, issued) in found {
            let state = self.names.entry(name.clone()).or_default();
            state.due = Some(renewal_due(&name, issued.not_before, issued.not_after));
            state.id = ari::identifier(&issued.leaf);
            state.ari_next = state
                .id
                .as_ref()
                .map(|_| Instant::now() + ari::first_poll(&name, count));
        }
        self.reload_listed().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        self.sweep();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(name) = self.demand.recv() => self.demanded(name),
                Some(Ok((name, verdict))) = self.asking.join_next(), if !self.asking.is_empty() => {
                    self.asked.remove(&name);
                    if verdict == Verdict::Allowed {
                        self.enqueue(name, Why::Demand);
                    }
                }
                Some(Ok((name, window))) = self.windows.join_next(), if !self.windows.is_empty() => {
                    self.window(name, window);
                }
                Some(done) = self.orders.join_next(), if !self.orders.is_empty() => {
                    if let Ok((name, why, result)) = done {
                        self.finished(name, why, result);
                    }
                }
                _ = tick.tick() => {
                    let relisted = self.reload_listed().await;
                    if relisted {
                        // A name listed again is renewed again.
                        self.names.values_mut().for_each(|n| n.not_renewed = false);
                        self.rescan = true;
                    }
                    if relisted || last_sweep.elapsed() >= SWEEP {
                        last_sweep = Instant::now();
                        self.sweep();
                    }
                    self.scan();
                }
            }
            self.start_orders();
        }
    }

    /// A handshake for `name` got the server-wide certificate.
    fn demanded(&mut self, name: Box<str>) {
        let name = match Pattern::parse(&name) {
            Ok(Pattern::Exact(name)) => name,
            _ => return,
        };
        if self.names.get(&name).is_some_and(|n| n.busy) || self.covered(&name) {
            return;
        }
        if self.listed.contains(&name) {
            return self.enqueue(name, Why::Demand);
        }
        let Some(ask) = &self.ask else {
            return;
        };
        match ask.cached(&name) {
            Some(Verdict::Allowed) => self.enqueue(name, Why::Demand),
            Some(_) => {}
            None if self.asking.len() < ASK_IN_FLIGHT && !self.asked.contains(&name) => {
                let now = Instant::now();
                if now.duration_since(self.ask_budget.0) >= Duration::from_secs(1) {
                    self.ask_budget = (now, 0);
                }
                if self.ask_budget.1 >= ASK_PER_SECOND {
                    return;
                }
                self.ask_budget.1 += 1;
                self.asked.insert(name.clone());
                let ask = ask.clone();
                self.asking.spawn(async move {
                    let verdict = ask.ask(&name).await;
                    (name, verdict)
                });
            }
            None => {}
        }
    }

    /// Whether `name` may be ordered now: listed, or allowed by `ask` (as last asked).
    fn allowed(&self, name: &str) -> bool {
        self.listed.contains(name)
            || self
                .ask
                .as_ref()
                .is_some_and(|a| a.cached(name) == Some(Verdict::Allowed))
    }

    /// Whether entries other than ACME's own `acme/NAME/` serve `name` to every kind of
    /// client, at their best and for a while yet: a renewal would not be installed (it
    /// would not outrank them). Once they near their end, ACME renews and takes over.
    fn served_by_other(&self, name: &str) -> bool {
        let own = format!("acme/{name}/");
        let days = crate::certs::check::EXPIRES_SOON_DAYS;
        self.store.served_well_by_others(name, &own, days)
    }

    /// Whether a certificate in the store covers `name`.
    fn covered(&self, name: &str) -> bool {
        self.store.index().select(Some(name), &[]).1 != Match::Fallback
    }

    fn enqueue(&mut self, name: Box<str>, why: Why) {
        let state = self.names.entry(name.clone()).or_default();
        if state.busy || state.not_before.is_some_and(|t| t > Instant::now()) {
            return;
        }
        state.busy = true;
        if why == Why::Listed {
            self.queue.push_back((name, why));
        } else {
            self.queue.push_front((name, why));
        }
    }

    /// Reads the names file again if it changed (off the runtime); whether it did.
    async fn reload_listed(&mut self) -> bool {
        let Some(path) = self.settings.names_file.clone() else {
            if self.listed.is_empty() && !self.routes.is_empty() {
                self.listed = self.routes.iter().map(|r| r.as_str().into()).collect();
                return true;
            }
            return false;
        };
        let (stamp, routes) = (self.listed_stamp, self.routes.clone());
        let read = tokio::task::spawn_blocking(move || read_names(&path, &routes, stamp)).await;
        match read {
            Ok(Reread::Same) | Err(_) => false,
            Ok(Reread::Gone(stamp)) => {
                self.listed_stamp = Some(stamp);
                false
            }
            Ok(Reread::Read(stamp, listed)) => {
                self.listed_stamp = Some(stamp);
                self.listed = listed;
                true
            }
        }
    }

    /// Queues every listed name no certificate covers.
    fn sweep(&mut self) {
        let missing: Vec<Box<str>> = self
            .listed
            .iter()
            .filter(|n| !self.covered(n))
            .cloned()
            .collect();
        for name in missing {
            self.enqueue(name, Why::Listed);
        }
    }

    /// Starts what is due: retries whose wait is over, renewals, renewal-information
    /// requests; and notes when the next of them falls due, so that the ticks between
    /// cost nothing (one pass over every name, at most once a second).
    fn scan(&mut self) {
        let (instant, now) = (Instant::now(), crate::certs::now());
        if !self.rescan && instant < self.next_scan {
            return;
        }
        self.rescan = false;
        let mut next = instant + Duration::from_secs(60);
        let ari_room = self.ari_room(instant);
        // Without an account, no request starts before its next try.
        let ari_from = self
            .ari_account_retry
            .filter(|_| self.account.get().is_none());
        let (mut retries, mut due, mut windows) = (Vec::new(), Vec::new(), Vec::new());
        for (name, n) in &self.names {
            if let Some(t) = n.ari_next {
                if t > instant {
                    next = next.min(ari_from.map_or(t, |f| t.max(f)));
                } else if windows.len() < ari_room {
                    if let Some(id) = &n.id {
                        windows.push((name.clone(), id.clone()));
                    }
                } else if let Some(t) = self.ari_account_retry.filter(|t| *t > instant) {
                    // No room: a request ending rescans; without an account, its next try.
                    next = next.min(t);
                }
            }
            if n.busy {
                continue;
            }
            if let Some(why) = n.retry {
                match n.not_before {
                    Some(t) if t > instant => next = next.min(t),
                    _ => retries.push((name.clone(), why)),
                }
            }
            match n.due {
                Some(d) if d > now => {
                    next = next.min(instant + Duration::from_secs((d - now) as u64));
                }
                Some(_) if !n.not_renewed => due.push(name.clone()),
                _ => {}
            }
        }
        self.next_scan = next;
        for (name, why) in retries {
            if let Some(n) = self.names.get_mut(&name) {
                n.retry = None;
            }
            if why != Why::Renewal && !self.covered(&name) && self.allowed(&name) {
                self.enqueue(name, why);
            }
        }
        for name in due {
            // Renewed while allowed: listed, or `ask` does not say no (an `ask` that
            // cannot be reached never stops a renewal).
            let allowed = self.listed.contains(&name)
                || self
                    .ask
                    .as_ref()
                    .is_some_and(|a| a.cached(&name) != Some(Verdict::Refused));
            if !allowed {
                if let Some(n) = self.names.get_mut(&name) {
                    n.not_renewed = true;
                }
                info!(name = %name, "ACME: the name is no longer allowed; its certificate is not renewed");
                continue;
            }
            self.enqueue(name, Why::Renewal);
        }
        self.ask_windows(windows);
    }

    /// How many renewal-information requests may start now.
    fn ari_room(&mut self, now: Instant) -> usize {
        if self.ari == Some(false) {
            return 0;
        }
        let room = ari::IN_FLIGHT.saturating_sub(self.windows.len());
        if self.account.get().is_some() {
            return room;
        }
        // No account yet: one request at a time, every few minutes (the CA may be down).
        if !self.windows.is_empty() || self.ari_account_retry.is_some_and(|t| t > now) {
            return 0;
        }
        1
    }

    /// Asks the CA for these certificates' renewal windows.
    fn ask_windows(&mut self, asks: Vec<(Box<str>, CertificateIdentifier<'static>)>) {
        if !asks.is_empty() && self.account.get().is_none() {
            self.ari_account_retry = Some(Instant::now() + ari::ACCOUNT_RETRY);
        }
        for (name, id) in asks {
            if let Some(n) = self.names.get_mut(&name) {
                n.ari_next = None;
            }
            let (account, settings) = (Arc::clone(&self.account), self.settings.clone());
            self.windows.spawn(async move {
                let window = match account.get_or_try_init(|| order::account(&settings)).await {
                    Ok(account) => account.renewal_info(&id).await,
                    Err(e) => Err(instant_acme::Error::Other(e.to_string().into())),
                };
                (name, window)
            });
        }
    }

    /// The CA's renewal window for `name`'s certificate.
    fn window(
        &mut self,
        name: Box<str>,
        window: Result<(RenewalInfo, Duration), instant_acme::Error>,
    ) {
        self.rescan = true;
        let now = Instant::now();
        match window {
            Ok((info, retry_after)) => {
                if self.ari != Some(true) {
                    info!("ACME: the CA offers renewal information (ARI); renewals follow its windows");
                }
                self.ari = Some(true);
                let Some(state) = self.names.get_mut(&name) else {
                    return;
                };
                let window = &info.suggested_window;
                let (start, end) = (window.start.unix_timestamp(), window.end.unix_timestamp());
                // A time picked in an earlier window is kept while the window holds it.
                if state.due.is_none_or(|d| d < start || d > end) {
                    let due = ari::pick(start, end, ari::random());
                    if due <= crate::certs::now() {
                        info!(name = %name, window_start = start, "ACME: the CA asks for this certificate to be renewed now");
                    }
                    state.due = Some(due);
                }
                state.ari_next = Some(now + ari::next_poll(retry_after));
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                if self.ari.is_none() {
                    info!("ACME: the CA offers no renewal information (ARI); each certificate is renewed two thirds into its lifetime");
                }
                self.ari = Some(false);
            }
            Err(e) => {
                let reason = super::causes(&e);
                debug!(name = %name, reason, "ACME: renewal information not available; asked again in an hour");
                if let Some(state) = self.names.get_mut(&name) {
                    state.ari_next = Some(now + ari::AFTER_ERROR);
                }
            }
        }
    }

    fn start_orders(&mut self) {
        let hour = Duration::from_secs(3600);
        while self.orders.len() < self.settings.max_concurrent_orders {
            while self.started.front().is_some_and(|t| t.elapsed() >= hour) {
                self.started.pop_front();
            }
            if self.started.len() >= self.settings.orders_per_hour as usize {
                if !self.queue.is_empty()
                    && self
                        .hour_capped_logged
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(600))
                {
                    self.hour_capped_logged = Some(Instant::now());
                    warn!(
                        orders_per_hour = self.settings.orders_per_hour,
                        waiting = self.queue.len(),
                        "ACME: orders_per_hour reached; the names waiting are ordered as the hour rolls on"
                    );
                }
                return;
            }
            let Some((name, why)) = self.queue.pop_front() else {
                return;
            };
            if why != Why::Renewal && self.covered(&name) {
                if let Some(n) = self.names.get_mut(&name) {
                    n.busy = false;
                }
                continue;
            }
            if why == Why::Renewal && self.served_by_other(&name) {
                // A renewal would lose to what serves the name (the store would not
                // install it): no order is spent on it; looked at again later.
                if let Some(n) = self.names.get_mut(&name) {
                    n.busy = false;
                    n.due = Some(crate::certs::now() + OUTRANKED_RECHECK.as_secs() as i64);
                }
                info!(name = %name, "ACME: not renewed: another entry serves the name; looked at again in a day");
                continue;
            }
            self.started.push_back(Instant::now());
            let replaces = match (why, self.ari) {
                (Why::Renewal, Some(true)) => self.names.get(&name).and_then(|n| n.id.clone()),
                _ => None,
            };
            let job = Job {
                replaces,
                account: Arc::clone(&self.account),
                settings: self.settings.clone(),
                answers: self.answers,
                handle: Arc::clone(&self.handle),
                acme_dir: self.acme_dir.clone(),
                installer: self.installer.clone(),
            };
            self.orders.spawn(async move {
                let result = job.run(&name, why).await;
                (name, why, result)
            });
        }
    }

    fn finished(&mut self, name: Box<str>, why: Why, result: Result<Option<Issued>, OrderError>) {
        self.rescan = true;
        let stats: &OrderStats = &self.handle.stats;
        let state = self.names.entry(name.clone()).or_default();
        state.busy = false;
        match result {
            Ok(Some(issued)) => {
                stats.count("valid");
                state.streak = 0;
                state.not_before = None;
                let due = renewal_due(&name, issued.not_before, issued.not_after);
                state.due = Some(due);
                state.id = ari::identifier(&issued.leaf);
                state.ari_next = state.id.as_ref().map(|_| Instant::now());
                info!(
                    name = %name, why = why.as_str(), not_after = issued.not_after, renews = due,
                    "ACME: certificate issued and written to the store"
                );
            }
            Ok(None) => {
                // Another instance holds the name's lock, or issued it meanwhile: look
                // again soon (its certificate reaches the store through the watcher).
                state.not_before = Some(Instant::now() + BUSY_RETRY);
                state.retry = Some(why);
                if let Some(issued) = read_issued(&self.acme_dir, &name) {
                    state.due = Some(renewal_due(&name, issued.not_before, issued.not_after));
                    state.id = ari::identifier(&issued.leaf);
                    state.ari_next = state.id.as_ref().map(|_| Instant::now());
                }
            }
            Err(OrderError::Outranked(why)) => {
                // The CA issued it, and another entry serves the name better (the
                // operator's own certificate): nothing to retry; looked at again later.
                stats.count("valid");
                state.streak = 0;
                state.not_before = None;
                state.due = Some(crate::certs::now() + OUTRANKED_RECHECK.as_secs() as i64);
                info!(
                    name = %name, reason = %why,
                    "ACME: certificate issued but not installed: another entry outranks it; renewal looked at again in a day"
                );
            }
            Err(e) => {
                stats.count("failed");
                let now = Instant::now();
                state.streak = state.streak.saturating_add(1);
                while state
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
                {
                    state.failures.pop_front();
                }
                state.failures.push_back(now);
                let shift = state.streak.saturating_sub(1).min(20);
                let mut wait = self
                    .settings
                    .retry_min
                    .saturating_mul(1 << shift)
                    .min(self.settings.retry_max);
                if state.failures.len() >= self.settings.failures_per_name_per_hour as usize {
                    let hour_over = state.failures[0] + Duration::from_secs(3600);
                    wait = wait.max(hour_over.saturating_duration_since(now));
                }
                state.not_before = Some(now + wait);
                state.retry = Some(why);
                if why == Why::Renewal {
                    // Tried again after the wait, while the current one keeps serving.
                    state.due = Some(crate::certs::now() + wait.as_secs() as i64);
                }
                warn!(
                    name = %name, why = why.as_str(), reason = %e,
                    retry_in = %humantime::format_duration(Duration::from_secs(wait.as_secs())),
                    "ACME: order failed; the certificate serving now (if any) keeps serving"
                );
            }
        }
    }
}

/// What one order needs, moved into its task.
struct Job {
    /// The certificate a renewal replaces (ARI).
    replaces: Option<CertificateIdentifier<'static>>,
    account: order::SharedAccount,
    settings: AcmeSettings,
    answers: Answers,
    handle: Arc<Acme>,
    acme_dir: PathBuf,
    installer: Installer,
}

impl Job {
    /// `Ok(None)`: nothing to do here (another instance holds the name or just issued it).
    async fn run(self, name: &str, why: Why) -> Result<Option<Issued>, OrderError> {
        let locks = self.settings.state_dir.join("locks");
        let lease = super::lease::acquire(&locks, name)
            .await
            .map_err(|e| OrderError::Local(format!("{}: {e}", locks.display())))?;
        let Some(lease) = lease else {
            return Ok(None);
        };
        // Another instance may have finished it while this one waited.
        if let Some(issued) = read_issued(&self.acme_dir, name) {
            let (not_before, not_after) = (issued.not_before, issued.not_after);
            let replaced = self
                .replaces
                .as_ref()
                .is_some_and(|r| ari::identifier(&issued.leaf).as_ref() != Some(r));
            // Renewed meanwhile by another instance: its certificate is not the one this
            // renewal replaces (ARI), or not yet due (without ARI).
            let fresh = why != Why::Renewal
                || replaced
                || (self.replaces.is_none()
                    && renewal_due(name, not_before, not_after) > crate::certs::now());
            if fresh && not_after > crate::certs::now() {
                drop(lease);
                return Ok(None);
            }
        }
        // Nothing is ordered that could not be installed (`acme/NAME/` not ACME's).
        let store_dir = self.acme_dir.parent().unwrap_or(&self.acme_dir);
        if let Some(why) = crate::certs::install::acme_conflict(store_dir, name) {
            return Err(OrderError::NotInstalled(why));
        }
        let account = self
            .account
            .get_or_try_init(|| order::account(&self.settings))
            .await?;
        let (issued, chain, key) = tokio::time::timeout(
            super::lease::ORDER_LIMIT,
            order::issue(
                account,
                &self.settings,
                self.answers,
                &self.handle.challenges,
                name,
                self.replaces.clone(),
            ),
        )
        .await
        .map_err(|_| OrderError::Timeout(super::lease::ORDER_LIMIT))??;
        // Installed through the store's one writer, which answers once handshakes get it,
        // and writes nothing when it refuses.
        let installed = self
            .installer
            .install(name, Parts::Acme { chain, key })
            .await;
        drop(lease);
        match installed {
            Ok(_) => Ok(Some(issued)),
            Err(InstallError::Refused(findings))
                if findings.iter().any(|f| f.code == Code::NotBetter) =>
            {
                let why = findings.iter().map(|f| f.message.as_str());
                Err(OrderError::Outranked(why.collect::<Vec<_>>().join("; ")))
            }
            Err(e) => Err(OrderError::NotInstalled(e.to_string())),
        }
    }
}

/// The certificate of `acme_dir/NAME/fullchain.pem`, if it reads.
fn read_issued(acme_dir: &Path, name: &str) -> Option<Issued> {
    let text = std::fs::read_to_string(acme_dir.join(name).join("fullchain.pem")).ok()?;
    order::validity(&text).ok()
}

/// The largest names file read (100,000 names take about 3 MB).
const NAMES_FILE_MAX: u64 = 32 << 20;
/// Lines of the names file reported one by one; the rest are counted.
const NAMES_WARNED: usize = 10;

/// A names file's modification time and size; `None` when it is absent.
type Stamp = Option<(SystemTime, u64)>;

/// What reading the names file found.
enum Reread {
    /// Unchanged since the last look.
    Same,
    /// Changed but unreadable (gone, too large): the names listed before are kept.
    Gone(Stamp),
    /// Read: its stamp and names (the routes' names included).
    Read(Stamp, HashSet<Box<str>>),
}

/// Reads `path` unless its modification time and size are as `last` saw them.
fn read_names(path: &Path, routes: &[String], last: Option<Stamp>) -> Reread {
    use std::io::Read;
    let now = std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())));
    if last == Some(now) {
        return Reread::Same;
    }
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(NAMES_FILE_MAX + 1).read_to_string(&mut text));
    match read {
        Err(e) => {
            warn!(file = %path.display(), reason = %e, "acme.names_file cannot be read; the names listed before are kept");
            return Reread::Gone(now);
        }
        Ok(n) if n as u64 > NAMES_FILE_MAX => {
            warn!(file = %path.display(), max_bytes = NAMES_FILE_MAX, "acme.names_file is larger than a names file can be; the names listed before are kept");
            return Reread::Gone(now);
        }
        Ok(_) => {}
    }
    let mut listed: HashSet<Box<str>> = routes.iter().map(|r| r.as_str().into()).collect();
    let mut skipped = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let why = match Pattern::parse(line) {
            Ok(Pattern::Exact(name)) => {
                listed.insert(name);
                continue;
            }
            Ok(Pattern::Wildcard(_)) => {
                "a wildcard needs the dns-01 challenge, which mailfront does not answer".to_owned()
            }
            Err(e) => e.to_string(),
        };
        skipped += 1;
        if skipped <= NAMES_WARNED {
            warn!(file = %path.display(), line = n + 1, name = line, reason = why, "acme.names_file: line skipped");
        }
    }
    info!(file = %path.display(), names = listed.len(), skipped, "ACME: allowed names read");
    Reread::Read(now, listed)
}

/// Removes published answers older than an hour (left by an instance stopped during an
/// order: orders are bounded well below that).
fn remove_stale_answers(dir: &Path) {
    for kind in ["tls-alpn-01", "http-01"] {
        let Ok(entries) = std::fs::read_dir(dir.join(kind)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Every `acme/NAME/` with its certificate's validity.
fn issued_in(acme_dir: &Path) -> Vec<(Box<str>, Issued)> {
    let Ok(dir) = std::fs::read_dir(acme_dir) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let Ok(Pattern::Exact(name)) = Pattern::parse(&name) else {
                return None;
            };
            let issued = read_issued(acme_dir, &name)?;
            Some((name, issued))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_file_is_read_when_it_changes_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.txt");
        let routes = vec!["route.example.com".to_owned()];
        // Absent: looked at once, then unchanged.
        let Reread::Gone(stamp) = read_names(&path, &routes, None) else {
            panic!("an absent file is not read")
        };
        assert!(matches!(
            read_names(&path, &routes, Some(stamp)),
            Reread::Same
        ));
        std::fs::write(
            &path,
            "# customers\nMail.Example.com\n*.example.org\nbad name\n\nshop.example.net # new\n",
        )
        .unwrap();
        let Reread::Read(stamp, listed) = read_names(&path, &routes, Some(stamp)) else {
            panic!("the file was not read")
        };
        let mut names: Vec<&str> = listed.iter().map(|n| &**n).collect();
        names.sort();
        assert_eq!(
            names,
            ["mail.example.com", "route.example.com", "shop.example.net"]
        );
        assert!(matches!(
            read_names(&path, &routes, Some(stamp)),
            Reread::Same
        ));
        // A stray huge file keeps the names listed before.
        let big = std::fs::File::create(&path).unwrap();
        big.set_len(NAMES_FILE_MAX + 10).unwrap();
        assert!(matches!(
            read_names(&path, &routes, Some(stamp)),
            Reread::Gone(_)
        ));
    }
}
