//! Per-name backend overrides (`[[route]]`) of one listener, matched by the same rules as
//! certificates: exact name first, then a one-label wildcard.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Backend, ListenerConfig, ProxyProtocol};
use crate::metrics::BackendStats;
use crate::names::{normalize, wildcard_parent, Pattern};

/// Where a connection goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend address.
    pub backend: Backend,
    /// PROXY protocol towards it.
    pub proxy_protocol: ProxyProtocol,
    /// The backend's error counters, shared by every route to it.
    pub stats: Arc<BackendStats>,
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        (&self.backend, self.proxy_protocol) == (&other.backend, other.proxy_protocol)
    }
}

impl Eq for Target {}

/// The error counters of every backend, by address: one set per address however many
/// routes lead there.
#[derive(Debug, Default)]
pub struct Backends(HashMap<String, Arc<BackendStats>>);

impl Backends {
    /// The counters of `backend`, made at its first use.
    pub fn stats(&mut self, backend: &Backend) -> Arc<BackendStats> {
        let name = backend.to_string();
        let stats = self.0.entry(name.clone());
        Arc::clone(stats.or_insert_with(|| Arc::new(BackendStats::new(&name))))
    }

    /// Every backend's counters, by address.
    pub fn all(&self) -> Vec<Arc<BackendStats>> {
        let mut all: Vec<_> = self.0.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, s)| Arc::clone(s)).collect()
    }
}

/// A listener's routes and its default target.
#[derive(Debug)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Target>,
    wildcard: HashMap<Box<str>, Target>,
    default: Target,
}

impl RouteTable {
    /// Builds the table of `listener`; a route scoped to it beats one for every listener.
    /// Each backend's counters come from `backends`.
    pub fn new(listener: &ListenerConfig, backends: &mut Backends) -> Self {
        let mut table = Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: Target {
                backend: listener.backend.clone(),
                proxy_protocol: listener.proxy_protocol,
                stats: backends.stats(&listener.backend),
            },
        };
        let (scoped, global): (Vec<_>, Vec<_>) = listener.routes.iter().partition(|r| r.scoped);
        for route in global.into_iter().chain(scoped) {
            let target = Target {
                backend: route.backend.clone(),
                proxy_protocol: route.proxy_protocol.unwrap_or(listener.proxy_protocol),
                stats: backends.stats(&route.backend),
            };
            match &route.sni {
                Pattern::Exact(name) => table.exact.insert(name.clone(), target),
                Pattern::Wildcard(parent) => table.wildcard.insert(parent.clone(), target),
            };
        }
        table
    }

    /// The target for a connection that asked for `sni`.
    pub fn target(&self, sni: Option<&str>) -> &Target {
        let Some(sni) = sni else {
            return &self.default;
        };
        let name = normalize(sni);
        self.exact
            .get(name.as_ref())
            .or_else(|| wildcard_parent(&name).and_then(|p| self.wildcard.get(p)))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    #[test]
    fn exact_then_wildcard_then_listener_default_and_scoped_wins() {
        let text = r#"
            [server]
            name = "server.com"
            [certs]
            dir = "d"
            [[listener]]
            name = "https"
            bind = "127.0.0.1:0"
            protocol = "https"
            backend = "127.0.0.1:1"
            [[route]]
            sni = "*.example.net"
            backend = "127.0.0.1:2"
            proxy_protocol = "v1"
            [[route]]
            sni = "webmail.example.net"
            backend = "127.0.0.1:3"
            [[route]]
            sni = "a.example.org"
            listener = "https"
            backend = "127.0.0.1:5"
            [[route]]
            sni = "a.example.org"
            backend = "127.0.0.1:4"
        "#;
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let table = RouteTable::new(&config.listeners[0], &mut Backends::default());
        let to = |sni| table.target(sni).backend.as_str().to_owned();
        assert_eq!(to(Some("WebMail.example.net.")), "127.0.0.1:3");
        assert_eq!(to(Some("x.example.net")), "127.0.0.1:2");
        assert_eq!(
            table.target(Some("x.example.net")).proxy_protocol,
            ProxyProtocol::V1
        );
        assert_eq!(to(Some("a.b.example.net")), "127.0.0.1:1");
        assert_eq!(to(Some("example.net")), "127.0.0.1:1");
        assert_eq!(to(None), "127.0.0.1:1");
        assert_eq!(to(Some("a.example.org")), "127.0.0.1:5");
    }
}
