//! Faults under the certificate store while it serves: the directory vanishing and coming
//! back, and the disk filling up while a certificate tool writes. Each is logged once,
//! handshakes never fail meanwhile, and no working certificate is lost.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backend::{Backend, Expect};
use common::client::{served_der, wait_served};
use common::pki::first_der;
use common::running::Running;
use common::{head, listener, KeyKind, Pki};
use tokio::task::JoinHandle;

/// `mailfront run` with one IMAPS listener, the store at `store`, a full rescan every
/// second (so that a repeated log line would show).
fn start(root: &Path, store: &Path, backend: SocketAddr) -> Running {
    start_under("", root, store, backend)
}

/// [`start`] run after `shell_prefix` (such as `ulimit -n 64 &&`).
fn start_under(shell_prefix: &str, root: &Path, store: &Path, backend: SocketAddr) -> Running {
    let config = format!(
        "{}{}",
        head(root, store, "").replace("[certs]\n", "[certs]\nrescan_interval = \"1s\"\n"),
        listener("imaps", "imaps", backend, "")
    );
    let path = root.join("m.toml");
    std::fs::write(&path, config).unwrap();
    Running::start(shell_prefix, &path)
}

/// Handshakes for `sni` every 10 ms until stopped, counting the ones that fail.
struct Handshakes {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU32>,
    task: JoinHandle<u32>,
}

impl Handshakes {
    fn start(addr: SocketAddr, sni: &'static str) -> Self {
        let (stop, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
        );
        let (stopped, failures) = (Arc::clone(&stop), Arc::clone(&failed));
        let task = tokio::spawn(async move {
            let mut done = 0;
            while !stopped.load(Ordering::Relaxed) {
                if served_der(addr, sni).await.is_none() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            done
        });
        Self { stop, failed, task }
    }

    /// Stops; asserts that none failed.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let done = self.task.await.unwrap();
        assert!(done > 20, "{done} handshakes");
        assert_eq!(
            self.failed.load(Ordering::Relaxed),
            0,
            "of {done} handshakes"
        );
    }
}

/// The store directory removed (`rm -rf`) while serving: every entry keeps serving, one
/// error says so however many rescans pass, and when a directory is back its contents
/// serve and one line says so.
#[tokio::test(flavor = "multi_thread")]
async fn store_directory_gone_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let pki = Pki::new(tmp.path());
    let store = common::store_dir(tmp.path());
    let mail = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("mail.pem"), mail.combined()).unwrap();
    let proxy = start(tmp.path(), &store, backend.addr);
    let addr = proxy.addr;
    assert_eq!(served_der(addr, "mail.example.com").await, Some(mail.der()));
    let handshakes = Handshakes::start(addr, "mail.example.com");

    std::fs::remove_dir_all(&store).unwrap();
    // Three full rescans while it is gone.
    let gone = proxy.lines_until_quiet(Duration::from_millis(3500), Duration::from_millis(3500));
    let said: Vec<&String> = gone
        .iter()
        .filter(|l| !l.contains("\"connection closed\""))
        .collect();
    assert_eq!(said.len(), 1, "one line, not one per rescan: {said:#?}");
    assert!(
        said[0].contains("certificate store unreadable"),
        "{}",
        said[0]
    );
    assert_eq!(served_der(addr, "mail.example.com").await, Some(mail.der()));

    // Back, with other contents: they serve, and what is not there any more falls back.
    std::fs::create_dir(&store).unwrap();
    let fresh = pki.leaf(&["fresh.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("fresh.pem"), fresh.combined()).unwrap();
    let seen = wait_served(
        addr,
        "fresh.example.com",
        &fresh.der(),
        Duration::from_secs(3),
    )
    .await;
    assert!(seen.is_some(), "the returned directory is read");
    assert!(proxy
        .wait_line("certificate store readable again")
        .is_some());
    handshakes.finish().await;
    let fallback = first_der(&std::fs::read(tmp.path().join("server.com.crt")).unwrap());
    assert_eq!(served_der(addr, "mail.example.com").await, Some(fallback));
    // And it is watched again.
    let more = pki.leaf(&["more.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("more.pem"), more.combined()).unwrap();
    assert!(wait_served(
        addr,
        "more.example.com",
        &more.der(),
        Duration::from_secs(3)
    )
    .await
    .is_some());
}

/// A tmpfs mounted over `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when mounting is not allowed here (not root, or no CAP_SYS_ADMIN).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with a dot-file (never an entry) until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join(".filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let page = [0u8; 4096];
    while file.write_all(&page).is_ok() {}
    path
}

/// The disk full while a tool writes: an in-place rewrite that ends short keeps the
/// version serving and logs one line naming the file; a write-then-rename tool that fails
/// changes nothing; once space is free, the rewrite serves.
#[tokio::test(flavor = "multi_thread")]
async fn disk_full_while_a_tool_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store_dir(tmp.path());
    let Some(_mounted) = Tmpfs::mount(&store, "64k") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let backend = Backend::start("* OK", Expect::Plain).await;
    let pki = Pki::new(tmp.path());
    let v1 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    let v2 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("mail.pem"), v1.combined()).unwrap();
    let proxy = start(tmp.path(), &store, backend.addr);
    let addr = proxy.addr;
    assert_eq!(served_der(addr, "mail.example.com").await, Some(v1.der()));
    let handshakes = Handshakes::start(addr, "mail.example.com");

    let filler = fill(&store);
    // The new version is larger than the page the old one frees: the write ends short.
    let padded = format!(
        "{}{}",
        "# issued by a tool that writes a long preamble\n".repeat(200),
        v2.combined()
    );
    let written = std::fs::write(store.join("mail.pem"), &padded);
    assert_eq!(
        written.unwrap_err().raw_os_error(),
        Some(libc::ENOSPC),
        "the disk is full"
    );
    let tmp_write = std::fs::write(store.join(".mail.pem.tmp"), v2.combined());
    assert!(
        tmp_write.is_err(),
        "the careful tool fails too, before its rename"
    );
    let full = proxy.lines_until_quiet(Duration::from_millis(2500), Duration::from_millis(2500));
    let refused: Vec<&String> = full
        .iter()
        .filter(|l| l.contains("certificate entry refused"))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one line, not one per rescan: {refused:#?}"
    );
    assert!(refused[0].contains("store/mail.pem"), "{}", refused[0]);
    assert_eq!(served_der(addr, "mail.example.com").await, Some(v1.der()));

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(store.join(".mail.pem.tmp")).unwrap();
    std::fs::write(store.join("mail.pem"), v2.combined()).unwrap();
    let seen = wait_served(addr, "mail.example.com", &v2.der(), Duration::from_secs(3)).await;
    assert!(seen.is_some(), "the rewrite serves once space is free");
    handshakes.finish().await;
}

/// Out of descriptors while a certbot directory changes: the directory cannot be listed,
/// and its entry keeps serving instead of being taken for removed.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_during_a_reload_keeps_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let pki = Pki::new(tmp.path());
    let store = common::store_dir(tmp.path());
    let live = store.join("mail.example.com");
    std::fs::create_dir(&live).unwrap();
    let leaf = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    std::fs::write(live.join("fullchain.pem"), &leaf.chain_pem).unwrap();
    std::fs::write(live.join("privkey.pem"), &leaf.key_pem).unwrap();
    let proxy = start_under("ulimit -n 64 &&", tmp.path(), &store, backend.addr);
    let addr = proxy.addr;
    assert_eq!(served_der(addr, "mail.example.com").await, Some(leaf.der()));

    // Connections that never speak TLS take every descriptor the proxy has.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert!(
        proxy.wait_line("accept failed").is_some(),
        "out of descriptors"
    );
    // A renewal rewrites the key in place: the directory is to be listed again.
    std::fs::write(live.join("privkey.pem"), &leaf.key_pem).unwrap();
    let unlisted = proxy
        .wait_line("the directory cannot be read")
        .expect("the failed listing is reported");
    assert!(unlisted.contains("mail.example.com"), "{unlisted}");
    drop(idle);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let served = loop {
        if let Some(der) = served_der(addr, "mail.example.com").await {
            break der;
        }
        assert!(std::time::Instant::now() < deadline, "served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        served,
        leaf.der(),
        "the entry kept serving, not the server-wide one"
    );
}

/// Out of descriptors when a new version is written: it cannot be read, the old version
/// keeps serving, and once descriptors are free the new version is read at the next
/// rescan instead of being taken as seen.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_unreadable_for_want_of_descriptors_is_read_later() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::start("* OK", Expect::Plain).await;
    let pki = Pki::new(tmp.path());
    let store = common::store_dir(tmp.path());
    let v1 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    let v2 = pki.leaf(&["mail.example.com"], KeyKind::Ecdsa);
    std::fs::write(store.join("mail.pem"), v1.combined()).unwrap();
    let proxy = start_under("ulimit -n 64 &&", tmp.path(), &store, backend.addr);
    let addr = proxy.addr;
    assert_eq!(served_der(addr, "mail.example.com").await, Some(v1.der()));

    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert!(
        proxy.wait_line("accept failed").is_some(),
        "out of descriptors"
    );
    std::fs::write(store.join("mail.pem"), v2.combined()).unwrap();
    let refused = proxy
        .wait_line("certificate entry refused")
        .expect("the unreadable version is reported");
    assert!(refused.contains("Too many open files"), "{refused}");
    drop(idle);

    let seen = wait_served(addr, "mail.example.com", &v2.der(), Duration::from_secs(10)).await;
    assert!(seen.is_some(), "the new version serves once it can be read");
}
