//! Certificates as CAs, panels and tools deliver them: a corpus of every form (made here by
//! openssl and rcgen) run through `mailfront check` and through a running store, which
//! must give one verdict: the store serves (to a client verifying with the test root)
//! exactly what `check` accepts, and every file is used by an entry or reported once.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::chains::{openssl, write_atomically, ChainPki as Pki, Leaf};
use common::client::{connect, served_der, wait_served, Opts};

const BIN: &str = env!("CARGO_BIN_EXE_mailfront");

/// One case: its directory in the store, the files in it, and whether it serves.
struct Case {
    name: &'static str,
    serves: bool,
    leaf: Leaf,
}

impl Case {
    fn domain(&self) -> String {
        format!("{}.example.com", self.name.replace('_', "-"))
    }
}

fn der_of(pem: &str) -> Vec<u8> {
    common::pki::first_der(pem.as_bytes())
}

/// Writes the corpus into `store`, one directory per case.
fn corpus(pki: &Pki, store: &Path) -> Vec<Case> {
    let inter = pki.inter.cert.pem();
    let root = pki.root.cert.pem();
    let mut cases = Vec::new();
    let mut case = |name: &'static str, serves: bool, files: &dyn Fn(&Path, &Leaf)| {
        let domain = format!("{}.example.com", name.replace('_', "-"));
        let leaf = pki.leaf(&[&domain]);
        let dir = store.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        files(&dir, &leaf);
        cases.push(Case { name, serves, leaf });
    };
    let write = |dir: &Path, file: &str, text: &str| {
        std::fs::write(dir.join(file), text).unwrap();
        set_private(&dir.join(file));
    };
    // Sectigo: certificate, CA bundle and key, three names.
    case("sectigo", true, &|d, l| {
        write(d, "mail_example_com.crt", &l.cert);
        write(d, "mail_example_com.ca-bundle", &format!("{inter}{root}"));
        write(d, "mail.example.com.key", &l.key);
    });
    // GoDaddy: the certificate twice (.crt and .pem), their bundle, the key.
    case("godaddy", true, &|d, l| {
        write(d, "2f9a8c1b7e3d4a65.crt", &l.cert);
        write(d, "2f9a8c1b7e3d4a65.pem", &l.cert);
        write(d, "gd_bundle-g2-g1.crt", &inter);
        write(d, "generated.key", &l.key);
    });
    // acme.sh: the certificate alone with its key by name, its CA file and full chain.
    case("acme_sh", true, &|d, l| {
        write(d, "example.com.cer", &l.cert);
        write(d, "example.com.key", &l.key);
        write(d, "ca.cer", &inter);
        write(d, "fullchain.cer", &format!("{}{inter}", l.cert));
    });
    // A cloud console's "Apache" download.
    case("apache", true, &|d, l| {
        write(d, "NAME_public.crt", &l.cert);
        write(d, "NAME_chain.crt", &inter);
        write(d, "NAME.key", &l.key);
    });
    // A key saved by Windows Notepad (byte-order mark), beside a full chain.
    case("bom", true, &|d, l| {
        write(d, "site.crt", &format!("{}{inter}", l.cert));
        write(d, "site.key", &format!("\u{feff}{}", l.key));
    });
    // Files concatenated without their final newlines: markers joined.
    case("joined", true, &|d, l| {
        let text = format!("{}{}{}", l.cert.trim_end(), inter.trim_end(), l.key);
        write(d, "site.pem", &text);
    });
    case("crlf", true, &|d, l| {
        let text = format!("{}{inter}{}", l.cert, l.key).replace('\n', "\r\n");
        write(d, "site.pem", &text);
    });
    // `openssl pkcs12 -nodes` output keeps its "Bag Attributes" lines.
    case("text_around", true, &|d, l| {
        let text = format!(
            "Bag Attributes\n    friendlyName: site\nsubject=CN = x\n{}{inter}Bag Attributes\n{}",
            l.cert, l.key
        );
        write(d, "site.pem", &text);
    });
    // A DER certificate with its key, and the chain as a DER PKCS#7.
    case("der", true, &|d, l| {
        write(d, "leaf.pem.txt", &l.cert);
        write(d, "inter.pem.txt", &inter);
        openssl(
            d,
            &[
                "x509",
                "-in",
                "leaf.pem.txt",
                "-outform",
                "DER",
                "-out",
                "site.cer",
            ],
        );
        openssl(
            d,
            &[
                "crl2pkcs7",
                "-nocrl",
                "-certfile",
                "inter.pem.txt",
                "-outform",
                "DER",
                "-out",
                "chain.p7b",
            ],
        );
        std::fs::remove_file(d.join("leaf.pem.txt")).unwrap();
        std::fs::remove_file(d.join("inter.pem.txt")).unwrap();
        write(d, "site.key", &l.key);
    });
    // The whole chain as a PEM PKCS#7 (.p7c), the key apart.
    case("p7", true, &|d, l| {
        write(d, "full.pem.txt", &format!("{}{inter}", l.cert));
        openssl(
            d,
            &[
                "crl2pkcs7",
                "-nocrl",
                "-certfile",
                "full.pem.txt",
                "-out",
                "site.p7c",
            ],
        );
        std::fs::remove_file(d.join("full.pem.txt")).unwrap();
        write(d, "private.key", &l.key);
    });
    // `cat chain.pem cert.pem`: the key says which is the server's certificate.
    case("chain_first", true, &|d, l| {
        write(d, "site.pem", &format!("{inter}{}{}", l.cert, l.key));
    });
    // `cat cert.pem fullchain.pem`: the leaf twice.
    case("leaf_twice", true, &|d, l| {
        write(
            d,
            "site.pem",
            &format!("{}{}{inter}{}", l.cert, l.cert, l.key),
        );
    });
    case("root_included", true, &|d, l| {
        write(d, "site.pem", &format!("{}{inter}{root}{}", l.cert, l.key));
    });
    // An encrypted key: refused, naming the passphrase and the command.
    case("encrypted", false, &|d, l| {
        write(d, "site.crt", &format!("{}{inter}", l.cert));
        write(d, "plain.txt", &l.key);
        openssl(
            d,
            &[
                "pkey",
                "-in",
                "plain.txt",
                "-aes256",
                "-passout",
                "pass:secret",
                "-out",
                "site.key",
            ],
        );
        std::fs::remove_file(d.join("plain.txt")).unwrap();
    });
    // A PKCS#12 bundle: the store has no password; reported with the command.
    case("pfx", false, &|d, l| {
        write(d, "c.txt", &format!("{}{inter}", l.cert));
        write(d, "k.txt", &l.key);
        openssl(
            d,
            &[
                "pkcs12",
                "-export",
                "-in",
                "c.txt",
                "-inkey",
                "k.txt",
                "-passout",
                "pass:secret",
                "-out",
                "site.pfx",
            ],
        );
        std::fs::remove_file(d.join("c.txt")).unwrap();
        std::fs::remove_file(d.join("k.txt")).unwrap();
    });
    // A certificate without its key.
    case("no_key", false, &|d, l| {
        write(d, "site.crt", &format!("{}{inter}", l.cert));
    });
    // A key of another certificate: not paired.
    case("other_key", false, &|d, l| {
        write(d, "site.crt", &format!("{}{inter}", l.cert));
        write(d, "other.key", &pki.leaf(&["x.example.com"]).key);
    });
    cases
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// `mailfront check` on every file of a case: its exit status and output.
fn check(pki: &Pki, files: &[PathBuf], domain: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check", "--ca-bundle"])
        .arg(pki.path("root.pem"))
        .args(["--domain", domain])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

/// Every case gives one verdict in `check` and in the store; what serves verifies with
/// the test root; every file is used by an entry or reported once, by `mailfront certs`.
#[tokio::test(flavor = "multi_thread")]
async fn check_and_the_store_agree_on_every_form() {
    let pki = Pki::new();
    let root = pki.tmp.path();
    let store = common::store_dir(root);
    common::Pki::new(root);
    let cases = corpus(&pki, &store);
    let settings = format!(
        "[certs]\nca_bundle = \"{}\"\n",
        pki.path("root.pem").display()
    );
    let head = common::head(root, &store, "").replace("[certs]\n", &settings);
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");
    let verifying = |domain: &str| Opts {
        sni: Some(domain.to_owned()),
        ca: Some(pki.path("root.pem")),
        ..Opts::default()
    };
    for case in &cases {
        let domain = case.domain();
        let (code, text) = check(&pki, &files_of(&store.join(case.name)), &domain);
        let accepted = code == 0;
        let served = served_der(addr, &domain).await == Some(der_of(&case.leaf.cert));
        assert_eq!(
            accepted, case.serves,
            "{}: check says {code}:\n{text}",
            case.name
        );
        assert_eq!(
            served, case.serves,
            "{}: the store serves it: {served}",
            case.name
        );
        if served {
            let verified = connect(addr, &verifying(&domain)).await;
            assert!(verified.is_ok(), "{}: {:?}", case.name, verified.err());
        }
    }

    let (code, text) = check(
        &pki,
        &files_of(&store.join("encrypted")),
        "encrypted.example.com",
    );
    assert!(
        text.contains("encrypted-key") && text.contains("openssl pkey -in"),
        "{code} {text}"
    );
    let (_, text) = check(&pki, &files_of(&store.join("pfx")), "pfx.example.com");
    assert!(
        text.contains("pkcs12") && text.contains("openssl pkcs12 -in"),
        "{text}"
    );

    // Every file: in an entry's files, or reported once as not an entry.
    let config = root.join("certs.toml");
    std::fs::write(
        &config,
        format!(
            "{head}{}",
            common::listener("imaps", "imaps", "127.0.0.1:1".parse().unwrap(), "")
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen = Vec::new();
    for row in report["entries"].as_array().unwrap() {
        for file in row["files"].as_array().unwrap() {
            seen.push(file.as_str().unwrap().to_owned());
        }
    }
    for stray in report["not_entries"].as_array().unwrap() {
        seen.push(stray["path"].as_str().unwrap().to_owned());
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a file counted twice: {seen:#?}");
    for case in &cases {
        for file in files_of(&store.join(case.name)) {
            let file = file.display().to_string();
            assert!(
                unique.contains(&file),
                "{file} is neither used nor reported: {report:#}"
            );
        }
    }
}

/// A CA's three files dropped one by one at the top of a running store are paired as soon
/// as the last arrives (a key alone, then the certificate, then the bundle).
#[tokio::test(flavor = "multi_thread")]
async fn files_dropped_one_by_one_are_paired_by_content() {
    let pki = Pki::new();
    let root = pki.tmp.path();
    let store = common::store_dir(root);
    common::Pki::new(root);
    let head = common::head(root, &store, "");
    let (proxy, _backend) = common::imaps_over(root, &head).await;
    let addr = proxy.addr("imaps");
    let leaf = pki.leaf(&["mail.example.com"]);
    let since = std::time::Instant::now();
    write_atomically(&store.join("mail.example.com.key"), &leaf.key);
    proxy.settled_since(since).await;
    write_atomically(&store.join("mail_example_com.crt"), &leaf.cert);
    let want = der_of(&leaf.cert);
    let seen = wait_served(addr, "mail.example.com", &want, Duration::from_secs(3)).await;
    assert!(
        seen.is_some(),
        "the certificate and its key, paired by content"
    );
    write_atomically(
        &store.join("mail_example_com.ca-bundle"),
        &pki.inter.cert.pem(),
    );
    let opts = Opts {
        sni: Some("mail.example.com".into()),
        ca: Some(pki.path("root.pem")),
        ..Opts::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        match connect(addr, &opts).await {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the bundle completes the chain: {last:?}");
}
