//! The config file exactly as written: serde structs that refuse unknown keys and keep the
//! position of every value a later check may have to point at.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub certs: RawCerts,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    pub admin: Option<RawAdmin>,
    pub acme: Option<RawAcme>,
    pub onboarding: Option<RawOnboarding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnboarding {
    pub mta_sts: Option<Spanned<String>>,
    #[serde(default)]
    pub mta_sts_mx: Vec<Spanned<String>>,
    pub mta_sts_max_age: Option<Spanned<HumanDuration>>,
    pub username: Option<Spanned<String>>,
    pub display_name: Option<Spanned<String>>,
    pub check_interval: Option<Spanned<HumanDuration>>,
    pub checks_per_second: Option<Spanned<u32>>,
    pub resolver: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub directory: Spanned<String>,
    #[serde(default)]
    pub contact: Vec<Spanned<String>>,
    pub state_dir: Spanned<String>,
    pub names_file: Option<Spanned<String>>,
    pub ask: Option<Spanned<String>>,
    pub ask_ttl: Option<Spanned<HumanDuration>>,
    pub ask_negative_ttl: Option<Spanned<HumanDuration>>,
    #[serde(default = "yes")]
    pub on_demand: bool,
    pub key_type: Option<Spanned<String>>,
    pub eab_kid: Option<Spanned<String>>,
    pub eab_hmac_key_file: Option<Spanned<String>>,
    pub ca_bundle: Option<String>,
    pub profile: Option<Spanned<String>>,
    pub max_concurrent_orders: Option<Spanned<u32>>,
    pub orders_per_hour: Option<Spanned<u32>>,
    pub failures_per_name_per_hour: Option<Spanned<u32>>,
    pub retry_min: Option<Spanned<HumanDuration>>,
    pub retry_max: Option<Spanned<HumanDuration>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub bind: Spanned<String>,
    pub token_file: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub per_certificate_metrics: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub name: Spanned<String>,
    pub handshake_timeout: Option<Spanned<HumanDuration>>,
    pub connect_timeout: Option<Spanned<HumanDuration>>,
    pub idle_timeout: Option<Spanned<HumanDuration>>,
    pub drain_timeout: Option<Spanned<HumanDuration>>,
    pub max_connections: Option<Spanned<u32>>,
    pub threads: Option<Spanned<u32>>,
    pub user: Option<Spanned<String>>,
    pub ticket_keys: Option<String>,
    pub session_tickets: Option<Spanned<u32>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCerts {
    pub dir: String,
    pub default_cert: Option<String>,
    pub default_key: Option<String>,
    pub ca_bundle: Option<String>,
    pub issuers_dir: Option<String>,
    pub crl_dir: Option<String>,
    pub rescan_interval: Option<Spanned<HumanDuration>>,
    pub watch: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub name: Spanned<String>,
    pub bind: Spanned<OneOrMany<SocketAddr>>,
    pub protocol: Protocol,
    /// Required, but for `http` listeners (which redirect to https without one).
    pub backend: Option<Spanned<String>>,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    #[serde(default)]
    pub strict_sni: bool,
    pub alpn: Option<Spanned<Vec<String>>>,
    /// The host name in this listener's greetings (STARTTLS listeners); `server.name`
    /// when not set.
    pub greeting_name: Option<Spanned<String>>,
    /// This listener's idle bound; `server.idle_timeout` (or the protocol's default) when
    /// not set.
    pub idle_timeout: Option<Spanned<HumanDuration>>,
    /// The port clients reach this listener on, when NAT or a container maps another one.
    pub public_port: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub sni: Spanned<String>,
    pub listener: Option<Spanned<String>>,
    pub backend: Spanned<String>,
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// What a listener speaks inside TLS; it sets the default ALPN and the error a client sees
/// when its backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTPS for webmail (443).
    Https,
    /// SMTP submission over implicit TLS (465).
    Smtps,
    /// IMAP over implicit TLS (993).
    Imaps,
    /// POP3 over implicit TLS (995).
    Pop3s,
    /// SMTP with STARTTLS (25, 587): mailfront speaks the plain-text part.
    SmtpStarttls,
    /// IMAP with STARTTLS (143).
    ImapStarttls,
    /// POP3 with STLS (110).
    Pop3Starttls,
    /// Plain HTTP (80): ACME http-01 challenges, and a redirect to https (or a relay to
    /// its backend) for everything else.
    Http,
}

impl Protocol {
    /// The name used in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Smtps => "smtps",
            Self::Imaps => "imaps",
            Self::Pop3s => "pop3s",
            Self::SmtpStarttls => "smtp-starttls",
            Self::ImapStarttls => "imap-starttls",
            Self::Pop3Starttls => "pop3-starttls",
            Self::Http => "http",
        }
    }

    /// The mail protocol spoken inside TLS, whether TLS is implicit or started in it.
    pub fn mail(self) -> Option<Mail> {
        match self {
            Self::Https | Self::Http => None,
            Self::Smtps | Self::SmtpStarttls => Some(Mail::Smtp),
            Self::Imaps | Self::ImapStarttls => Some(Mail::Imap),
            Self::Pop3s | Self::Pop3Starttls => Some(Mail::Pop3),
        }
    }

    /// Whether the session starts in plain text and upgrades with STARTTLS.
    pub fn starttls(self) -> bool {
        matches!(
            self,
            Self::SmtpStarttls | Self::ImapStarttls | Self::Pop3Starttls
        )
    }

    /// ALPN identifiers a listener of this kind may offer.
    pub(super) fn allowed_alpn(self) -> &'static [&'static str] {
        match self.mail() {
            None if self == Self::Http => &[],
            None => &["http/1.1", "h2", "http/1.0"],
            Some(Mail::Smtp) => &["smtp"],
            Some(Mail::Imap) => &["imap"],
            Some(Mail::Pop3) => &["pop3"],
        }
    }

    /// How long a session may stay silent both ways when neither the listener nor
    /// `[server]` sets `idle_timeout`: above 30 minutes for IMAP, whose clients sit in IDLE
    /// for up to 29 minutes before they say anything (RFC 2177; RFC 3501 wants a server's
    /// autologout timer at 30 minutes at least), and 10 minutes for the others.
    pub fn default_idle_timeout(self) -> Duration {
        match self.mail() {
            Some(Mail::Imap) => Duration::from_secs(31 * 60),
            _ => Duration::from_secs(10 * 60),
        }
    }

    /// ALPN offered when the listener sets none: `http/1.1` only for https, because bytes
    /// are relayed as they are and an `h2` client would talk HTTP/2 to an HTTP/1.1 backend.
    pub(super) fn default_alpn(self) -> &'static [&'static str] {
        match self {
            Self::Https => &["http/1.1"],
            _ => &[],
        }
    }
}

/// The three mail protocols, each spoken over implicit TLS or upgraded with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mail {
    Smtp,
    Imap,
    Pop3,
}

/// Whether and how the backend is told the client's real address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Plain bytes only.
    #[default]
    None,
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header, with ALPN, SNI and TLS version as TLVs.
    V2,
}

/// `bind = "addr"` or `bind = ["addr", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// A duration written as humantime text ("10s", "10m", "1h 30m").
#[derive(Debug, Clone, Copy)]
pub(super) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?}: {e} (write it as \"10s\", \"5m\" or \"1h\")"
                ))
            })
    }
}
