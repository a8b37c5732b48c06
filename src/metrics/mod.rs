//! What the proxy counts, and its Prometheus exposition.
//!
//! Counting happens on the connection path, so it takes no lock and allocates nothing:
//! each listener and each backend has its own atomic counters ([`ListenerStats`],
//! [`BackendStats`]), bumped with relaxed increments, and a handshake's duration falls into
//! a fixed-bucket histogram of atomics. A scrape reads them all and writes the text through
//! `prometheus-client`'s encoder ([`Exposition`]), with the store's figures from the
//! summary the reloader publishes after each refresh ([`crate::certs::StoreSummary`]).
//!
//! The names a handshake asked for that got the server-wide certificate (or a strict-SNI
//! refusal) go to the [`fallback`] report, through a bounded queue.

pub mod fallback;
mod histogram;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::certs::{Match, Store};
pub use histogram::Histogram;

/// The `outcome` of a connection, as its closing log line says it: every value the
/// connection path logs. A value not listed here (a bug) is counted as `other`.
pub const OUTCOMES: [&str; 17] = [
    "closed",
    "idle-timeout",
    "drain-timeout",
    "client-error",
    "backend-error",
    "client-closed",
    "client-reset",
    "client-quit",
    "starttls-limit",
    "starttls-injection",
    "starttls-timeout",
    "handshake-timeout",
    "handshake-failed",
    "strict-sni",
    "backend-unavailable",
    "backend-refused",
    "other",
];

/// How a handshake ended, for `handshakes_total{match}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// A certificate names the SNI.
    Exact,
    /// A `*.parent` certificate covers it.
    Wildcard,
    /// Nothing covers it: the server-wide certificate.
    Fallback,
    /// The client sent no SNI: the server-wide certificate.
    NoSni,
    /// Strict SNI refused a name nothing covers.
    StrictRefused,
    /// The handshake failed or timed out.
    Failed,
}

impl HandshakeKind {
    const ALL: [Self; 6] = [
        Self::Exact,
        Self::Wildcard,
        Self::Fallback,
        Self::NoSni,
        Self::StrictRefused,
        Self::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Wildcard => "wildcard",
            Self::Fallback => "fallback",
            Self::NoSni => "no-sni",
            Self::StrictRefused => "strict-refused",
            Self::Failed => "failed",
        }
    }

    /// The kind of a completed handshake that matched `matched` for `sni`.
    pub fn of(matched: Match, sni: Option<&str>) -> Self {
        match (matched, sni) {
            (Match::Exact, _) => Self::Exact,
            (Match::Wildcard, _) => Self::Wildcard,
            (Match::Fallback, Some(_)) => Self::Fallback,
            (Match::Fallback, None) => Self::NoSni,
        }
    }
}

/// The counters of one listener, shared by its connections.
#[derive(Debug)]
pub struct ListenerStats {
    name: Arc<str>,
    open: AtomicI64,
    outcomes: [AtomicU64; OUTCOMES.len()],
    handshakes: [AtomicU64; HandshakeKind::ALL.len()],
    /// Completed handshakes that resumed a session (a ticket, or the session cache).
    resumed: AtomicU64,
    duration: Histogram,
    up: AtomicU64,
    down: AtomicU64,
}

impl ListenerStats {
    /// Counters for the listener `name`, all zero.
    pub fn new(name: Arc<str>) -> Self {
        Self {
            name,
            open: AtomicI64::new(0),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            handshakes: std::array::from_fn(|_| AtomicU64::new(0)),
            resumed: AtomicU64::new(0),
            duration: Histogram::default(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    /// A connection was accepted; [`ListenerStats::closed`] when it ends.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended with `outcome` (its log line's).
    pub fn closed(&self, outcome: &str) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let slot = OUTCOMES.iter().position(|o| *o == outcome);
        let slot = slot.unwrap_or(OUTCOMES.len() - 1);
        self.outcomes[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A handshake ended as `kind`, having taken `took` (from the client's first bytes).
    pub fn handshake(&self, kind: HandshakeKind, took: Duration) {
        let slot = HandshakeKind::ALL.iter().position(|k| *k == kind);
        self.handshakes[slot.expect("in ALL")].fetch_add(1, Ordering::Relaxed);
        if kind != HandshakeKind::Failed && kind != HandshakeKind::StrictRefused {
            self.duration.observe(took);
        }
    }

    /// The handshake just counted resumed a session.
    pub fn resumed(&self) {
        self.resumed.fetch_add(1, Ordering::Relaxed);
    }

    /// A session relayed `up` bytes from the client and `down` bytes to it.
    pub fn relayed(&self, up: u64, down: u64) {
        self.up.fetch_add(up, Ordering::Relaxed);
        self.down.fetch_add(down, Ordering::Relaxed);
    }

    /// Its listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Handshakes of `kind` so far.
    pub fn handshakes(&self, kind: HandshakeKind) -> u64 {
        let slot = HandshakeKind::ALL.iter().position(|k| *k == kind);
        self.handshakes[slot.expect("in ALL")].load(Ordering::Relaxed)
    }
}

/// Why a backend failed a connection, for `backend_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// It could not be connected, or sent no greeting in time.
    Unavailable,
    /// Its greeting refused the session.
    Refused,
    /// It did not take the PROXY header.
    ProxyHeader,
    /// The connection to it failed during the relay.
    Relay,
}

impl BackendError {
    const ALL: [Self; 4] = [
        Self::Unavailable,
        Self::Refused,
        Self::ProxyHeader,
        Self::Relay,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Refused => "refused",
            Self::ProxyHeader => "proxy-header",
            Self::Relay => "relay",
        }
    }
}

/// The error counters of one backend address, shared by every route to it.
#[derive(Debug)]
pub struct BackendStats {
    name: Box<str>,
    errors: [AtomicU64; BackendError::ALL.len()],
}

impl BackendStats {
    /// Counters for the backend `name`, all zero.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts an error.
    pub fn error(&self, why: BackendError) {
        let slot = BackendError::ALL.iter().position(|k| *k == why);
        self.errors[slot.expect("in ALL")].fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything one scrape reads.
#[derive(Debug)]
pub struct Exposition {
    /// Every listener's counters, in config order.
    pub listeners: Vec<Arc<ListenerStats>>,
    /// Every backend's, by address.
    pub backends: Vec<Arc<BackendStats>>,
    /// The store, for its published summary.
    pub store: Arc<Store>,
    /// `per_certificate_metrics`: one `certificate_not_after_seconds` series per entry.
    pub per_certificate: bool,
    /// `[acme]`'s order counters, when set.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// `server.ticket_keys`, when set.
    pub ticket_keys: Option<Arc<crate::tickets::TicketKeys>>,
    /// `[onboarding]`, when set.
    pub onboarding: Option<Arc<crate::onboarding::Onboarding>>,
    /// The running proxy's domain readiness checks, when on.
    pub domains: Option<Arc<crate::onboarding::periodic::Checked>>,
}

impl Exposition {
    /// The text exposition (OpenMetrics, which Prometheus reads), every name prefixed
    /// `mailfront_`.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("mailfront");
        registry.register_collector(Box::new(Arc::clone(self)));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// The same in Prometheus' own text format (0.0.4), for clients that do not ask for
    /// OpenMetrics (curl, `promtool check metrics`, older scrapers): a counter's HELP and
    /// TYPE lines name it with its `_total`, and there is no `# EOF`.
    pub fn encode_prometheus(self: &Arc<Self>) -> String {
        to_prometheus_text(&self.encode())
    }

    fn encode_listeners(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "connections",
            "Connections ended, by listener and outcome (the closing log line's)",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            for (outcome, count) in OUTCOMES.iter().zip(&l.outcomes) {
                let labels = [("listener", l.name()), ("outcome", outcome)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(count.load(Ordering::Relaxed)).encode(metric)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "connections_open",
            "Connections open now, by listener",
            None,
            MetricType::Gauge,
        )?;
        for l in &self.listeners {
            let labels = [("listener", l.name())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(l.open().max(0)).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "handshakes",
            "TLS handshakes by listener and how the certificate was chosen",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            for kind in HandshakeKind::ALL {
                let labels = [("listener", l.name()), ("match", kind.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(l.handshakes(kind)).encode(metric)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "handshakes_resumed",
            "Completed TLS handshakes that resumed a session (a ticket, or the session \
             cache): with server.ticket_keys, sessions made on other instances too",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            let labels = [("listener", l.name())];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(l.resumed.load(Ordering::Relaxed)).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "handshake_duration_seconds",
            "Completed TLS handshakes, from the client's first bytes to the end",
            None,
            MetricType::Histogram,
        )?;
        for l in &self.listeners {
            let labels = [("listener", l.name())];
            let metric = family.encode_family(&labels)?;
            l.duration.encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "bytes",
            "Bytes relayed by ended sessions, by listener and direction (up: from clients)",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            for (direction, count) in [("up", &l.up), ("down", &l.down)] {
                let labels = [("listener", l.name()), ("direction", direction)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(count.load(Ordering::Relaxed)).encode(metric)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "backend_errors",
            "Connections a backend failed, by backend address and reason",
            None,
            MetricType::Counter,
        )?;
        for b in &self.backends {
            for (reason, count) in BackendError::ALL.iter().zip(&b.errors) {
                let labels = [("backend", &*b.name), ("reason", reason.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(count.load(Ordering::Relaxed)).encode(metric)?;
            }
        }
        Ok(())
    }

    fn encode_store(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let summary = self.store.summary();
        let now = crate::certs::now();
        let mut family = encoder.encode_descriptor(
            "store_entries",
            "Entries of the certificate store by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in summary.states() {
            let labels = [("state", state)];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(count as i64).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "store_reloads",
            "Refreshes of the store that changed something (ok), refused a version \
             (rejected) or could not read the store directory (error)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in summary.reloads() {
            let labels = [("result", result)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(count).encode(metric)?;
        }
        let family = encoder.encode_descriptor(
            "store_last_reload_timestamp_seconds",
            "When the store was last refreshed (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(summary.last_refresh()).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "certificates_expiring",
            "Certificates in use (the server-wide one included) that expire within 7, 14 \
             and 30 days (the expired among them)",
            None,
            MetricType::Gauge,
        )?;
        for (within, days) in [("7d", 7), ("14d", 14), ("30d", 30)] {
            let labels = [("within", within)];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(summary.expiring_before(now + days * 86_400) as i64).encode(metric)?;
        }
        let family = encoder.encode_descriptor(
            "certificate_earliest_expiry_timestamp_seconds",
            "The earliest notAfter of the certificates in use (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(summary.earliest_expiry()).encode(family)?;
        // Declared without [acme] too, so that dashboards and alerts work either way.
        let mut family = encoder.encode_descriptor(
            "acme_orders",
            "ACME orders by result: valid (a certificate was written to the store) or \
             failed (the certificate serving before keeps serving)",
            None,
            MetricType::Counter,
        )?;
        if let Some(acme) = &self.acme {
            for (result, count) in acme.stats.results() {
                let labels = [("result", result)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(count).encode(metric)?;
            }
        }
        if let Some(keys) = &self.ticket_keys {
            let (loaded, refused, at) = keys.stats();
            let mut family = encoder.encode_descriptor(
                "ticket_keys_reloads",
                "Reads of server.ticket_keys by result: loaded (new keys in use, the start \
                 included) or refused (the keys in use stay)",
                None,
                MetricType::Counter,
            )?;
            for (result, count) in [("loaded", loaded), ("refused", refused)] {
                let labels = [("result", result)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(count).encode(metric)?;
            }
            let family = encoder.encode_descriptor(
                "ticket_keys_loaded_timestamp_seconds",
                "When the ticket keys in use were loaded (Unix time)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(at as i64).encode(family)?;
        }
        if let Some(onboarding) = &self.onboarding {
            let mut family = encoder.encode_descriptor(
                "onboarding_requests",
                "Requests for the client-setup documents by document (autoconfig, \
                 autodiscover, mta-sts, other) and result (answered, refused, not-found)",
                None,
                MetricType::Counter,
            )?;
            for (document, result, count) in onboarding.requests() {
                let labels = [("document", document), ("result", result)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(count).encode(metric)?;
            }
        }
        if let Some(domains) = &self.domains {
            let mut family = encoder.encode_descriptor(
                "domains",
                "Customer domains by DNS readiness at their last check: resolved, invalid \
                 (a record or certificate is wrong or missing) or unknown (DNS did not answer)",
                None,
                MetricType::Gauge,
            )?;
            for (state, count) in domains.counts() {
                let labels = [("state", state.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(count as i64).encode(metric)?;
            }
            let family = encoder.encode_descriptor(
                "domains_checked_timestamp_seconds",
                "When the last pass over every domain ended (Unix time; 0 before the first)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(domains.last_pass()).encode(family)?;
        }
        if self.per_certificate {
            let mut family = encoder.encode_descriptor(
                "certificate_not_after_seconds",
                "Each serving entry's notAfter (Unix time)",
                None,
                MetricType::Gauge,
            )?;
            for (entry, not_after) in summary.entries() {
                let labels = [("entry", &**entry)];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(*not_after).encode(metric)?;
            }
        }
        Ok(())
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.encode_listeners(&mut encoder)?;
        self.encode_store(&mut encoder)
    }
}

/// Rewrites an OpenMetrics text exposition in Prometheus' text format 0.0.4.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_to_prometheus_text() {
        let om = "# HELP x_bytes Bytes.\n# TYPE x_bytes counter\nx_bytes_total{a=\"b\"} 3\n\
                  # HELP x_open Open.\n# TYPE x_open gauge\nx_open 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\nx_bytes_total{a=\"b\"} 3\n\
             # HELP x_open Open.\n# TYPE x_open gauge\nx_open 1\n"
        );
    }
}
