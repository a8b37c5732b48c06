//! OCSP stapling: responses made by `openssl ocsp` answering as the test CA's responder (or
//! a responder it delegated to), dropped beside the certificates, stapled while they are
//! good answers for them and current, as `openssl s_client -status` and `openssl ocsp`
//! see it; stale, foreign, future and revoked ones are not stapled.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::client::{run, stapled};
use common::{head, listener, KeyKind, Pki, Proxy};

/// A store with the test PKI, an imaps listener in front of an IMAP backend, and a
/// directory the proxy does not watch where the test's responder works.
struct Setup {
    _dir: tempfile::TempDir,
    /// The responder's directory, with the CA's key and each entry's leaf.
    work: PathBuf,
    store: PathBuf,
    pki: Pki,
    proxy: Proxy,
    _imap: Backend,
}

impl Setup {
    /// `prepare` writes into the store (and the responder's directory) before the proxy
    /// starts.
    async fn new(prepare: impl FnOnce(&Path, &Pki, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let (pki_dir, work) = (root.join("pki"), root.join("responder"));
        std::fs::create_dir_all(&pki_dir).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let pki = Pki::new(&pki_dir);
        std::fs::copy(pki.ca_key_file(), work.join("ca.key")).unwrap();
        let store = common::store_dir(&root);
        prepare(&work, &pki, &store);
        let imap = Backend::start("* OK", Expect::Plain).await;
        let config = format!(
            "{}{}[admin]\nbind = \"127.0.0.1:0\"\n",
            head(&pki_dir, &store, ""),
            listener("imaps", "imaps", imap.addr, "")
        );
        let started = std::time::Instant::now();
        let proxy = Proxy::start(&root, &config);
        // The reloader's first look at the store, so that the refreshes a test waits for
        // are those of its own writes.
        proxy.settled_since(started).await;
        Self {
            _dir: dir,
            work,
            store,
            pki,
            proxy,
            _imap: imap,
        }
    }

    /// `openssl ocsp`'s answer about `cert`, made in the responder's directory.
    async fn respond(&self, cert: &Path, answer: &Answer<'_>) -> PathBuf {
        respond(&self.work, &self.pki, cert, answer).await
    }

    /// Renames the response `made` into the store as `file`, as a fetching script does,
    /// and waits until the store has looked at it.
    async fn install(&self, made: &Path, file: &str) {
        let since = std::time::Instant::now();
        std::fs::rename(made, self.store.join(file)).unwrap();
        self.proxy.settled_since(since).await;
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr("imaps")
    }

    /// The running proxy's report (the admin API's, as `mailfront certs --format json`
    /// prints it).
    async fn report(&self) -> serde_json::Value {
        let url = format!("http://{}/api/v1/certs", self.proxy.admin.unwrap());
        let out = run("curl", &["-sS", &url]).await;
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// The report's row for `entry`.
    async fn row(&self, entry: &str) -> serde_json::Value {
        let report = self.report().await;
        let rows = report["entries"].as_array().unwrap();
        rows.iter()
            .find(|r| r["entry"] == entry)
            .unwrap_or_else(|| panic!("no row {entry} in {report}"))
            .clone()
    }
}

/// Writes `NAME.pem` (chain and key) for `name` into `store`; returns its leaf's PEM file
/// (beside the store, for `openssl ocsp -cert`).
fn entry(root: &Path, pki: &Pki, store: &Path, name: &str) -> PathBuf {
    let leaf = pki.leaf(&[name], KeyKind::Ecdsa);
    std::fs::write(store.join(format!("{name}.pem")), leaf.combined()).unwrap();
    let cert = root.join(format!("{name}.leaf.pem"));
    std::fs::write(&cert, leaf.cert_pem()).unwrap();
    cert
}

/// How `openssl ocsp` is to answer.
struct Answer<'a> {
    /// `V` (good) or `R` (revoked), as in the responder's index.
    status: char,
    /// faketime's offset for the responder's clock (`-2d`, `+1d`), when not now.
    clock: Option<&'a str>,
    /// How long the response is current: `-ndays N` or `-nmin N`.
    validity: &'a str,
    /// The responder's certificate and key, when not the CA itself.
    signer: Option<(&'a Path, &'a Path)>,
}

const GOOD: Answer<'static> = Answer {
    status: 'V',
    clock: None,
    validity: "-ndays 1",
    signer: None,
};

/// `openssl ocsp` as the test CA's responder: the response about certificate `cert`,
/// made in `work` (nothing the proxy watches); returns its file.
async fn respond(work: &Path, pki: &Pki, cert: &Path, answer: &Answer<'_>) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let out = work.join(format!(
        "response{}.der",
        MADE.fetch_add(1, Ordering::Relaxed)
    ));
    let ca = pki.ca_file();
    let ca_key = work.join("ca.key");
    let (rsigner, rkey) = answer.signer.unwrap_or((&ca, &ca_key));
    let cert_arg = cert.display().to_string();
    let serial = run("openssl", &["x509", "-noout", "-serial", "-in", &cert_arg]).await;
    let serial = serial
        .stdout
        .trim()
        .trim_start_matches("serial=")
        .to_owned();
    let revoked = if answer.status == 'R' {
        "261101000000Z"
    } else {
        ""
    };
    let index = work.join("index.txt");
    let line = format!(
        "{}\t301231235959Z\t{revoked}\t{serial}\tunknown\t/CN=x\n",
        answer.status
    );
    std::fs::write(&index, line).unwrap();
    let req = work.join("req.der");
    let script = format!(
        "openssl ocsp -issuer {ca} -cert {cert_arg} -reqout {req} -no_nonce && \
         {clock} openssl ocsp -index {index} -rsigner {rsigner} -rkey {rkey} -CA {ca} \
         -reqin {req} -respout {out} {validity}",
        ca = ca.display(),
        req = req.display(),
        clock = answer
            .clock
            .map(|c| format!("faketime -f '{c}'"))
            .unwrap_or_default(),
        index = index.display(),
        rsigner = rsigner.display(),
        rkey = rkey.display(),
        out = out.display(),
        validity = answer.validity,
    );
    let made = run("sh", &["-c", &script]).await;
    assert_eq!(
        made.status,
        Some(0),
        "openssl ocsp (and faketime; .ci/run installs it): {}",
        made.stderr
    );
    out
}

/// What `openssl s_client -status` says of the stapled response for `name`.
async fn s_client_status(at: SocketAddr, name: &str, ca: &Path) -> String {
    let cmd = format!(
        "printf 'a LOGOUT\\r\\n' | openssl s_client -connect {at} -servername {name} -status \
         -CAfile {} -verify_return_error -ign_eof",
        ca.display()
    );
    let out = run("sh", &["-c", &cmd]).await;
    assert!(out.stdout.contains("BYE"), "{}{}", out.stdout, out.stderr);
    out.stdout
}

/// A good response made by `openssl ocsp` as the CA's responder is stapled: `openssl
/// s_client -status` shows it good, and `openssl ocsp` verifies the bytes stapled against
/// the CA. One made by a responder the CA delegated to is stapled too.
#[tokio::test(flavor = "multi_thread")]
async fn a_good_response_is_stapled_and_verifies() {
    let mut leaves = Vec::new();
    let s = Setup::new(|work, pki, store| {
        leaves.push(entry(work, pki, store, "a.example.com"));
        leaves.push(entry(work, pki, store, "b.example.com"));
        let responder = pki.ocsp_responder();
        std::fs::write(work.join("responder.pem"), &responder.chain_pem).unwrap();
        std::fs::write(work.join("responder.key"), &responder.key_pem).unwrap();
    })
    .await;
    let (a, b) = (&leaves[0], &leaves[1]);
    let made = s.respond(a, &GOOD).await;
    s.install(&made, "a.example.com.pem.ocsp").await;
    let (rcert, rkey) = (s.work.join("responder.pem"), s.work.join("responder.key"));
    let delegated = Answer {
        signer: Some((&rcert, &rkey)),
        ..GOOD
    };
    // HAProxy's other name: NAME.ocsp for NAME.pem.
    let made = s.respond(b, &delegated).await;
    s.install(&made, "b.example.com.ocsp").await;
    for (name, leaf) in [("a.example.com", a), ("b.example.com", b)] {
        let shown = s_client_status(s.addr(), name, &s.pki.ca_file()).await;
        assert!(
            shown.contains("OCSP Response Status: successful")
                && shown.contains("Cert Status: good"),
            "{name}: {shown}"
        );
        let bytes = stapled(s.addr(), name).await;
        assert!(!bytes.is_empty(), "{name}: stapled for rustls too");
        let file = s.work.join(format!("{name}.stapled.der"));
        std::fs::write(&file, bytes).unwrap();
        let verify = format!(
            "openssl ocsp -respin {} -CAfile {ca} -issuer {ca} -cert {}",
            file.display(),
            leaf.display(),
            ca = s.pki.ca_file().display()
        );
        let out = run("sh", &["-c", &verify]).await;
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            all.contains("Response verify OK") && all.contains(": good"),
            "{name}: {all}"
        );
    }
    let row = s.row("a.example.com.pem").await;
    assert_eq!(row["ocsp"]["stapled"], true, "{row}");
    assert!(
        row["files"].to_string().contains("a.example.com.pem.ocsp"),
        "{row}"
    );
    // `mailfront check` judges the files as the store does.
    let out = std::process::Command::new(common::running::BIN)
        .arg("check")
        .arg(s.store.join("a.example.com.pem"))
        .arg(s.store.join("a.example.com.pem.ocsp"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ocsp:      good, stapled until"), "{text}");
}

/// certbot's layout (`live/DOMAIN/fullchain.pem.ocsp`) and the server-wide certificate
/// (`CERTFILE.ocsp` beside `default_cert`) are stapled too, each picked up when written.
#[tokio::test(flavor = "multi_thread")]
async fn certbot_and_server_wide_responses_are_stapled() {
    let mut leaves = Vec::new();
    let s = Setup::new(|work, pki, store| {
        let live = store.join("live/c.example.com");
        std::fs::create_dir_all(&live).unwrap();
        let leaf = pki.leaf(&["c.example.com"], KeyKind::Ecdsa);
        std::fs::write(live.join("fullchain.pem"), &leaf.chain_pem).unwrap();
        std::fs::write(live.join("privkey.pem"), &leaf.key_pem).unwrap();
        let cert = work.join("c.example.com.leaf.pem");
        std::fs::write(&cert, leaf.cert_pem()).unwrap();
        leaves.push(cert);
    })
    .await;
    let made = s.respond(&leaves[0], &GOOD).await;
    s.install(&made, "live/c.example.com/fullchain.pem.ocsp")
        .await;
    // The server-wide certificate: the test PKI's server.com, beside the store.
    let server_wide = s.pki.ca_file().with_file_name("server.com.crt");
    let made = s.respond(&server_wide, &GOOD).await;
    let since = std::time::Instant::now();
    std::fs::rename(&made, server_wide.with_file_name("server.com.crt.ocsp")).unwrap();
    s.proxy.settled_since(since).await;
    for name in ["c.example.com", "unknown.example.com"] {
        let shown = s_client_status(s.addr(), name, &s.pki.ca_file()).await;
        assert!(shown.contains("Cert Status: good"), "{name}: {shown}");
    }
    let report = s.report().await;
    assert_eq!(report["server_wide"]["ocsp"]["stapled"], true, "{report}");
}

/// Responses that are stale (made two days ago for a day), for another certificate, dated
/// ahead of this host's clock, or signed by a stranger are not stapled; each entry serves
/// unstapled and the report says why with the catalogue's code.
#[tokio::test(flavor = "multi_thread")]
async fn stale_foreign_future_and_unsigned_responses_are_not_stapled() {
    let mut leaves = Vec::new();
    let s = Setup::new(|work, pki, store| {
        for name in ["stale", "foreign", "future", "stranger"] {
            leaves.push(entry(work, pki, store, &format!("{name}.example.com")));
        }
        // A responder of another CA: not the issuer, nor certified by it.
        let other_dir = work.join("other");
        std::fs::create_dir_all(&other_dir).unwrap();
        let stranger = Pki::new(&other_dir).ocsp_responder();
        std::fs::write(work.join("stranger.pem"), &stranger.chain_pem).unwrap();
        std::fs::write(work.join("stranger.key"), &stranger.key_pem).unwrap();
    })
    .await;
    let stale = Answer {
        clock: Some("-2d"),
        ..GOOD
    };
    let future = Answer {
        clock: Some("+1d"),
        ..GOOD
    };
    let (rcert, rkey) = (s.work.join("stranger.pem"), s.work.join("stranger.key"));
    let unsigned = Answer {
        signer: Some((&rcert, &rkey)),
        ..GOOD
    };
    let cases = [
        ("stale", &leaves[0], &stale, "ocsp-expired"),
        // The response about "stale"'s certificate, under "foreign"'s name.
        ("foreign", &leaves[0], &GOOD, "ocsp-foreign"),
        ("future", &leaves[2], &future, "ocsp-not-yet-valid"),
        ("stranger", &leaves[3], &unsigned, "ocsp-bad-signature"),
    ];
    for (name, leaf, answer, _) in &cases {
        let made = s.respond(leaf, answer).await;
        s.install(&made, &format!("{name}.example.com.pem.ocsp"))
            .await;
    }
    for (name, _, _, code) in cases {
        let host = format!("{name}.example.com");
        let shown = s_client_status(s.addr(), &host, &s.pki.ca_file()).await;
        assert!(
            shown.contains("OCSP response: no response sent"),
            "{name}: {shown}"
        );
        assert!(
            shown.contains(&format!("CN = {host}")),
            "{name} serves: {shown}"
        );
        let row = s.row(&format!("{host}.pem")).await;
        assert_eq!(row["state"], "serving", "{row}");
        assert_eq!(row["ocsp"]["stapled"], false, "{row}");
        let reason = row["ocsp"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.starts_with(code), "{name}: {reason}");
    }
}

/// A response whose nextUpdate passes while it serves stops being stapled then, with no
/// change on disk; the store loads the entry again and says why; a fresh response written
/// over it is stapled again.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_stops_being_stapled_at_its_next_update() {
    let mut leaves = Vec::new();
    let s =
        Setup::new(|work, pki, store| leaves.push(entry(work, pki, store, "a.example.com"))).await;
    // Current for one minute from 50 seconds ago: 10 seconds left.
    let short = Answer {
        clock: Some("-50s"),
        validity: "-nmin 1",
        ..GOOD
    };
    let made = s.respond(&leaves[0], &short).await;
    s.install(&made, "a.example.com.pem.ocsp").await;
    assert!(
        !stapled(s.addr(), "a.example.com").await.is_empty(),
        "stapled while current"
    );
    let gone = common::wait_for_async(Duration::from_secs(20), || async {
        stapled(s.addr(), "a.example.com").await.is_empty()
    })
    .await;
    assert!(gone, "not stapled once its nextUpdate passed");
    let said = common::wait_for_async(Duration::from_secs(10), || async {
        s.row("a.example.com.pem").await["ocsp"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("ocsp-expired"))
    })
    .await;
    assert!(
        said,
        "the store loaded it again: {}",
        s.row("a.example.com.pem").await
    );
    let made = s.respond(&leaves[0], &GOOD).await;
    s.install(&made, "a.example.com.pem.ocsp").await;
    assert!(
        !stapled(s.addr(), "a.example.com").await.is_empty(),
        "a fresh one is stapled"
    );
}

/// A response saying the certificate is revoked is the catalogue's `revoked`, as a CRL
/// saying so is: the version is refused, and the one serving before (here with a good
/// response) keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_response_refuses_the_version() {
    let mut leaves = Vec::new();
    let s =
        Setup::new(|work, pki, store| leaves.push(entry(work, pki, store, "a.example.com"))).await;
    let made = s.respond(&leaves[0], &GOOD).await;
    s.install(&made, "a.example.com.pem.ocsp").await;
    let good = stapled(s.addr(), "a.example.com").await;
    assert!(!good.is_empty(), "{}", s.row("a.example.com.pem").await);
    let revoked = Answer {
        status: 'R',
        ..GOOD
    };
    let made = s.respond(&leaves[0], &revoked).await;
    s.install(&made, "a.example.com.pem.ocsp").await;
    let row = s.row("a.example.com.pem").await;
    assert_eq!(row["state"], "serving", "{row}");
    assert!(
        row["refused_version"]["codes"]
            .to_string()
            .contains("revoked"),
        "{row}"
    );
    assert_eq!(
        stapled(s.addr(), "a.example.com").await,
        good,
        "the serving version stays"
    );
}

/// An OCSP response file that names no certificate is reported once as not an entry.
#[tokio::test(flavor = "multi_thread")]
async fn an_orphan_response_is_reported() {
    let s = Setup::new(|work, pki, store| {
        entry(work, pki, store, "a.example.com");
        std::fs::write(store.join("nobody.pem.ocsp"), b"\x30\x03\x0a\x01\x01").unwrap();
    })
    .await;
    let report = s.report().await;
    assert!(
        report
            .to_string()
            .contains("an OCSP response for no certificate here"),
        "{report}"
    );
}
