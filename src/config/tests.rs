use super::*;

const GOOD: &str = r#"
[server]
name = "server.com"
handshake_timeout = "3s"

[certs]
dir = "certs/domains"

[[listener]]
name = "imaps"
bind = ["127.0.0.1:993", "[::1]:993"]
protocol = "imaps"
backend = "127.0.0.1:143"
proxy_protocol = "v2"

[[listener]]
name = "https"
bind = "127.0.0.1:443"
protocol = "https"
backend = "localhost:8080"

[[route]]
sni = "webmail.example.net"
listener = "https"
backend = "10.0.0.9:8080"

[[route]]
sni = "*.Example.ORG"
backend = "127.0.0.1:2000"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/mailfront/mailfront.toml"), text)
}

#[test]
fn good_config_gets_defaults_and_resolved_paths() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.server.name, "server.com");
    assert_eq!(c.server.handshake_timeout, Duration::from_secs(3));
    assert_eq!(c.server.idle_timeout, None);
    // IMAP clients sit in IDLE for 29 minutes (RFC 2177): their default is above that.
    assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(31 * 60));
    assert_eq!(c.listeners[1].idle_timeout, Duration::from_secs(10 * 60));
    assert_eq!(c.server.max_connections, 20_000);
    assert_eq!(c.certs.dir, Path::new("/etc/mailfront/certs/domains"));
    assert_eq!(
        c.certs.default_cert,
        Path::new("/etc/mailfront/certs/default/fullchain.pem")
    );
    assert_eq!(c.listeners[0].bind.len(), 2);
    assert_eq!(c.listeners[0].alpn, Vec::<String>::new());
    assert_eq!(c.listeners[1].alpn, vec!["http/1.1".to_string()]);
    assert_eq!(c.listeners[0].routes.len(), 1, "only the unscoped route");
    assert_eq!(c.listeners[1].routes.len(), 2);
    assert_eq!(
        c.listeners[0].routes[0].sni,
        Pattern::Wildcard("example.org".into())
    );
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = GOOD.replace(
        "handshake_timeout = \"3s\"",
        "handshake_timeout = \"3s\"\nhandshake_timout = \"3s\"",
    );
    let e = error_of(&text);
    assert!(e.contains("handshake_timout"), "{e}");
    assert!(e.contains("line 5"), "{e}");
}

#[test]
fn bad_duration_is_named_with_its_line() {
    let e = error_of(&GOOD.replace("\"3s\"", "\"3 fortnights\""));
    assert!(e.contains("invalid duration \"3 fortnights\""), "{e}");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn route_to_unknown_listener_is_refused() {
    let e = error_of(&GOOD.replace("listener = \"https\"", "listener = \"htps\""));
    assert!(
        e.contains("`route.listener`") && e.contains("\"htps\""),
        "{e}"
    );
    assert!(e.contains("line 24"), "{e}");
}

#[test]
fn alpn_outside_protocol_is_refused() {
    let text = GOOD.replace(
        "proxy_protocol = \"v2\"",
        "proxy_protocol = \"v2\"\nalpn = [\"h2\"]",
    );
    let e = error_of(&text);
    assert!(
        e.contains("`listener.alpn`") && e.contains("imaps listener"),
        "{e}"
    );
}

#[test]
fn duplicate_listener_and_bad_backend_are_refused() {
    let e = error_of(&GOOD.replace("name = \"https\"", "name = \"imaps\""));
    assert!(e.contains("used twice"), "{e}");
    let e = error_of(&GOOD.replace("localhost:8080", "localhost"));
    assert!(e.contains("not host:port"), "{e}");
}

#[test]
fn bad_wildcard_and_unknown_protocol_are_refused() {
    let e = error_of(&GOOD.replace("*.Example.ORG", "mail.*.example.org"));
    assert!(e.contains("`route.sni`"), "{e}");
    let e = error_of(&GOOD.replace("protocol = \"imaps\"", "protocol = \"imap4s\""));
    assert!(e.contains("imap4s"), "{e}");
}

#[test]
fn no_listener_is_refused() {
    let text = "[server]\nname = \"a.b\"\n[certs]\ndir = \"d\"\n";
    assert!(error_of(text).contains("no [[listener]]"));
}

#[test]
fn session_tickets_are_checked() {
    let with = |extra: &str| GOOD.replace("handshake_timeout = \"3s\"", extra);
    assert_eq!(parse(GOOD).unwrap().server.session_tickets, 1);
    let c = parse(&with("handshake_timeout = \"3s\"\nsession_tickets = 0")).unwrap();
    assert_eq!(c.server.session_tickets, 0);
    let e = error_of(&with("handshake_timeout = \"3s\"\nsession_tickets = 9"));
    assert!(
        e.contains("`server.session_tickets`") && e.contains("between 0 and 8"),
        "{e}"
    );
    let e = error_of(&with(
        "handshake_timeout = \"3s\"\nsession_tickets = 0\nticket_keys = \"t.keys\"",
    ));
    assert!(
        e.contains("`server.session_tickets`") && e.contains("ticket_keys"),
        "{e}"
    );
}

#[test]
fn threads_and_greeting_names_are_checked() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.server.threads, None);
    assert_eq!(c.listeners[0].greeting_name, "server.com");
    let with = |extra: &str| GOOD.replace("handshake_timeout = \"3s\"", extra);
    let c = parse(&with("handshake_timeout = \"3s\"\nthreads = 1")).unwrap();
    assert_eq!(c.server.threads, Some(1));
    let e = error_of(&with("handshake_timeout = \"3s\"\nthreads = 0"));
    assert!(e.contains("`server.threads`"), "{e}");
    let text = GOOD.replace(
        "proxy_protocol = \"v2\"",
        "proxy_protocol = \"v2\"\ngreeting_name = \"mx 1\"",
    );
    let e = error_of(&text);
    assert!(e.contains("`listener.greeting_name`"), "{e}");
    let text = GOOD
        .replace("protocol = \"imaps\"", "protocol = \"imap-starttls\"")
        .replace(
            "proxy_protocol = \"v2\"",
            "proxy_protocol = \"v2\"\ngreeting_name = \"mx1.example.net\"",
        );
    let c = parse(&text).unwrap();
    assert_eq!(c.listeners[0].greeting_name, "mx1.example.net");
    assert!(c.listeners[0].protocol.starttls());
}

#[test]
fn server_user_is_optional_and_never_empty() {
    assert_eq!(parse(GOOD).unwrap().server.user, None);
    let with = |extra: &str| GOOD.replace("handshake_timeout = \"3s\"", extra);
    let c = parse(&with("handshake_timeout = \"3s\"\nuser = \"mailfront\"")).unwrap();
    assert_eq!(c.server.user.as_deref(), Some("mailfront"));
    let e = error_of(&with("handshake_timeout = \"3s\"\nuser = \" \""));
    assert!(e.contains("`server.user`"), "{e}");
}

/// Durations outside their range are refused with the key and line (a century overflowed
/// every connection's clock arithmetic, zero closed every session at once); zero is a
/// valid drain (cut at once); each bound itself is accepted.
#[test]
fn durations_out_of_range_are_refused_with_key_and_line() {
    let with = |key: &str, value: &str| {
        let text = GOOD.replace(
            "handshake_timeout = \"3s\"",
            &format!("handshake_timeout = \"3s\"\n{key} = \"{value}\""),
        );
        parse(&text)
    };
    for (key, value) in [
        ("idle_timeout", "300000000000y"),
        ("idle_timeout", "0s"),
        ("idle_timeout", "8days"),
        ("handshake_timeout2", ""),
        ("connect_timeout", "0s"),
        ("connect_timeout", "50ms"),
        ("drain_timeout", "2h"),
    ] {
        if key == "handshake_timeout2" {
            let text = GOOD.replace("\"3s\"", "\"0s\"");
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("`server.handshake_timeout`"), "{e}");
            assert!(e.contains("line 4"), "{e}");
            continue;
        }
        let e = with(key, value).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`server.{key}`")),
            "{key} = {value}: {e}"
        );
        assert!(e.contains("line 5"), "{key} = {value}: {e}");
        assert!(e.contains("out of range"), "{e}");
    }
    let c = with("drain_timeout", "0s").unwrap();
    assert_eq!(c.server.drain_timeout, Duration::ZERO);
    let c = with("idle_timeout", "7days").unwrap();
    assert_eq!(c.server.idle_timeout, Some(Duration::from_secs(7 * 86_400)));
    let c = with("connect_timeout", "100ms").unwrap();
    assert_eq!(c.server.connect_timeout, Duration::from_millis(100));

    let text = GOOD.replace(
        "dir = \"certs/domains\"",
        "dir = \"d\"\nrescan_interval = \"0s\"",
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("`certs.rescan_interval`") && e.contains("line 8"),
        "{e}"
    );
}

/// `idle_timeout` of a listener beats `[server]`'s, which beats the protocol's default.
#[test]
fn idle_timeout_per_listener_then_server_then_protocol() {
    let text = GOOD.replace(
        "handshake_timeout = \"3s\"",
        "handshake_timeout = \"3s\"\nidle_timeout = \"20m\"",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(20 * 60));
    assert_eq!(c.listeners[1].idle_timeout, Duration::from_secs(20 * 60));
    let text = text.replace(
        "proxy_protocol = \"v2\"",
        "proxy_protocol = \"v2\"\nidle_timeout = \"2h\"",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(7200));
    assert_eq!(c.listeners[1].idle_timeout, Duration::from_secs(20 * 60));
    let e = parse(&text.replace("\"2h\"", "\"0s\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`listener.idle_timeout`"), "{e}");
}

#[test]
fn admin_section() {
    let c = parse(&format!("{GOOD}\n[admin]\nbind = \"127.0.0.1:9180\"\n")).unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(
        admin.bind,
        AdminBind::Tcp("127.0.0.1:9180".parse().unwrap())
    );
    assert!(!admin.tls() && admin.token_file.is_none() && !admin.per_certificate_metrics);
    let c = parse(&format!(
        "{GOOD}\n[admin]\nbind = \"unix:run/admin.sock\"\nper_certificate_metrics = true\n"
    ))
    .unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(
        admin.bind,
        AdminBind::Unix("/etc/mailfront/run/admin.sock".into())
    );
    assert!(admin.per_certificate_metrics);
    let c = parse(&format!(
        "{GOOD}\n[admin]\nbind = \"0.0.0.0:9180\"\ntoken_file = \"admin.token\"\n"
    ))
    .unwrap();
    let admin = c.admin.unwrap();
    assert!(admin.tls());
    assert_eq!(
        admin.token_file.as_deref(),
        Some(Path::new("/etc/mailfront/admin.token"))
    );
    assert!(parse(GOOD).unwrap().admin.is_none());
}

#[test]
fn admin_mistakes_name_the_key_and_line() {
    for (admin, says) in [
        (
            "bind = \"0.0.0.0:9180\"",
            "is not a loopback address: set admin.token_file",
        ),
        ("bind = \"[2001:db8::1]:9180\"", "is not a loopback address"),
        ("bind = \"localhost\"", "is neither an address with a port"),
        ("bind = \"unix:\"", "unix: needs a socket path"),
    ] {
        let text = format!("{GOOD}\n[admin]\n{admin}\n");
        let line = text.lines().position(|l| l == admin).unwrap() + 1;
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("admin.bind") && e.contains(says), "{admin}: {e}");
        assert!(e.contains(&format!("line {line}")), "{admin}: {e}");
    }
    let text = format!("{GOOD}\n[admin]\nbind = \"127.0.0.1:1\"\nport = 3\n");
    assert!(parse(&text).unwrap_err().to_string().contains("port"));
    for bad in [
        "https://admin.example.net",
        "admin.example.net:9180",
        "*.example.net",
        "",
    ] {
        let text =
            format!("{GOOD}\n[admin]\nbind = \"127.0.0.1:1\"\nallowed_hosts = [\"{bad}\"]\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("admin.allowed_hosts") && e.contains("is not a host name"),
            "{bad}: {e}"
        );
    }
    let text = format!(
        "{GOOD}\n[admin]\nbind = \"127.0.0.1:1\"\nallowed_hosts = [\"Admin.Example.NET.\", \"[2001:db8::7]\"]\n"
    );
    let admin = parse(&text).unwrap().admin.unwrap();
    assert_eq!(admin.allowed_hosts, ["admin.example.net", "2001:db8::7"]);
}

const ACME: &str = r#"
[acme]
directory = "https://acme-v02.api.letsencrypt.org/directory"
contact = ["mailto:hostmaster@server.com"]
state_dir = "acme"
"#;

const HTTP: &str = r#"
[[listener]]
name = "web80"
bind = ["127.0.0.1:80"]
protocol = "http"
"#;

#[test]
fn acme_and_http_listeners_get_defaults_and_resolved_paths() {
    let c = parse(&format!("{GOOD}{HTTP}{ACME}names_file = \"names.txt\"\n")).unwrap();
    let acme = c.acme.as_ref().unwrap();
    assert_eq!(acme.state_dir, Path::new("/etc/mailfront/acme"));
    assert_eq!(
        acme.names_file.as_deref(),
        Some(Path::new("/etc/mailfront/names.txt"))
    );
    assert!(acme.on_demand);
    assert_eq!(acme.key_type, KeyType::EcdsaP256);
    assert_eq!((acme.max_concurrent_orders, acme.orders_per_hour), (4, 90));
    assert_eq!(acme.failures_per_name_per_hour, 3);
    assert_eq!(acme.retry_min, Duration::from_secs(60));
    assert_eq!(c.http.len(), 1);
    assert_eq!(c.http[0].backend, None);
    assert_eq!(c.listeners.len(), 2, "the http listener is not a TLS one");
    // The route names are allowed names: GOOD's exact route, not its wildcard one.
    assert_eq!(c.route_names(), vec!["webmail.example.net".to_string()]);
}

#[test]
fn acme_mistakes_are_named_with_their_key() {
    let cases = [
        (format!("{GOOD}{ACME}names_file = \"n\"\nbogus = 1\n"), "bogus"),
        (
            format!("{GOOD}{ACME}").replace("https://acme-v02", "ftp://acme-v02"),
            "acme.directory",
        ),
        (
            format!("{GOOD}{ACME}").replace("mailto:hostmaster@server.com", "hostmaster"),
            "acme.contact",
        ),
        (format!("{GOOD}{ACME}names_file = \"n\"\nkey_type = \"dsa\"\n"), "acme.key_type"),
        (
            format!("{GOOD}{ACME}names_file = \"n\"\neab_kid = \"k\"\n"),
            "acme.eab_kid",
        ),
        (
            format!("{GOOD}{ACME}names_file = \"n\"\nretry_min = \"2h\"\nretry_max = \"1h\"\n"),
            "acme.retry_max",
        ),
        (
            format!("{GOOD}{ACME}names_file = \"n\"\norders_per_hour = 0\n"),
            "acme.orders_per_hour",
        ),
        (format!("{GOOD}{ACME}ask = \"127.0.0.1/allowed\"\n"), "acme.ask"),
        (
            format!("{HTTP}alpn = [\"h2\"]\n{GOOD}"),
            "listener.alpn",
        ),
        (
            format!("{GOOD}{HTTP}[[route]]\nsni = \"a.example.com\"\nlistener = \"web80\"\nbackend = \"127.0.0.1:1\"\n"),
            "route.listener",
        ),
    ];
    for (text, key) in cases {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    // No name may be ordered: no names_file, no ask, no exact route.
    let bare = GOOD.replace("sni = \"webmail.example.net\"", "sni = \"*.example.net\"");
    let e = parse(&format!("{bare}{ACME}")).unwrap_err().to_string();
    assert!(e.contains("no name may be ordered"), "{e}");
    // No listener can answer a challenge.
    let imaps_only = r#"
[server]
name = "server.com"
[certs]
dir = "d"
[[listener]]
name = "imaps"
bind = "127.0.0.1:993"
protocol = "imaps"
backend = "127.0.0.1:143"
"#;
    let e = parse(&format!("{imaps_only}{ACME}names_file = \"n\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no listener can answer"), "{e}");
    // A TLS listener still needs its backend; an http one does not.
    let e = parse(&imaps_only.replace("backend = \"127.0.0.1:143\"", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a backend"), "{e}");
    assert!(parse(&format!("{imaps_only}{HTTP}{ACME}names_file = \"n\"\n")).is_ok());
}

/// `[onboarding]` gets its defaults; `server.addresses` are parsed once each.
#[test]
fn onboarding_defaults() {
    let text = GOOD.replace(
        "handshake_timeout = \"3s\"",
        "handshake_timeout = \"3s\"\naddresses = [\"203.0.113.7\", \"2001:db8::7\", \"203.0.113.7\"]",
    );
    let c = parse(&format!("{text}\n[onboarding]\nmta_sts = \"enforce\"\n")).unwrap();
    let o = c.onboarding.unwrap();
    assert_eq!(o.mta_sts, Some(MtaStsMode::Enforce));
    assert_eq!(o.mta_sts_max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(o.username, Username::Address);
    assert_eq!(o.check_interval, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(o.checks_per_second, 5);
    assert_eq!(c.server.addresses.len(), 2);
    let off = parse(&format!(
        "{GOOD}\n[onboarding]\ncheck_interval = \"0s\"\nresolver = \"127.0.0.1\"\n"
    ))
    .unwrap();
    let off = off.onboarding.unwrap();
    assert_eq!(off.check_interval, None);
    assert_eq!(off.resolver, Some("127.0.0.1:53".parse().unwrap()));
    assert_eq!(off.mta_sts, None);
}

/// Each wrong `[onboarding]` value is refused with its key and line.
#[test]
fn onboarding_values_are_checked() {
    for (body, key, words) in [
        (
            "mta_sts = \"strict\"",
            "onboarding.mta_sts",
            "is not a mode",
        ),
        (
            "mta_sts_max_age = \"1h\"",
            "onboarding.mta_sts_max_age",
            "out of range",
        ),
        ("mta_sts_mx = [\"bad name!\"]", "onboarding.mta_sts_mx", ""),
        (
            "username = \"uid\"",
            "onboarding.username",
            "is not a login form",
        ),
        (
            "checks_per_second = 0",
            "onboarding.checks_per_second",
            "between 1 and 1000",
        ),
        (
            "resolver = \"dns.example\"",
            "onboarding.resolver",
            "is not a DNS server address",
        ),
        ("colour = \"blue\"", "colour", "unknown field"),
    ] {
        let e = error_of(&format!("{GOOD}\n[onboarding]\n{body}\n"));
        assert!(e.contains(key) && e.contains(words), "{body}: {e}");
    }
    let e = error_of(&GOOD.replace(
        "proxy_protocol = \"v2\"",
        "proxy_protocol = \"v2\"\npublic_port = 0",
    ));
    assert!(
        e.contains("listener.public_port") && e.contains("from 1 to 65535"),
        "{e}"
    );
    let c = parse(&GOOD.replace(
        "proxy_protocol = \"v2\"",
        "proxy_protocol = \"v2\"\npublic_port = 993",
    ))
    .unwrap();
    assert_eq!(c.listeners[0].public_port, Some(993));
    let e = error_of(&GOOD.replace("handshake_timeout = \"3s\"", "addresses = [\"0.0.0.0\"]"));
    assert!(
        e.contains("server.addresses") && e.contains("cannot be this host"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("handshake_timeout = \"3s\"", "addresses = [\"mail\"]"));
    assert!(
        e.contains("server.addresses") && e.contains("is not an IP address"),
        "{e}"
    );
}
