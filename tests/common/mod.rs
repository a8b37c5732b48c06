//! Shared test fixtures: an rcgen PKI written to a tempdir, the proxy on 127.0.0.1:0, small
//! backends that speak just enough IMAP/POP3/SMTP/HTTP, and rustls and CLI clients.

#![allow(dead_code)]

pub mod backend;
pub mod chains;
pub mod client;
pub mod dns;
pub mod pebble;
pub mod pki;
pub mod running;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use mailfront::shutdown::DrainReport;
use mailfront::{Config, Server};

#[allow(unused_imports)]
pub use pki::{KeyKind, Pki};

/// A running proxy; dropping it stops it.
pub struct Proxy {
    /// First bound address of each listener, by name.
    pub addrs: HashMap<String, SocketAddr>,
    /// Every bound address, in config order.
    pub bound: Vec<SocketAddr>,
    /// The store it serves from.
    pub store: std::sync::Arc<mailfront::certs::Store>,
    /// The admin interface's address, when `[admin]` listens on TCP.
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    cut: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<DrainReport>>,
}

impl Proxy {
    /// Starts a proxy from config text (written into `dir` as `mailfront.toml`).
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_loaded_then(dir, config, || {})
    }

    /// Like [`Proxy::start`], running `between` once the store is loaded and before the
    /// proxy serves (and watches the store).
    pub fn start_loaded_then(dir: &Path, config: &str, between: impl FnOnce()) -> Self {
        // RUST_LOG=debug shows the proxy's log lines with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let path = dir.join("mailfront.toml");
        std::fs::write(&path, config).unwrap();
        let config = Config::load(&path).unwrap();
        let server = Server::bind(&config).unwrap();
        let store = server.store();
        let admin = server.admin_addr();
        between();
        let mut addrs = HashMap::new();
        let mut bound = Vec::new();
        for (name, addr) in server.local_addrs() {
            addrs.entry(name).or_insert(addr);
            bound.push(addr);
        }
        let (stop, stopped) = oneshot::channel();
        let (cut, cut_rx) = oneshot::channel();
        let task = tokio::spawn(server.run(
            async move {
                let _ = stopped.await;
            },
            async move {
                let _ = cut_rx.await;
            },
        ));
        Self {
            addrs,
            bound,
            store,
            admin,
            stop: Some(stop),
            cut: Some(cut),
            task: Some(task),
        }
    }

    /// Waits until a refresh of the store that started at `since` or later has completed
    /// (at most 5 s): whatever was written after `since` has been looked at, and what
    /// handshakes get now is its outcome. Take `since` ([`std::time::Instant::now`])
    /// before writing: a refresh started by the write may be over before this is called.
    /// A test that checks that a change did *not* take effect waits here rather than for
    /// a guessed time.
    pub async fn settled_since(&self, since: std::time::Instant) {
        let refreshed = self.store.refreshed_since(since);
        tokio::time::timeout(Duration::from_secs(5), refreshed)
            .await
            .expect("a refresh of the store within 5 s");
    }

    /// The value of the sample `sample` (name and labels) in the admin interface's
    /// metrics, 0 when absent.
    #[allow(dead_code)]
    pub async fn metric(&self, sample: &str) -> u64 {
        let url = format!("http://{}/metrics", self.admin.expect("[admin] on TCP"));
        let out = client::run("curl", &["-sS", &url]).await;
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// Starts a graceful shutdown and waits for it to finish (bounded).
    pub async fn shutdown(mut self) -> DrainReport {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("shutdown finishes within 30 s")
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(cut) = self.cut.take() {
            let _ = cut.send(());
        }
    }
}

/// One `[[listener]]` block on 127.0.0.1:0.
pub fn listener(name: &str, protocol: &str, backend: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nbind = [\"127.0.0.1:0\"]\nprotocol = \"{protocol}\"\nbackend = \"{backend}\"\n{extra}\n"
    )
}

/// A `[server]` + `[certs]` head with short timeouts, the store at `store`.
pub fn head(pki_dir: &Path, store: &Path, server: &str) -> String {
    format!(
        "[server]\nname = \"server.com\"\nhandshake_timeout = \"2s\"\nconnect_timeout = \"2s\"\n\
         idle_timeout = \"30s\"\ndrain_timeout = \"3s\"\n{server}\n\
         [certs]\ndir = \"{}\"\ndefault_cert = \"{}\"\ndefault_key = \"{}\"\n\n",
        store.display(),
        pki_dir.join("server.com.crt").display(),
        pki_dir.join("server.com.key").display(),
    )
}

/// A store directory under `root`.
pub fn store_dir(root: &Path) -> PathBuf {
    let dir = root.join("store");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
pub async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Polls the async `check` every 50 ms until it is true or `limit` passes.
pub async fn wait_for_async<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// A proxy with one `https` listener in front of a test HTTP backend, and a store holding
/// an ECDSA certificate for webmail.example.net.
pub async fn webmail_proxy(root: &Path) -> (Pki, Proxy, backend::Backend) {
    let pki = Pki::new(root);
    let store = store_dir(root);
    pki.write_pair(&store, "webmail", &["webmail.example.net"], KeyKind::Ecdsa);
    let http = backend::Backend::http().await;
    let config = format!(
        "{}{}",
        head(root, &store, ""),
        listener("https", "https", http.addr, "")
    );
    (pki, Proxy::start(root, &config), http)
}

/// Writes `root/m.toml`: the test head with the store at `store` and one `imaps` listener
/// in front of `backend`; returns its path.
pub fn write_imaps_config(root: &Path, store: &Path, backend: SocketAddr) -> PathBuf {
    let config = format!(
        "{}{}",
        head(root, store, ""),
        listener("imaps", "imaps", backend, "")
    );
    let path = root.join("m.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A proxy with one `imaps` listener in front of a backend greeting "* OK", the store at
/// `store`; `head_text` is the `[server]`/`[certs]` head (see [`head`]).
pub async fn imaps_over(root: &Path, head_text: &str) -> (Proxy, backend::Backend) {
    let imap = backend::Backend::start("* OK", backend::Expect::Plain).await;
    let config = format!("{head_text}{}", listener("imaps", "imaps", imap.addr, ""));
    (Proxy::start(root, &config), imap)
}
