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

/// `mailfront run` serves, and SIGTERM makes it stop accepting, drain and exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn run_serves_and_exits_zero_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    let backend = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}{}",
        head(tmp.path(), &store, ""),
        listener("imaps", "imaps", backend.addr, "")
    );
    let path = tmp.path().join("m.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_line = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line containing {needle:?} within 10 s");
    };
    let listening = wait_line("\"listening\"");
    let addr = listening
        .split("\"addr\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let stream = common::client::connect(addr.parse().unwrap(), &common::client::Opts::default())
        .await
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    assert_eq!(common::client::read_line(&mut stream).await, "* OK\r\n");
    drop(stream);
    let closed = wait_line("connection closed");
    for field in [
        "\"listener\":\"imaps\"",
        "\"peer\":",
        "\"cert\":",
        "\"backend\":",
        "\"up\":",
        "\"down\":",
        "\"outcome\":\"closed\"",
    ] {
        assert!(closed.contains(field), "{field} missing in {closed}");
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_line("shutdown complete");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "mailfront exits within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
