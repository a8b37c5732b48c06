//! The `mailfront` binary: `check-config` errors and a real run stopped by SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::{Backend, Expect};
use common::{head, listener, store_dir, Pki};

const BIN: &str = env!("CARGO_BIN_EXE_mailfront");

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shipped example and production configs are valid.
#[test]
fn shipped_configs_pass_check_config() {
    for file in ["config/example.toml", "config/mailfront.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let (code, stdout, stderr) = check_config(&path);
        assert_eq!(code, 0, "{file}: {stdout}{stderr}");
        assert!(stdout.contains("listener imaps (imaps)"), "{stdout}");
    }
}

/// `check-config` refuses an unknown key and a route to a missing listener, naming the key
/// and the line, with exit status 1.
#[test]
fn check_config_names_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let good = format!(
        "{}{}",
        head(tmp.path(), &store, ""),
        listener("imaps", "imaps", "127.0.0.1:143".parse().unwrap(), "")
    );
    let path = tmp.path().join("m.toml");

    std::fs::write(
        &path,
        good.replace("strict", "x")
            .replace("[certs]", "[certs]\ndefualt_cert = \"x\""),
    )
    .unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("defualt_cert") && stderr.contains("line 9"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        format!(
            "{good}[[route]]\nsni = \"a.test\"\nlistener = \"imap\"\nbackend = \"127.0.0.1:1\"\n"
        ),
    )
    .unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("`route.listener`") && stderr.contains("\"imap\""),
        "{stderr}"
    );
    assert!(stderr.contains("line 21"), "{stderr}");

    std::fs::write(&path, &good).unwrap();
    let (code, stdout, _) = check_config(&path);
    assert_eq!(code, 0, "{stdout}");
}

/// A `mailfront run` child process whose JSON log lines the test reads.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// The first address it listens on.
    addr: std::net::SocketAddr,
    /// The lines logged up to the first "listening".
    startup: Vec<String>,
}

impl Running {
    /// Runs `shell_prefix mailfront --log-format json run --config PATH` through `sh`, and
    /// waits for its first "listening" line.
    fn start(shell_prefix: &str, path: &std::path::Path) -> Self {
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
            if line.contains("\"listening\"") {
                break line;
            }
            running.startup.push(line);
        };
        let addr = listening.split("\"addr\":\"").nth(1).unwrap();
        running.addr = addr.split('"').next().unwrap().parse().unwrap();
        running
    }

    /// The next log line containing `needle`, within 10 s.
    fn wait_line(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits up to 10 s for the process to exit.
    fn exit_code(&mut self) -> Option<i32> {
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

/// A config with one IMAPS listener in front of `backend`, written into `root`.
fn imaps_config(root: &std::path::Path, backend: std::net::SocketAddr) -> std::path::PathBuf {
    let _pki = Pki::new(root);
    common::write_imaps_config(root, &store_dir(root), backend)
}

/// `mailfront run` serves, logs one line per connection with its fields, and SIGTERM
/// makes it stop accepting, drain and exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn run_serves_and_exits_zero_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let mut proxy = Running::start("", &imaps_config(tmp.path(), backend.addr));
    let stream = common::client::connect(proxy.addr, &common::client::Opts::default())
        .await
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    assert_eq!(common::client::read_line(&mut stream).await, "* OK\r\n");
    drop(stream);
    let closed = proxy
        .wait_line("connection closed")
        .expect("a connection line");
    for field in [
        "\"listener\":\"imaps\"",
        "\"peer\":",
        "\"cert\":",
        "\"backend\":",
        "\"up\":",
        "\"down\":",
        "\"ms\":",
        "\"outcome\":\"closed\"",
    ] {
        assert!(closed.contains(field), "{field} missing in {closed}");
    }
    proxy.signal("-TERM");
    assert!(proxy.wait_line("shutdown complete").is_some());
    assert_eq!(proxy.exit_code(), Some(0));
}

/// An entry whose certificate expires while it serves keeps serving (the server-wide
/// certificate would help nobody) and every full rescan logs it as an error with the days.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_expiring_while_serving_keeps_serving_and_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let leaf = pki.leaf_expiring_in(&["soon.example.com"], 3);
    std::fs::write(store.join("soon.example.com.pem"), leaf.combined()).unwrap();
    let path = common::write_imaps_config(tmp.path(), &store, backend.addr);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[certs]\n", "[certs]\nrescan_interval = \"1s\"\n"),
    )
    .unwrap();
    let proxy = Running::start("", &path);
    let expired = proxy
        .wait_line("\"code\":\"expired\"")
        .expect("an expired line within 10 s");
    assert!(
        expired.contains("soon.example.com.pem") && expired.contains("\"days\":0"),
        "{expired}"
    );
    assert_eq!(
        common::client::served_der(proxy.addr, "soon.example.com")
            .await
            .unwrap(),
        leaf.der()
    );
    // At the next rescan, again.
    assert!(proxy.wait_line("\"code\":\"expired\"").is_some());
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

/// Out of file descriptors (EMFILE under `ulimit -n 64`), the accept loop backs off instead
/// of spinning a core, logs it, and serves again once descriptors free up.
#[tokio::test(flavor = "multi_thread")]
async fn accept_backs_off_on_emfile_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let proxy = Running::start("ulimit -n 64 &&", &imaps_config(tmp.path(), backend.addr));

    // Idle TCP connections that never start TLS: each holds a descriptor in the proxy.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    assert!(
        proxy.wait_line("accept failed; pausing").is_some(),
        "EMFILE is logged"
    );
    let pid = proxy.child.id();
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "the accept loop does not spin: {used:.2} s CPU in 1 s"
    );

    drop(idle);
    // Served again once the stalled connections are gone.
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !served {
        let opts = common::client::Opts::default();
        if let Ok(stream) = common::client::connect(proxy.addr, &opts).await {
            let mut stream = tokio::io::BufReader::new(stream);
            served = common::client::read_line(&mut stream).await == "* OK\r\n";
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(served, "serves again once descriptors are free");
}

/// A server-wide key that every user can read stops the start, with the file, its mode
/// and the fix named.
#[test]
fn world_readable_server_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = imaps_config(tmp.path(), "127.0.0.1:9".parse().unwrap());
    let key = tmp.path().join("server.com.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("server.com.key")
            && stderr.contains("can be read by every user (mode 644)"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    // Group-readable (0640, the ssl-cert way) is fine.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// Started as root with `server.user = "nobody"`, mailfront binds, then runs as nobody
/// (every uid and gid, no capability left), serves, and reloads the store as nobody.
#[tokio::test(flavor = "multi_thread")]
async fn server_user_is_who_serves_and_reloads() {
    // SAFETY: takes no pointers.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let nobody = mailfront::privilege::Account::lookup("nobody").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let pki = Pki::new(tmp.path());
    let path = common::write_imaps_config(tmp.path(), &store_dir(tmp.path()), backend.addr);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[server]\n",
        "[server]\nuser = \"nobody\"\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let give_to_nobody = |p: &std::path::Path| {
        let status = Command::new("chown")
            .args(["-R", &format!("{}:{}", nobody.uid, nobody.gid)])
            .arg(p)
            .status()
            .unwrap();
        assert!(status.success());
    };
    give_to_nobody(tmp.path());
    let proxy = Running::start("", &path);
    let switched = proxy
        .startup
        .iter()
        .find(|l| l.contains("running as server.user"))
        .expect("the switch is logged");
    assert!(switched.contains("\"user\":\"nobody\""), "{switched}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(|v| v.to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), vec![nobody.uid.to_string(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![nobody.gid.to_string(); 4], "{status}");
    assert_eq!(field("CapEff:"), vec!["0000000000000000"], "{status}");
    // It serves.
    let stream = common::client::connect(proxy.addr, &common::client::Opts::default())
        .await
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    assert_eq!(common::client::read_line(&mut stream).await, "* OK\r\n");
    // A new entry, written by a tool as root and given to nobody, is picked up.
    let leaf = pki.leaf(&["fresh.example.com"], common::KeyKind::Ecdsa);
    let entry = store_dir(tmp.path()).join("fresh.example.com.pem");
    std::fs::write(&entry, leaf.combined()).unwrap();
    give_to_nobody(&entry);
    std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let served = common::client::wait_served(
        proxy.addr,
        "fresh.example.com",
        &leaf.der(),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        served.is_some(),
        "the new entry is served after a reload as nobody"
    );
}
