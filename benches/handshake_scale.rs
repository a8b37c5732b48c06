//! Handshake cost against store size, counted in instructions rather than seconds: on two
//! shared cores a time measurement drifts by more than the 5 % it is meant to show.
//!
//! `cargo bench --bench handshake_scale -- 1 10000 100000`
//!
//! For each store size N this runs itself under `valgrind --tool=callgrind`. The child
//! builds an index of N entries (each its own `Served`, sharing one ECDSA P-256 key so
//! that building 100,000 of them under valgrind takes seconds) and does full TLS 1.3
//! handshakes in memory, client and server in one thread, to names spread over the store.
//! Only the server's side is counted (`--toggle-collect` on the two functions below that
//! the server's work runs in): reading the ClientHello, choosing the certificate from the
//! published index, the connection's configuration, and the rustls server handshake with
//! its signature and tickets — everything `tls::handshake` does except socket I/O.
//!
//! Instruction counts miss what a bigger index costs in cache misses, so callgrind also
//! simulates the caches, and the table gives Cachegrind's usual estimate of cycles
//! (instructions + 10 per first-level miss + 100 per last-level miss) beside them.

mod common;

use std::process::Command;
use std::sync::Arc;

use mailfront::certs::{Fixed, Index, Match, Served, Store};
use mailfront::names::Pattern;
use rustls::server::{Acceptor, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::ClientConnection;

/// Handshakes counted per store size.
const HANDSHAKES: usize = 400;
/// Handshakes done first and not counted (first-use costs: the RNG, the ticketer).
const WARM_UP: usize = 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let n = args[1].parse().unwrap();
        child(n);
        return;
    }
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![1, 10_000, 100_000]
    } else {
        sizes
    };
    let me = std::env::current_exe().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    println!(
        "| entries | server instructions per handshake | last-level cache misses per handshake | estimated cycles per handshake | ratio to {} |",
        sizes[0]
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let mut base = None;
    for n in sizes {
        let out = out_dir.path().join(format!("callgrind.{n}"));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--cache-sim=yes")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg("--toggle-collect=*counted_server_hello*")
            .arg("--toggle-collect=*counted_server_finish*")
            .arg(&me)
            .args(["--child", &n.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("valgrind runs (apt-get install valgrind)");
        assert!(
            status.success(),
            "the callgrind child failed for {n} entries"
        );
        let c = Counts::read(&out);
        let per = |v: u64| v as f64 / HANDSHAKES as f64;
        let cycles = per(c.cycles());
        let first = *base.get_or_insert(cycles);
        println!(
            "| {n} | {:.0} | {:.1} | {cycles:.0} | {:.4} |",
            per(c.get("Ir")),
            per(c.get("ILmr") + c.get("DLmr") + c.get("DLmw")),
            cycles / first
        );
    }
}

/// The event totals of a callgrind output file, by name (`Ir`, `D1mr`, `DLmr`, ...).
struct Counts(std::collections::HashMap<String, u64>);

impl Counts {
    fn read(path: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap();
        let line = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("callgrind wrote no {prefix} line"))
        };
        let names = line("events:").split_whitespace();
        let values = line("summary:")
            .split_whitespace()
            .map(|v| v.parse().unwrap());
        Self(names.map(str::to_owned).zip(values).collect())
    }

    fn get(&self, event: &str) -> u64 {
        self.0.get(event).copied().unwrap_or(0)
    }

    /// Cachegrind's estimate: Ir + 10 x (first-level misses) + 100 x (last-level misses).
    fn cycles(&self) -> u64 {
        let l1 = self.get("I1mr") + self.get("D1mr") + self.get("D1mw");
        let ll = self.get("ILmr") + self.get("DLmr") + self.get("DLmw");
        self.get("Ir") + 10 * l1 + 100 * ll
    }
}

fn name_of(i: usize) -> String {
    format!("d{i:07}.example.test")
}

fn child(n: usize) {
    let provider = mailfront::tls::provider();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der).unwrap();
    let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
    let resolver = Arc::new(Fixed(certified));
    let served = |id: &str| {
        Arc::new(Served {
            id: id.into(),
            resolver: resolver.clone(),
            algorithm: rustls::SignatureAlgorithm::ECDSA,
            schemes: vec![rustls::SignatureScheme::ECDSA_NISTP256_SHA256].into(),
            not_after: 0,
            not_before: 0,
            problems: Default::default(),
            trusted: true,
        })
    };
    let fallback = served("server");
    let updates = (0..n)
        .map(|i| {
            let name = name_of(i);
            (Pattern::parse(&name).unwrap(), vec![served(&name)])
        })
        .collect();
    let index = Index::empty(fallback.clone()).with_updates(fallback, n, updates);
    let store = Store::new(index);
    let base = mailfront::tls::server_config(
        provider,
        &[],
        None,
        mailfront::config::DEFAULT_SESSION_TICKETS,
    )
    .unwrap();
    let client = Arc::new(common::client_config());
    for i in 0..WARM_UP {
        handshake(&client, &base, &store, &name_of(i % n), false);
    }
    for i in 0..HANDSHAKES {
        handshake(&client, &base, &store, &name_of(i * 7919 % n), true);
    }
}

/// One full handshake to `name`, checking that the store chose that name's entry.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    base: &ServerConfig,
    store: &Store,
    name: &str,
    counted: bool,
) {
    let mut client =
        ClientConnection::new(Arc::clone(client), name.to_owned().try_into().unwrap()).unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let (mut server, cert) = if counted {
        counted_server_hello(&wire, base, store)
    } else {
        server_hello(&wire, base, store)
    };
    assert_eq!(&*cert, name, "the store chose the entry for the name asked");
    wire.clear();
    server.write_tls(&mut wire).unwrap();
    client.read_tls(&mut wire.as_slice()).unwrap();
    client.process_new_packets().unwrap();
    wire.clear();
    client.write_tls(&mut wire).unwrap();
    if counted {
        counted_server_finish(&mut server, &wire);
    } else {
        server_finish(&mut server, &wire);
    }
    assert!(!server.is_handshaking() && !client.is_handshaking());
}

/// The server's first flight: ClientHello in, certificate chosen, ServerHello to Finished
/// produced (the signature is made here).
#[inline(always)]
fn server_hello(wire: &[u8], base: &ServerConfig, store: &Store) -> (ServerConnection, Arc<str>) {
    let mut acceptor = Acceptor::default();
    acceptor.read_tls(&mut &wire[..]).unwrap();
    let accepted = acceptor.accept().ok().flatten().unwrap();
    let chosen = mailfront::tls::choose(&accepted.client_hello(), store);
    assert_eq!(chosen.matched, Match::Exact);
    let config = mailfront::tls::connection_config(base, chosen.resolver);
    let mut server = accepted
        .into_connection(config)
        .map_err(|(e, _)| e)
        .unwrap();
    server.process_new_packets().unwrap();
    (server, chosen.cert)
}

/// The server's second step: the client's Finished in, session tickets out.
#[inline(always)]
fn server_finish(server: &mut ServerConnection, wire: &[u8]) {
    server.read_tls(&mut &wire[..]).unwrap();
    server.process_new_packets().unwrap();
    let mut tickets = Vec::new();
    server.write_tls(&mut tickets).unwrap();
}

#[inline(never)]
fn counted_server_hello(
    wire: &[u8],
    base: &ServerConfig,
    store: &Store,
) -> (ServerConnection, Arc<str>) {
    server_hello(wire, base, store)
}

#[inline(never)]
fn counted_server_finish(server: &mut ServerConnection, wire: &[u8]) {
    server_finish(server, wire)
}
