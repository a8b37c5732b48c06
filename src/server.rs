//! Start-up and the run loop: bind every listener, become `server.user` if set, load the
//! store, serve until the shutdown future resolves, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info};

use crate::acme::{self, http::HttpCtx};
use crate::admin::{self, Admin, AdminError};
use crate::certs::{self, CertError, Reloader, Store};
use crate::config::Config;
use crate::listener;
use crate::metrics::fallback::{self, Recorder, TopNames};
use crate::metrics::{Exposition, ListenerStats};
use crate::onboarding::periodic::Periodic;
use crate::onboarding::readiness::Checker;
use crate::onboarding::Onboarding;
use crate::privilege::{self, Account, PrivilegeError};
use crate::routes::Backends;
use crate::routes::RouteTable;
use crate::shared::{ListenerCtx, Shared};
use crate::shutdown::{DrainReport, Shutdown};
use crate::tickets::{TicketKeys, TicketKeysError};
use crate::tls;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The server-wide certificate is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A listen address cannot be bound.
    #[error("listener {listener}: cannot listen on {addr}: {error}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// `server.ticket_keys` cannot be used.
    #[error(transparent)]
    TicketKeys(#[from] TicketKeysError),
    /// The process cannot become `server.user`.
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    /// rustls refused the TLS policy (a bug, not an operator error).
    #[error("listener {listener}: TLS configuration refused: {error}")]
    Tls {
        listener: String,
        error: rustls::Error,
    },
    /// The admin interface cannot listen, or its token cannot be used.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// A proxy with its store loaded and its sockets bound, not yet accepting.
pub struct Server {
    listeners: Vec<(Arc<ListenerCtx>, Vec<std::net::TcpListener>)>,
    shared: Arc<Shared>,
    /// Keeps the store in step with the disk once the server runs.
    reloader: Reloader,
    drain_timeout: std::time::Duration,
    /// The admin interface, when configured, and what it shows.
    admin: Option<(Admin, AdminParts)>,
    /// Set once the listeners accept: `/readyz`.
    ready: Arc<AtomicBool>,
    /// `protocol = "http"` listeners (port 80).
    http: Vec<(Arc<HttpCtx>, Vec<std::net::TcpListener>)>,
    /// The ACME manager, with `[acme]`.
    acme: Option<acme::Started>,
    /// `server.ticket_keys`, watched while serving.
    ticket_keys: Option<Arc<TicketKeys>>,
    /// The domain readiness checks (`[onboarding]`), started with the server.
    readiness: Option<Periodic>,
}

/// What the admin interface is given besides its socket.
struct AdminParts {
    config: Config,
    exposition: Arc<Exposition>,
    names: (Arc<Recorder>, crate::metrics::fallback::Receiver),
}

impl Server {
    /// Binds every listener address, becomes `server.user` if one is set, and loads the
    /// store (generating the server-wide certificate if need be) as that user.
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        // Looked up before anything is bound, so that a wrong name fails fast.
        let account = config
            .server
            .user
            .as_deref()
            .map(Account::lookup)
            .transpose()?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let provider = tls::provider();
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            bound.push((l, bind_all(&l.name, &l.bind)?));
        }
        let mut http_sockets = Vec::with_capacity(config.http.len());
        for h in &config.http {
            http_sockets.push((h, bind_all(&h.name, &h.bind)?));
        }
        // Bound (and its token read) while still root, like the listeners.
        let owner = account.as_ref().map(|a| (a.uid, a.gid));
        let admin = config
            .admin
            .as_ref()
            .map(|a| Admin::bind(a, owner))
            .transpose()?;
        if let Some(account) = &account {
            privilege::become_user(account)?;
            info!(user = %account.name, uid = account.uid, gid = account.gid, "running as server.user");
        }
        // Read as the user that reads it again at each rotation.
        let ticket_keys = config
            .server
            .ticket_keys
            .as_deref()
            .map(TicketKeys::open)
            .transpose()?;
        let mut listeners = Vec::with_capacity(bound.len());
        let mut backends = Backends::default();
        // The ports the setup documents list: a listener's `public_port`, else where it is
        // bound (port 0 in a config is the kernel's choice).
        let mut ports = Vec::with_capacity(bound.len());
        for (l, sockets) in bound {
            let bound_port = sockets.first().and_then(|s| s.local_addr().ok());
            if let Some(port) = l.public_port.or(bound_port.map(|a| a.port())) {
                ports.push((l.protocol, port));
            }
            let tickets = ticket_keys.as_ref().map(|k| k.for_listener(&l.name));
            let tls = tls::server_config(
                Arc::clone(&provider),
                &l.alpn,
                tickets,
                config.server.session_tickets,
            )
            .map_err(|error| StartError::Tls {
                listener: l.name.clone(),
                error,
            })?;
            let ctx = Arc::new(ListenerCtx {
                name: l.name.as_str().into(),
                protocol: l.protocol,
                tls,
                strict_sni: l.strict_sni,
                routes: RouteTable::new(l, &mut backends),
                greeting_name: l.greeting_name.as_str().into(),
                idle_timeout: l.idle_timeout,
                stats: Arc::new(ListenerStats::new(l.name.as_str().into())),
            });
            listeners.push((ctx, sockets));
        }
        let (store, reloader) = certs::open(&config.certs, &config.server.name, &provider)?;
        let per_entry = config
            .admin
            .as_ref()
            .is_some_and(|a| a.per_certificate_metrics);
        let reloader = reloader.per_entry_metrics(per_entry);
        let acme = acme::start(config, Arc::clone(&store), reloader.installer());
        let handle = acme.as_ref().map(|a| Arc::clone(&a.handle));
        let http = http_sockets
            .into_iter()
            .map(|(h, sockets)| {
                let challenges = handle.as_ref().map(|a| Arc::clone(&a.challenges));
                (Arc::new(HttpCtx::new(h, challenges)), sockets)
            })
            .collect();
        let onboarding = Onboarding::new(config, &ports);
        let readiness = config.onboarding.as_ref().and_then(|o| {
            let interval = o.check_interval?;
            match Checker::new(config, o.resolver) {
                Ok(checker) => Some(Periodic {
                    checker: Arc::new(checker),
                    checked: Arc::default(),
                    reports: reloader.reports(),
                    store: Arc::clone(&store),
                    config: config.clone(),
                    interval,
                    per_second: o.checks_per_second,
                }),
                Err(e) => {
                    tracing::warn!(reason = %e, "domain readiness checks are off");
                    None
                }
            }
        });
        let admin = admin.map(|admin| {
            let exposition = Arc::new(Exposition {
                listeners: listeners
                    .iter()
                    .map(|(l, _)| Arc::clone(&l.stats))
                    .collect(),
                backends: backends.all(),
                store: Arc::clone(&store),
                per_certificate: per_entry,
                acme: handle.clone(),
                ticket_keys: ticket_keys.clone(),
                onboarding: onboarding.clone(),
                domains: readiness.as_ref().map(|r| Arc::clone(&r.checked)),
            });
            let (recorder, rx) = Recorder::new();
            let parts = AdminParts {
                config: config.clone(),
                exposition,
                names: (Arc::new(recorder), rx),
            };
            (admin, parts)
        });
        let shared = Arc::new(Shared {
            store,
            settings: config.server.clone(),
            permits: Arc::new(Semaphore::new(config.server.max_connections)),
            shutdown: Shutdown::default(),
            fallback_names: admin.as_ref().map(|(_, p)| Arc::clone(&p.names.0)),
            acme: handle,
            onboarding,
        });
        Ok(Self {
            listeners,
            shared,
            reloader,
            drain_timeout: config.server.drain_timeout,
            admin,
            ready: Arc::new(AtomicBool::new(false)),
            http,
            acme,
            ticket_keys,
            readiness,
        })
    }

    /// Every bound address with its listener's name (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let tls = self.listeners.iter().map(|(ctx, s)| (&ctx.name, s));
        let http = self.http.iter().map(|(ctx, s)| (&ctx.name, s));
        tls.chain(http)
            .flat_map(|(name, sockets)| {
                sockets
                    .iter()
                    .filter_map(|s| s.local_addr().ok())
                    .map(|a| (name.to_string(), a))
            })
            .collect()
    }

    /// The admin interface's address, when it listens on TCP.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(a, _)| a.local_addr())
    }

    /// The certificate store the listeners serve from.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.shared.store)
    }

    /// Serves until `shutdown` resolves, then drains for `drain_timeout`; `cut_now`
    /// resolving during the drain ends it early.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        cut_now: impl Future<Output = ()>,
    ) -> DrainReport {
        let stop = self.shared.shutdown.clone();
        // Bound and loaded: the accept loops below take what the kernel queues meanwhile.
        self.ready.store(true, Ordering::Release);
        if let Some((admin, parts)) = self.admin {
            let AdminParts {
                config,
                exposition,
                names: (recorder, rx),
            } = parts;
            let names = Arc::new(Mutex::new(TopNames::new(fallback::SLOTS)));
            let state = admin::State {
                token: None,
                exposition,
                reports: self.reloader.reports(),
                config,
                names: Arc::clone(&names),
                recorder,
                ready: Arc::clone(&self.ready),
                store: Arc::clone(&self.shared.store),
                installer: self.reloader.installer(),
                // Made by `serve` from the admin settings, as `token` and `tls` are.
                hosts: Default::default(),
                sessions: Default::default(),
                tls: false,
                domains: self.readiness.as_ref().map(|r| Arc::clone(&r.checked)),
            };
            // Not tracked: the admin interface does not hold up the drain.
            tokio::spawn(fallback::run(rx, names, stop.stop_accepting.clone()));
            tokio::spawn(admin.serve(state, stop.stop_accepting.clone()));
        }
        if let Some(periodic) = self.readiness {
            // Not tracked: a pass under way is dropped at shutdown.
            tokio::spawn(periodic.run(stop.stop_accepting.clone()));
        }
        stop.tracker
            .spawn(self.reloader.run(stop.stop_accepting.clone()));
        if let Some(keys) = self.ticket_keys {
            tokio::spawn(keys.watch(stop.stop_accepting.clone()));
        }
        if let Some(acme) = self.acme {
            // Not tracked: an order under way is dropped at shutdown (its lock is
            // released, and the next start orders again).
            tokio::spawn(acme.run(stop.stop_accepting.clone()));
        }
        for (ctx, sockets) in self.http {
            for socket in serving(&ctx.name, "http", sockets) {
                stop.tracker.spawn(acme::http::accept_loop(
                    socket,
                    Arc::clone(&ctx),
                    Arc::clone(&self.shared),
                ));
            }
        }
        for (ctx, sockets) in self.listeners {
            for socket in serving(&ctx.name, ctx.protocol.as_str(), sockets) {
                stop.tracker.spawn(listener::accept_loop(
                    socket,
                    Arc::clone(&ctx),
                    Arc::clone(&self.shared),
                ));
            }
        }
        shutdown.await;
        let open = stop.tracker.len();
        info!(drain_timeout = ?self.drain_timeout, tasks = open, "shutting down: no new connections; draining");
        let report = stop.drain(self.drain_timeout, cut_now).await;
        info!(cut = report.cut, "shutdown complete");
        report
    }
}

/// Binds every address of listener `name`.
fn bind_all(name: &str, addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, StartError> {
    addrs
        .iter()
        .map(|&addr| {
            listener::bind(addr).map_err(|error| StartError::Bind {
                listener: name.to_owned(),
                addr,
                error,
            })
        })
        .collect()
}

/// A listener's bound sockets, watched by tokio, each logged as listening; one tokio
/// cannot watch is logged and not served.
fn serving(name: &str, protocol: &str, sockets: Vec<std::net::TcpListener>) -> Vec<TcpListener> {
    sockets
        .into_iter()
        .filter_map(|socket| match TcpListener::from_std(socket) {
            Ok(socket) => {
                if let Ok(addr) = socket.local_addr() {
                    info!(listener = %name, %addr, protocol, "listening");
                }
                Some(socket)
            }
            Err(e) => {
                error!(listener = %name, reason = %e, "cannot watch a bound socket; it is not served");
                None
            }
        })
        .collect()
}
