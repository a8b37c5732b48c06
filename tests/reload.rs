//! Live reload: what operators and their tools do to a running proxy's store.

mod common;

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::backend::Backend;
use common::client::{self, served_der, wait_served};
use common::{head, store_dir, KeyKind, Pki, Proxy};

/// How long a change may take to reach handshakes.
const SEEN: Duration = Duration::from_secs(1);

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    pki: Pki,
    store: PathBuf,
    proxy: Proxy,
    _backend: Backend,
}

impl Setup {
    async fn new(prepare: impl FnOnce(&Pki, &Path)) -> Self {
        Self::prepared(prepare).await.0
    }

    /// Like [`Setup::new`], also returning what `prepare` made.
    async fn prepared<T>(prepare: impl FnOnce(&Pki, &Path) -> T) -> (Self, T) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let pki = Pki::new(&root);
        let store = store_dir(&root);
        let made = prepare(&pki, &store);
        let (proxy, backend) = common::imaps_over(&root, &head(&root, &store, "")).await;
        let setup = Self {
            _tmp: tmp,
            root,
            pki,
            store,
            proxy,
            _backend: backend,
        };
        (setup, made)
    }

    /// A store holding `mail.pem` for mail.example.com; also that leaf's DER.
    async fn with_mail_entry() -> (Self, Vec<u8>) {
        Self::prepared(|pki, store| {
            let leaf = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
            std::fs::write(store.join("mail.pem"), leaf.combined()).unwrap();
            leaf.der()
        })
        .await
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.proxy.addr("imaps")
    }

    /// The server-wide certificate's DER.
    fn fallback_der(&self) -> Vec<u8> {
        common::pki::first_der(&std::fs::read(self.root.join("server.com.crt")).unwrap())
    }

    /// Writes `text` to `name` in the store atomically: a dot-file, then a rename.
    fn put(&self, name: &str, text: &str) {
        let tmp = self.store.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.store.join(name)).unwrap();
    }
}

/// A new entry renamed into the store serves its name within a second.
#[tokio::test(flavor = "multi_thread")]
async fn new_entry_serves_within_a_second() {
    let s = Setup::new(|_, _| {}).await;
    assert_eq!(
        served_der(s.addr(), "mail.example.com").await.unwrap(),
        s.fallback_der()
    );
    let leaf = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    s.put("mail.example.com.pem", &leaf.combined());
    let took = wait_served(s.addr(), "mail.example.com", &leaf.der(), SEEN).await;
    assert!(took.is_some(), "the new certificate serves within {SEEN:?}");
}

/// A change made after the store was loaded and before the watches were in place (no event
/// can report it) is caught by the refresh that follows setting them up.
#[tokio::test(flavor = "multi_thread")]
async fn change_between_load_and_watch_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = Pki::new(root);
    let store = store_dir(root);
    let old = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("mail.pem"), old.combined()).unwrap();
    let new = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    let added = pki.leaf(&["new.example.com"], KeyKind::Ecdsa);
    let imap = Backend::start("* OK", common::backend::Expect::Plain).await;
    let config = format!(
        "{}{}",
        head(root, &store, ""),
        common::listener("imaps", "imaps", imap.addr, "")
    );
    let proxy = Proxy::start_loaded_then(root, &config, || {
        std::fs::write(store.join("mail.pem"), new.combined()).unwrap();
        std::fs::write(store.join("new.pem"), added.combined()).unwrap();
    });
    let addr = proxy.addr("imaps");
    assert!(wait_served(addr, "mail.example.com", &new.der(), SEEN)
        .await
        .is_some());
    assert!(wait_served(addr, "new.example.com", &added.der(), SEEN)
        .await
        .is_some());
}

/// Replacing an entry by rename serves the new version; an open connection keeps the one
/// it started with.
#[tokio::test(flavor = "multi_thread")]
async fn replace_by_rename_and_open_connections_keep_theirs() {
    let (s, old) = Setup::with_mail_entry().await;
    let opts = client::Opts {
        sni: Some("mail.example.com".into()),
        ..Default::default()
    };
    let open = client::connect(s.addr(), &opts).await.unwrap();
    let mut open = tokio::io::BufReader::new(open);
    assert_eq!(client::read_line(&mut open).await, "* OK\r\n");
    let new = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    s.put("mail.pem", &new.combined());
    assert!(wait_served(s.addr(), "mail.example.com", &new.der(), SEEN)
        .await
        .is_some());
    assert_eq!(
        open.get_ref().get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        old
    );
    client::send_line(open.get_mut(), "a NOOP").await;
    assert_eq!(client::read_line(&mut open).await, "ECHO a NOOP\r\n");
}

/// A file overwritten in place in slow pieces (separate opens) never serves half-written;
/// the previous version serves until the file is whole.
#[tokio::test(flavor = "multi_thread")]
async fn slow_overwrite_in_place_keeps_the_old_version_until_complete() {
    let (s, old) = Setup::with_mail_entry().await;
    let leaf = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    let new = leaf.combined();
    let path = s.store.join("mail.pem");
    let third = new.len() / 3;
    std::fs::File::create(&path).unwrap(); // truncated to nothing
    for (i, piece) in [&new[..third], &new[third..2 * third], &new[2 * third..]]
        .iter()
        .enumerate()
    {
        let since = std::time::Instant::now();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(piece.as_bytes()).unwrap();
        drop(f);
        if i < 2 {
            s.proxy.settled_since(since).await;
            assert_eq!(
                served_der(s.addr(), "mail.example.com").await.unwrap(),
                old,
                "piece {i}"
            );
        }
    }
    let new_der = leaf.der();
    assert!(wait_served(s.addr(), "mail.example.com", &new_der, SEEN)
        .await
        .is_some());
}

/// Certificate and key written a moment apart, in either order: the old pair serves until
/// both match, then the new pair.
#[tokio::test(flavor = "multi_thread")]
async fn cert_and_key_written_apart_in_both_orders() {
    let s = Setup::new(|pki, store| {
        pki.write_pair(store, "mail", &["mail.example.com"], KeyKind::Ecdsa)
    })
    .await;
    for cert_first in [true, false] {
        let before = served_der(s.addr(), "mail.example.com").await.unwrap();
        let new = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
        let (first, second) = if cert_first {
            (("mail.crt", &new.chain_pem), ("mail.key", &new.key_pem))
        } else {
            (("mail.key", &new.key_pem), ("mail.crt", &new.chain_pem))
        };
        let since = std::time::Instant::now();
        s.put(first.0, first.1);
        s.proxy.settled_since(since).await;
        assert_eq!(
            served_der(s.addr(), "mail.example.com").await.unwrap(),
            before,
            "cert_first={cert_first}"
        );
        s.put(second.0, second.1);
        let seen = wait_served(s.addr(), "mail.example.com", &new.der(), SEEN).await;
        assert!(seen.is_some(), "cert_first={cert_first}");
    }
}

/// A truncated file keeps the previous version serving; deleting the entry sends its name
/// to the server-wide certificate.
#[tokio::test(flavor = "multi_thread")]
async fn truncate_keeps_old_and_delete_falls_back() {
    let (s, old) = Setup::with_mail_entry().await;
    let path = s.store.join("mail.pem");
    let text = std::fs::read_to_string(&path).unwrap();
    let since = std::time::Instant::now();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    s.proxy.settled_since(since).await;
    assert_eq!(served_der(s.addr(), "mail.example.com").await.unwrap(), old);
    let since = std::time::Instant::now();
    std::fs::write(&path, "").unwrap();
    s.proxy.settled_since(since).await;
    assert_eq!(served_der(s.addr(), "mail.example.com").await.unwrap(), old);
    std::fs::remove_file(&path).unwrap();
    assert!(
        wait_served(s.addr(), "mail.example.com", &s.fallback_der(), SEEN)
            .await
            .is_some()
    );
}

/// certbot renewal: new files in archive/, then the live/ symlinks re-pointed.
#[tokio::test(flavor = "multi_thread")]
async fn certbot_renewal_by_repointing_symlinks() {
    let s = Setup::new(|_, _| {}).await;
    let archive = s.root.join("archive/mail.example.com");
    let live = s.store.join("mail.example.com");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let mut last = Vec::new();
    for n in 1..=2 {
        let leaf = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
        std::fs::write(archive.join(format!("fullchain{n}.pem")), &leaf.chain_pem).unwrap();
        std::fs::write(archive.join(format!("privkey{n}.pem")), &leaf.key_pem).unwrap();
        for (link, target) in [("fullchain.pem", "fullchain"), ("privkey.pem", "privkey")] {
            // As certbot does: a new symlink beside the old, renamed over it.
            let tmp = live.join(format!("{link}.new"));
            symlink(archive.join(format!("{target}{n}.pem")), &tmp).unwrap();
            std::fs::rename(&tmp, live.join(link)).unwrap();
        }
        assert!(
            wait_served(s.addr(), "mail.example.com", &leaf.der(), SEEN)
                .await
                .is_some(),
            "version {n}"
        );
        last = leaf.der();
    }
    assert_eq!(
        served_der(s.addr(), "mail.example.com").await.unwrap(),
        last
    );
}

/// A Kubernetes secret volume update: a new timestamped directory and the `..data`
/// symlink swapped to it.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_data_symlink_swap() {
    let s = Setup::new(|_, _| {}).await;
    let dir = s.store.join("mail-tls");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 1..=2 {
        let leaf = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
        let stamp = format!("..2026_11_22_00_00_0{n}.000");
        std::fs::create_dir_all(dir.join(&stamp)).unwrap();
        std::fs::write(dir.join(&stamp).join("tls.crt"), &leaf.chain_pem).unwrap();
        std::fs::write(dir.join(&stamp).join("tls.key"), &leaf.key_pem).unwrap();
        symlink(&stamp, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        if n == 1 {
            symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
            symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        }
        assert!(
            wait_served(s.addr(), "mail.example.com", &leaf.der(), SEEN)
                .await
                .is_some(),
            "version {n}"
        );
    }
}

/// The server-wide certificate is replaced live, like any entry.
#[tokio::test(flavor = "multi_thread")]
async fn server_wide_certificate_is_replaced_live() {
    let s = Setup::new(|_, _| {}).await;
    let new = s.pki.leaf(&["server.com", "mx.server.com"], KeyKind::Ecdsa);
    let key = s.root.join("server.com.key");
    let cert = s.root.join("server.com.crt");
    std::fs::write(s.root.join(".k.tmp"), &new.key_pem).unwrap();
    std::fs::write(s.root.join(".c.tmp"), &new.chain_pem).unwrap();
    std::fs::rename(s.root.join(".k.tmp"), key).unwrap();
    std::fs::rename(s.root.join(".c.tmp"), cert).unwrap();
    assert!(wait_served(s.addr(), "unknown.test", &new.der(), SEEN)
        .await
        .is_some());
}

/// Dot-files and editor or package-manager leftovers are not entries.
#[tokio::test(flavor = "multi_thread")]
async fn leftovers_are_ignored() {
    let s = Setup::new(|_, _| {}).await;
    for (i, name) in [
        ".hidden.pem",
        "backup.pem~",
        ".mail.pem.swp",
        "new.pem.tmp",
        "x.pem.dpkg-dist",
    ]
    .iter()
    .enumerate()
    {
        let leaf = s
            .pki
            .leaf(&[&format!("left{i}.example.com")], KeyKind::Ecdsa);
        std::fs::write(s.store.join(name), leaf.combined()).unwrap();
    }
    // A real entry written after them: once it serves, the leftovers have been seen.
    let marker = s.pki.leaf(&["marker.example.com"], KeyKind::Ecdsa);
    s.put("marker.pem", &marker.combined());
    assert!(
        wait_served(s.addr(), "marker.example.com", &marker.der(), SEEN)
            .await
            .is_some()
    );
    for i in 0..5 {
        let der = served_der(s.addr(), &format!("left{i}.example.com"))
            .await
            .unwrap();
        assert_eq!(der, s.fallback_der(), "leftover {i} is not served");
    }
}

/// The store directory replaced wholesale (renamed away, a new one put in its place).
#[tokio::test(flavor = "multi_thread")]
async fn store_directory_replaced() {
    let s =
        Setup::new(|pki, store| pki.write_pair(store, "old", &["old.example.com"], KeyKind::Ecdsa))
            .await;
    let staged = s.root.join("store.new");
    std::fs::create_dir_all(&staged).unwrap();
    let leaf = s.pki.leaf(&["new.example.com"], KeyKind::Ecdsa);
    std::fs::write(staged.join("new.pem"), leaf.combined()).unwrap();
    std::fs::rename(&s.store, s.root.join("store.old")).unwrap();
    std::fs::rename(&staged, &s.store).unwrap();
    assert!(wait_served(
        s.addr(),
        "new.example.com",
        &leaf.der(),
        Duration::from_secs(2)
    )
    .await
    .is_some());
    // And the new directory is watched: a further change is seen.
    let more = s.pki.leaf(&["more.example.com"], KeyKind::Ecdsa);
    s.put("more.pem", &more.combined());
    assert!(wait_served(s.addr(), "more.example.com", &more.der(), SEEN)
        .await
        .is_some());
}

/// A session resumed with a ticket from one name is not resumed for another.
#[tokio::test(flavor = "multi_thread")]
async fn resumption_does_not_cross_names() {
    let s = Setup::new(|pki, store| {
        pki.write_pair(store, "a", &["a.example.com"], KeyKind::Ecdsa);
        pki.write_pair(store, "b", &["b.example.com"], KeyKind::Ecdsa);
    })
    .await;
    let addr = s.addr().to_string();
    let sess = s.root.join("sess.pem").display().to_string();
    let first = client::run(
        "sh",
        &["-c", &format!("printf 'a LOGOUT\\r\\n' | openssl s_client -connect {addr} -servername a.example.com -sess_out {sess} -ign_eof -tls1_3")],
    )
    .await;
    assert!(first.stdout.contains("New, TLSv1.3"), "{}", first.stdout);
    let resume = |name: &str| {
        let cmd = format!("printf 'a LOGOUT\\r\\n' | openssl s_client -connect {addr} -servername {name} -sess_in {sess} -ign_eof -tls1_3");
        async move { client::run("sh", &["-c", &cmd]).await }
    };
    let other = resume("b.example.com").await;
    assert!(
        other.stdout.contains("New, TLSv1.3"),
        "not resumed across names: {}",
        other.stdout
    );
    assert!(
        other.stdout.contains("CN = b.example.com"),
        "{}",
        other.stdout
    );
    let same = resume("a.example.com").await;
    assert!(
        same.stdout.contains("Reused, TLSv1.3"),
        "resumed for the same name: {}",
        same.stdout
    );
}

/// 1,000 swaps of an entry (atomic renames, alternating two versions) under continuous
/// handshakes: every handshake succeeds and gets one of the two versions, never the
/// server-wide certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_swaps_under_continuous_handshakes() {
    let (s, versions) = Setup::prepared(|pki, store| {
        let a = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
        let b = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
        std::fs::write(store.join("mail.pem"), a.combined()).unwrap();
        vec![a, b]
    })
    .await;
    let ders: Vec<Vec<u8>> = versions.iter().map(|v| v.der()).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = s.addr();
    let handshakes = {
        let done = std::sync::Arc::clone(&done);
        let ders = ders.clone();
        tokio::spawn(async move {
            let (mut ok, mut seen_b) = (0u32, false);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let der = served_der(addr, "mail.example.com")
                    .await
                    .expect("handshake succeeds");
                assert!(ders.contains(&der), "only the entry's versions are served");
                seen_b |= der == ders[1];
                ok += 1;
            }
            (ok, seen_b)
        })
    };
    let texts: Vec<String> = versions.iter().map(|v| v.combined()).collect();
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..1000 {
            let tmp = store.join(".mail.pem.tmp");
            std::fs::write(&tmp, &texts[(i + 1) % 2]).unwrap();
            std::fs::rename(&tmp, store.join("mail.pem")).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .await
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, seen_b) = tokio::time::timeout(Duration::from_secs(10), handshakes)
        .await
        .unwrap()
        .unwrap();
    assert!(
        ok > 50 && seen_b,
        "{ok} handshakes, second version seen: {seen_b}"
    );
    // The last version written (index 0 after 1000 swaps) ends up serving.
    assert!(wait_served(addr, "mail.example.com", &ders[0], SEEN)
        .await
        .is_some());
}

/// A removal takes effect within a second while a file beside the store is written all
/// the time (the proxy's own log in the store's parent, here the server-wide files'
/// directory too) and handshakes go on: events about files that are neither entries,
/// server-wide files nor trust files no longer extend the removal's wait to its 5 s cap.
/// All three layouts: a single file, a certbot directory, a Kubernetes volume.
#[tokio::test(flavor = "multi_thread")]
async fn removals_are_prompt_while_a_file_beside_the_store_is_busy() {
    let s = Setup::new(|_, _| {}).await;
    let busy = s.root.join("mailfront.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(busy).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writeln!(log, "a line of the proxy's log").unwrap();
                log.sync_data().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let fallback = s.fallback_der();
    for layout in ["single", "certbot", "kubernetes"] {
        let leaf = s.pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
        let entry = match layout {
            "single" => {
                s.put("mail.pem", &leaf.combined());
                s.store.join("mail.pem")
            }
            "certbot" => {
                let live = s.store.join("mail.example.com");
                std::fs::create_dir_all(&live).unwrap();
                std::fs::write(live.join("fullchain.pem"), &leaf.chain_pem).unwrap();
                std::fs::write(live.join("privkey.pem"), &leaf.key_pem).unwrap();
                live
            }
            _ => {
                let dir = s.store.join("mail-tls");
                let stamp = dir.join("..2026_11_30_00_00_00.000");
                std::fs::create_dir_all(&stamp).unwrap();
                std::fs::write(stamp.join("tls.crt"), &leaf.chain_pem).unwrap();
                std::fs::write(stamp.join("tls.key"), &leaf.key_pem).unwrap();
                symlink("..2026_11_30_00_00_00.000", dir.join("..data")).unwrap();
                symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
                symlink("..data/tls.key", dir.join("tls.key")).unwrap();
                dir
            }
        };
        let added = wait_served(s.addr(), "mail.example.com", &leaf.der(), SEEN).await;
        assert!(added.is_some(), "{layout} serves");
        match entry.is_dir() {
            true => std::fs::remove_dir_all(&entry).unwrap(),
            false => std::fs::remove_file(&entry).unwrap(),
        }
        let took = wait_served(s.addr(), "mail.example.com", &fallback, SEEN * 4).await;
        let took = took.unwrap_or_else(|| panic!("{layout}: not removed within 4 s"));
        eprintln!("{layout}: removed after {took:?}");
        assert!(took < SEEN, "{layout}: removed after {took:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

/// What `certbot` does to issue or renew `domain` under its config directory `le`: the
/// version `n` in `archive/DOMAIN/`, then `live/DOMAIN/`'s relative symlinks re-pointed
/// (a new link renamed over the old).
fn certbot_writes(le: &Path, domain: &str, n: usize, leaf: &common::pki::Leaf) {
    let archive = le.join("archive").join(domain);
    let live = le.join("live").join(domain);
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(archive.join(format!("fullchain{n}.pem")), &leaf.chain_pem).unwrap();
    let key = archive.join(format!("privkey{n}.pem"));
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for name in ["fullchain", "privkey"] {
        let tmp = live.join(format!("{name}.pem.new"));
        symlink(format!("../../archive/{domain}/{name}{n}.pem"), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(format!("{name}.pem"))).unwrap();
    }
}

/// certbot's `live/` symlinked into the store, and one `live/DOMAIN` symlinked in on its
/// own: renewals and new names under their targets are served within a second (the
/// periodic rescan is an hour away), and when the link is re-pointed at another
/// directory, that directory is the one watched.
#[tokio::test(flavor = "multi_thread")]
async fn symlinked_directories_are_watched_at_their_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = Pki::new(root);
    let store = store_dir(root);
    let (le, le2, le3) = (root.join("le"), root.join("le2"), root.join("le3"));
    certbot_writes(
        &le,
        "mail.example.com",
        1,
        &pki.leaf(&["mail.example.com"], KeyKind::Ecdsa),
    );
    certbot_writes(
        &le2,
        "b.example.com",
        1,
        &pki.leaf(&["b.example.com"], KeyKind::Ecdsa),
    );
    symlink(le.join("live"), store.join("live")).unwrap();
    symlink(le2.join("live/b.example.com"), store.join("b.example.com")).unwrap();
    let head = format!("{}rescan_interval = \"1h\"\n\n", head(root, &store, ""));
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");
    let served = |name: &'static str, der: Vec<u8>, what: &'static str| async move {
        assert!(
            wait_served(addr, name, &der, SEEN).await.is_some(),
            "{what}"
        );
    };

    let v2 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    certbot_writes(&le, "mail.example.com", 2, &v2);
    served(
        "mail.example.com",
        v2.der(),
        "renewal under a symlinked live/",
    )
    .await;

    let b2 = pki.leaf(&["b.example.com"], KeyKind::Ecdsa);
    certbot_writes(&le2, "b.example.com", 2, &b2);
    served(
        "b.example.com",
        b2.der(),
        "renewal in a symlinked live/DOMAIN",
    )
    .await;

    let c1 = pki.leaf(&["c.example.com"], KeyKind::Ecdsa);
    certbot_writes(&le, "c.example.com", 1, &c1);
    served(
        "c.example.com",
        c1.der(),
        "a new name under a symlinked live/",
    )
    .await;

    // The link re-pointed (a new link renamed over it, as `ln -sfn` does).
    let v3 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    certbot_writes(&le3, "mail.example.com", 3, &v3);
    symlink(le3.join("live"), store.join(".live.new")).unwrap();
    std::fs::rename(store.join(".live.new"), store.join("live")).unwrap();
    served("mail.example.com", v3.der(), "the link re-pointed").await;
    let v4 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    certbot_writes(&le3, "mail.example.com", 4, &v4);
    served("mail.example.com", v4.der(), "renewal under the new target").await;

    // The old target is no longer watched for the store: a renewal there changes nothing.
    certbot_writes(
        &le,
        "mail.example.com",
        5,
        &pki.leaf(&["mail.example.com"], KeyKind::Ecdsa),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_der(addr, "mail.example.com").await.unwrap(),
        v4.der()
    );
}

/// The store directory itself reached through a symlink (`certs -> /srv/certs`): a file
/// put in it is served within a second, and after the link is re-pointed at another
/// directory, that directory's entries serve and its changes are seen.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_store_directory_is_watched_at_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = Pki::new(root);
    let (one, two, store) = (root.join("one"), root.join("two"), root.join("certs"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    symlink(&one, &store).unwrap();
    let head = format!("{}rescan_interval = \"1h\"\n\n", head(root, &store, ""));
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");
    let put = |dir: &Path, name: &str, leaf: &common::pki::Leaf| {
        std::fs::write(dir.join(format!(".{name}.tmp")), leaf.combined()).unwrap();
        std::fs::rename(dir.join(format!(".{name}.tmp")), dir.join(name)).unwrap();
    };

    let a = pki.leaf(&["a.example.com"], KeyKind::Ecdsa);
    put(&one, "a.pem", &a);
    assert!(wait_served(addr, "a.example.com", &a.der(), SEEN)
        .await
        .is_some());

    let b = pki.leaf(&["b.example.com"], KeyKind::Ecdsa);
    put(&two, "b.pem", &b);
    symlink(&two, root.join(".certs.new")).unwrap();
    std::fs::rename(root.join(".certs.new"), &store).unwrap();
    assert!(wait_served(addr, "b.example.com", &b.der(), SEEN)
        .await
        .is_some());
    let c = pki.leaf(&["c.example.com"], KeyKind::Ecdsa);
    put(&two, "c.pem", &c);
    assert!(
        wait_served(addr, "c.example.com", &c.der(), SEEN)
            .await
            .is_some(),
        "a change in the directory the link now leads to"
    );
}

/// The server-wide certificate in certbot's `live/`, which is also symlinked into the
/// store: its renewals are seen while the link is there (one directory, watched once under
/// two names) and after it is removed.
#[tokio::test(flavor = "multi_thread")]
async fn server_wide_certificate_under_a_symlinked_live_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = Pki::new(root);
    let store = store_dir(root);
    let le = root.join("le");
    let server = |pki: &Pki| pki.leaf(&["server.com"], KeyKind::Ecdsa);
    certbot_writes(&le, "server.com", 1, &server(&pki));
    symlink(le.join("live"), store.join("live")).unwrap();
    let live = le.join("live/server.com");
    let head = head(root, &store, "")
        .replace(
            &root.join("server.com.crt").display().to_string(),
            &live.join("fullchain.pem").display().to_string(),
        )
        .replace(
            &root.join("server.com.key").display().to_string(),
            &live.join("privkey.pem").display().to_string(),
        );
    let head = format!("{head}rescan_interval = \"1h\"\n\n");
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");

    let v2 = server(&pki);
    certbot_writes(&le, "server.com", 2, &v2);
    assert!(
        wait_served(addr, "unknown.example.org", &v2.der(), SEEN)
            .await
            .is_some(),
        "renewed while live/ is linked into the store"
    );
    std::fs::remove_file(store.join("live")).unwrap();
    let unlinked = common::wait_for(SEEN, || proxy.store.index().entries() == 0).await;
    assert!(unlinked, "the entry under the removed link is gone");
    let v3 = server(&pki);
    certbot_writes(&le, "server.com", 3, &v3);
    assert!(
        wait_served(addr, "unknown.example.org", &v3.der(), SEEN)
            .await
            .is_some(),
        "renewed after the link is gone"
    );
}
