//! A real DNS server on loopback for the readiness checks: Debian's dnsmasq, answering
//! only from the records a test gives it (no upstream, no hosts file), NXDOMAIN for any
//! other name under the zones it is told are local.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A dnsmasq child process; dropping it stops it.
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free loopback port with `args` (`--host-record=...`,
    /// `--mx-host=...`, `--txt-record=...`, `--local=/zone/`), and waits until it takes
    /// TCP connections (at most 5 s).
    pub fn start(args: &[String]) -> Self {
        // A free UDP port may be taken for TCP (another test's connection): dnsmasq then
        // exits at once, and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(args) {
                Ok(started) => return started,
                Err(e) => last = e,
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    fn try_start(args: &[String]) -> Result<Self, String> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let mut command = Command::new("dnsmasq");
        command
            .args([
                "--keep-in-foreground",
                "--conf-file=",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                "--log-facility=/dev/null",
            ])
            .arg(format!("--port={port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq (apt-get install dnsmasq-base): {e}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("port {port}: {status}: {err}"));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not listening on {addr} within 5 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { addr, child })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
