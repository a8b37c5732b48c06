//! Test clients: a rustls client that reports which certificate it was served, and the
//! real `openssl s_client` and `curl` binaries, each bounded in time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// How the test client connects.
#[derive(Clone, Default)]
pub struct Opts {
    /// SNI to send; `None` sends none.
    pub sni: Option<String>,
    /// Verify against this CA file (and the SNI, or "server.com" without one).
    pub ca: Option<std::path::PathBuf>,
    /// Offer only these signature schemes.
    pub schemes: Option<Vec<SignatureScheme>>,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
}

/// Accepts any certificate (tests look at what was served), offering `schemes`, and
/// keeps the OCSP response stapled to it.
#[derive(Debug)]
struct Accepting(Vec<SignatureScheme>, std::sync::Mutex<Vec<u8>>);

impl ServerCertVerifier for Accepting {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.1.lock().unwrap() = ocsp.to_vec();
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

/// A client for `opts`.
pub fn config(opts: &Opts) -> ClientConfig {
    config_keeping(opts).0
}

/// A client for `opts`, and (when it verifies nothing) what it keeps of each handshake.
fn config_keeping(opts: &Opts) -> (ClientConfig, Option<Arc<Accepting>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut kept = None;
    let mut config = match &opts.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in rustls::pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let all = provider
                .signature_verification_algorithms
                .supported_schemes();
            let schemes = opts.schemes.clone().unwrap_or(all);
            let accepting = Arc::new(Accepting(schemes, Default::default()));
            kept = Some(Arc::clone(&accepting));
            builder
                .dangerous()
                .with_custom_certificate_verifier(accepting)
                .with_no_client_auth()
        }
    };
    config.enable_sni = opts.sni.is_some();
    config.alpn_protocols = opts.alpn.clone();
    (config, kept)
}

/// A connector for `opts` that keeps its sessions: connections through it to any server
/// offer the tickets the earlier ones got (a client reconnecting to a fleet).
#[allow(dead_code)]
pub fn connector(opts: &Opts) -> TlsConnector {
    TlsConnector::from(Arc::new(config(opts)))
}

/// The OCSP response stapled for `sni` at `addr` (empty when none).
#[allow(dead_code)]
pub async fn stapled(addr: SocketAddr, sni: &str) -> Vec<u8> {
    let opts = Opts {
        sni: Some(sni.to_owned()),
        ..Opts::default()
    };
    let (config, kept) = config_keeping(&opts);
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("a handshake within 5 s")
        .expect("a handshake");
    let kept = kept.expect("a client that verifies nothing");
    let stapled = kept.1.lock().unwrap().clone();
    stapled
}

/// Connects and completes a TLS handshake.
pub async fn connect(addr: SocketAddr, opts: &Opts) -> std::io::Result<TlsStream<TcpStream>> {
    upgrade(TcpStream::connect(addr).await?, opts).await
}

/// The bytes a real client sends first: its ClientHello in TLS records.
pub fn client_hello(opts: &Opts) -> Vec<u8> {
    let name =
        ServerName::try_from(opts.sni.clone().unwrap_or_else(|| "server.com".into())).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config(opts)), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Completes a TLS handshake on a connection already open (after STARTTLS).
pub async fn upgrade(tcp: TcpStream, opts: &Opts) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(Arc::new(config(opts)));
    let name = ServerName::try_from(opts.sni.clone().unwrap_or_else(|| "server.com".into()))
        .map_err(std::io::Error::other)?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The DNS SANs of the certificate the server presented.
pub fn served_names(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let (_, conn) = stream.get_ref();
    let leaf = &conn.peer_certificates().expect("a certificate was served")[0];
    names_of(leaf)
}

/// The DNS SANs of a DER certificate.
pub fn names_of(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// The key algorithm of the served leaf: "ECDSA" or "RSA".
pub fn served_key(stream: &TlsStream<TcpStream>) -> &'static str {
    let (_, conn) = stream.get_ref();
    let leaf = &conn.peer_certificates().unwrap()[0];
    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    let oid = cert.public_key().algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.10045.2.1" => "ECDSA",
        "1.2.840.113549.1.1.1" => "RSA",
        _ => "other",
    }
}

/// Connects and returns the names of the certificate served for `sni`.
pub async fn names_for(addr: SocketAddr, sni: Option<&str>) -> Vec<String> {
    let opts = Opts {
        sni: sni.map(str::to_owned),
        ..Opts::default()
    };
    let stream = connect(addr, &opts).await.unwrap();
    served_names(&stream)
}

/// Reads one CRLF line (bounded by 5 s).
pub async fn read_line<S: tokio::io::AsyncRead + Unpin>(reader: &mut BufReader<S>) -> String {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .expect("a line within 5 s")
        .unwrap();
    line
}

/// Writes a CRLF line.
pub async fn send_line<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, line: &str) {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    stream.flush().await.unwrap();
}

/// Output and status of a finished command.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command with no stdin, killed after 15 s.
pub async fn run(program: &str, args: &[&str]) -> Run {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within 15 s"))
        .unwrap();
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `openssl s_client` to `addr` asking for `servername`, verifying the name against `ca`.
pub async fn s_client(addr: SocketAddr, servername: Option<&str>, ca: &Path) -> Run {
    let connect = addr.to_string();
    let ca = ca.display().to_string();
    let mut args = vec!["s_client", "-connect", &connect, "-CAfile", &ca, "-brief"];
    if let Some(name) = servername {
        args.extend(["-servername", name, "-verify_hostname", name]);
    } else {
        args.push("-noservername");
    }
    run("openssl", &args).await
}

/// The leaf DER served for `sni`, or `None` when the handshake fails.
pub async fn served_der(addr: SocketAddr, sni: &str) -> Option<Vec<u8>> {
    let opts = Opts {
        sni: Some(sni.to_owned()),
        ..Opts::default()
    };
    let stream = connect(addr, &opts).await.ok()?;
    let (_, conn) = stream.get_ref();
    Some(conn.peer_certificates()?[0].to_vec())
}

/// Polls handshakes for `sni` until `want` is served; returns how long that took, or
/// `None` if it was not served within `limit`.
pub async fn wait_served(
    addr: SocketAddr,
    sni: &str,
    want: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if served_der(addr, sni).await.as_deref() == Some(want) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}
