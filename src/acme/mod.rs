//! Automatic certificates (`[acme]`): orders from an RFC 8555 CA for allowed names,
//! written into the store as `acme/NAME/` so that the checks, keep-last-good and the
//! watcher apply to them as to any other entry, and renewed before they run out.
//!
//! - [`challenges`]: pending tls-alpn-01 and http-01 answers, shared by a fleet through
//!   `state_dir`.
//! - [`http`]: the `protocol = "http"` listener (port 80).
//! - `manager`: what to order and when, within the limits.
//! - `order`: one order, and the account.
//! - `ask`: the operator's allow service, cached.
//! - `lease`: one order per name across instances.
//!
//! The handshake path sees [`Acme`] only: a ClientHello offering `acme-tls/1` is answered
//! from [`challenges`], and a handshake served the server-wide certificate hands its name
//! to the manager through a bounded queue (`try_send`, never a wait).

mod ari;
mod ask;
pub mod challenges;
pub mod http;
mod lease;
mod manager;
mod order;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use challenges::{Challenges, ACME_TLS_ALPN};

use crate::certs::{Installer, Store};
use crate::config::{Config, Protocol};

/// What connections and the port 80 listener share with the ACME manager.
#[derive(Debug)]
pub struct Acme {
    /// The answers to pending challenges.
    pub challenges: Arc<Challenges>,
    /// Names served the server-wide certificate, for on-demand orders.
    demand: Option<mpsc::Sender<Box<str>>>,
    /// `acme_orders_total{result}`.
    pub stats: OrderStats,
}

impl Acme {
    /// A handshake for `sni` was served the server-wide certificate (or refused by a
    /// strict listener): the manager may order it. Never waits.
    pub fn wanted(&self, sni: &str) {
        if let Some(demand) = &self.demand {
            let _ = demand.try_send(sni.into());
        }
    }
}

/// Orders by result.
#[derive(Debug, Default)]
pub struct OrderStats {
    valid: AtomicU64,
    failed: AtomicU64,
}

impl OrderStats {
    fn count(&self, result: &str) {
        let counter = match result {
            "valid" => &self.valid,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(result, orders)` for `acme_orders_total{result}`.
    pub fn results(&self) -> [(&'static str, u64); 2] {
        [
            ("valid", self.valid.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }
}

/// The manager, ready to run, and the handle connections use.
pub struct Started {
    pub handle: Arc<Acme>,
    manager: manager::Manager,
}

impl Started {
    /// Runs the manager until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        self.manager.run(stop).await
    }
}

/// Sets up ACME for `config` (`None` without `[acme]`).
pub fn start(config: &Config, store: Arc<Store>, installer: Installer) -> Option<Started> {
    let settings = config.acme.clone()?;
    let answers = order::Answers {
        tls_alpn: config
            .listeners
            .iter()
            .any(|l| l.protocol == Protocol::Https),
        http: !config.http.is_empty(),
    };
    let (tx, rx) = mpsc::channel(manager::DEMAND_QUEUE);
    let handle = Arc::new(Acme {
        challenges: Arc::new(Challenges::new(&settings.state_dir)),
        demand: settings.on_demand.then_some(tx),
        stats: OrderStats::default(),
    });
    let manager = manager::Manager::new(
        settings,
        &config.certs.dir,
        (store, installer),
        Arc::clone(&handle),
        answers,
        config.route_names(),
        rx,
    );
    Some(Started { handle, manager })
}

/// `error` and each of its causes, joined by ": ", each said once: a cause whose words
/// the text already holds is left out. The CA's API, `ask` and renewal information fail
/// through hyper, whose own message ("client error (Connect)") names no reason; the
/// reason (a certificate the API's roots do not trust, a refused connection) is a cause.
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

/// When a certificate for `name` valid from `not_before` to `not_after` (Unix times) is
/// renewed: two thirds into its lifetime, moved earlier by up to a twentieth of it (a
/// fixed amount per name, so that names issued together do not renew together, and the
/// report and the manager agree without sharing anything).
pub fn renewal_due(name: &str, not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let jitter_span = (lifetime / 20).max(1);
    // FNV-1a: stable across runs and builds.
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let jitter = (hash % jitter_span as u64) as i64;
    not_before + lifetime * 2 / 3 - jitter
}

/// A rustls client configuration trusting the certificates in `bundle`.
fn client_config(bundle: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(bundle) = bundle {
        let iter = CertificateDer::pem_file_iter(bundle)
            .map_err(|e| format!("acme.ca_bundle {}: {e}", bundle.display()))?;
        for cert in iter {
            let cert = cert.map_err(|e| format!("acme.ca_bundle {}: {e}", bundle.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("acme.ca_bundle {}: {e}", bundle.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "acme.ca_bundle {} holds no certificate",
                bundle.display()
            ));
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_two_thirds_in_with_a_jitter_of_a_twentieth() {
        let (nb, na) = (1_000_000, 1_000_000 + 90 * 86_400);
        for name in ["a.example.com", "b.example.com", "mail.example.net"] {
            let due = renewal_due(name, nb, na);
            assert!(due <= nb + 60 * 86_400 && due > nb + 60 * 86_400 - 90 * 86_400 / 20);
            assert_eq!(due, renewal_due(name, nb, na));
        }
        // Short-lived: 6 days renew after 4, a 30-second test certificate after 20.
        let due = renewal_due("x.example.com", 0, 6 * 86_400);
        assert!((4 * 86_400 - 6 * 86_400 / 20..=4 * 86_400).contains(&due));
        assert!((19..=20).contains(&renewal_due("x.example.com", 0, 30)));
    }
}
