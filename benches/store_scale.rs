//! Store scale: start-up load time, resident memory per entry, handshake CPU and the
//! latency of one change, for stores of N ECDSA entries, measured on the release binary.
//!
//! `cargo bench --bench store_scale -- 1 10000 100000` (add `--cold` to empty the page
//! cache before each proxy starts: the first start after boot; needs root; add
//! `--bin=PATH` to measure another build of mailfront, for an A/B of a change)
//!
//! Stores are generated once into `target/bench-stores/N/` (rcgen, P-256 leaves signed by
//! one CA) and reused. For each N a fresh `mailfront run` is started; the numbers come
//! from its own log (load time), `/proc/PID/status` (VmRSS, VmHWM) and the CPU time of
//! the process (its CPU-time clock, nanoseconds), while this process plays
//! client and backend.
//!
//! Handshake CPU is measured side by side: a proxy serving the 1-entry store runs through
//! the whole benchmark, and batches of handshakes alternate between it and the N-entry
//! proxy, so that both see the same state of the machine; the ratio is the median of the
//! rounds' ratios. The row for N = 1 compares two 1-entry proxies: the noise floor.
//! `benches/handshake_scale.rs` counts the same in instructions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod common;

/// The mailfront binary measured: this build's, or `--bin=PATH`.
static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Alternating rounds of handshakes, and handshakes per proxy per round.
const ROUNDS: usize = 9;
const BATCH: usize = 400;
const SWAPS: usize = 7;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cold = args.iter().any(|a| a == "--cold");
    if let Some(bin) = args.iter().find_map(|a| a.strip_prefix("--bin=")) {
        BIN.set(PathBuf::from(bin)).unwrap();
    }
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![1, 10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(backend());
    let mut baseline = Running::start(&store_for(1), backend);
    println!("| entries | load ms | RSS MiB loaded | RSS MiB after first rescan | KiB/entry over 1 | handshake server CPU us | same vs 1 entry, side by side | change seen ms (median of {SWAPS}) | peak RSS / loaded RSS |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut base_rss = None;
    for n in sizes {
        let dir = store_for(n);
        if cold {
            drop_page_cache();
        }
        let r = runtime.block_on(measure(&dir, n, backend, &baseline));
        let base = *base_rss.get_or_insert(r.settled_kib);
        let per_entry = if n > 1 {
            format!(
                "{:.2}",
                (r.settled_kib as f64 - base as f64) / (n - 1) as f64
            )
        } else {
            "-".into()
        };
        println!(
            "| {n} | {} | {:.1} | {:.1} | {per_entry} | {:.1} | {:.3} | {:.1} | {:.2} |",
            r.load_ms,
            r.rss_kib as f64 / 1024.0,
            r.settled_kib as f64 / 1024.0,
            r.handshake_cpu_us,
            r.handshake_ratio,
            r.change_ms,
            r.peak_kib as f64 / r.rss_kib as f64,
        );
    }
    baseline.proxy.stop();
}

struct Result {
    load_ms: u64,
    /// When the proxy starts listening.
    rss_kib: u64,
    /// After the full refresh that follows setting up the watches (what every periodic
    /// rescan also does).
    settled_kib: u64,
    peak_kib: u64,
    handshake_cpu_us: f64,
    /// Median over the rounds of (N-entry CPU / 1-entry CPU).
    handshake_ratio: f64,
    change_ms: f64,
}

/// Generates (once) a store of `n` entries `dNNNNNNN.example.test.pem`, as an operator's
/// would be: files mode 0600, and the CA in `ca.pem`, which the config names as
/// `ca_bundle`, so that the certificate checks find nothing to warn about.
fn store_for(n: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-stores/{n}"));
    if dir.join(".complete").exists() {
        as_operators_keep_it(&dir);
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store")).unwrap();
    eprintln!("generating {n} entries in {}", dir.display());
    let (ca, ca_key) = common::bench_ca(&dir);
    let issue = |name: &str| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    };
    let fallback = issue("server.com");
    std::fs::write(dir.join("server.pem"), &fallback).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (dir, issue) = (&dir, &issue);
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let name = format!("d{i:07}.example.test");
                    std::fs::write(dir.join("store").join(format!("{name}.pem")), issue(&name))
                        .unwrap();
                }
            });
        }
    });
    std::fs::write(
        dir.join("issue-ca.pem"),
        format!("{}{}", ca.pem(), ca_key.serialize_pem()),
    )
    .unwrap();
    std::fs::write(dir.join(".complete"), b"").unwrap();
    as_operators_keep_it(&dir);
    dir
}

/// Makes the store's files private and writes the CA alone to `ca.pem` (stores generated
/// before the certificate checks lack both).
fn as_operators_keep_it(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let kept = dir.join(".kept");
    if kept.exists() {
        return;
    }
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(dir.join("server.pem"), private.clone()).unwrap();
    for entry in std::fs::read_dir(dir.join("store")).unwrap().flatten() {
        std::fs::set_permissions(entry.path(), private.clone()).unwrap();
    }
    let ca_text = std::fs::read_to_string(dir.join("issue-ca.pem")).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let cert = &ca_text[..ca_text.find(end).unwrap() + end.len()];
    std::fs::write(dir.join("ca.pem"), cert).unwrap();
    std::fs::write(kept, b"").unwrap();
}

/// A backend that greets like an IMAP server and closes; shared by every proxy.
async fn backend() -> SocketAddr {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"* OK\r\n").await;
            });
        }
    });
    addr
}

/// A proxy serving the store in `dir`, loaded and listening.
struct Running {
    proxy: Proxy,
    addr: SocketAddr,
    load_ms: u64,
}

impl Running {
    fn start(dir: &Path, backend: SocketAddr) -> Self {
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nname = \"server.com\"\n[certs]\ndir = \"store\"\ndefault_cert = \"server.pem\"\n\
                 default_key = \"server.pem\"\nca_bundle = \"ca.pem\"\nrescan_interval = \"1h\"\n[[listener]]\nname = \"imaps\"\n\
                 bind = \"127.0.0.1:0\"\nprotocol = \"imaps\"\nbackend = \"{backend}\"\n"
            ),
        )
        .unwrap();
        let proxy = Proxy::start(&config);
        let load_ms = field(&proxy.wait_line("certificate store loaded"), "ms")
            .parse()
            .unwrap();
        let addr = field(&proxy.wait_line("\"listening\""), "addr")
            .parse()
            .unwrap();
        Self {
            proxy,
            addr,
            load_ms,
        }
    }

    /// Server CPU nanoseconds for `count` full handshakes to names `name(i)`.
    async fn handshakes(
        &self,
        client: &tokio_rustls::TlsConnector,
        count: usize,
        name: impl Fn(usize) -> String,
    ) -> u64 {
        let before = self.proxy.cpu_ns();
        for i in 0..count {
            handshake(client, self.addr, &name(i)).await;
        }
        self.proxy.cpu_ns() - before
    }
}

async fn measure(dir: &Path, n: usize, backend: SocketAddr, baseline: &Running) -> Result {
    let mut this = Running::start(dir, backend);
    let rss_kib = this.proxy.status("VmRSS:");
    this.proxy.wait_idle().await;
    let settled_kib = this.proxy.status("VmRSS:");

    let client = client();
    // Names spread over the store; the 1-entry proxy has one name.
    let spread = |i: usize| format!("d{:07}.example.test", (i * 7919) % n);
    let only = |_: usize| "d0000000.example.test".to_owned();
    this.handshakes(&client, 200, spread).await;
    baseline.handshakes(&client, 200, only).await;
    let (mut ratios, mut per_handshake) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so that neither always follows the other.
        let (mine, base) = if round % 2 == 0 {
            let mine = this.handshakes(&client, BATCH, spread).await;
            (mine, baseline.handshakes(&client, BATCH, only).await)
        } else {
            let base = baseline.handshakes(&client, BATCH, only).await;
            (this.handshakes(&client, BATCH, spread).await, base)
        };
        ratios.push(mine as f64 / base as f64);
        per_handshake.push(mine as f64 / BATCH as f64 / 1000.0);
    }

    // One entry replaced by rename: time until a handshake sees the new version.
    let ca_text = std::fs::read_to_string(dir.join("issue-ca.pem")).unwrap();
    let ca_key =
        KeyPair::from_pem(&ca_text[ca_text.find("-----BEGIN PRIVATE KEY").unwrap()..]).unwrap();
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_text).unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut times = Vec::new();
    let name = format!("d{:07}.example.test", n / 2);
    for _ in 0..SWAPS {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![name.clone()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "new");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let want = cert.der().to_vec();
        let tmp = dir.join("store").join(format!(".{name}.pem.tmp"));
        std::fs::write(&tmp, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let started = Instant::now();
        std::fs::rename(&tmp, dir.join("store").join(format!("{name}.pem"))).unwrap();
        loop {
            if handshake(&client, this.addr, &name).await == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "change not seen within 10 s"
            );
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak_kib = this.proxy.status("VmHWM:");
    this.proxy.stop();
    Result {
        load_ms: this.load_ms,
        rss_kib,
        settled_kib,
        peak_kib,
        handshake_cpu_us: median(&mut per_handshake),
        handshake_ratio: median(&mut ratios),
        change_ms: median(&mut times),
    }
}

/// Empties the page cache, as after a boot.
fn drop_page_cache() {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3");
    assert!(
        synced && dropped.is_ok(),
        "--cold needs root to write /proc/sys/vm/drop_caches: {dropped:?}"
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn field(line: &str, name: &str) -> String {
    let key = format!("\"{name}\":");
    let rest = &line[line.find(&key).unwrap() + key.len()..];
    rest.trim_start_matches('"')
        .split(['"', ',', '}'])
        .next()
        .unwrap()
        .to_owned()
}

struct Proxy {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proxy {
    fn start(config: &Path) -> Self {
        let bin = BIN.get_or_init(|| PathBuf::from(env!("CARGO_BIN_EXE_mailfront")));
        let mut child = Command::new(bin)
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                "warn,mailfront::certs=info,mailfront::server=info",
            )
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::io::Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    fn wait_line(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(300))
                .expect("mailfront logs within 300 s");
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Waits (up to 60 s) until the process uses less than 2 ms of CPU in 250 ms: the
    /// catch-up refresh after start-up is done.
    async fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut before = self.cpu_ns();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.cpu_ns();
            if now - before < 2_000_000 {
                return;
            }
            before = now;
        }
    }

    /// CPU time the process has used so far, all threads (gone ones too), in nanoseconds:
    /// its CPU-time clock, where /proc/PID/stat counts in 10 ms ticks.
    fn cpu_ns(&self) -> u64 {
        let pid = self.child.id() as libc::pid_t;
        let mut clock: libc::clockid_t = 0;
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both out-pointers point to live locals of the right types.
        let ok = unsafe {
            libc::clock_getcpuclockid(pid, &mut clock) == 0
                && libc::clock_gettime(clock, &mut now) == 0
        };
        assert!(ok, "cannot read the CPU clock of process {pid}");
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(common::client_config()))
}

/// One full handshake to `name`; returns the leaf served.
async fn handshake(client: &tokio_rustls::TlsConnector, addr: SocketAddr, name: &str) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = client
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
