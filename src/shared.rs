//! What connections share: their listener's settings ([`ListenerCtx`]) and everything
//! every listener shares ([`Shared`]): the store, the bounds, the connection cap and the
//! shutdown. Built at start-up by [`crate::server`], read by [`crate::listener`] and
//! [`crate::connection`].

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::certs::Store;
use crate::config::{Protocol, ServerSettings};
use crate::metrics::fallback::Recorder;
use crate::metrics::ListenerStats;
use crate::routes::RouteTable;
use crate::shutdown::Shutdown;

/// What every connection of one `[[listener]]` shares.
#[derive(Debug)]
pub struct ListenerCtx {
    /// The listener's name, for logs.
    pub name: Arc<str>,
    /// What is spoken inside TLS.
    pub protocol: Protocol,
    /// Base TLS configuration (policy, ALPN, tickets); each connection adds its certificate.
    pub tls: rustls::ServerConfig,
    /// Refuse names no certificate covers.
    pub strict_sni: bool,
    /// Backend per name.
    pub routes: RouteTable,
    /// The host name in the greetings of a STARTTLS listener.
    pub greeting_name: Arc<str>,
    /// Silence both ways for this long ends a session.
    pub idle_timeout: std::time::Duration,
    /// Its counters.
    pub stats: Arc<ListenerStats>,
}

/// What every connection of every listener shares.
#[derive(Debug)]
pub struct Shared {
    /// The certificate store.
    pub store: Arc<Store>,
    /// Timeouts and limits.
    pub settings: ServerSettings,
    /// One permit per open connection, `max_connections` in all.
    pub permits: Arc<Semaphore>,
    /// Stop, drain and cut.
    pub shutdown: Shutdown,
    /// The names served the server-wide certificate, counted for the admin interface's
    /// report (when it is on).
    pub fallback_names: Option<Arc<Recorder>>,
    /// `[acme]`: challenge answers and on-demand orders.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// `[onboarding]`: the setup documents the https listeners answer.
    pub onboarding: Option<Arc<crate::onboarding::Onboarding>>,
}
