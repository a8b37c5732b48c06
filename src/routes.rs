//! Per-name backend overrides (`[[route]]`) of one listener, matched by the same rules as
//! certificates: exact name first, then a one-label wildcard.

use std::collections::HashMap;

use crate::config::{Backend, ListenerConfig, ProxyProtocol};
use crate::names::{normalize, wildcard_parent, Pattern};

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The backend address.
    pub backend: Backend,
    /// PROXY protocol towards it.
    pub proxy_protocol: ProxyProtocol,
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
    pub fn new(listener: &ListenerConfig) -> Self {
        let mut table = Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: Target {
                backend: listener.backend.clone(),
                proxy_protocol: listener.proxy_protocol,
            },
        };
        let (scoped, global): (Vec<_>, Vec<_>) = listener.routes.iter().partition(|r| r.scoped);
        for route in global.into_iter().chain(scoped) {
            let target = Target {
                backend: route.backend.clone(),
                proxy_protocol: route.proxy_protocol.unwrap_or(listener.proxy_protocol),
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
        let table = RouteTable::new(&config.listeners[0]);
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
