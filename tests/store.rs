//! The certificate store at start: every layout, broken entries, the server-wide
//! certificate (generated, kept, or broken).

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::backend::{Backend, Expect};
use common::client::{self, Opts};
use common::{head, listener, store_dir, KeyKind, Pki, Proxy};
use mailfront::certs::State;
use mailfront::{Config, Server, StartError};

/// certbot's live/ symlinks into archive/ and a Kubernetes secret volume's `..data` swap
/// both load, next to the single-file and pair layouts.
#[tokio::test(flavor = "multi_thread")]
async fn every_layout_serves_its_names() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    pki.write_single(&store, "single", &["single.example.com"], KeyKind::Ecdsa);
    pki.write_pair(&store, "pair", &["pair.example.com"], KeyKind::Rsa);

    // certbot: /etc/letsencrypt/{archive,live}; the store is live/, the files live in archive/.
    let archive = tmp.path().join("archive/certbot.example.com");
    std::fs::create_dir_all(&archive).unwrap();
    let leaf = pki.leaf(&["certbot.example.com"], KeyKind::Ecdsa);
    std::fs::write(archive.join("fullchain1.pem"), &leaf.chain_pem).unwrap();
    std::fs::write(archive.join("privkey1.pem"), &leaf.key_pem).unwrap();
    let live = store.join("certbot.example.com");
    std::fs::create_dir_all(&live).unwrap();
    symlink(archive.join("fullchain1.pem"), live.join("fullchain.pem")).unwrap();
    symlink(archive.join("privkey1.pem"), live.join("privkey.pem")).unwrap();

    // Kubernetes: DIR/tls.crt -> ..data/tls.crt, ..data -> ..2026_11_22_00_00_00.1
    let k8s = store.join("k8s-secret");
    let stamp = k8s.join("..2026_11_22_00_00_00.1");
    std::fs::create_dir_all(&stamp).unwrap();
    let leaf = pki.leaf(&["k8s.example.com"], KeyKind::Ecdsa);
    std::fs::write(stamp.join("tls.crt"), &leaf.chain_pem).unwrap();
    std::fs::write(stamp.join("tls.key"), &leaf.key_pem).unwrap();
    symlink("..2026_11_22_00_00_00.1", k8s.join("..data")).unwrap();
    symlink("..data/tls.crt", k8s.join("tls.crt")).unwrap();
    symlink("..data/tls.key", k8s.join("tls.key")).unwrap();

    // Leftovers that must not load (a copy of a valid entry under an ignored name).
    std::fs::copy(store.join("single.pem"), store.join(".single.pem.swp")).unwrap();
    std::fs::copy(store.join("single.pem"), store.join("other.pem~")).unwrap();

    let (proxy, _backend) = common::imaps_over(tmp.path(), &head(tmp.path(), &store, "")).await;
    let addr = proxy.addr("imaps");
    for name in [
        "single.example.com",
        "pair.example.com",
        "certbot.example.com",
        "k8s.example.com",
    ] {
        assert_eq!(client::names_for(addr, Some(name)).await, [name]);
    }
}

/// Broken entries (truncated PEM, key of another certificate, no key) are skipped and the
/// rest of the store serves.
#[tokio::test(flavor = "multi_thread")]
async fn broken_entries_are_skipped_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    pki.write_pair(&store, "good", &["good.example.com"], KeyKind::Ecdsa);
    let leaf = pki.leaf(&["truncated.example.com"], KeyKind::Ecdsa);
    let full = format!("{}{}", leaf.chain_pem, leaf.key_pem);
    std::fs::write(store.join("truncated.pem"), &full[..full.len() / 2]).unwrap();
    let a = pki.leaf(&["mismatch.example.com"], KeyKind::Ecdsa);
    let b = pki.leaf(&["other.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("mismatch.crt"), &a.chain_pem).unwrap();
    std::fs::write(store.join("mismatch.key"), &b.key_pem).unwrap();
    std::fs::write(store.join("nokey.pem"), &a.chain_pem).unwrap();

    let unused = "127.0.0.1:1".parse().unwrap();
    let config = Config::load(&common::write_imaps_config(tmp.path(), &store, unused)).unwrap();
    let provider = mailfront::tls::provider();
    let (store_now, reloader) =
        mailfront::certs::open(&config.certs, "server.com", &provider).unwrap();
    let report = reloader.report();
    assert_eq!(report.count(State::Serving), 1);
    let reasons: Vec<String> = report
        .entries
        .iter()
        .filter(|row| row.state == State::Refused)
        .map(|row| {
            let findings: Vec<String> = row.findings.iter().map(ToString::to_string).collect();
            let reason = row.reason.clone().unwrap_or_default();
            format!("{}: {}{reason}", row.entry, findings.join("; "))
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons[0].starts_with("mismatch.crt: key-mismatch") && reasons[0].contains("mismatch.key"),
        "{reasons:#?}"
    );
    assert!(
        reasons[1].starts_with("nokey.pem:") && reasons[1].contains("no private key"),
        "{reasons:#?}"
    );
    assert!(
        reasons[2].starts_with("truncated.pem:") && reasons[2].contains("half-written"),
        "{reasons:#?}"
    );
    assert_eq!(store_now.index().entries(), 1);

    let (proxy, _backend) = common::imaps_over(tmp.path(), &head(tmp.path(), &store, "")).await;
    let addr = proxy.addr("imaps");
    assert_eq!(
        client::names_for(addr, Some("good.example.com")).await,
        ["good.example.com"]
    );
    assert_eq!(
        client::names_for(addr, Some("truncated.example.com")).await,
        ["server.com"]
    );
}

/// A broken server-wide certificate stops the start, naming the file and the reason.
#[test]
fn broken_server_wide_certificate_stops_start() {
    let tmp = tempfile::tempdir().unwrap();
    let _pki = Pki::new(tmp.path());
    let store = store_dir(tmp.path());
    std::fs::write(
        tmp.path().join("server.com.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA",
    )
    .unwrap();
    let unused = "127.0.0.1:1".parse().unwrap();
    let config = Config::load(&common::write_imaps_config(tmp.path(), &store, unused)).unwrap();
    let err = Server::bind(&config).err().expect("start refused");
    assert!(matches!(err, StartError::Cert(_)));
    let message = err.to_string();
    assert!(
        message.contains("server-wide") && message.contains("server.com.key"),
        "{message}"
    );
}

/// Without a server-wide certificate one is generated for `server.name` (key mode 0600),
/// served to clients without a match, and reused on the next start.
#[tokio::test(flavor = "multi_thread")]
async fn server_wide_certificate_is_generated_once_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_dir(tmp.path());
    let backend = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "[server]\nname = \"mx.hosting.test\"\n[certs]\ndir = \"store\"\n{}",
        listener("imaps", "imaps", backend.addr, "")
    );
    let cert = tmp.path().join("default/fullchain.pem");
    let key = tmp.path().join("default/privkey.pem");
    let first_der = {
        let proxy = Proxy::start(tmp.path(), &config);
        let stream = client::connect(proxy.addr("imaps"), &Opts::default())
            .await
            .unwrap();
        assert_eq!(client::served_names(&stream), ["mx.hosting.test"]);
        let der = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        drop(stream);
        proxy.shutdown().await;
        der
    };
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(cert.exists() && store.exists() && !Path::new(&store).join("fullchain.pem").exists());
    let proxy = Proxy::start(tmp.path(), &config);
    let stream = client::connect(proxy.addr("imaps"), &Opts::default())
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        first_der,
        "reused"
    );
}

/// Generating the server-wide pair never opens what is already there (a symlink planted
/// at the temporary name the files were once written through), and a start cut short
/// between the certificate and the key is repaired by the next start, while a
/// certificate an operator put there alone is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn server_wide_generation_writes_new_files_and_repairs_a_half_pair() {
    let tmp = tempfile::tempdir().unwrap();
    store_dir(tmp.path());
    let backend = Backend::start("* OK", Expect::Plain).await;
    let config = format!(
        "[server]\nname = \"mx.hosting.test\"\n[certs]\ndir = \"store\"\n{}",
        listener("imaps", "imaps", backend.addr, "")
    );
    let dir = tmp.path().join("default");
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    for name in [".privkey.pem.tmp", ".fullchain.pem.tmp"] {
        symlink(&victim, dir.join(name)).unwrap();
    }
    let served = |proxy: &Proxy| {
        let addr = proxy.addr("imaps");
        async move {
            let stream = client::connect(addr, &Opts::default()).await.unwrap();
            assert_eq!(client::served_names(&stream), ["mx.hosting.test"]);
            stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        }
    };
    let first = served(&Proxy::start(tmp.path(), &config)).await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The key never written: the next start generates a new pair.
    std::fs::remove_file(&key).unwrap();
    let second = served(&Proxy::start(tmp.path(), &config)).await;
    assert_ne!(first, second, "a new pair");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // An operator's certificate without its key is not written over.
    let pki = Pki::new(tmp.path());
    std::fs::copy(tmp.path().join("server.com.crt"), &cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    drop(pki);
    let path = tmp.path().join("mailfront.toml");
    std::fs::write(&path, &config).unwrap();
    let err = Server::bind(&Config::load(&path).unwrap())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("privkey.pem"), "{err}");
    assert!(!key.exists());
}
