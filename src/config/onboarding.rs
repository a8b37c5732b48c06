//! `[onboarding]`: the client-setup documents the https listeners answer (Thunderbird's
//! autoconfig, Outlook's autodiscover, the MTA-STS policy) and the running proxy's DNS
//! readiness checks of customer domains.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::durations::{duration, CHECK_INTERVAL, MTA_STS_MAX_AGE};
use super::raw::RawOnboarding;
use super::{ConfigError, Context};
use crate::names::Pattern;

/// The MTA-STS policy mode (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtaStsMode {
    /// The policy is withdrawn: senders forget it (RFC 8461 §8.3).
    None,
    /// Senders report failures but deliver anyway.
    Testing,
    /// Senders deliver only over verified TLS to the listed MX hosts.
    Enforce,
}

impl MtaStsMode {
    /// The mode as written in the policy and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Testing => "testing",
            Self::Enforce => "enforce",
        }
    }
}

/// The user name the documents tell clients to log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Username {
    /// The whole address (`user@example.com`), as most hosting panels' Dovecot wants.
    Address,
    /// The part before `@`.
    LocalPart,
}

/// `[onboarding]`, validated.
#[derive(Debug, Clone)]
pub struct OnboardingSettings {
    /// `mta-sts.DOMAIN` is answered only with a mode; `None`: it is relayed like any name.
    pub mta_sts: Option<MtaStsMode>,
    /// The policy's `mx` lines; empty: `server.name`, and `mail.DOMAIN` when the store
    /// covers it.
    pub mta_sts_mx: Vec<String>,
    /// The policy's `max_age`.
    pub mta_sts_max_age: Duration,
    /// The login name in the documents.
    pub username: Username,
    /// The provider's name shown by clients; the domain when not set.
    pub display_name: Option<String>,
    /// How often the running proxy checks every domain's DNS; `None`: never.
    pub check_interval: Option<Duration>,
    /// Domains checked per second at most by the running proxy.
    pub checks_per_second: u32,
    /// The DNS server the checks ask; the system's when not set.
    pub resolver: Option<SocketAddr>,
}

pub(super) fn onboarding_settings(
    cx: &Context<'_>,
    raw: RawOnboarding,
) -> Result<OnboardingSettings, ConfigError> {
    let mta_sts = match &raw.mta_sts {
        None => None,
        Some(m) => Some(match m.get_ref().as_str() {
            "none" => MtaStsMode::None,
            "testing" => MtaStsMode::Testing,
            "enforce" => MtaStsMode::Enforce,
            other => {
                return Err(cx.invalid(
                    m,
                    "onboarding.mta_sts",
                    format!("{other:?} is not a mode (write \"none\", \"testing\" or \"enforce\")"),
                ))
            }
        }),
    };
    let mut mta_sts_mx = Vec::with_capacity(raw.mta_sts_mx.len());
    for mx in &raw.mta_sts_mx {
        // RFC 8461 §3.2: a host name, or a wildcard of one label.
        match Pattern::parse(mx.get_ref()) {
            Ok(p) => mta_sts_mx.push(p.to_string()),
            Err(e) => return Err(cx.invalid(mx, "onboarding.mta_sts_mx", e.to_string())),
        }
    }
    let username = match raw.username.as_ref().map(|u| u.get_ref().as_str()) {
        None | Some("address") => Username::Address,
        Some("local-part") => Username::LocalPart,
        Some(other) => {
            return Err(cx.invalid(
                raw.username.as_ref().expect("matched Some"),
                "onboarding.username",
                format!("{other:?} is not a login form (write \"address\" or \"local-part\")"),
            ))
        }
    };
    let display_name = match &raw.display_name {
        Some(d) if d.get_ref().trim().is_empty() || d.get_ref().len() > 100 => {
            return Err(cx.invalid(d, "onboarding.display_name", "must be 1 to 100 characters"))
        }
        Some(d) => Some(d.get_ref().trim().to_owned()),
        None => None,
    };
    let check_interval =
        duration(cx, raw.check_interval, &CHECK_INTERVAL)?.unwrap_or(Duration::from_secs(6 * 3600));
    let checks_per_second = match &raw.checks_per_second {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1000 => {
            return Err(cx.invalid(
                n,
                "onboarding.checks_per_second",
                "must be between 1 and 1000",
            ))
        }
        Some(n) => *n.get_ref(),
        None => 5,
    };
    let resolver = match &raw.resolver {
        Some(r) => Some(
            parse_resolver(r.get_ref())
                .map_err(|message| cx.invalid(r, "onboarding.resolver", message))?,
        ),
        None => None,
    };
    Ok(OnboardingSettings {
        mta_sts,
        mta_sts_mx,
        mta_sts_max_age: duration(cx, raw.mta_sts_max_age, &MTA_STS_MAX_AGE)?
            .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
        username,
        display_name,
        check_interval: (!check_interval.is_zero()).then_some(check_interval),
        checks_per_second,
        resolver,
    })
}

/// A DNS server as `IP` or `IP:PORT` (port 53 when not given).
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 53)),
        Err(_) => Err(format!(
            "{text:?} is not a DNS server address (write \"127.0.0.1\", \"127.0.0.1:5353\" or \"[::1]:53\")"
        )),
    }
}

/// `server.addresses`: this host's public addresses, each once.
pub(super) fn addresses(
    cx: &Context<'_>,
    raw: &[toml::Spanned<String>],
) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(raw.len());
    for a in raw {
        let ip = a.get_ref().trim().parse::<IpAddr>().map_err(|_| {
            cx.invalid(
                a,
                "server.addresses",
                format!(
                    "{:?} is not an IP address (write \"203.0.113.7\" or \"2001:db8::7\")",
                    a.get_ref()
                ),
            )
        })?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(cx.invalid(
                a,
                "server.addresses",
                format!("{ip} cannot be this host's public address"),
            ));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}
