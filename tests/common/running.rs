//! The `mailfront` binary as a child process: its JSON log lines, its CPU time, its open
//! descriptors and its memory, as the tests that judge it from outside read them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailfront");

/// A `mailfront run` child process whose JSON log lines the test reads.
pub struct Running {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The first address it listens on.
    pub addr: std::net::SocketAddr,
    /// The lines logged up to the first "listening", that one included.
    pub startup: Vec<String>,
}

impl Running {
    /// Runs `shell_prefix mailfront --log-format json run --config PATH` through `sh`, and
    /// waits for its first "listening" line.
    pub fn start(shell_prefix: &str, path: &std::path::Path) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{shell_prefix} exec {BIN} --log-format json run --config {}",
                path.display()
            ))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut running = Self {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            startup: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = loop {
            let line = running
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("a listening line within 10 s");
            running.startup.push(line.clone());
            if line.contains("\"listening\"") {
                break line;
            }
        };
        running.addr = field(&listening, "addr").parse().unwrap();
        running
    }

    /// Like [`Running::start`], then waits for the `listening` lines of `names` and returns
    /// each one's first address, in that order.
    pub fn start_listeners(
        shell_prefix: &str,
        path: &std::path::Path,
        names: &[&str],
    ) -> (Self, Vec<std::net::SocketAddr>) {
        let running = Self::start(shell_prefix, path);
        let mut addrs: Vec<Option<std::net::SocketAddr>> = vec![None; names.len()];
        // `start` took the first listening line, the last of `startup`.
        let mut line = running.startup.last().cloned().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if line.contains("\"listening\"") {
                if let Some(i) = names.iter().position(|n| *n == field(&line, "listener")) {
                    addrs[i].get_or_insert_with(|| field(&line, "addr").parse().unwrap());
                }
            }
            if addrs.iter().all(Option::is_some) {
                break;
            }
            line = running
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("every listener's line within 10 s");
        }
        (running, addrs.into_iter().map(Option::unwrap).collect())
    }

    /// The next log line containing `needle`, within 10 s.
    pub fn wait_line(&self, needle: &str) -> Option<String> {
        self.wait_line_where(|line| line.contains(needle))
    }

    /// The next log line for which `wanted` holds, within 10 s.
    pub fn wait_line_where(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Every line logged from now until `quiet` passes without one, at most `limit` in all.
    pub fn lines_until_quiet(&self, quiet: Duration, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(quiet.min(deadline.saturating_duration_since(Instant::now())))
        {
            lines.push(line);
        }
        lines
    }

    /// Opens 100 connections that never speak TLS, enough to take every descriptor of a
    /// proxy run under `ulimit -n 64`, and waits for its line saying so; the connections
    /// hold the descriptors until dropped.
    pub async fn exhaust_descriptors(&self) -> (Vec<tokio::net::TcpStream>, String) {
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(tokio::net::TcpStream::connect(self.addr).await.unwrap());
        }
        let line = self.wait_line("accept failed").expect("out of descriptors");
        (held, line)
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// CPU seconds used over the next `period`.
    pub async fn cpu_over(&self, period: Duration) -> f64 {
        let before = cpu_seconds(self.child.id());
        tokio::time::sleep(period).await;
        cpu_seconds(self.child.id()) - before
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits up to 10 s for the process to exit.
    pub fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "mailfront exits within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The string value of `name` in a JSON log line.
pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .split_once(&format!("\"{name}\":\""))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .1;
    start.split('"').next().unwrap()
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12th and 13th after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Raises this process's open-file limit to at least `need` (children inherit it); a test
/// holding a thousand sockets must not depend on the shell's `ulimit -n`.
pub fn raise_fd_limit(need: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill in and read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur >= need {
            return;
        }
        limit.rlim_cur = need;
        limit.rlim_max = limit.rlim_max.max(need);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "cannot raise the open-file limit to {need}: {}",
            std::io::Error::last_os_error()
        );
    }
}
