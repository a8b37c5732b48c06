//! The `mailfront` binary: `check-config` errors and a real run stopped by SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::running::{Running, BIN};
use common::{head, listener, store_dir, Pki};

/// `mailfront run` on a config it cannot start with: its exit status and stderr.
fn run_to_exit(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

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

/// An absurd duration fails `check-config` with its key and line instead of passing and
/// then panicking every connection; an IMAP listener cut before IDLE's 29 minutes is
/// warned about; each listener's idle bound is printed.
#[test]
fn check_config_bounds_durations_and_warns_about_imap_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let path = imaps_config(tmp.path(), "127.0.0.1:143".parse().unwrap());
    let good = std::fs::read_to_string(&path).unwrap();
    assert!(good.contains("idle_timeout = \"30s\""), "{good}");
    let huge = good.replace("idle_timeout = \"30s\"", "idle_timeout = \"300000000000y\"");
    std::fs::write(&path, huge).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`server.idle_timeout`") && stderr.contains("line 5"),
        "{stderr}"
    );
    std::fs::write(&path, &good).unwrap();
    let (code, stdout, _) = check_config(&path);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("idle 30s"), "{stdout}");
    assert!(
        stdout.contains("warning: listener imaps: idle_timeout 30s is below 30 minutes"),
        "{stdout}"
    );
    let unset = good.replace("idle_timeout = \"30s\"\n", "");
    std::fs::write(&path, unset).unwrap();
    let (code, stdout, _) = check_config(&path);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("idle 31m") && !stdout.contains("warning"),
        "{stdout}"
    );
}

/// `check-config | head`: a reader that goes away ends the listing, not the check (it
/// panicked on the broken pipe); the exit status still says whether the proxy would start.
#[test]
fn check_config_survives_a_closed_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let path = imaps_config(tmp.path(), "127.0.0.1:143".parse().unwrap());
    let mut child = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the child has started writing (it has a config to read first).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Each cause is said once: errors that name their cause in the message do not return it
/// again as their source, which the CLI would print a second time (`a: b: b`).
#[test]
fn cli_errors_say_each_cause_once() {
    let once = |stderr: &str, cause: &str| {
        assert_eq!(
            stderr.matches(cause).count(),
            1,
            "{cause:?} once in: {stderr}"
        );
    };
    let (code, _, stderr) = check_config(std::path::Path::new("/nonexistent/missing.toml"));
    assert_eq!(code, 1);
    once(&stderr, "No such file or directory");
    assert!(stderr.contains("/nonexistent/missing.toml"), "{stderr}");

    let tmp = tempfile::tempdir().unwrap();
    let path = imaps_config(tmp.path(), "127.0.0.1:1".parse().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    // A ca_bundle that is not there: the trust error inside the store's error.
    let bundle = text.replace("[certs]", "[certs]\nca_bundle = \"/nonexistent/ca.pem\"");
    std::fs::write(&path, bundle).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    once(&stderr, "No such file or directory");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");

    // A port already taken: the bind error inside the start error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        &path,
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let (code, stderr) = run_to_exit(&path);
    assert_eq!(code, Some(1), "{stderr}");
    once(&stderr, "Address already in use");

    // A ticket key file that is not there: `check-config` and `run` alike.
    let keys = text.replace(
        "[server]\n",
        "[server]\nticket_keys = \"/nonexistent/ticket.keys\"\n",
    );
    std::fs::write(&path, keys).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    once(&stderr, "No such file or directory");
    assert!(stderr.contains("/nonexistent/ticket.keys"), "{stderr}");
    let (code, stderr) = run_to_exit(&path);
    assert_eq!(code, Some(1), "{stderr}");
    once(&stderr, "No such file or directory");
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

/// A server-wide key that every user can read stops the start, with the file, its mode
/// and the fix named.
#[test]
fn world_readable_server_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = imaps_config(tmp.path(), "127.0.0.1:9".parse().unwrap());
    let key = tmp.path().join("server.com.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = run_to_exit(&path);
    assert_ne!(code, Some(0), "{stderr}");
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

/// An admin token file every user can read, or write (and so replace the token with one
/// of their own), stops `run` and fails `check-config`, naming the file, its mode and the
/// fix; 0600 passes both.
#[test]
fn admin_token_readable_or_writable_by_all_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = imaps_config(tmp.path(), "127.0.0.1:9".parse().unwrap());
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!(
        "\n[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token.display()
    ));
    std::fs::write(&path, config).unwrap();
    for (mode, says) in [
        (0o602, "written"),
        (0o604, "read"),
        (0o666, "read and written"),
    ] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let want = format!("can be {says} by every user (mode {mode:o})");
        let (code, stderr) = run_to_exit(&path);
        assert_ne!(code, Some(0), "{stderr}");
        assert!(
            stderr.contains("admin.token") && stderr.contains(&want),
            "{stderr}"
        );
        let (code, _, stderr) = check_config(&path);
        assert_ne!(code, 0, "check-config refuses what run refuses");
        assert!(
            stderr.contains(&want) && stderr.contains("chmod 600"),
            "{stderr}"
        );
    }
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stdout}{stderr}");
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

/// `server.ticket_keys`: `check-config` and `run` refuse a key file every user can read,
/// or one HAProxy would refuse, naming the file and the line; a good one is listed with
/// the key that encrypts.
#[test]
fn a_bad_ticket_key_file_fails_check_config_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let keys = tmp.path().join("ticket.keys");
    let config = format!(
        "{}{}",
        head(tmp.path(), &store, "ticket_keys = \"ticket.keys\""),
        listener("imaps", "imaps", "127.0.0.1:143".parse().unwrap(), "")
    );
    let path = tmp.path().join("m.toml");
    std::fs::write(&path, config).unwrap();
    let key = |seed: u8| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([seed; 80])
    };
    std::fs::write(&keys, format!("{}\n{}\n{}\n", key(1), key(2), key(3))).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("readable by every user (mode 0644)"),
        "{stderr}"
    );
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&keys, format!("{}\n{}\n\n", key(1), key(2))).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "server.ticket_keys {}: line 3: empty",
            keys.display()
        )),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(&path);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 3: empty"), "{stderr}");
    std::fs::write(&keys, format!("{}\n{}\n{}\n", key(1), key(2), key(3))).unwrap();
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("encrypting with key 02020202020202020202020202020202"),
        "{stdout}"
    );
}
