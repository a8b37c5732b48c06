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

use crate::certs::{Match, Served, Store};
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

/// What a request asked for, for `onboarding_requests_total{document}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    Autoconfig,
    Autodiscover,
    MtaSts,
    /// A path or host of no document.
    Other,
}

impl Document {
    const ALL: [Self; 4] = [
        Self::Autoconfig,
        Self::Autodiscover,
        Self::MtaSts,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Autoconfig => "autoconfig",
            Self::Autodiscover => "autodiscover",
            Self::MtaSts => "mta-sts",
            Self::Other => "other",
        }
    }
}

/// What became of a request, for `onboarding_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The document was sent.
    Answered,
    /// The request was refused (method, body, host, or Autodiscover's error answer).
    Refused,
    /// No such document.
    NotFound,
}

impl Answer {
    const ALL: [Self; 3] = [Self::Answered, Self::Refused, Self::NotFound];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Refused => "refused",
            Self::NotFound => "not-found",
        }
    }
}

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
        mail_host(&self.server_name, domain, store)
    }

    /// The MTA-STS policy's `mx` lines for `domain`: `mta_sts_mx` when set, else
    /// `server.name` and `mail.DOMAIN` when the store covers it.
    pub fn mta_sts_mx(&self, domain: &str, store: &Store) -> Vec<String> {
        policy_mx(&self.settings, &self.server_name, domain, store)
    }

    /// Counts one request.
    pub(crate) fn count(&self, document: Document, answer: Answer) {
        self.requests[document as usize][answer as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far: `(document, result, count)`.
    pub fn requests(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(12);
        for document in Document::ALL {
            for answer in Answer::ALL {
                let count =
                    self.requests[document as usize][answer as usize].load(Ordering::Relaxed);
                out.push((document.as_str(), answer.as_str(), count));
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
    let mail = mail_host(server_name, domain, store);
    if mail != server_name {
        mx.push(mail);
    }
    mx
}

/// `mail.DOMAIN` when a certificate in the store covers it, else `server_name`.
fn mail_host(server_name: &str, domain: &str, store: &Store) -> String {
    let mail = format!("mail.{}", normalize(domain));
    match covering(store, &mail) {
        Some(_) => mail,
        None => server_name.to_owned(),
    }
}

/// The entry of the store (not the server-wide certificate) that serves `name`, if any.
pub fn covering(store: &Store, name: &str) -> Option<Arc<Served>> {
    match store.index().select(Some(name), &[]) {
        (_, Match::Fallback) => None,
        (served, _) => Some(Arc::clone(served)),
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
