//! The config file: how raw TOML becomes a [`Config`] the proxy can trust.
//!
//! 1. [`raw`] deserialises the text with serde; unknown keys, wrong types and bad
//!    durations or addresses fail there, and toml's error names the key, line and column.
//! 2. [`Config::parse`] then checks what serde cannot (duplicate listener names, routes to
//!    unknown listeners, ALPN a protocol cannot speak, wildcard syntax) and reports each
//!    problem with the key and line it came from.
//!
//! Relative paths are taken relative to the config file's directory, so that the same file
//! works whatever directory the proxy was started from (systemd starts it in `/`).

mod acme;
mod durations;
mod onboarding;
mod raw;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::names::Pattern;
pub use acme::{AcmeSettings, KeyType};
use durations::{duration, CONNECT, DRAIN, HANDSHAKE, IDLE, LISTENER_IDLE, RESCAN};
pub use onboarding::{parse_resolver, MtaStsMode, OnboardingSettings, Username};
pub use raw::{Mail, Protocol, ProxyProtocol};
use raw::{RawConfig, RawListener, RawRoute};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    /// Server-wide settings.
    pub server: ServerSettings,
    /// Where the certificates are.
    pub certs: CertSettings,
    /// Every `[[listener]]`, with the routes that apply to it.
    pub listeners: Vec<ListenerConfig>,
    /// `[admin]`, when set.
    pub admin: Option<AdminSettings>,
    /// `protocol = "http"` listeners (port 80): ACME http-01 and the redirect to https.
    pub http: Vec<HttpListenerConfig>,
    /// `[acme]`, when set.
    pub acme: Option<AcmeSettings>,
    /// `[onboarding]`, when set: the https listeners answer the client-setup hosts.
    pub onboarding: Option<OnboardingSettings>,
}

/// A `protocol = "http"` listener.
#[derive(Debug, Clone)]
pub struct HttpListenerConfig {
    /// Its name, for logs.
    pub name: String,
    /// Addresses to listen on.
    pub bind: Vec<SocketAddr>,
    /// Where requests other than ACME challenges are relayed; without one they are
    /// redirected to https.
    pub backend: Option<Backend>,
    /// PROXY protocol towards `backend`.
    pub proxy_protocol: ProxyProtocol,
}

/// `[admin]`: the operator's HTTP interface (metrics, the report, uploads, the page).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where it listens.
    pub bind: AdminBind,
    /// The file holding the bearer token; required unless `bind` is loopback or a unix
    /// socket, and then the interface speaks HTTPS.
    pub token_file: Option<PathBuf>,
    /// One `certificate_not_after_seconds` series per entry.
    pub per_certificate_metrics: bool,
    /// Host names (besides its address, `localhost` and `server.name`) that requests may
    /// name it by in `Host`: the name an operator reaches it by through a proxy or DNS.
    pub allowed_hosts: Vec<String>,
}

/// Where the admin interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminBind {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for AdminBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl AdminSettings {
    /// Whether it speaks HTTPS: on any address that is not loopback.
    pub fn tls(&self) -> bool {
        matches!(self.bind, AdminBind::Tcp(addr) if !addr.ip().is_loopback())
    }
}

/// `[server]`: the name of the host and the bounds on every connection.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The server-wide host name; subject of a generated server-wide certificate.
    pub name: String,
    /// From accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// To open the backend connection.
    pub connect_timeout: Duration,
    /// `idle_timeout` as set in `[server]`: the listeners' default, before their
    /// protocol's (see [`ListenerConfig::idle_timeout`]).
    pub idle_timeout: Option<Duration>,
    /// How long open connections may go on after SIGTERM/SIGINT; zero cuts them at once.
    pub drain_timeout: Duration,
    /// Connections open at once across all listeners; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Threads serving connections; `None`: one per core.
    pub threads: Option<usize>,
    /// The user to run as once the listeners are bound; `None`: stay who started it.
    pub user: Option<String>,
    /// Session ticket keys shared by a fleet (HAProxy's `tls-ticket-keys` file); `None`:
    /// keys of this process's own, rotated by rustls.
    pub ticket_keys: Option<PathBuf>,
    /// TLS 1.3 session tickets sent after each handshake (1 by default); 0 turns session
    /// resumption off altogether: no tickets in TLS 1.3 or 1.2, no session cache.
    pub session_tickets: usize,
    /// This host's public addresses, which customer domains' DNS should point at; empty:
    /// whatever `name` resolves to.
    pub addresses: Vec<std::net::IpAddr>,
}

/// `[certs]`: the watched store and the server-wide certificate.
#[derive(Debug, Clone)]
pub struct CertSettings {
    /// The certificate store directory.
    pub dir: PathBuf,
    /// Server-wide chain; generated (self-signed) with its key when neither file exists.
    pub default_cert: PathBuf,
    /// Server-wide key.
    pub default_key: PathBuf,
    /// Roots for chain checks.
    pub ca_bundle: Option<PathBuf>,
    /// Intermediates used to complete short chains.
    pub issuers_dir: Option<PathBuf>,
    /// CRLs for revocation checks.
    pub crl_dir: Option<PathBuf>,
    /// Full rescan of the store as a safety net against missed events.
    pub rescan_interval: Duration,
    /// Whether inotify watches the store; `false` leaves it to `rescan_interval` (a network
    /// file system, where inotify sees only this host's own changes).
    pub watch: bool,
}

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Its name, used in logs and by routes.
    pub name: String,
    /// Addresses to listen on (IPv4 and IPv6 alike).
    pub bind: Vec<SocketAddr>,
    /// What is spoken inside TLS.
    pub protocol: Protocol,
    /// Where decrypted bytes go unless a route says otherwise.
    pub backend: Backend,
    /// PROXY protocol towards `backend`.
    pub proxy_protocol: ProxyProtocol,
    /// Refuse names no certificate covers with `unrecognized_name`.
    pub strict_sni: bool,
    /// ALPN identifiers offered, in preference order.
    pub alpn: Vec<String>,
    /// Per-name backend overrides that apply to this listener.
    pub routes: Vec<Route>,
    /// The host name STARTTLS listeners greet with (`greeting_name`, else `server.name`).
    pub greeting_name: String,
    /// No byte either way for this long closes a session: the listener's `idle_timeout`,
    /// else `server.idle_timeout`, else the protocol's default (31 minutes for IMAP).
    pub idle_timeout: Duration,
    /// The port clients reach it on, as the setup documents list it (`public_port`);
    /// `None`: the port it is bound to.
    pub public_port: Option<u16>,
}

/// A `[[route]]`, resolved to the listener it applies to.
#[derive(Debug, Clone)]
pub struct Route {
    /// The SNI it matches: exact, or `*.parent`.
    pub sni: Pattern,
    /// Where matching connections go.
    pub backend: Backend,
    /// PROXY protocol for this route; the listener's when not set.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Set with `listener = ...`; such a route beats one for every listener.
    pub scoped: bool,
}

/// A backend address as `host:port`; resolved at connect time when not an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend(String);

impl Backend {
    fn parse(text: &str) -> Result<Self, String> {
        if text.parse::<SocketAddr>().is_ok() {
            return Ok(Self(text.to_owned()));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => {
                port.parse::<u16>()
                    .map_err(|_| format!("invalid port {port:?} in backend {text:?}"))?;
                Ok(Self(text.to_owned()))
            }
            _ => Err(format!(
                "backend {text:?} is not host:port (write \"127.0.0.1:143\" or \"[::1]:143\")"
            )),
        }
    }

    /// The address as written, for connecting and logging.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a config cannot be used; each names the file and, where it can, key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong form.
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A value that is well-formed but unusable.
    #[error("config {path}, line {line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as the config file at `path` (used for messages and to resolve
    /// relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        // Absolute, so that watch events (which carry absolute paths) match the store.
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        let base = base.unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        let base = base.as_path();
        let cx = Context { path, text };
        let server = server_settings(&cx, base, raw.server)?;
        let certs = cert_settings(&cx, base, raw.certs)?;
        let acme_span = raw.acme.as_ref().map(|a| a.directory.span());
        let (mut listeners, http) = listeners(&cx, raw.listeners, &server)?;
        attach_routes(&cx, raw.routes, &mut listeners, &http)?;
        let admin = raw
            .admin
            .map(|a| admin_settings(&cx, base, a))
            .transpose()?;
        let acme = raw
            .acme
            .map(|a| acme::acme_settings(&cx, base, a))
            .transpose()?;
        let onboarding = raw
            .onboarding
            .map(|o| onboarding::onboarding_settings(&cx, o))
            .transpose()?;
        let config = Self {
            path: path.to_owned(),
            server,
            certs,
            listeners,
            admin,
            http,
            acme,
            onboarding,
        };
        if let (Some(acme), Some(span)) = (&config.acme, acme_span) {
            let span = Spanned::new(span, ());
            let challenged = !config.http.is_empty()
                || config
                    .listeners
                    .iter()
                    .any(|l| l.protocol == Protocol::Https);
            if !challenged {
                return Err(cx.invalid(
                    &span,
                    "acme",
                    "no listener can answer the CA's challenges: add a protocol = \"https\" \
                     listener on port 443 (tls-alpn-01) or a protocol = \"http\" one on port 80 \
                     (http-01)",
                ));
            }
            if acme.names_file.is_none() && acme.ask.is_none() && config.route_names().is_empty() {
                return Err(cx.invalid(
                    &span,
                    "acme",
                    "no name may be ordered: set acme.names_file (one name per line) or \
                     acme.ask (a URL that answers 200 for an allowed name), or add [[route]]s \
                     for exact names",
                ));
            }
        }
        Ok(config)
    }
}

impl Config {
    /// The exact names of the `[[route]]`s (ACME may order them), sorted, without
    /// duplicates.
    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .listeners
            .iter()
            .flat_map(|l| &l.routes)
            .filter_map(|r| match &r.sni {
                Pattern::Exact(name) => Some(name.to_string()),
                Pattern::Wildcard(_) => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// What is valid but likely a mistake, one sentence each: `check-config` prints them
    /// and `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        const IMAP_IDLE: Duration = Duration::from_secs(30 * 60);
        let mut warnings: Vec<String> = self
            .listeners
            .iter()
            .filter(|l| l.protocol.mail() == Some(Mail::Imap) && l.idle_timeout < IMAP_IDLE)
            .map(|l| {
                format!(
                    "listener {}: idle_timeout {} is below 30 minutes: IMAP clients in IDLE \
                     stay silent for up to 29 minutes (RFC 2177) and will be cut",
                    l.name,
                    humantime::format_duration(l.idle_timeout)
                )
            })
            .collect();
        if self.onboarding.is_some()
            && !self.listeners.iter().any(|l| l.protocol == Protocol::Https)
        {
            warnings.push(
                "[onboarding] is set but no protocol = \"https\" listener answers the \
                 client-setup hosts (autoconfig, autodiscover, mta-sts)"
                    .into(),
            );
        }
        if let Some(acme) = &self.acme {
            if let Some(file) = acme.names_file.as_deref().filter(|f| !f.exists()) {
                warnings.push(format!(
                    "acme.names_file {} does not exist: no listed name is ordered until it does \
                     (it is read again when it appears)",
                    file.display()
                ));
            }
            if !acme.on_demand && acme.names_file.is_none() && self.route_names().is_empty() {
                warnings.push(
                    "acme: on_demand is off and no name is listed (acme.names_file, [[route]]s): \
                     acme.ask is only asked at handshakes, so nothing will be ordered"
                        .into(),
                );
            }
        }
        warnings
    }
}

/// What an error needs to point at a line.
struct Context<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Context<'_> {
    fn invalid<T>(&self, span: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.text[..span.span().start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// TLS 1.3 tickets per handshake by default: one, what a mail client keeps per server
/// (BENCHMARKS.md, issue 19).
pub const DEFAULT_SESSION_TICKETS: usize = 1;

/// More tickets per handshake than any client uses at once (rustls' clients keep 8).
const MAX_SESSION_TICKETS: u32 = 8;

fn server_settings(
    cx: &Context<'_>,
    base: &Path,
    raw: raw::RawServer,
) -> Result<ServerSettings, ConfigError> {
    let name = match Pattern::parse(raw.name.get_ref()) {
        Ok(Pattern::Exact(name)) => name.into(),
        Ok(Pattern::Wildcard(_)) => {
            return Err(cx.invalid(
                &raw.name,
                "server.name",
                "must be a host name, not a wildcard",
            ))
        }
        Err(e) => return Err(cx.invalid(&raw.name, "server.name", e.to_string())),
    };
    let max_connections = match raw.max_connections {
        Some(max) if *max.get_ref() == 0 => {
            return Err(cx.invalid(&max, "server.max_connections", "must be at least 1"))
        }
        Some(max) => max.into_inner() as usize,
        None => 20_000,
    };
    let threads = match raw.threads {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > 1024 => {
            return Err(cx.invalid(&t, "server.threads", "must be between 1 and 1024"))
        }
        Some(t) => Some(t.into_inner() as usize),
        None => None,
    };
    let user = match raw.user {
        Some(u) if u.get_ref().trim().is_empty() => {
            return Err(cx.invalid(&u, "server.user", "must name a user"))
        }
        Some(u) => Some(u.into_inner()),
        None => None,
    };
    let session_tickets = match raw.session_tickets {
        Some(n) if *n.get_ref() > MAX_SESSION_TICKETS => {
            return Err(cx.invalid(
                &n,
                "server.session_tickets",
                format!("must be between 0 and {MAX_SESSION_TICKETS}"),
            ))
        }
        Some(n) if *n.get_ref() == 0 && raw.ticket_keys.is_some() => {
            return Err(cx.invalid(
                &n,
                "server.session_tickets",
                "0 turns session resumption off, and server.ticket_keys is set: \
                 remove one of the two",
            ))
        }
        Some(n) => n.into_inner() as usize,
        None => DEFAULT_SESSION_TICKETS,
    };
    let secs = Duration::from_secs;
    Ok(ServerSettings {
        name,
        handshake_timeout: duration(cx, raw.handshake_timeout, &HANDSHAKE)?.unwrap_or(secs(10)),
        connect_timeout: duration(cx, raw.connect_timeout, &CONNECT)?.unwrap_or(secs(5)),
        idle_timeout: duration(cx, raw.idle_timeout, &IDLE)?,
        drain_timeout: duration(cx, raw.drain_timeout, &DRAIN)?.unwrap_or(secs(30)),
        max_connections,
        threads,
        user,
        ticket_keys: raw.ticket_keys.map(|p| base.join(p)),
        session_tickets,
        addresses: onboarding::addresses(cx, &raw.addresses)?,
    })
}

fn cert_settings(
    cx: &Context<'_>,
    base: &Path,
    raw: raw::RawCerts,
) -> Result<CertSettings, ConfigError> {
    let dir = base.join(&raw.dir);
    // Beside the store, not in it: the store is watched and every file in it is an entry.
    let fallback_dir = dir
        .parent()
        .map_or_else(|| base.join("default"), |p| p.join("default"));
    let at = |p: Option<String>| p.map(|p| base.join(p));
    let rescan_interval = duration(cx, raw.rescan_interval, &RESCAN)?;
    Ok(CertSettings {
        default_cert: at(raw.default_cert).unwrap_or_else(|| fallback_dir.join("fullchain.pem")),
        default_key: at(raw.default_key).unwrap_or_else(|| fallback_dir.join("privkey.pem")),
        ca_bundle: at(raw.ca_bundle),
        issuers_dir: at(raw.issuers_dir),
        crl_dir: at(raw.crl_dir),
        rescan_interval: rescan_interval.unwrap_or(Duration::from_secs(60)),
        watch: raw.watch.unwrap_or(true),
        dir,
    })
}

fn admin_settings(
    cx: &Context<'_>,
    base: &Path,
    raw: raw::RawAdmin,
) -> Result<AdminSettings, ConfigError> {
    let text = raw.bind.get_ref().trim();
    let bind = match text.strip_prefix("unix:") {
        Some("") => return Err(cx.invalid(&raw.bind, "admin.bind", "unix: needs a socket path")),
        Some(path) => AdminBind::Unix(base.join(path)),
        None => match text.parse::<SocketAddr>() {
            Ok(addr) => AdminBind::Tcp(addr),
            Err(_) => {
                return Err(cx.invalid(
                    &raw.bind,
                    "admin.bind",
                    format!(
                        "`{text}` is neither an address with a port (127.0.0.1:9180, \
                         [::1]:9180) nor unix:PATH"
                    ),
                ))
            }
        },
    };
    let token_file = match raw.token_file {
        Some(t) if t.get_ref().trim().is_empty() => {
            return Err(cx.invalid(&t, "admin.token_file", "must name a file"))
        }
        Some(t) => Some(base.join(t.get_ref())),
        None => None,
    };
    let mut allowed_hosts = Vec::with_capacity(raw.allowed_hosts.len());
    for host in &raw.allowed_hosts {
        let text = host
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let name = crate::names::Pattern::parse(&text);
        let ip = text.trim_matches(['[', ']']).parse::<std::net::IpAddr>();
        if !matches!(name, Ok(crate::names::Pattern::Exact(_))) && ip.is_err() {
            return Err(cx.invalid(
                host,
                "admin.allowed_hosts",
                format!(
                    "`{}` is not a host name or address (give the name alone, without \
                     scheme, port or path: admin.example.net)",
                    host.get_ref()
                ),
            ));
        }
        allowed_hosts.push(text.trim_matches(['[', ']']).to_owned());
    }
    let settings = AdminSettings {
        bind,
        token_file,
        per_certificate_metrics: raw.per_certificate_metrics,
        allowed_hosts,
    };
    if settings.tls() && settings.token_file.is_none() {
        return Err(cx.invalid(
            &raw.bind,
            "admin.bind",
            format!(
                "{} is not a loopback address: set admin.token_file (every request then \
                 needs its token, and the interface speaks HTTPS with the server-wide \
                 certificate), or bind to 127.0.0.1 or unix:PATH",
                settings.bind
            ),
        ));
    }
    Ok(settings)
}

#[allow(clippy::type_complexity)]
fn listeners(
    cx: &Context<'_>,
    raw: Vec<RawListener>,
    server: &ServerSettings,
) -> Result<(Vec<ListenerConfig>, Vec<HttpListenerConfig>), ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::Syntax {
            path: cx.path.to_owned(),
            message: "no [[listener]] is configured; add at least one".into(),
        });
    }
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    let mut http = Vec::new();
    for l in raw {
        let name = l.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(cx.invalid(&l.name, "listener.name", "must not be empty"));
        }
        if seen.insert(name.clone(), ()).is_some() {
            return Err(cx.invalid(&l.name, "listener.name", format!("{name:?} is used twice")));
        }
        let bind_span = l.bind.span();
        let bind = l.bind.into_inner().into_vec();
        if bind.is_empty() {
            let span = Spanned::new(bind_span, ());
            return Err(cx.invalid(&span, "listener.bind", "needs at least one address"));
        }
        let backend = l
            .backend
            .as_ref()
            .map(|b| Backend::parse(b.get_ref()).map_err(|m| cx.invalid(b, "listener.backend", m)))
            .transpose()?;
        if l.protocol == Protocol::Http {
            for (set, key) in [
                (l.alpn.is_some(), "alpn"),
                (l.strict_sni, "strict_sni"),
                (l.greeting_name.is_some(), "greeting_name"),
                (l.public_port.is_some(), "public_port"),
            ] {
                if set {
                    return Err(cx.invalid(
                        &l.name,
                        &format!("listener.{key}"),
                        format!("listener {name:?} speaks plain HTTP: {key} does not apply"),
                    ));
                }
            }
            http.push(HttpListenerConfig {
                name,
                bind,
                backend,
                proxy_protocol: l.proxy_protocol,
            });
            continue;
        }
        let Some(backend) = backend else {
            return Err(cx.invalid(
                &l.name,
                "listener.backend",
                format!("listener {name:?} needs a backend (host:port)"),
            ));
        };
        let alpn = alpn(cx, l.protocol, l.alpn)?;
        let greeting_name = match &l.greeting_name {
            None => server.name.clone(),
            Some(raw) => {
                let name = raw.get_ref().trim();
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !ok {
                    return Err(cx.invalid(
                        raw,
                        "listener.greeting_name",
                        "must be a host name (letters, digits, '-' and '.')",
                    ));
                }
                name.to_owned()
            }
        };
        let public_port = match &l.public_port {
            Some(p) if *p.get_ref() == 0 => {
                return Err(cx.invalid(p, "listener.public_port", "must be a port from 1 to 65535"))
            }
            Some(p) => Some(*p.get_ref()),
            None => None,
        };
        let idle_timeout = duration(cx, l.idle_timeout, &LISTENER_IDLE)?
            .or(server.idle_timeout)
            .unwrap_or_else(|| l.protocol.default_idle_timeout());
        out.push(ListenerConfig {
            name,
            bind,
            protocol: l.protocol,
            backend,
            proxy_protocol: l.proxy_protocol,
            strict_sni: l.strict_sni,
            alpn,
            routes: Vec::new(),
            greeting_name,
            idle_timeout,
            public_port,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::Syntax {
            path: cx.path.to_owned(),
            message: "no TLS [[listener]] is configured (http listeners only redirect); \
                      add at least one"
                .into(),
        });
    }
    Ok((out, http))
}

fn alpn(
    cx: &Context<'_>,
    protocol: Protocol,
    raw: Option<Spanned<Vec<String>>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(protocol
            .default_alpn()
            .iter()
            .map(|s| s.to_string())
            .collect());
    };
    let allowed = protocol.allowed_alpn();
    for id in raw.get_ref() {
        if !allowed.contains(&id.as_str()) {
            let message = format!(
                "{id:?} cannot be offered on a {} listener (allowed: {})",
                protocol.as_str(),
                allowed.join(", ")
            );
            return Err(cx.invalid(&raw, "listener.alpn", message));
        }
    }
    Ok(raw.into_inner())
}

fn attach_routes(
    cx: &Context<'_>,
    raw: Vec<RawRoute>,
    listeners: &mut [ListenerConfig],
    http: &[HttpListenerConfig],
) -> Result<(), ConfigError> {
    let mut seen: HashMap<(Pattern, Option<String>), ()> = HashMap::new();
    for r in raw {
        let sni = Pattern::parse(r.sni.get_ref())
            .map_err(|e| cx.invalid(&r.sni, "route.sni", e.to_string()))?;
        let backend = Backend::parse(r.backend.get_ref())
            .map_err(|m| cx.invalid(&r.backend, "route.backend", m))?;
        let scope = r.listener.as_ref().map(|l| l.get_ref().clone());
        if let Some(l) = &r.listener {
            if http.iter().any(|h| h.name == *l.get_ref()) {
                let message = format!(
                    "listener {:?} speaks plain HTTP and relays to its own backend only",
                    l.get_ref()
                );
                return Err(cx.invalid(l, "route.listener", message));
            }
            if !listeners.iter().any(|x| x.name == *l.get_ref()) {
                let known: Vec<_> = listeners.iter().map(|x| x.name.as_str()).collect();
                let message = format!(
                    "no listener is named {:?} (known: {})",
                    l.get_ref(),
                    known.join(", ")
                );
                return Err(cx.invalid(l, "route.listener", message));
            }
        }
        if seen.insert((sni.clone(), scope.clone()), ()).is_some() {
            return Err(cx.invalid(
                &r.sni,
                "route.sni",
                format!("a route for {sni} is defined twice"),
            ));
        }
        let route = Route {
            sni,
            backend,
            proxy_protocol: r.proxy_protocol,
            scoped: scope.is_some(),
        };
        for l in listeners.iter_mut() {
            if scope.as_deref().is_none_or(|s| s == l.name) {
                l.routes.push(route.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
