//! A real ACME server for the tests: Debian's `pebble`, with `pebble-challtestsrv` as its
//! DNS server (every name resolves to 127.0.0.1 unless a test says otherwise), validating
//! challenges against the ports the test gives it (mailfront's listeners).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port free on 127.0.0.1 when asked (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP+TCP port for the DNS server.
fn free_dns_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Where pebble validates: the http-01 and tls-alpn-01 ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub tls: u16,
}

/// pebble and its DNS server, killed on drop.
pub struct Pebble {
    pub directory: String,
    /// pebble's own API certificate (for `acme.ca_bundle`).
    pub api_ca: PathBuf,
    /// The root that issued the certificates (for clients that verify them).
    pub root: PathBuf,
    management: u16,
    challtest_management: u16,
    children: Vec<Child>,
    log: PathBuf,
}

impl Pebble {
    /// Starts pebble issuing certificates valid `validity_secs`, validating at `ports`.
    pub async fn start(dir: &Path, ports: Ports, validity_secs: u64) -> Self {
        Self::start_with(dir, ports, validity_secs, None).await
    }

    /// Like [`Pebble::start`]; with `eab`, accounts need External Account Binding with
    /// this key id and base64url HMAC key.
    pub async fn start_with(
        dir: &Path,
        ports: Ports,
        validity_secs: u64,
        eab: Option<(&str, &str)>,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let missing = |what: &str| {
            format!("{what} is not installed: apt-get install pebble (the tests need a real ACME server)")
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let api_ca = dir.join("pebble-api.pem");
        std::fs::write(&api_ca, cert.pem()).unwrap();
        std::fs::write(dir.join("pebble-api.key"), key.serialize_pem()).unwrap();
        let (api, management) = (free_port(), free_port());
        let (dns, challtest_management) = (free_dns_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": api_ca,
            "privateKey": dir.join("pebble-api.key"),
            "httpPort": ports.http,
            "tlsPort": ports.tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        if let Some((kid, key)) = eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
        }
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.join("pebble.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let challtest = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{challtest_management}"),
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", missing("pebble-challtestsrv")));
        let pebble = Command::new("pebble")
            .args([
                "-config",
                config_path.to_str().unwrap(),
                "-dnsserver",
                &format!("127.0.0.1:{dns}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", missing("pebble")));
        let mut this = Self {
            directory: format!("https://127.0.0.1:{api}/dir"),
            api_ca,
            root: dir.join("pebble-root.pem"),
            management,
            challtest_management,
            children: vec![challtest, pebble],
            log,
        };
        for port in [api, management, challtest_management] {
            let up = super::wait_for_async(Duration::from_secs(15), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
            assert!(up, "pebble did not listen on {port}: {}", this.log_text());
        }
        let root = this.get(this.management, "/roots/0").await;
        std::fs::write(&this.root, root).unwrap();
        this.children.shrink_to_fit();
        this
    }

    /// What pebble and its DNS server logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Certificates pebble issued so far (its log says each).
    pub fn issued(&self) -> usize {
        self.log_text().matches("Issued certificate serial").count()
    }

    /// Makes `name` resolve to `ip` for pebble's validation.
    pub async fn resolve(&self, name: &str, ip: &str) {
        let body = serde_json::json!({"host": name, "addresses": [ip]}).to_string();
        let out = super::client::run(
            "curl",
            &[
                "-sS",
                "-X",
                "POST",
                "-d",
                &body,
                &format!("http://127.0.0.1:{}/add-a", self.challtest_management),
            ],
        )
        .await;
        assert_eq!(out.status, Some(0), "challtestsrv add-a: {}", out.stderr);
    }

    async fn get(&self, port: u16, path: &str) -> String {
        let url = format!("https://127.0.0.1:{port}{path}");
        let out = super::client::run("curl", &["-sS", "-k", &url]).await;
        assert_eq!(out.status, Some(0), "{url}: {}", out.stderr);
        out.stdout
    }

    /// The `[acme]` section for this server.
    pub fn acme_section(&self, state_dir: &Path, extra: &str) -> String {
        format!(
            "[acme]\ndirectory = \"{}\"\nca_bundle = \"{}\"\nstate_dir = \"{}\"\n\
             contact = [\"mailto:hostmaster@server.com\"]\n{extra}\n",
            self.directory,
            self.api_ca.display(),
            state_dir.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Both ports as `SocketAddr`s on 127.0.0.1.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
