//! Mail client onboarding and domain readiness (`[onboarding]`).
//!
//! The https listeners answer the client-setup hosts themselves: `autoconfig.DOMAIN`
//! (Thunderbird), `autodiscover.DOMAIN` (Outlook) and `mta-sts.DOMAIN` (sending servers),
//! and the two setup paths on any other name (`/.well-known/autoconfig/...` and
//! `/autodiscover/autodiscover.xml`, which clients ask of the domain itself first). Each
//! document lists mailfront's own mail listeners with a host name the customer's
//! certificate covers. [`readiness`] checks whether a domain's DNS points at this host
//! and the store covers its names, for `mailfront domains` and the running proxy.
//!
//! - [`documents`]: the documents, pure functions of the listeners and the domain.
//! - [`http`]: serving them (hyper, bounded) on a connection the handshake chose.
//! - [`readiness`]: the DNS checks of one domain (hickory-resolver).
//! - [`periodic`]: the running proxy's checks at a bounded rate, for metrics and the page.

pub mod documents;
pub mod http;
pub mod periodic;
pub mod readiness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::certs::{Match, Store};
use crate::config::{Config, Mail, OnboardingSettings, Protocol};
use crate::names::normalize;
use documents::Service;

/// The client-setup hosts, by their first label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupHost {
    /// `autoconfig.DOMAIN`: Thunderbird's `config-v1.1.xml`.
    Autoconfig,
    /// `autodiscover.DOMAIN`: Outlook's POX autodiscover.
    Autodiscover,
    /// `mta-sts.DOMAIN`: the MTA-STS policy.
    MtaSts,
}

impl SetupHost {
    /// The first label of its host name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Autoconfig => "autoconfig",
            Self::Autodiscover => "autodiscover",
            Self::MtaSts => "mta-sts",
        }
    }
}

/// The documents served, for `onboarding_requests_total{document}`.
pub const DOCUMENTS: [&str; 4] = ["autoconfig", "autodiscover", "mta-sts", "other"];
/// Their results, for `onboarding_requests_total{result}`.
pub const RESULTS: [&str; 3] = ["answered", "refused", "not-found"];

/// What the https listeners need to answer the setup hosts; shared by every connection.
#[derive(Debug)]
pub struct Onboarding {
    /// `[onboarding]`.
    pub settings: OnboardingSettings,
    /// `server.name`: the host clients are sent to when no certificate covers `mail.DOMAIN`.
    pub server_name: String,
    /// mailfront's mail listeners as clients see them, IMAP, POP3 then SMTP, implicit TLS
    /// before STARTTLS.
    pub services: Vec<Service>,
    /// Requests by document and result.
    requests: [[AtomicU64; 3]; 4],
}

impl Onboarding {
    /// The onboarding of `config`, when `[onboarding]` is set; `listeners` are the mail
    /// listeners' protocols with the port each is bound to.
    pub fn new(config: &Config, listeners: &[(Protocol, u16)]) -> Option<Arc<Self>> {
        let settings = config.onboarding.clone()?;
        Some(Arc::new(Self {
            settings,
            server_name: config.server.name.clone(),
            services: services(listeners),
            requests: Default::default(),
        }))
    }

    /// Which setup host `name` is, and the customer's domain in it; `None` for any other
    /// name (and for `mta-sts.` while `mta_sts` is not set: relayed like any name).
    pub fn setup_host<'a>(&self, name: &'a str) -> Option<(SetupHost, &'a str)> {
        let (label, domain) = name.split_once('.')?;
        let host = match label {
            l if l.eq_ignore_ascii_case("autoconfig") => SetupHost::Autoconfig,
            l if l.eq_ignore_ascii_case("autodiscover") => SetupHost::Autodiscover,
            l if l.eq_ignore_ascii_case("mta-sts") && self.settings.mta_sts.is_some() => {
                SetupHost::MtaSts
            }
            _ => return None,
        };
        domain.contains('.').then_some((host, domain))
    }

    /// The host name clients of `domain` are sent to: `mail.DOMAIN` when a certificate in
    /// the store covers it, else `server.name` (the server-wide certificate's).
    pub fn mail_host(&self, domain: &str, store: &Store) -> String {
        let mail = format!("mail.{}", normalize(domain));
        match covers(store, &mail) {
            Some(_) => mail,
            None => self.server_name.clone(),
        }
    }

    /// The MTA-STS policy's `mx` lines for `domain`: `mta_sts_mx` when set, else
    /// `server.name` and `mail.DOMAIN` when the store covers it.
    pub fn mta_sts_mx(&self, domain: &str, store: &Store) -> Vec<String> {
        policy_mx(&self.settings, &self.server_name, domain, store)
    }

    /// Counts one request.
    pub(crate) fn count(&self, document: usize, result: usize) {
        self.requests[document.min(3)][result.min(2)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far: `(document, result, count)`.
    pub fn requests(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(12);
        for (d, document) in DOCUMENTS.iter().enumerate() {
            for (r, result) in RESULTS.iter().enumerate() {
                out.push((
                    *document,
                    *result,
                    self.requests[d][r].load(Ordering::Relaxed),
                ));
            }
        }
        out
    }
}

/// The MTA-STS policy's `mx` lines for `domain` (see [`Onboarding::mta_sts_mx`]).
pub fn policy_mx(
    settings: &OnboardingSettings,
    server_name: &str,
    domain: &str,
    store: &Store,
) -> Vec<String> {
    if !settings.mta_sts_mx.is_empty() {
        return settings.mta_sts_mx.clone();
    }
    let mut mx = vec![server_name.to_owned()];
    let mail = format!("mail.{}", normalize(domain));
    if covers(store, &mail).is_some() && mail != server_name {
        mx.push(mail);
    }
    mx
}

/// Whether a certificate of the store (not the server-wide one) covers `name`, and how.
pub fn covers(store: &Store, name: &str) -> Option<Match> {
    match store.index().select(Some(name), &[]).1 {
        Match::Fallback => None,
        m => Some(m),
    }
}

/// The mail listeners as the documents list them (each listener's protocol and the port
/// its first address is bound to): one per protocol, port and kind of TLS; SMTP with
/// STARTTLS on port 25 is left out (that is where other servers deliver, not where
/// clients submit).
pub fn services(listeners: &[(Protocol, u16)]) -> Vec<Service> {
    let mut services: Vec<Service> = Vec::new();
    for &(protocol, port) in listeners {
        let Some(mail) = protocol.mail() else {
            continue;
        };
        let service = Service {
            mail,
            port,
            implicit: !protocol.starttls(),
        };
        if protocol == Protocol::SmtpStarttls && port == 25 {
            continue;
        }
        if !services.contains(&service) {
            services.push(service);
        }
    }
    let rank = |s: &Service| {
        let kind = match s.mail {
            Mail::Imap => 0,
            Mail::Pop3 => 1,
            Mail::Smtp => 2,
        };
        (kind, !s.implicit)
    };
    services.sort_by_key(rank);
    services
}
