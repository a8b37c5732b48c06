//! What the store lets in, by every door: a trusted certificate is never displaced by a
//! self-signed or untrusted one (dropped by hand or uploaded), uploads never write, replace
//! or delete a file the admin interface did not write, and a refused upload leaves nothing
//! on disk. RSA and ECDSA side by side, real clients (rustls, `openssl s_client`, curl).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::backend::{Backend, Expect};
use common::chains::{issue, write_atomically, ChainPki, Leaf};
use common::client::{self, Opts};
use common::{head, listener, store_dir, Pki, Proxy};
use rustls::SignatureScheme;

/// A proxy whose store judges chains by `chains`' root, with an `imaps` listener and the
/// admin interface on loopback; its store directory.
async fn proxy(
    root: &Path,
    chains: &ChainPki,
    fill: impl FnOnce(&Path),
) -> (Proxy, Backend, PathBuf) {
    Pki::new(root);
    let store = store_dir(root);
    fill(&store);
    let imap = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "{}ca_bundle = \"{}\"\n\n{}[admin]\nbind = \"127.0.0.1:0\"\n",
        head(root, &store, ""),
        chains.path("root.pem").display(),
        listener("imaps", "imaps", imap.addr, "")
    );
    (Proxy::start(root, &config), imap, store)
}

/// Writes `leaf` (with the intermediate when `chained`) as `NAME.crt` + `NAME.key`.
fn write_pair(store: &Path, name: &str, leaf: &Leaf, chains: Option<&ChainPki>) {
    let cert = match chains {
        Some(chains) => chains.fullchain(leaf),
        None => leaf.cert.clone(),
    };
    std::fs::write(store.join(format!("{name}.crt")), cert).unwrap();
    std::fs::write(store.join(format!("{name}.key")), &leaf.key).unwrap();
}

fn der(leaf: &Leaf) -> Vec<u8> {
    common::pki::first_der(leaf.cert.as_bytes())
}

/// The leaf served for `sni` to a client that takes ECDSA, and to one that takes only RSA.
async fn served(addr: SocketAddr, sni: &str) -> [Vec<u8>; 2] {
    let rsa_only = vec![
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let mut out = [Vec::new(), Vec::new()];
    for (i, schemes) in [None, Some(rsa_only)].into_iter().enumerate() {
        let opts = Opts {
            sni: Some(sni.to_owned()),
            schemes,
            ..Opts::default()
        };
        let stream = client::connect(addr, &opts).await.unwrap();
        out[i] = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    }
    out
}

/// `curl` with `args`: the status and the body.
async fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "--max-time", "20", "-w", "\n%{http_code}", url];
    all.extend(args);
    let run = client::run("curl", &all).await;
    assert_eq!(run.status, Some(0), "curl {url}: {}", run.stderr);
    let (body, code) = run.stdout.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.trim_end().to_owned())
}

/// PUTs `{"certificate", "key"[, "chain"]}` to `/api/v1/certs/{name}`: status and JSON.
async fn put(
    admin: SocketAddr,
    name: &str,
    body: serde_json::Value,
    dir: &Path,
) -> (u16, serde_json::Value) {
    let file = dir.join("upload.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://{admin}/api/v1/certs/{name}");
    let origin = format!("Origin: http://{admin}");
    let args = [
        "-X",
        "PUT",
        "-H",
        &origin,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
    ];
    let (code, text) = curl(&url, &args).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: not JSON: {text}"));
    (code, json)
}

async fn delete(admin: SocketAddr, name: &str) -> (u16, String) {
    let url = format!("http://{admin}/api/v1/certs/{name}");
    let origin = format!("Origin: http://{admin}");
    curl(&url, &["-X", "DELETE", "-H", &origin]).await
}

/// The report's row of `entry`, once it is there (the store looked at its files).
async fn row_when_there(admin: SocketAddr, entry: &str) -> serde_json::Value {
    let url = format!("http://{admin}/api/v1/certs");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = curl(&url, &[]).await;
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rows = report["entries"].as_array().unwrap();
        if let Some(row) = rows.iter().find(|r| r["entry"] == entry) {
            return row.clone();
        }
        assert!(Instant::now() < deadline, "no row for {entry} in {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything below `dirs`: each path with its bytes, or a link's target (not followed).
fn snapshot(dirs: &[&Path]) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(path, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(path.clone(), "dir".into());
                walk(&path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    let mut out = BTreeMap::new();
    for dir in dirs {
        walk(dir, &mut out);
    }
    out
}

fn codes(answer: &serde_json::Value) -> Vec<String> {
    let findings = answer["findings"].as_array().cloned().unwrap_or_default();
    findings
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

const ALPHA: &str = "mail.alpha.test";

/// A store serving mail.alpha.test with CA-issued certificates valid a year, ECDSA
/// (`alpha.crt`) and RSA (`alpha-rsa.crt`): the two leaves.
fn alpha_store(chains: &ChainPki) -> (Leaf, Leaf, impl FnOnce(&Path) + '_) {
    let ecdsa = chains.leaf_with(&[ALPHA], (-1, 365), 21);
    let rsa = chains.rsa_leaf_with(&[ALPHA], (-1, 365), 22);
    let (e, r) = (
        (ecdsa.cert.clone(), ecdsa.key.clone()),
        (rsa.cert.clone(), rsa.key.clone()),
    );
    let fill = move |store: &Path| {
        for (name, (cert, key)) in [("alpha", e), ("alpha-rsa", r)] {
            let leaf = Leaf {
                cert,
                key,
                serial: 0,
            };
            write_pair(store, name, &leaf, Some(chains));
        }
    };
    (ecdsa, rsa, fill)
}

/// Self-signed certificates for mail.alpha.test valid ten years, dropped into the store
/// beside CA-issued ones valid a year: the CA-issued ones keep serving both kinds of
/// client, verified by `openssl s_client` against the CA; the self-signed ones are
/// refused by the store's rule, naming what serves and why. A CA-issued one valid longer
/// still takes over (dates rank within equal trust).
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_self_signed_certificate_never_displaces_a_trusted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let chains = ChainPki::new();
    let (ecdsa, rsa, fill) = alpha_store(&chains);
    let (proxy, _imap, store) = proxy(tmp.path(), &chains, fill).await;
    let (imaps, admin) = (proxy.addr("imaps"), proxy.admin.unwrap());
    assert_eq!(served(imaps, ALPHA).await, [der(&ecdsa), der(&rsa)]);

    let ten_years = (-1, 3650);
    let evil = issue(&[ALPHA], ten_years, 7, &rcgen::PKCS_ECDSA_P256_SHA256, None);
    let evil_rsa = issue(&[ALPHA], ten_years, 8, &rcgen::PKCS_RSA_SHA256, None);
    for (file, leaf) in [("evil.pem", &evil), ("evil-rsa.pem", &evil_rsa)] {
        write_atomically(&store.join(file), &format!("{}{}", leaf.cert, leaf.key));
    }
    for (entry, serving) in [("evil.pem", "alpha"), ("evil-rsa.pem", "alpha")] {
        let row = row_when_there(admin, entry).await;
        assert_eq!(row["state"], "refused", "{row}");
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("self-signed") && reason.contains("with a chain to a trusted root"),
            "{entry}: {row}"
        );
        assert!(reason.contains(serving), "{entry}: {row}");
    }
    assert_eq!(served(imaps, ALPHA).await, [der(&ecdsa), der(&rsa)]);
    let verified = client::s_client(imaps, Some(ALPHA), &chains.path("root.pem")).await;
    assert!(
        verified.stderr.contains("Verification: OK"),
        "{}",
        verified.stderr
    );

    // Within one rank the later notAfter wins, as before.
    let longer = chains.leaf_with(&[ALPHA], (-1, 700), 23);
    let since = Instant::now();
    write_pair(&store, "alpha-2", &longer, Some(&chains));
    proxy.settled_since(since).await;
    let seen = client::wait_served(imaps, ALPHA, &der(&longer), Duration::from_secs(5)).await;
    assert!(seen.is_some(), "the longer CA-issued certificate serves");
}

/// The same through the admin interface: a self-signed upload for a name a trusted
/// certificate serves is answered 422 `not-better`, naming the version that keeps serving
/// and why, ECDSA and RSA; so is a trusted one that expires sooner; nothing is written.
/// A trusted one that expires later is installed and served by the time the answer comes.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_would_lose_is_refused_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let chains = ChainPki::new();
    let (ecdsa, rsa, fill) = alpha_store(&chains);
    let (proxy, _imap, store) = proxy(tmp.path(), &chains, fill).await;
    let (imaps, admin) = (proxy.addr("imaps"), proxy.admin.unwrap());
    let before = snapshot(&[&store]);

    let ten_years = (-1, 3650);
    let cases = [
        (
            issue(&[ALPHA], ten_years, 7, &rcgen::PKCS_ECDSA_P256_SHA256, None),
            false,
            "alpha.crt",
            "trusted root",
        ),
        (
            issue(&[ALPHA], ten_years, 8, &rcgen::PKCS_RSA_SHA256, None),
            false,
            "alpha-rsa.crt",
            "trusted root",
        ),
        (
            chains.rsa_leaf_with(&[ALPHA], (-1, 90), 24),
            true,
            "alpha-rsa.crt",
            "expires later",
        ),
    ];
    for (leaf, chained, winner, why) in cases {
        let certificate = match chained {
            true => chains.fullchain(&leaf),
            false => leaf.cert.clone(),
        };
        let body = serde_json::json!({ "certificate": certificate, "key": leaf.key });
        let (code, answer) = put(admin, ALPHA, body, tmp.path()).await;
        assert_eq!(code, 422, "{answer}");
        assert_eq!(codes(&answer), ["not-better"], "{answer}");
        let message = answer["findings"][0]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{winner} keeps serving {ALPHA}")) && message.contains(why),
            "{message}"
        );
        assert!(answer["findings"][0]["fix"]
            .as_str()
            .is_some_and(|f| !f.is_empty()));
        assert_eq!(snapshot(&[&store]), before, "nothing written");
        assert_eq!(served(imaps, ALPHA).await, [der(&ecdsa), der(&rsa)]);
    }

    let longer = chains.leaf_with(&[ALPHA], (-1, 700), 25);
    let body = serde_json::json!({ "certificate": chains.fullchain(&longer), "key": longer.key });
    let (code, answer) = put(admin, ALPHA, body, tmp.path()).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["entry"]["state"], "serving", "{answer}");
    assert_eq!(
        served(imaps, ALPHA).await[0],
        der(&longer),
        "served when answered"
    );
}

/// An upload for a name whose entry the operator put in the store, in every layout (a
/// single `NAME.pem`, `NAME.crt` + `NAME.key`, a folder, certbot's `live/` through a
/// symlink, a `NAME.pem` the interface wrote and the operator then edited), is answered
/// 409 in JSON naming the file, and so is a DELETE of a `NAME.pem` that is not the
/// interface's: every file and link byte for byte as it was, and the operator's
/// certificates still served.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_never_touch_an_operators_files() {
    let tmp = tempfile::tempdir().unwrap();
    let chains = ChainPki::new();
    let names = [
        "single.alpha.test",
        "pair.alpha.test",
        "folder.alpha.test",
        "live.alpha.test",
        "edited.alpha.test",
    ];
    let leaves: Vec<Leaf> = (0..names.len())
        .map(|i| chains.leaf_with(&[names[i]], (-1, 300), 30 + i as u64))
        .collect();
    let letsencrypt = tmp.path().join("letsencrypt");
    let fill = |store: &Path| {
        let single = &leaves[0];
        let text = format!("{}{}", chains.fullchain(single), single.key);
        std::fs::write(store.join("single.alpha.test.pem"), text).unwrap();
        write_pair(store, "pair.alpha.test", &leaves[1], Some(&chains));
        let folder = store.join("folder.alpha.test");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("fullchain.pem"), chains.fullchain(&leaves[2])).unwrap();
        std::fs::write(folder.join("privkey.pem"), &leaves[2].key).unwrap();
        // certbot: live/NAME/*.pem linked into archive/NAME/, the store linking live/.
        let archive = letsencrypt.join("archive/live.alpha.test");
        let live = letsencrypt.join("live/live.alpha.test");
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(archive.join("fullchain1.pem"), chains.fullchain(&leaves[3])).unwrap();
        std::fs::write(archive.join("privkey1.pem"), &leaves[3].key).unwrap();
        for (link, target) in [
            ("fullchain.pem", "fullchain1.pem"),
            ("privkey.pem", "privkey1.pem"),
        ] {
            let target = Path::new("../../archive/live.alpha.test").join(target);
            std::os::unix::fs::symlink(target, live.join(link)).unwrap();
        }
        std::os::unix::fs::symlink(letsencrypt.join("live"), store.join("live")).unwrap();
    };
    let (proxy, _imap, store) = proxy(tmp.path(), &chains, fill).await;
    let (imaps, admin) = (proxy.addr("imaps"), proxy.admin.unwrap());

    // The interface writes edited.alpha.test.pem; the operator then edits it by hand.
    let edited = &leaves[4];
    let body = serde_json::json!({ "certificate": chains.fullchain(edited), "key": edited.key });
    let (code, answer) = put(admin, "edited.alpha.test", body, tmp.path()).await;
    assert_eq!(code, 201, "{answer}");
    let file = store.join("edited.alpha.test.pem");
    let by_hand = format!(
        "# renewed by hand\n{}",
        std::fs::read_to_string(&file).unwrap()
    );
    let since = Instant::now();
    std::fs::write(&file, by_hand).unwrap();
    proxy.settled_since(since).await;

    let before = snapshot(&[&store, &letsencrypt]);
    for (name, leaf) in names.iter().zip(&leaves) {
        let ecdsa = |addr| async move { client::served_der(addr, name).await.unwrap() };
        assert_eq!(ecdsa(imaps).await, der(leaf), "{name} serves");
        let other = chains.leaf_with(&[name], (-1, 600), 40);
        let body = serde_json::json!({ "certificate": chains.fullchain(&other), "key": other.key });
        let (code, answer) = put(admin, name, body, tmp.path()).await;
        assert_eq!(code, 409, "{name}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(name), "{name}: {error}");
        let (code, text) = delete(admin, name).await;
        let expected = match *name {
            "single.alpha.test" | "edited.alpha.test" => 409,
            _ => 404,
        };
        assert_eq!(code, expected, "DELETE {name}: {text}");
        assert_eq!(
            snapshot(&[&store, &letsencrypt]),
            before,
            "{name}: nothing touched"
        );
        assert_eq!(ecdsa(imaps).await, der(leaf), "{name} still serves");
    }
}

/// An upload whose chain holds a root no client trusts (it completes the chain as sent,
/// and is left out of what is served) is refused at once, for the bytes that would be
/// written: `chain-incomplete`, 422 within a few seconds, and no file, dot-file or record
/// left behind; the name stays on the server-wide certificate.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_with_a_rogue_root_is_refused_at_once_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let chains = ChainPki::new();
    let (proxy, _imap, store) = proxy(tmp.path(), &chains, |_| {}).await;
    let (imaps, admin) = (proxy.addr("imaps"), proxy.admin.unwrap());
    let rogue = common::chains::ca("Rogue Root", None);
    let name = "mail.beta.test";
    let leaf = issue(
        &[name],
        (-1, 300),
        50,
        &rcgen::PKCS_ECDSA_P256_SHA256,
        Some((&rogue.cert, &rogue.key)),
    );
    let before = snapshot(&[&store]);
    let body = serde_json::json!({
        "certificate": leaf.cert, "chain": rogue.cert.pem(), "key": leaf.key
    });
    let started = Instant::now();
    let (code, answer) = put(admin, name, body, tmp.path()).await;
    assert_eq!(code, 422, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at once, not after a wait: {:?}",
        started.elapsed()
    );
    assert!(
        codes(&answer).contains(&"chain-incomplete".to_owned()),
        "{answer}"
    );
    assert_eq!(snapshot(&[&store]), before, "nothing left on disk");
    assert_eq!(client::names_for(imaps, Some(name)).await, ["server.com"]);
}

/// The same across a wildcard: a trusted `*.wild.test` serves mail.wild.test, and a
/// self-signed certificate naming mail.wild.test exactly (which an exact name's lookup
/// would prefer) is refused, dropped or uploaded, and the wildcard keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_exact_name_never_displaces_a_trusted_wildcard() {
    let tmp = tempfile::tempdir().unwrap();
    let chains = ChainPki::new();
    let wild = chains.leaf_with(&["*.wild.test"], (-1, 365), 60);
    let (w_cert, w_key) = (wild.cert.clone(), wild.key.clone());
    let fill = |store: &Path| {
        let leaf = Leaf {
            cert: w_cert,
            key: w_key,
            serial: 0,
        };
        write_pair(store, "wild", &leaf, Some(&chains));
    };
    let (proxy, _imap, store) = proxy(tmp.path(), &chains, fill).await;
    let (imaps, admin) = (proxy.addr("imaps"), proxy.admin.unwrap());
    let name = "mail.wild.test";
    assert_eq!(client::served_der(imaps, name).await.unwrap(), der(&wild));

    let ten_years = (-1, 3650);
    let evil = issue(&[name], ten_years, 61, &rcgen::PKCS_ECDSA_P256_SHA256, None);
    let body = serde_json::json!({ "certificate": evil.cert, "key": evil.key });
    let before = snapshot(&[&store]);
    let (code, answer) = put(admin, name, body, tmp.path()).await;
    assert_eq!(code, 422, "{answer}");
    assert_eq!(codes(&answer), ["not-better"], "{answer}");
    let message = answer["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("wild.crt keeps serving mail.wild.test"),
        "{message}"
    );
    assert_eq!(snapshot(&[&store]), before, "nothing written");

    write_atomically(
        &store.join("evil.pem"),
        &format!("{}{}", evil.cert, evil.key),
    );
    let row = row_when_there(admin, "evil.pem").await;
    assert_eq!(row["state"], "refused", "{row}");
    assert_eq!(client::served_der(imaps, name).await.unwrap(), der(&wild));
}
