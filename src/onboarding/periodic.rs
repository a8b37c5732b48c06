//! The running proxy's readiness checks: every domain the store and the routes know,
//! checked by [`Checker`] at `checks_per_second` at most, again every `check_interval`; the
//! last result of each is kept for the metrics, the admin API and the page. A DNS server
//! that is down makes domains `unknown`, nothing more: serving never waits on it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::readiness::{check_all, known_domains, Checker, DomainReport, Readiness};
use crate::certs::{Reports, Store};
use crate::config::Config;

/// The last result for every known domain.
#[derive(Debug, Default)]
pub struct Checked {
    reports: Mutex<BTreeMap<String, DomainReport>>,
    /// When the last whole pass ended (Unix seconds); 0 before the first.
    last_pass: AtomicI64,
}

impl Checked {
    /// Domains by state: resolved, invalid, unknown.
    pub fn counts(&self) -> [(Readiness, usize); 3] {
        let mut counts = [
            (Readiness::Resolved, 0),
            (Readiness::Invalid, 0),
            (Readiness::Unknown, 0),
        ];
        for r in self.lock().values() {
            counts[r.state as usize].1 += 1;
        }
        counts
    }

    /// Every domain's last report, by name.
    pub fn all(&self) -> Vec<DomainReport> {
        self.lock().values().cloned().collect()
    }

    /// The first `limit` domains that are not resolved (invalid before unknown), and how
    /// many there are.
    pub fn not_resolved(&self, limit: usize) -> (Vec<DomainReport>, usize) {
        let reports = self.lock();
        let mut out: Vec<&DomainReport> = reports
            .values()
            .filter(|r| r.state != Readiness::Resolved)
            .collect();
        let total = out.len();
        out.sort_by_key(|r| r.state);
        (out.into_iter().take(limit).cloned().collect(), total)
    }

    /// When the last whole pass ended (Unix seconds), 0 before the first.
    pub fn last_pass(&self) -> i64 {
        self.last_pass.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DomainReport>> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running proxy's checks, ready to run.
pub struct Periodic {
    /// Asks DNS and judges a domain (the command's checker).
    pub checker: Arc<Checker>,
    /// Where the results go (shared with the metrics and the admin interface).
    pub checked: Arc<Checked>,
    /// The store's report, for the names it knows.
    pub reports: Reports,
    /// The store serving, for which names its certificates cover.
    pub store: Arc<Store>,
    /// For the routes' names.
    pub config: Config,
    /// From the start of one pass to the start of the next.
    pub interval: Duration,
    /// Domains checked per second at most.
    pub per_second: u32,
}

impl Periodic {
    /// Checks every known domain at once, then every `interval` (from the start of one
    /// pass to the next), until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let started = Instant::now();
            tokio::select! {
                () = self.pass(&self.checker) => {}
                () = stop.cancelled() => return,
            }
            tokio::select! {
                () = sleep_until(started + self.interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn pass(&self, checker: &Arc<Checker>) {
        let Some(report) = self.reports.get().await else {
            return;
        };
        let domains = known_domains(&report, &self.config);
        drop(report);
        self.checked
            .lock()
            .retain(|d, _| domains.binary_search(d).is_ok());
        let ours: Arc<Result<Vec<IpAddr>, String>> = Arc::new(checker.addresses().await);
        if let Err(e) = ours.as_ref() {
            warn!(reason = %e, "domain readiness: this host's addresses are unknown");
        }
        let per_second = Some(self.per_second);
        check_all(
            checker,
            &domains,
            ours,
            &self.store,
            per_second,
            |_, report| {
                self.checked.lock().insert(report.domain.clone(), report);
            },
        )
        .await;
        self.checked
            .last_pass
            .store(crate::certs::now(), Ordering::Relaxed);
        let [(_, resolved), (_, invalid), (_, unknown)] = self.checked.counts();
        info!(
            domains = domains.len(),
            resolved, invalid, unknown, "domain readiness checked"
        );
    }
}
