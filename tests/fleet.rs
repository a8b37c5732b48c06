//! A fleet: instances started from the same config on one store directory and one ticket
//! key file behave as one: the same certificate for each name, sessions made on one
//! resumed on another (openssl and rustls clients), through rotations of the key file
//! written as an operator's cron job would, and a change to the store served by an
//! instance that inotify tells nothing.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::backend::{Backend, Expect};
use common::client::{names_for, run, served_der, wait_served};
use common::{head, listener, KeyKind, Pki, Proxy};

/// The operator's rotation, as a cron job runs it: the last two keys and a new one,
/// written beside the file and renamed over it.
const ROTATE: &str = "(umask 077; { tail -n 2 \"$KEYS\"; openssl rand 80 | base64 -w0; echo; } > \"$KEYS.new\") && mv \"$KEYS.new\" \"$KEYS\"";

struct Fleet {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    keys: PathBuf,
    pki: Pki,
    a: Proxy,
    b: Proxy,
    _imap: Backend,
}

/// Two instances, `a` and `b`, on one store (holding `a.example.com`) and, with `shared`,
/// one ticket key file made by `openssl rand`; `certs_b` is added to `b`'s `[certs]`.
async fn fleet(shared: bool, certs_b: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let pki = Pki::new(&root);
    let store = common::store_dir(&root);
    pki.write_pair(&store, "a", &["a.example.com"], KeyKind::Ecdsa);
    let keys = root.join("ticket.keys");
    let make = format!(
        "(umask 077; for i in 1 2 3; do openssl rand 80 | base64 -w0; echo; done > {})",
        keys.display()
    );
    assert_eq!(run("sh", &["-c", &make]).await.status, Some(0));
    let server = if shared {
        format!("ticket_keys = \"{}\"", keys.display())
    } else {
        String::new()
    };
    let imap = Backend::start("* OK", Expect::Plain).await;
    let instance = |name: &str, certs: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "{}{certs}\n{}[admin]\nbind = \"127.0.0.1:0\"\n",
            head(&root, &store, &server),
            listener("imaps", "imaps", imap.addr, ""),
        );
        Proxy::start(&dir, &config)
    };
    let a = instance("a", "");
    let b = instance("b", certs_b);
    Fleet {
        _dir: dir,
        root,
        store,
        keys,
        pki,
        a,
        b,
        _imap: imap,
    }
}

impl Fleet {
    /// Runs the operator's rotation of the key file and waits until both instances use it.
    async fn rotate(&self) {
        let before = (loaded(&self.a).await, loaded(&self.b).await);
        let out = run(
            "sh",
            &["-c", &format!("KEYS={}; {ROTATE}", self.keys.display())],
        )
        .await;
        assert_eq!(out.status, Some(0), "{}", out.stderr);
        for (proxy, was) in [(&self.a, before.0), (&self.b, before.1)] {
            assert!(
                common::wait_for_async(Duration::from_secs(5), || async {
                    loaded(proxy).await > was
                })
                .await,
                "the rotated key file was loaded within 5 s"
            );
        }
    }
}

/// `mailfront_ticket_keys_reloads_total{result}` of an instance.
async fn reloads(proxy: &Proxy, result: &str) -> u64 {
    let sample = format!("mailfront_ticket_keys_reloads_total{{result=\"{result}\"}}");
    proxy.metric(&sample).await
}

async fn loaded(proxy: &Proxy) -> u64 {
    reloads(proxy, "loaded").await
}

/// openssl's session: made at `from` into `file` (new), then offered at `to`; returns
/// whether `to` resumed it.
async fn openssl_resumes(
    from: Option<SocketAddr>,
    to: SocketAddr,
    file: &Path,
    version: &str,
) -> bool {
    let session = |addr: SocketAddr, arg: &str| {
        format!(
            "printf 'a LOGOUT\\r\\n' | openssl s_client -connect {addr} -servername a.example.com \
             {arg} {} -ign_eof {version}",
            file.display()
        )
    };
    if let Some(from) = from {
        let made = run("sh", &["-c", &session(from, "-sess_out")]).await;
        assert!(made.stdout.contains("New, TLSv1."), "{}", made.stdout);
    }
    let offered = run("sh", &["-c", &session(to, "-sess_in")]).await;
    assert!(
        offered.stdout.contains("BYE"),
        "the session went on: {}",
        offered.stdout
    );
    offered.stdout.contains("Reused, TLSv1.")
}

/// A rustls client with its own session cache, trusting the test CA.
fn rustls_client(pki: &Pki) -> TlsConnector {
    common::client::connector(&common::client::Opts {
        ca: Some(pki.ca_file()),
        sni: Some("a.example.com".into()),
        ..Default::default()
    })
}

/// One IMAP session through `at`: the greeting read (which also takes in the session
/// tickets sent before it); returns whether the handshake resumed.
async fn rustls_session(client: &TlsConnector, at: SocketAddr) -> bool {
    let tcp = TcpStream::connect(at).await.unwrap();
    let name = ServerName::try_from("a.example.com").unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(5), client.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting, "* OK\r\n");
    resumed
}

/// With one ticket key file, a session made on one instance resumes on the other (TLS 1.3
/// and 1.2, openssl and rustls), before and after two rotations by the operator's script,
/// and a session made before a rotation still resumes after it.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_resume_across_instances() {
    let f = fleet(true, "").await;
    let (a, b) = (f.a.addr("imaps"), f.b.addr("imaps"));
    let sess = f.root.join("sess.pem");
    let client = rustls_client(&f.pki);
    for version in ["-tls1_3", "-tls1_2"] {
        assert!(
            openssl_resumes(Some(a), b, &sess, version).await,
            "{version} a -> b"
        );
        assert!(
            openssl_resumes(Some(b), a, &sess, version).await,
            "{version} b -> a"
        );
    }
    assert!(
        !rustls_session(&client, a).await,
        "the first session is new"
    );
    assert!(
        rustls_session(&client, b).await,
        "rustls: made on a, resumed on b"
    );
    let before = f.root.join("before.pem");
    assert!(openssl_resumes(Some(a), a, &before, "-tls1_3").await);
    f.rotate().await;
    assert!(
        openssl_resumes(None, b, &before, "-tls1_3").await,
        "a session made before the rotation resumes after it, on the other instance"
    );
    for version in ["-tls1_3", "-tls1_2"] {
        assert!(
            openssl_resumes(Some(b), a, &sess, version).await,
            "{version} after rotation"
        );
    }
    assert!(
        rustls_session(&client, b).await,
        "rustls: a session from before the rotation"
    );
    f.rotate().await;
    assert!(
        rustls_session(&client, a).await,
        "rustls: a session from after the first rotation, after the second"
    );
    assert!(
        !openssl_resumes(None, b, &before, "-tls1_3").await,
        "two rotations later the key of a session's ticket is gone: a full handshake"
    );
    // Each instance counted the sessions it resumed.
    for proxy in [&f.a, &f.b] {
        assert!(resumed(proxy).await >= 3, "{}", resumed(proxy).await);
    }
}

/// `mailfront_handshakes_resumed_total` of an instance's imaps listener.
async fn resumed(proxy: &Proxy) -> u64 {
    proxy
        .metric("mailfront_handshakes_resumed_total{listener=\"imaps\"}")
        .await
}

/// A key file replaced by garbage, or removed, keeps the keys in use: sessions go on
/// resuming across the instances; each instance counts the refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_key_file_keeps_resumption_working() {
    let f = fleet(true, "").await;
    let (a, b) = (f.a.addr("imaps"), f.b.addr("imaps"));
    let sess = f.root.join("sess.pem");
    assert!(openssl_resumes(Some(a), b, &sess, "-tls1_3").await);
    std::fs::write(&f.keys, "this is not a key\n").unwrap();
    for proxy in [&f.a, &f.b] {
        assert!(
            common::wait_for_async(Duration::from_secs(5), || async {
                reloads(proxy, "refused").await == 1
            })
            .await,
            "the garbage file was looked at and refused"
        );
    }
    assert!(
        openssl_resumes(None, b, &sess, "-tls1_3").await,
        "the old session"
    );
    assert!(
        openssl_resumes(Some(b), a, &sess, "-tls1_3").await,
        "a new one"
    );
    std::fs::remove_file(&f.keys).unwrap();
    for proxy in [&f.a, &f.b] {
        assert!(
            common::wait_for_async(Duration::from_secs(5), || async {
                reloads(proxy, "refused").await == 2
            })
            .await
        );
    }
    assert!(
        openssl_resumes(Some(a), b, &sess, "-tls1_3").await,
        "with the file gone"
    );
}

/// Without `server.ticket_keys` each instance has keys of its own: a session made on one
/// is not resumed on the other (what the key file is for).
#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_file_sessions_stay_on_their_instance() {
    let f = fleet(false, "").await;
    let (a, b) = (f.a.addr("imaps"), f.b.addr("imaps"));
    let sess = f.root.join("sess.pem");
    assert!(!openssl_resumes(Some(a), b, &sess, "-tls1_3").await);
    assert!(openssl_resumes(Some(a), a, &sess, "-tls1_3").await);
    assert_eq!((resumed(&f.b).await, resumed(&f.a).await), (0, 1));
}

/// An instance that inotify tells nothing (`certs.watch = false`, as on a network file
/// system where another host writes) serves a new and a replaced certificate after its
/// rescan, the same certificate as the instance that was told.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_no_event_reports_is_served_after_the_rescan() {
    let f = fleet(true, "watch = false\nrescan_interval = \"1s\"").await;
    let (a, b) = (f.a.addr("imaps"), f.b.addr("imaps"));
    let since = std::time::Instant::now();
    f.pki
        .write_pair(&f.store, "b", &["b.example.com"], KeyKind::Ecdsa);
    let new = f.pki.leaf(&["a.example.com"], KeyKind::Rsa);
    std::fs::write(f.store.join("a.crt"), &new.chain_pem).unwrap();
    std::fs::write(f.store.join("a.key"), &new.key_pem).unwrap();
    for at in [a, b] {
        let served = wait_served(at, "a.example.com", &new.der(), Duration::from_secs(5)).await;
        assert!(served.is_some(), "the replaced certificate at {at}");
        assert_eq!(
            names_for(at, Some("b.example.com")).await,
            ["b.example.com"]
        );
    }
    // The instance without events got it from a rescan, within its interval.
    assert!(since.elapsed() < Duration::from_secs(5));
    assert_eq!(
        served_der(a, "b.example.com").await,
        served_der(b, "b.example.com").await,
        "the same certificate from both"
    );
}

/// HAProxy (`haproxy -c`) and mailfront accept and refuse the same key files, so that one
/// file serves a mixed fleet: keys of 48 and 80 bytes, more than three, CRLF lines; and
/// not two keys, a blank line, mixed sizes or a line that is not base64.
#[tokio::test(flavor = "multi_thread")]
async fn haproxy_and_mailfront_agree_on_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pki = Pki::new(root);
    let leaf = pki.leaf(&["a.example.com"], KeyKind::Ecdsa);
    std::fs::write(root.join("a.pem"), leaf.combined()).unwrap();
    let key = |n: usize| format!("$(openssl rand {n} | base64 -w0)");
    let cases = [
        (format!("{}\n{}\n{}\n", key(80), key(80), key(80)), true),
        (
            format!("{}\n{}\n{}\n{}\n", key(48), key(48), key(48), key(48)),
            true,
        ),
        (
            format!("{}\r\n{}\r\n{}\r\n", key(80), key(80), key(80)),
            true,
        ),
        (format!("{}\n{}\n", key(80), key(80)), false),
        (format!("{}\n{}\n{}\n\n", key(80), key(80), key(80)), false),
        (format!("{}\n{}\n{}\n", key(80), key(48), key(80)), false),
        (format!("{}\n{}\n{}\n", key(80), key(64), key(80)), false),
        (format!("{}\n{}\nnot-base64!\n", key(80), key(80)), false),
    ];
    for (i, (lines, valid)) in cases.iter().enumerate() {
        let keys = root.join(format!("keys{i}"));
        let make = format!("(umask 077; printf '%s' \"{lines}\" > {})", keys.display());
        assert_eq!(run("sh", &["-c", &make]).await.status, Some(0));
        let cfg = root.join(format!("haproxy{i}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode tcp\n  timeout client 1s\n  timeout server 1s\n  timeout connect 1s\n\
                 frontend f\n  bind 127.0.0.1:1 ssl crt {} tls-ticket-keys {}\n  default_backend b\n\
                 backend b\n  server s 127.0.0.1:2\n",
                root.join("a.pem").display(),
                keys.display()
            ),
        )
        .unwrap();
        let haproxy = run("haproxy", &["-c", "-f", &cfg.display().to_string()]).await;
        assert!(
            haproxy.status.is_some(),
            "haproxy runs (package haproxy; .ci/run installs it): {}",
            haproxy.stderr
        );
        let mailfront = mailfront::tickets::read(&keys);
        assert_eq!(
            haproxy.status == Some(0),
            *valid,
            "haproxy, case {i}: {}",
            haproxy.stderr
        );
        assert_eq!(
            mailfront.is_ok(),
            *valid,
            "mailfront, case {i}: {:?}",
            mailfront.err()
        );
    }
}
