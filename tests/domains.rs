//! `mailfront domains` against a real DNS server on loopback (dnsmasq): a domain whose
//! records all point at this host and whose names the store covers is resolved; each kind
//! of mistake (MX elsewhere or missing, a missing or foreign host record, no SPF or two,
//! no MTA-STS record, an MX the policy does not name, a name without a certificate) is
//! reported with what was found and its fix.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::client::run;
use common::dns::Dnsmasq;
use common::running::BIN;
use common::{head, listener, KeyKind, Pki, Proxy};

/// The host names checked with these listeners (https, imaps, smtps) and MTA-STS on.
const HOSTS: [&str; 7] = [
    "mail",
    "webmail",
    "imap",
    "smtp",
    "autoconfig",
    "autodiscover",
    "mta-sts",
];

/// This host: server.com at 127.0.0.7.
const OURS: &str = "127.0.0.7";

/// The zone: good.test right; bad.test with its MX elsewhere, no imap host, webmail at
/// another address, no SPF and no _mta-sts record; nomx.test without MX and with two SPF
/// records.
fn zone() -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--local=/test/".into(),
        "--local=/server.com/".into(),
        format!("--host-record=server.com,{OURS}"),
        "--mx-host=good.test,mail.good.test,10".into(),
        "--txt-record=good.test,v=spf1 mx ~all".into(),
        "--txt-record=_mta-sts.good.test,v=STSv1; id=20261201".into(),
        "--mx-host=bad.test,mx.elsewhere.test,10".into(),
        "--host-record=mx.elsewhere.test,198.51.100.1".into(),
        "--host-record=webmail.bad.test,198.51.100.2".into(),
        "--txt-record=nomx.test,v=spf1 mx ~all".into(),
        "--txt-record=nomx.test,v=spf1 a ~all".into(),
    ];
    for host in HOSTS {
        // good.test: mail by address, the others by CNAME to server.com.
        if host == "mail" {
            args.push(format!("--host-record=mail.good.test,{OURS}"));
        } else {
            args.push(format!("--cname={host}.good.test,server.com"));
        }
    }
    for host in ["mail", "smtp", "autoconfig", "autodiscover", "mta-sts"] {
        args.push(format!("--cname={host}.bad.test,server.com"));
    }
    for host in HOSTS {
        args.push(format!("--cname={host}.nomx.test,server.com"));
    }
    args
}

/// A config with https, imaps and smtps listeners, `[onboarding]` with MTA-STS enforced,
/// this host's address, and a store covering every name of good.test and nomx.test, and
/// bad.test's but imap.bad.test.
fn setup(root: &Path) -> std::path::PathBuf {
    setup_with(root, "")
}

/// [`setup`], with `onboarding` added to `[onboarding]` and `[admin]` on loopback.
fn setup_with(root: &Path, onboarding: &str) -> std::path::PathBuf {
    let pki = Pki::new(root);
    let store = common::store_dir(root);
    pki.write_pair(
        &store,
        "good",
        &["good.test", "*.good.test"],
        KeyKind::Ecdsa,
    );
    pki.write_pair(&store, "nomx", &["*.nomx.test"], KeyKind::Ecdsa);
    let bad = [
        "mail",
        "webmail",
        "smtp",
        "autoconfig",
        "autodiscover",
        "mta-sts",
    ]
    .map(|h| format!("{h}.bad.test"));
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    pki.write_pair(&store, "bad", &bad, KeyKind::Ecdsa);
    let dead = "127.0.0.1:9".parse().unwrap();
    let config = format!(
        "{}{}{}{}[onboarding]\nmta_sts = \"enforce\"\n{onboarding}\n[admin]\nbind = \"127.0.0.1:0\"\n",
        head(root, &store, &format!("addresses = [\"{OURS}\"]")),
        listener("https", "https", dead, ""),
        listener("imaps", "imaps", dead, ""),
        listener("smtps", "smtps", dead, ""),
    );
    let path = root.join("mailfront.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn domains(config: &Path, dns: &Dnsmasq, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["domains", "--config"])
        .arg(config)
        .args(["--resolver", &dns.addr.to_string()])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "{stderr}");
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// Each domain's state and its reasons' codes, from the JSON output.
fn codes(json: &str) -> Vec<(String, String, Vec<String>)> {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let mut codes: Vec<String> = d["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r["code"].as_str().unwrap(),
                        r["record"].as_str().unwrap()
                    )
                })
                .collect();
            codes.sort();
            (
                d["domain"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
                codes,
            )
        })
        .collect()
}

/// The good domain is resolved; each mistake of the others is named with its record.
#[test]
fn each_mistake_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let dns = Dnsmasq::start(&zone());
    let (status, json) = domains(
        &config,
        &dns,
        &["--format", "json", "good.test", "bad.test", "nomx.test"],
    );
    assert_eq!(status, 1, "{json}");
    let got = codes(&json);
    assert_eq!(
        got[0],
        ("good.test".into(), "resolved".into(), vec![]),
        "{json}"
    );
    assert_eq!(
        got[1],
        (
            "bad.test".into(),
            "invalid".into(),
            vec![
                "certificate-missing imap.bad.test certificate".into(),
                "host-elsewhere webmail.bad.test A/AAAA/CNAME".into(),
                "host-missing imap.bad.test A/AAAA/CNAME".into(),
                "mta-sts-txt-missing _mta-sts.bad.test TXT".into(),
                "mx-elsewhere bad.test MX".into(),
                "mx-not-in-policy bad.test MX".into(),
                "spf-missing bad.test TXT (SPF)".into(),
            ]
        ),
        "{json}"
    );
    assert_eq!(
        got[2],
        (
            "nomx.test".into(),
            "invalid".into(),
            vec![
                "mta-sts-txt-missing _mta-sts.nomx.test TXT".into(),
                "mx-missing nomx.test MX".into(),
                "spf-multiple nomx.test TXT (SPF)".into(),
            ]
        ),
        "{json}"
    );
    // Each reason carries what was found, what was expected and the fix.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mx = value[1]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "mx-elsewhere")
        .unwrap();
    assert_eq!(mx["found"], "10 mx.elsewhere.test (198.51.100.1)");
    assert!(mx["expected"].as_str().unwrap().contains(OURS), "{mx}");
    assert!(
        mx["fix"].as_str().unwrap().contains("MX 10 mail.bad.test."),
        "{mx}"
    );
    let web = value[1]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "host-elsewhere")
        .unwrap();
    assert_eq!(web["found"], "198.51.100.2");
    assert!(
        web["fix"]
            .as_str()
            .unwrap()
            .contains("webmail.bad.test. CNAME server.com."),
        "{web}"
    );
    // The good domain alone: exit 0; the text view.
    let (status, text) = domains(&config, &dns, &["good.test"]);
    assert_eq!(status, 0, "{text}");
    assert!(
        text.starts_with("good.test") && text.contains("resolved"),
        "{text}"
    );
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.contains(
            "onboarding: autoconfig.DOMAIN, autodiscover.DOMAIN, mta-sts.DOMAIN (mode enforce)"
        ) && check.contains("this host is 127.0.0.7"),
        "{check}"
    );
    let (_, text) = domains(&config, &dns, &["bad.test"]);
    assert!(
        text.contains("fix:      add `bad.test. TXT \"v=spf1 mx a:server.com ~all\"`"),
        "{text}"
    );
}

/// Without arguments every domain the store knows is checked.
#[test]
fn every_known_domain_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let dns = Dnsmasq::start(&zone());
    let (_, json) = domains(&config, &dns, &["--format", "json"]);
    let names: Vec<String> = codes(&json).into_iter().map(|(d, _, _)| d).collect();
    assert_eq!(names, ["bad.test", "good.test", "nomx.test"]);
}

/// A DNS server that does not answer gives `unknown` with the reason, not `invalid`, and
/// is asked nothing more for that domain; a bad argument is refused.
#[test]
fn silent_dns_server_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    // Bound and never read: queries time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["domains", "--format", "json", "--config"])
        .arg(&config)
        .args(["--resolver", &addr, "good.test"])
        .output()
        .unwrap();
    let json = String::from_utf8(out.stdout).unwrap();
    let got = codes(&json);
    assert_eq!(got[0].1, "unknown", "{json}");
    assert_eq!(got[0].2, ["dns-error good.test MX"], "{json}");
    let out = Command::new(BIN)
        .args(["domains", "--config"])
        .arg(&config)
        .arg("not a domain")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"not a domain\" is not a domain name"));
}

/// The running proxy checks every known domain the same way (asking `onboarding.resolver`
/// at `checks_per_second`), and shows the result in its metrics (accepted by promtool),
/// `/api/v1/domains` (the same JSON as the command) and the admin page.
#[tokio::test(flavor = "multi_thread")]
async fn the_running_proxy_checks_and_shows() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dnsmasq::start(&zone());
    let extra = format!(
        "resolver = \"{}\"\ncheck_interval = \"1h\"\nchecks_per_second = 50",
        dns.addr
    );
    let config = setup_with(dir.path(), &extra);
    let text = std::fs::read_to_string(&config).unwrap();
    let proxy = Proxy::start(dir.path(), &text);
    let sample = |state: &str| format!("mailfront_domains{{state=\"{state}\"}}");
    let checked = common::wait_for_async(Duration::from_secs(20), || async {
        proxy.metric(&sample("resolved")).await + proxy.metric(&sample("invalid")).await == 3
    })
    .await;
    assert!(checked, "the three domains checked within 20 s");
    assert_eq!(proxy.metric(&sample("resolved")).await, 1);
    assert_eq!(proxy.metric(&sample("invalid")).await, 2);
    assert!(
        proxy
            .metric("mailfront_domains_checked_timestamp_seconds")
            .await
            > 0
    );
    let admin = proxy.admin.unwrap();
    let api = run("curl", &["-sS", &format!("http://{admin}/api/v1/domains")]).await;
    let (_, cli) = domains(&config, &dns, &["--format", "json"]);
    assert_eq!(codes(&api.stdout), codes(&cli), "{}", api.stdout);
    let page = run("curl", &["-sS", &format!("http://{admin}/")])
        .await
        .stdout;
    assert!(page.contains("Domain readiness (DNS)"), "{page}");
    assert!(page.contains("1 resolved, 2 invalid, 0 unknown"), "{page}");
    assert!(
        page.contains("mx-elsewhere") && page.contains("bad.test. TXT"),
        "{page}"
    );
    let metrics = dir.path().join("metrics.txt");
    let text = run("curl", &["-sS", &format!("http://{admin}/metrics")])
        .await
        .stdout;
    std::fs::write(&metrics, text).unwrap();
    let lint = run(
        "sh",
        &[
            "-c",
            &format!("promtool check metrics < {}", metrics.display()),
        ],
    )
    .await;
    assert_eq!(lint.status, Some(0), "{}{}", lint.stdout, lint.stderr);
}
