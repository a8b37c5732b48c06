//! Store scale: start-up load time, resident memory per entry, handshake CPU and the
//! latency of one change, for stores of N ECDSA entries, measured on the release binary.
//!
//! `cargo bench --bench store_scale -- 1 10000 100000`
//!
//! Stores are generated once into `target/bench-stores/N/` (rcgen, P-256 leaves signed by
//! one CA) and reused. For each N a fresh `mailfront run` is started; the numbers come
//! from its own log (load time), `/proc/PID/status` (VmRSS, VmHWM) and `/proc/PID/stat`
//! (server CPU time), while this process plays client and backend.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const HANDSHAKES: usize = 4000;
const SWAPS: usize = 7;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("| entries | load ms | RSS MiB | KiB/entry over 1 | handshake server CPU us | change seen ms (median of {SWAPS}) | peak RSS / loaded RSS |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut base_rss = None;
    for n in sizes {
        let dir = store_for(n);
        let r = runtime.block_on(measure(&dir, n));
        let base = *base_rss.get_or_insert(r.rss_kib);
        let per_entry = if n > 1 {
            format!("{:.2}", (r.rss_kib as f64 - base as f64) / (n - 1) as f64)
        } else {
            "-".into()
        };
        println!(
            "| {n} | {} | {:.1} | {per_entry} | {:.1} | {:.1} | {:.2} |",
            r.load_ms,
            r.rss_kib as f64 / 1024.0,
            r.handshake_cpu_us,
            r.change_ms,
            r.peak_kib as f64 / r.rss_kib as f64,
        );
    }
}

struct Result {
    load_ms: u64,
    rss_kib: u64,
    peak_kib: u64,
    handshake_cpu_us: f64,
    change_ms: f64,
}

/// Generates (once) a store of `n` entries `dNNNNNNN.example.test.pem`.
fn store_for(n: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-stores/{n}"));
    if dir.join(".complete").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store")).unwrap();
    eprintln!("generating {n} entries in {}", dir.display());
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |name: &str| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        format!("{}{}{}", cert.pem(), ca.pem(), key.serialize_pem())
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
    dir
}

async fn measure(dir: &Path, n: usize) -> Result {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"* OK\r\n").await;
            });
        }
    });
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"server.com\"\n[certs]\ndir = \"store\"\ndefault_cert = \"server.pem\"\n\
             default_key = \"server.pem\"\nrescan_interval = \"1h\"\n[[listener]]\nname = \"imaps\"\n\
             bind = \"127.0.0.1:0\"\nprotocol = \"imaps\"\nbackend = \"{backend_addr}\"\n"
        ),
    )
    .unwrap();
    let mut proxy = Proxy::start(&config);
    let load_ms: u64 = field(&proxy.wait_line("certificate store loaded"), "ms")
        .parse()
        .unwrap();
    let addr: SocketAddr = field(&proxy.wait_line("\"listening\""), "addr")
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_kib = proxy.status("VmRSS:");

    let client = client();
    // Warm up, then count the server's CPU over many handshakes to names spread over the store.
    for i in 0..200 {
        handshake(&client, addr, &format!("d{:07}.example.test", i % n)).await;
    }
    let cpu_before = proxy.cpu_ticks();
    for i in 0..HANDSHAKES {
        let name = format!("d{:07}.example.test", (i * 7919) % n);
        handshake(&client, addr, &name).await;
    }
    let cpu = proxy.cpu_ticks() - cpu_before;
    let handshake_cpu_us = cpu as f64 * 10_000.0 / HANDSHAKES as f64;

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
            if handshake(&client, addr, &name).await == want {
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
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let peak_kib = proxy.status("VmHWM:");
    proxy.stop();
    Result {
        load_ms,
        rss_kib,
        peak_kib,
        handshake_cpu_us,
        change_ms: times[SWAPS / 2],
    }
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailfront"))
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

    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error>
        {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
        {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
        {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            vec![rustls::SignatureScheme::ECDSA_NISTP256_SHA256]
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any))
        .with_no_client_auth();
    // Full handshakes only: resumption would hide the certificate work.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
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
