//! The admin interface's connection slots, taken at accept: [`MAX_CONNECTIONS`] in all,
//! [`PER_CLIENT`] per client address, and [`PROBE_SLOTS`] beyond them ([`PROBE_PER_CLIENT`]
//! per client) that answer only `/healthz` and `/readyz`, so that strangers holding every
//! connection cannot fail an orchestrator's liveness probe.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one client address (an IPv6 /64 counts as one).
pub const PER_CLIENT: usize = 16;
/// Connections beyond the caps that answer one request for `/healthz` or `/readyz`; more
/// are closed at accept.
pub const PROBE_SLOTS: usize = 16;
/// Probe slots one client address may hold at once.
pub const PROBE_PER_CLIENT: usize = 2;

/// Connections open per client address.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The slots, and how many each client address holds.
#[derive(Debug)]
pub struct Slots {
    all: Arc<Semaphore>,
    probes: Arc<Semaphore>,
    clients: Counts,
    probing: Counts,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            all: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            probes: Arc::new(Semaphore::new(PROBE_SLOTS)),
            clients: Arc::default(),
            probing: Arc::default(),
        }
    }
}

/// A connection's slot, given back when it closes.
#[derive(Debug)]
pub enum Slot {
    /// A full one, counted against its client (`None`: a unix socket's).
    Full {
        _permit: OwnedSemaphorePermit,
        _client: Option<ClientCount>,
    },
    /// One request, for `/healthz` or `/readyz` only; why there is no full one.
    Probe {
        _permit: OwnedSemaphorePermit,
        _client: Option<ClientCount>,
        why: String,
    },
}

/// One connection counted against its client address.
#[derive(Debug)]
pub struct ClientCount {
    client: IpAddr,
    clients: Counts,
}

impl ClientCount {
    /// Counts a connection from `client` in `counts`, unless it holds `limit` already.
    fn take(counts: &Counts, client: IpAddr, limit: usize) -> Option<Self> {
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(client).or_default();
        if *n >= limit {
            if *n == 0 {
                map.remove(&client);
            }
            return None;
        }
        *n += 1;
        Some(Self {
            client,
            clients: Arc::clone(counts),
        })
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = clients.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

impl Slots {
    /// A slot for a connection from `peer` (`None`: a unix socket), if one is free.
    pub fn take(&self, peer: Option<SocketAddr>) -> Option<Slot> {
        let client = peer.map(|p| client_of(p.ip()));
        let counted = match client {
            None => Some(None),
            Some(client) => ClientCount::take(&self.clients, client, PER_CLIENT).map(Some),
        };
        let why = match counted {
            Some(count) => match Arc::clone(&self.all).try_acquire_owned() {
                Ok(permit) => {
                    return Some(Slot::Full {
                        _permit: permit,
                        _client: count,
                    })
                }
                Err(_) => format!("{MAX_CONNECTIONS} connections are open"),
            },
            None => format!(
                "{PER_CLIENT} connections are open from {}",
                client.map_or_else(String::new, |c| c.to_string())
            ),
        };
        let probing = match client {
            None => None,
            Some(client) => Some(ClientCount::take(&self.probing, client, PROBE_PER_CLIENT)?),
        };
        let permit = Arc::clone(&self.probes).try_acquire_owned().ok()?;
        Some(Slot::Probe {
            _permit: permit,
            _client: probing,
            why,
        })
    }
}

/// The client a connection counts against: its address, an IPv6 one by its /64 (one
/// host's privacy addresses are one client).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}
