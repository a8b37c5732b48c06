//! mailfront: a TLS-terminating front proxy for mail hosts.
//!
//! A connection's life, and the module that owns each step:
//!
//! - [`config`]: the TOML file, validated into a [`config::Config`].
//! - [`certs`]: the certificate store (discover, load, index, server-wide fallback),
//!   published through `ArcSwap` and read by handshakes without a lock.
//! - [`server`]: start-up (store, sockets) and the run loop with graceful shutdown.
//! - [`shared`]: what connections share: their listener's settings, the store, the bounds.
//! - [`listener`]: accept loops, the connection cap, back-off on accept errors.
//! - [`connection`]: one connection from handshake to its closing log line.
//! - [`starttls`]: the plain-text start of SMTP, IMAP and POP3 sessions on STARTTLS
//!   listeners, and the backend greeting the client must not see twice.
//! - [`tickets`]: session ticket keys shared by a fleet (`server.ticket_keys`).
//! - [`tls`]: the TLS policy and the handshake that picks a certificate by SNI.
//! - [`read_ahead`]: the client socket under TLS, read in large batches.
//! - [`routes`]: backend per SNI (`[[route]]`).
//! - [`proxy_header`]: PROXY protocol v1/v2 towards the backend.
//! - [`relay`]: backend connect and the two-way copy with half-close and idle bound.
//! - [`shutdown`]: stop accepting, drain, cut.
//! - [`privilege`]: becoming `server.user` once the listeners are bound.
//! - [`names`]: DNS name normalisation and wildcard rules shared by certs and routes.
//! - [`inspect`]: `mailfront check` and `mailfront certs`.
//! - [`metrics`]: the counters connections keep, and their Prometheus exposition.
//! - [`admin`]: the operator's HTTP interface (health, metrics, the report).
//! - [`acme`]: certificates ordered from an ACME CA, the challenges, the port 80 listener.
//! - [`onboarding`]: client-setup documents on the https listeners, DNS readiness of domains.

pub mod acme;
pub mod admin;
pub mod certs;
pub mod config;
pub mod connection;
pub mod inspect;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod onboarding;
pub mod privilege;
pub mod proxy_header;
pub mod read_ahead;
pub mod relay;
pub mod routes;
pub mod server;
pub mod shared;
pub mod shutdown;
pub mod starttls;
pub mod tickets;
pub mod tls;

pub use config::Config;
pub use server::{Server, StartError};
