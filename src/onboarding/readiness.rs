//! DNS readiness of customer domains, as hosting panels show it: whether each domain's MX,
//! its mail host names (A/AAAA/CNAME), its SPF and MTA-STS records point at this host, and
//! whether the store holds a certificate for each of those names. One checker serves
//! `mailfront domains` and the running proxy's periodic checks ([`super::periodic`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{interval, MissedTickBehavior};

use super::policy_mx;
use crate::certs::{Report, Store};
use crate::config::{Config, Mail, MtaStsMode, OnboardingSettings, Protocol};
use crate::names::{normalize, Pattern};

/// A domain's readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// Everything points at this host and every name has a certificate.
    Resolved,
    /// At least one record or certificate is wrong or missing: the reasons say which.
    Invalid,
    /// Nothing wrong was found, but the DNS server did not answer every question.
    Unknown,
}

impl Readiness {
    /// The word printed and used as the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::Invalid => "invalid",
            Self::Unknown => "unknown",
        }
    }
}

/// One thing wrong with a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// What kind of mistake (`mx-missing`, `mx-elsewhere`, `host-missing`,
    /// `host-elsewhere`, `certificate-missing`, `certificate-expired`, `spf-missing`,
    /// `spf-multiple`, `mta-sts-txt-missing`, `mx-not-in-policy`, `dns-error`).
    pub code: &'static str,
    /// The record or name concerned (`example.com MX`, `imap.example.com A/AAAA`).
    pub record: String,
    /// What was found.
    pub found: String,
    /// What was expected.
    pub expected: String,
    /// What to do about it.
    pub fix: String,
}

/// One domain's report.
#[derive(Debug, Clone, Serialize)]
pub struct DomainReport {
    pub domain: String,
    pub state: Readiness,
    /// Everything wrong; empty when resolved.
    pub reasons: Vec<Reason>,
}

/// Why the checker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    /// The system's resolver configuration cannot be read.
    #[error("cannot read the system's DNS configuration (/etc/resolv.conf): {0}")]
    System(String),
    /// The resolver cannot be built.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// The host names of a domain checked, by first label, and when each applies.
const HOSTS: [&str; 8] = [
    "mail",
    "imap",
    "smtp",
    "pop3",
    "webmail",
    "autoconfig",
    "autodiscover",
    "mta-sts",
];

/// Checks domains against this host's addresses, listeners and store.
pub struct Checker {
    resolver: TokioResolver,
    server_name: String,
    /// `server.addresses`; empty: what `server_name` resolves to, asked at each check.
    addresses: Vec<IpAddr>,
    /// The first labels checked: `mail`, and those the listeners and `[onboarding]` use.
    hosts: Vec<&'static str>,
    /// `[onboarding]` when it publishes an MTA-STS policy (testing or enforce): its TXT
    /// record and MX hosts are checked.
    mta_sts: Option<OnboardingSettings>,
}

impl Checker {
    /// A checker for `config`'s host, asking `resolver` (the system's DNS servers when
    /// `None`).
    pub fn new(config: &Config, resolver: Option<SocketAddr>) -> Result<Self, ReadinessError> {
        let resolver = build_resolver(resolver)?;
        let has = |m: Mail| {
            config
                .listeners
                .iter()
                .any(|l| l.protocol.mail() == Some(m))
        };
        let https = config
            .listeners
            .iter()
            .any(|l| l.protocol == Protocol::Https);
        let onboarding = config.onboarding.as_ref();
        let mta_sts = onboarding
            .filter(|o| o.mta_sts.is_some_and(|m| m != MtaStsMode::None))
            .cloned();
        let hosts = HOSTS
            .into_iter()
            .filter(|h| match *h {
                "mail" => true,
                "imap" => has(Mail::Imap),
                "smtp" => has(Mail::Smtp),
                "pop3" => has(Mail::Pop3),
                "webmail" => https,
                "autoconfig" | "autodiscover" => https && onboarding.is_some(),
                _ => https && mta_sts.is_some(),
            })
            .collect();
        Ok(Self {
            resolver,
            server_name: config.server.name.clone(),
            addresses: config.server.addresses.clone(),
            hosts,
            mta_sts,
        })
    }

    /// This host's addresses: `server.addresses`, else what `server.name` resolves to.
    pub async fn addresses(&self) -> Result<Vec<IpAddr>, String> {
        if !self.addresses.is_empty() {
            return Ok(self.addresses.clone());
        }
        match self.resolver.lookup_ip(fqdn(&self.server_name)).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) => Err(format!(
                "server.name {} does not resolve ({}): set server.addresses",
                self.server_name,
                brief(&e)
            )),
        }
    }

    /// Checks `domain`: its DNS against `ours` (from [`Checker::addresses`]) and the
    /// store's certificates for its names.
    pub async fn check(
        &self,
        domain: &str,
        ours: &Result<Vec<IpAddr>, String>,
        store: &Store,
    ) -> DomainReport {
        let domain = normalize(domain).into_owned();
        let mut reasons = Vec::new();
        let mut unanswered = false;
        let ours = match ours {
            Ok(ours) => ours.as_slice(),
            Err(e) => {
                reasons.push(Reason {
                    code: "dns-error",
                    record: format!("{} A/AAAA", self.server_name),
                    found: e.clone(),
                    expected: "this host's public addresses".into(),
                    fix: "set server.addresses = [\"203.0.113.7\", ...] in [server]".into(),
                });
                &[]
            }
        };
        let at = Target {
            server_name: &self.server_name,
            ours,
        };
        for label in &self.hosts {
            check_certificate(&format!("{label}.{domain}"), store, &mut reasons);
        }
        // The first question the DNS server leaves unanswered ends the asking: the others
        // would wait as long for nothing (a server that is down costs one timeout).
        'ask: {
            let mx = self
                .check_mx(&domain, &at, &mut reasons, &mut unanswered)
                .await;
            if unanswered {
                break 'ask;
            }
            for label in &self.hosts {
                let name = format!("{label}.{domain}");
                self.check_host(&name, &at, &mut reasons, &mut unanswered)
                    .await;
                if unanswered {
                    break 'ask;
                }
            }
            self.check_spf(&domain, &mut reasons, &mut unanswered).await;
            if let Some(o) = self.mta_sts.as_ref().filter(|_| !unanswered) {
                self.check_mta_sts(&domain, o, &mx, store, &mut reasons, &mut unanswered)
                    .await;
            }
        }
        // Every unanswered question left a `dns-error` reason.
        let state = if reasons.iter().any(|r| r.code != "dns-error") {
            Readiness::Invalid
        } else if !reasons.is_empty() {
            Readiness::Unknown
        } else {
            Readiness::Resolved
        };
        DomainReport {
            domain,
            state,
            reasons,
        }
    }

    /// The MX targets (most preferred first); each checked.
    async fn check_mx(
        &self,
        domain: &str,
        at: &Target<'_>,
        reasons: &mut Vec<Reason>,
        unanswered: &mut bool,
    ) -> Vec<String> {
        let record = format!("{domain} MX");
        let fix = format!(
            "add `{domain}. MX 10 mail.{domain}.` or `{domain}. MX 10 {}.`",
            at.server_name
        );
        let found = self
            .records(domain, RecordType::MX, |data| match data {
                RData::MX(mx) => Some((mx.preference, bare(&mx.exchange.to_string()))),
                _ => None,
            })
            .await;
        let mut mx = match found {
            Ok(mx) => mx,
            Err(e) => {
                *unanswered = true;
                reasons.push(dns_error(record, &e));
                return Vec::new();
            }
        };
        mx.sort();
        if mx.is_empty() {
            reasons.push(Reason {
                code: "mx-missing",
                record,
                found: "no MX record".into(),
                expected: at.expected(),
                fix,
            });
            return Vec::new();
        }
        let best = mx[0].0;
        let mut found = Vec::new();
        let mut preferred_ours = false;
        for (preference, target) in &mx {
            let addrs = self.addresses_of(target).await;
            let is_ours = at.is_ours(target, &addrs);
            if *preference == best && is_ours {
                preferred_ours = true;
            }
            found.push(format!("{preference} {target} ({})", show_addrs(&addrs)));
        }
        if !preferred_ours {
            reasons.push(Reason {
                code: "mx-elsewhere",
                record,
                found: found.join(", "),
                expected: at.expected(),
                fix: format!("make the most preferred MX this host: {fix}"),
            });
        }
        mx.into_iter().map(|(_, t)| t).collect()
    }

    /// A host name's address records (through CNAMEs) against this host's.
    async fn check_host(
        &self,
        name: &str,
        at: &Target<'_>,
        reasons: &mut Vec<Reason>,
        unanswered: &mut bool,
    ) {
        let record = format!("{name} A/AAAA/CNAME");
        let fix = match at.ours.first() {
            Some(ip) => format!(
                "add `{name}. CNAME {}.` (or `{name}. {} {ip}`)",
                at.server_name,
                if ip.is_ipv4() { "A" } else { "AAAA" }
            ),
            None => format!("add `{name}. CNAME {}.`", at.server_name),
        };
        let (addrs, cname) = match self.resolver.lookup_ip(fqdn(name)).await {
            Ok(ips) => {
                let cname = ips
                    .as_lookup()
                    .answers()
                    .iter()
                    .find_map(|r| match &r.data {
                        RData::CNAME(c) => Some(bare(&c.0.to_string())),
                        _ => None,
                    });
                (ips.iter().collect::<Vec<_>>(), cname)
            }
            Err(e) if is_absent(&e) => (Vec::new(), None),
            Err(e) => {
                *unanswered = true;
                reasons.push(dns_error(record, &e));
                return;
            }
        };
        if addrs.is_empty() {
            reasons.push(Reason {
                code: "host-missing",
                record,
                found: "no address".into(),
                expected: at.expected(),
                fix,
            });
            return;
        }
        let via_server_name = cname.as_deref().is_some_and(|c| at.is_ours(c, &[]));
        if !via_server_name && !at.is_ours(name, &addrs) {
            let via = cname.map(|c| format!("CNAME {c} -> ")).unwrap_or_default();
            reasons.push(Reason {
                code: "host-elsewhere",
                record,
                found: format!("{via}{}", show_addrs(&addrs)),
                expected: at.expected(),
                fix: format!("replace the record: {fix}"),
            });
        }
    }

    /// One SPF record at the domain (RFC 7208: two are an error).
    async fn check_spf(&self, domain: &str, reasons: &mut Vec<Reason>, unanswered: &mut bool) {
        let record = format!("{domain} TXT (SPF)");
        let spf: Vec<String> = match self.txt(domain).await {
            Ok(txt) => txt
                .into_iter()
                .filter(|t| t.to_ascii_lowercase().starts_with("v=spf1"))
                .collect(),
            Err(e) => {
                *unanswered = true;
                reasons.push(dns_error(record, &e));
                return;
            }
        };
        let suggested = format!("\"v=spf1 mx a:{} ~all\"", self.server_name);
        match spf.len() {
            1 => {}
            0 => reasons.push(Reason {
                code: "spf-missing",
                record,
                found: "no v=spf1 record".into(),
                expected: "one TXT record starting v=spf1 that allows this host".into(),
                fix: format!("add `{domain}. TXT {suggested}`"),
            }),
            _ => reasons.push(Reason {
                code: "spf-multiple",
                record,
                found: spf.join(" | "),
                expected: "exactly one v=spf1 record (two make every SPF check fail)".into(),
                fix: format!("merge them into one, such as {suggested}"),
            }),
        }
    }

    /// `_mta-sts.DOMAIN` announces a policy, and every MX host is one the policy names
    /// (else, in enforce mode, senders refuse to deliver).
    async fn check_mta_sts(
        &self,
        domain: &str,
        settings: &OnboardingSettings,
        mx: &[String],
        store: &Store,
        reasons: &mut Vec<Reason>,
        unanswered: &mut bool,
    ) {
        let name = format!("_mta-sts.{domain}");
        let record = format!("{name} TXT");
        match self.txt(&name).await {
            Ok(txt) => {
                let sts: Vec<&String> = txt
                    .iter()
                    .filter(|t| t.starts_with("v=STSv1") && t.contains("id="))
                    .collect();
                if sts.len() != 1 {
                    let id = time::OffsetDateTime::now_utc().unix_timestamp();
                    reasons.push(Reason {
                        code: "mta-sts-txt-missing",
                        record,
                        found: if txt.is_empty() { "no TXT record".into() } else { txt.join(" | ") },
                        expected: "one record \"v=STSv1; id=...\"".into(),
                        fix: format!("add `{name}. TXT \"v=STSv1; id={id}\"` (change the id whenever the policy changes)"),
                    });
                }
            }
            Err(e) => {
                *unanswered = true;
                reasons.push(dns_error(record, &e));
            }
        }
        let patterns: Vec<String> = policy_mx(settings, &self.server_name, domain, store);
        let parsed: Vec<Pattern> = patterns
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .collect();
        let outside: Vec<&String> = mx
            .iter()
            .filter(|m| !parsed.iter().any(|p| p.covers(&normalize(m))))
            .collect();
        if !outside.is_empty() {
            reasons.push(Reason {
                code: "mx-not-in-policy",
                record: format!("{domain} MX"),
                found: outside
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                expected: format!("MX hosts the MTA-STS policy names: {}", patterns.join(", ")),
                fix: "point the MX at a host the policy names, or add it to onboarding.mta_sts_mx"
                    .into(),
            });
        }
    }

    /// The TXT records at `name`, each one string; none when the name has none.
    async fn txt(&self, name: &str) -> Result<Vec<String>, NetError> {
        self.records(name, RecordType::TXT, |data| match data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .await
    }

    /// What `pick` takes of the records of `kind` at `name`; none when the name or the
    /// records do not exist (an answer), an error when the DNS server did not answer.
    async fn records<T>(
        &self,
        name: &str,
        kind: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Result<Vec<T>, NetError> {
        match self.resolver.lookup(fqdn(name), kind).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| pick(&r.data))
                .collect()),
            Err(e) if is_absent(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// A host's addresses (through CNAMEs); none when it has none or the DNS server did
    /// not answer (an MX host elsewhere is reported either way).
    async fn addresses_of(&self, host: &str) -> Vec<IpAddr> {
        match self.resolver.lookup_ip(fqdn(host)).await {
            Ok(ips) => ips.iter().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// What "this host" is for one check.
struct Target<'a> {
    server_name: &'a str,
    ours: &'a [IpAddr],
}

impl Target<'_> {
    /// Whether `name`, with `addrs`, is this host: it is `server.name`, or every one of its
    /// addresses is this host's.
    fn is_ours(&self, name: &str, addrs: &[IpAddr]) -> bool {
        normalize(name) == normalize(self.server_name)
            || (!addrs.is_empty() && addrs.iter().all(|a| self.ours.contains(a)))
    }

    fn expected(&self) -> String {
        if self.ours.is_empty() {
            format!("{} (this host)", self.server_name)
        } else {
            format!(
                "{} or {} (this host)",
                self.server_name,
                show_addrs(self.ours)
            )
        }
    }
}

/// Whether a certificate of the store covers `name`, and has not expired.
fn check_certificate(name: &str, store: &Store, reasons: &mut Vec<Reason>) {
    let record = format!("{name} certificate");
    let Some(served) = super::covering(store, name) else {
        reasons.push(Reason {
            code: "certificate-missing",
            record,
            found: "only the server-wide certificate (clients warn of a name mismatch)".into(),
            expected: format!("a certificate in the store covering {name}"),
            fix: format!(
                "add {name} to the domain's certificate in the store (or to acme.names_file)"
            ),
        });
        return;
    };
    if served.not_after < crate::certs::now() {
        reasons.push(Reason {
            code: "certificate-expired",
            record,
            found: format!("{} expired", served.id),
            expected: format!("a current certificate covering {name}"),
            fix: "renew the certificate".into(),
        });
    }
}

/// Domains checked at once.
const IN_FLIGHT: usize = 16;

/// Checks `domains`, [`IN_FLIGHT`] at once and, with `per_second`, starting no more than
/// that many a second; `done` gets each report with the domain's index in `domains`.
/// `ours` is [`Checker::addresses`]' answer, asked once for all of them.
pub async fn check_all(
    checker: &Arc<Checker>,
    domains: &[String],
    ours: Arc<Result<Vec<IpAddr>, String>>,
    store: &Arc<Store>,
    per_second: Option<u32>,
    mut done: impl FnMut(usize, DomainReport),
) {
    let mut ticks = per_second.map(|n| {
        let mut ticks = interval(Duration::from_secs(1) / n.max(1));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks
    });
    let mut running = JoinSet::new();
    for (at, domain) in domains.iter().enumerate() {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        while running.len() >= IN_FLIGHT {
            if let Some(Ok((i, report))) = running.join_next().await {
                done(i, report);
            }
        }
        let (checker, ours, store) = (Arc::clone(checker), Arc::clone(&ours), Arc::clone(store));
        let domain = domain.clone();
        running.spawn(async move { (at, checker.check(&domain, &ours, &store).await) });
    }
    while let Some(finished) = running.join_next().await {
        if let Ok((i, report)) = finished {
            done(i, report);
        }
    }
}

/// The domains the store and the routes know: every certificate name and exact route
/// name, less a first label of a mail or setup host (and `*.`), each once.
pub fn known_domains(report: &Report, config: &Config) -> Vec<String> {
    let names = report
        .names
        .iter()
        .map(|n| n.name.clone())
        .chain(config.route_names());
    let mut domains = BTreeSet::new();
    for name in names {
        let name = normalize(&name).into_owned();
        let name = name.strip_prefix("*.").unwrap_or(&name);
        let domain = match name.split_once('.') {
            Some((label, rest))
                if rest.contains('.')
                    && (HOSTS.contains(&label)
                        || matches!(label, "www" | "pop" | "smtps" | "imaps")) =>
            {
                rest
            }
            _ => name,
        };
        if domain.contains('.') {
            domains.insert(domain.to_owned());
        }
    }
    domains.into_iter().collect()
}

fn build_resolver(server: Option<SocketAddr>) -> Result<TokioResolver, ReadinessError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            );
            // The server asked is the one truth: not this machine's hosts file.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => {
            TokioResolver::builder(provider).map_err(|e| ReadinessError::System(e.to_string()))?
        }
    };
    let options = builder.options_mut();
    options.timeout = Duration::from_secs(3);
    options.attempts = 2;
    options.cache_size = 4096;
    builder
        .build()
        .map_err(|e| ReadinessError::Resolver(e.to_string()))
}

/// `name` as an absolute DNS name: no search domain is tried.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A DNS name without its root dot, in lower case.
fn bare(name: &str) -> String {
    normalize(name).into_owned()
}

/// Whether `e` says the name or the record does not exist (an answer, not a failure).
fn is_absent(e: &NetError) -> bool {
    e.is_nx_domain() || e.is_no_records_found()
}

fn dns_error(record: String, e: &NetError) -> Reason {
    Reason {
        code: "dns-error",
        record,
        found: format!("no answer: {}", brief(e)),
        expected: "an answer from the DNS server".into(),
        fix: "check the domain's name servers (and --resolver / onboarding.resolver)".into(),
    }
}

fn brief(e: &NetError) -> String {
    let text = e.to_string();
    text.chars().take(200).collect()
}

fn show_addrs(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "no address".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
