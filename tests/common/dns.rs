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
            ])
            .arg(format!("--port={port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq (apt-get install dnsmasq-base): {e}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
