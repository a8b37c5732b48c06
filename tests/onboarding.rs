//! Mail client onboarding on the https listener: Thunderbird's autoconfig, Outlook's
//! autodiscover and the MTA-STS policy fetched by curl through TLS with the customer's
//! certificate verified, the XML read by Python's parser and checked against the
//! listeners mailfront has bound; everything else still reaches the webmail backend.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::backend::{Backend, Expect};
use common::client::run;
use common::{head, listener, KeyKind, Pki, Proxy};

/// Reads a clientConfig (Thunderbird) or an Autodiscover answer (Outlook) from stdin with
/// Python's XML parser and prints one line per server: `kind host port tls login`.
const SERVERS_PY: &str = r#"
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
def local(t): return t.rsplit('}', 1)[-1]
if local(root.tag) == 'clientConfig':
    for s in root.iter():
        if local(s.tag) in ('incomingServer', 'outgoingServer'):
            f = {local(c.tag): (c.text or '') for c in s}
            print(s.get('type'), f['hostname'], f['port'], f['socketType'], f['username'])
else:
    for p in root.iter():
        if local(p.tag) == 'Protocol':
            f = {local(c.tag): (c.text or '') for c in p}
            print(f['Type'].lower(), f['Server'], f['Port'], f['Encryption'], f['LoginName'])
    for e in root.iter():
        if local(e.tag) == 'ErrorCode':
            print('error', e.text)
"#;

struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ca: PathBuf,
    proxy: Proxy,
    _backends: Vec<Backend>,
}

/// A proxy with https, imaps, smtps, imap-starttls, smtp-starttls (submission) and
/// pop3s listeners, `[onboarding]` set with `onboarding` (none: not set); the store
/// holds one certificate for example.com's mail and setup hosts, one for
/// `autoconfig.other.org` alone, and one for `www.example.com`.
async fn site(onboarding: Option<&str>) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let pki = Pki::new(&root);
    let store = common::store_dir(&root);
    let names = [
        "example.com",
        "mail.example.com",
        "autoconfig.example.com",
        "autodiscover.example.com",
        "mta-sts.example.com",
    ];
    pki.write_pair(&store, "example", &names, KeyKind::Ecdsa);
    pki.write_pair(&store, "other", &["autoconfig.other.org"], KeyKind::Ecdsa);
    let http = Backend::http().await;
    let imap = Backend::start("* OK", Expect::Plain).await;
    let smtp = Backend::smtp().await;
    let pop = Backend::start("+OK", Expect::Plain).await;
    let onboarding = onboarding.map_or(String::new(), |o| format!("[onboarding]\n{o}\n"));
    let config = format!(
        "{}{}{}{}{}{}{}{onboarding}[admin]\nbind = \"127.0.0.1:0\"\n",
        head(&root, &store, ""),
        listener("https", "https", http.addr, ""),
        listener("imaps", "imaps", imap.addr, ""),
        listener("smtps", "smtps", smtp.addr, ""),
        listener("imap", "imap-starttls", imap.addr, ""),
        listener("submission", "smtp-starttls", smtp.addr, ""),
        // Behind a port mapping: clients reach it on 1995.
        listener("pop3s", "pop3s", pop.addr, "public_port = 1995"),
    );
    let proxy = Proxy::start(&root, &config);
    Site {
        _dir: dir,
        root,
        ca: pki.ca_file(),
        proxy,
        _backends: vec![http, imap, smtp, pop],
    }
}

impl Site {
    fn https(&self) -> SocketAddr {
        self.proxy.addr("https")
    }

    fn port(&self, listener: &str) -> u16 {
        self.proxy.addr(listener).port()
    }

    /// curl to `https://HOST:PORT/PATH` through the https listener, the certificate
    /// verified against the test CA for `host`; `extra` are more curl arguments. Returns
    /// (status, headers, body).
    async fn curl(&self, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
        let port = self.https().port();
        let url = format!("https://{host}:{port}{path}");
        let resolve = format!("{host}:{port}:127.0.0.1");
        let ca = &self.ca;
        let headers = self.root.join("headers.txt");
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-D",
            headers.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = run("curl", &args).await;
        assert_eq!(out.status, Some(0), "curl {url}: {}", out.stderr);
        let (body, code) = out.stdout.rsplit_once('\n').unwrap();
        let headers = std::fs::read_to_string(&headers).unwrap_or_default();
        (code.trim().parse().unwrap(), headers, body.to_owned())
    }
}

/// The servers an XML document lists, as Python's parser reads them.
async fn servers(root: &Path, xml: &str) -> Vec<String> {
    let file = root.join("doc.xml");
    std::fs::write(&file, xml).unwrap();
    let out = run(
        "sh",
        &[
            "-c",
            &format!("python3 -c \"$0\" < {}", file.display()),
            SERVERS_PY,
        ],
    )
    .await;
    assert_eq!(out.status, Some(0), "python: {}\n{xml}", out.stderr);
    out.stdout.lines().map(str::to_owned).collect()
}

/// Thunderbird's request to autoconfig.DOMAIN, and its fallback on the domain itself,
/// get a document listing every mail listener on its bound port (or its `public_port`) with mail.DOMAIN (which
/// the store covers); the same request for a domain without a mail certificate names
/// server.name. The domain's website is still the backend's.
#[tokio::test]
async fn thunderbird_autoconfig() {
    let s = site(Some("mta_sts = \"enforce\"")).await;
    let (imaps, smtps, imap, submission) = (
        s.port("imaps"),
        s.port("smtps"),
        s.port("imap"),
        s.port("submission"),
    );
    let expected = vec![
        format!("imap mail.example.com {imaps} SSL %EMAILADDRESS%"),
        format!("imap mail.example.com {imap} STARTTLS %EMAILADDRESS%"),
        "pop3 mail.example.com 1995 SSL %EMAILADDRESS%".to_owned(),
        format!("smtp mail.example.com {smtps} SSL %EMAILADDRESS%"),
        format!("smtp mail.example.com {submission} STARTTLS %EMAILADDRESS%"),
    ];
    let query = "/mail/config-v1.1.xml?emailaddress=jane%40example.com";
    let (status, headers, xml) = s.curl("autoconfig.example.com", query, &[]).await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/xml"),
        "{headers}"
    );
    assert_eq!(servers(&s.root, &xml).await, expected);
    let well_known = "/.well-known/autoconfig/mail/config-v1.1.xml";
    let (status, _, xml) = s.curl("example.com", well_known, &[]).await;
    assert_eq!(status, 200, "{xml}");
    assert_eq!(servers(&s.root, &xml).await, expected);
    let (status, _, xml) = s.curl("autoconfig.example.com", well_known, &[]).await;
    assert_eq!((status, servers(&s.root, &xml).await), (200, expected));
    // other.org has no mail.other.org certificate: clients are sent to server.name.
    let (status, _, xml) = s
        .curl("autoconfig.other.org", "/mail/config-v1.1.xml", &[])
        .await;
    assert_eq!(status, 200);
    let hosts = servers(&s.root, &xml).await;
    assert_eq!(hosts.len(), 5);
    assert!(
        hosts
            .iter()
            .all(|l| l.split(' ').nth(1) == Some("server.com")),
        "{hosts:?}"
    );
    // The rest of the domain is the webmail backend's.
    let (status, _, body) = s.curl("example.com", "/", &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = s
        .curl("example.com", "/.well-known/autoconfig/other", &[])
        .await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // HEAD, a wrong method, an unknown path on a setup host.
    let (status, _, _) = s
        .curl("autoconfig.example.com", "/mail/config-v1.1.xml", &["-I"])
        .await;
    assert_eq!(status, 200);
    let (status, headers, _) = s
        .curl(
            "autoconfig.example.com",
            "/mail/config-v1.1.xml",
            &["-X", "DELETE"],
        )
        .await;
    assert_eq!(status, 405);
    assert!(
        headers.to_ascii_lowercase().contains("allow: get, head"),
        "{headers}"
    );
    let (status, _, _) = s.curl("autoconfig.example.com", "/index.html", &[]).await;
    assert_eq!(status, 404);
    // A request whose Host is not the name of the handshake is refused.
    let (status, _, _) = s
        .curl(
            "autoconfig.example.com",
            "/mail/config-v1.1.xml",
            &["-H", "Host: autoconfig.other.org"],
        )
        .await;
    assert_eq!(status, 421);
    let sample = |result: &str| {
        format!(
            "mailfront_onboarding_requests_total{{document=\"autoconfig\",result=\"{result}\"}}"
        )
    };
    assert_eq!(s.proxy.metric(&sample("answered")).await, 5);
    assert_eq!(s.proxy.metric(&sample("refused")).await, 1);
}

/// Outlook's POST to autodiscover.DOMAIN (and to the domain itself) is answered with the
/// user's account: every listener, the address as login, SSL or TLS as the listener
/// does it; an address of another domain, a request for another schema or with a broken
/// body gets Autodiscover's error, a huge body 413.
#[tokio::test]
async fn outlook_autodiscover() {
    let s = site(Some("username = \"address\"")).await;
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>jane@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>";
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: text/xml",
        "--data-binary",
        body,
    ];
    let path = "/autodiscover/autodiscover.xml";
    let (imaps, smtps) = (s.port("imaps"), s.port("smtps"));
    for (host, path) in [
        ("autodiscover.example.com", path),
        ("autodiscover.example.com", "/Autodiscover/Autodiscover.xml"),
        ("example.com", path),
    ] {
        let (status, headers, xml) = s.curl(host, path, &post).await;
        assert_eq!(status, 200, "{host}{path}: {xml}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: text/xml"),
            "{headers}"
        );
        let lines = servers(&s.root, &xml).await;
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(
            lines[0],
            format!("imap mail.example.com {imaps} SSL jane@example.com")
        );
        assert!(lines.contains(&format!(
            "smtp mail.example.com {smtps} SSL jane@example.com"
        )));
        let submission = format!(
            "smtp mail.example.com {} TLS jane@example.com",
            s.port("submission")
        );
        assert!(lines.contains(&submission), "{lines:?}");
    }
    // One customer's host answers for its own domain only: another's address gets
    // Autodiscover's error (Outlook tries its next method).
    let other = body.replace("jane@example.com", "bob@other.org");
    let (status, _, xml) = s
        .curl(
            "autodiscover.example.com",
            path,
            &["-X", "POST", "--data-binary", &other],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(servers(&s.root, &xml).await, vec!["error 600"]);
    assert!(
        xml.contains("other.org is not set up through autodiscover.example.com"),
        "{xml}"
    );
    let mobile = body.replace(
        "outlook/responseschema/2006a",
        "mobilesync/responseschema/2006",
    );
    let (_, _, xml) = s
        .curl(
            "autodiscover.example.com",
            path,
            &["-X", "POST", "--data-binary", &mobile],
        )
        .await;
    assert_eq!(servers(&s.root, &xml).await, vec!["error 601"]);
    let (_, _, xml) = s
        .curl(
            "autodiscover.example.com",
            path,
            &["-X", "POST", "--data-binary", "<Autodiscover><Request>"],
        )
        .await;
    assert_eq!(servers(&s.root, &xml).await, vec!["error 600"]);
    let huge = s.root.join("huge.xml");
    std::fs::write(&huge, vec![b'x'; 100_000]).unwrap();
    let huge_arg = format!("@{}", huge.display());
    let (status, _, _) = s
        .curl(
            "autodiscover.example.com",
            path,
            &["-H", "Expect: 100-continue", "--data-binary", &huge_arg],
        )
        .await;
    assert_eq!(status, 413);
    let (status, _, _) = s.curl("autodiscover.example.com", path, &[]).await;
    assert_eq!(status, 405);
}

/// mta-sts.DOMAIN serves RFC 8461's policy with the configured mode and max_age, and mx
/// lines for server.name and mail.DOMAIN (covered by the store); without `mta_sts` the
/// name is relayed like any other.
#[tokio::test]
async fn mta_sts_policy() {
    let s = site(Some("mta_sts = \"testing\"\nmta_sts_max_age = \"30d\"")).await;
    let (status, headers, policy) = s
        .curl("mta-sts.example.com", "/.well-known/mta-sts.txt", &[])
        .await;
    assert_eq!(status, 200);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{headers}"
    );
    assert_eq!(
        policy,
        "version: STSv1\r\nmode: testing\r\nmx: server.com\r\nmx: mail.example.com\r\nmax_age: 2592000\r\n"
    );
    drop(s);
    let s = site(Some("")).await;
    let (status, _, body) = s
        .curl("mta-sts.example.com", "/.well-known/mta-sts.txt", &[])
        .await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

/// Without `[onboarding]` the setup hosts are the backend's, like every name.
#[tokio::test]
async fn without_onboarding_everything_is_relayed() {
    let s = site(None).await;
    for (host, path) in [
        ("autoconfig.example.com", "/mail/config-v1.1.xml"),
        (
            "example.com",
            "/.well-known/autoconfig/mail/config-v1.1.xml",
        ),
    ] {
        let (status, _, body) = s.curl(host, path, &[]).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{host}");
    }
}

/// One customer's setup hosts answer for that customer's domain only, and only for
/// domains the store knows: Thunderbird's request on autoconfig.example.com for an
/// address at other.org (and the reverse) is refused, and so are the documents of a name
/// that merely points here (`mta-sts.victim.example` gets no enforce policy).
#[tokio::test]
async fn one_customer_cannot_fetch_anothers_documents() {
    let s = site(Some("mta_sts = \"enforce\"")).await;
    let doc = "/mail/config-v1.1.xml?emailaddress=";
    let own = format!("{doc}jane%40example.com");
    assert_eq!(s.curl("autoconfig.example.com", &own, &[]).await.0, 200);
    for (host, address) in [
        ("autoconfig.example.com", "bob%40other.org"),
        ("autoconfig.other.org", "jane%40example.com"),
    ] {
        let (status, _, body) = s.curl(host, &format!("{doc}{address}"), &[]).await;
        assert_eq!(status, 404, "{host} for {address}: {body}");
        assert!(body.contains("is not set up through"), "{body}");
    }
    // Names no entry covers: served the server-wide certificate (-k), and no document.
    for (host, path) in [
        ("mta-sts.victim.example", "/.well-known/mta-sts.txt"),
        ("autoconfig.victim.example", "/mail/config-v1.1.xml"),
    ] {
        let (status, _, body) = s.curl(host, path, &["-k"]).await;
        assert_eq!(status, 404, "{host}{path}: {body}");
        assert!(
            body.contains("no setup documents for victim.example"),
            "{body}"
        );
        assert!(!body.contains("enforce"), "{body}");
    }
    let (status, _, policy) = s
        .curl("mta-sts.example.com", "/.well-known/mta-sts.txt", &[])
        .await;
    assert_eq!(status, 200);
    assert!(policy.contains("mode: enforce"), "{policy}");
}
