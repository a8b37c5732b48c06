use super::*;

const SERVICES: [Service; 4] = [
    Service {
        mail: Mail::Imap,
        port: 993,
        implicit: true,
    },
    Service {
        mail: Mail::Smtp,
        port: 465,
        implicit: true,
    },
    Service {
        mail: Mail::Imap,
        port: 143,
        implicit: false,
    },
    Service {
        mail: Mail::Smtp,
        port: 587,
        implicit: false,
    },
];

fn setup() -> Setup<'static> {
    Setup {
        domain: "example.com",
        host: "mail.example.com",
        services: &SERVICES,
        username: Username::Address,
        display_name: "example.com",
    }
}

/// The autoconfig document lists incoming servers before outgoing, each with its port and
/// kind of TLS, and parses as XML.
#[test]
fn autoconfig_lists_the_services() {
    let xml = autoconfig(&setup());
    let imap = xml.find("<port>993</port>").unwrap();
    let imap_starttls = xml.find("<port>143</port>").unwrap();
    let smtp = xml.find("<port>465</port>").unwrap();
    assert!(imap < imap_starttls && imap_starttls < smtp, "{xml}");
    assert_eq!(xml.matches("<incomingServer type=\"imap\">").count(), 2);
    assert_eq!(xml.matches("<outgoingServer type=\"smtp\">").count(), 2);
    assert_eq!(xml.matches("<socketType>STARTTLS</socketType>").count(), 2);
    assert_eq!(
        xml.matches("<hostname>mail.example.com</hostname>").count(),
        4
    );
    assert!(xml.contains("<username>%EMAILADDRESS%</username>"));
    well_formed(&xml);
}

/// A display name with markup in it is escaped, not written as markup.
#[test]
fn autoconfig_escapes_values() {
    let mut s = setup();
    s.display_name = "A & B <Hosting>";
    let xml = autoconfig(&s);
    assert!(xml.contains("A &amp; B &lt;Hosting&gt;"), "{xml}");
    well_formed(&xml);
}

/// Outlook's request is read whatever its namespace prefixes and entities.
#[test]
fn autodiscover_request_is_read() {
    let body = br#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>jane&#46;doe@example.com</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;
    let request = autodiscover_request(body).unwrap();
    assert_eq!(request.address.as_deref(), Some("jane.doe@example.com"));
    assert_eq!(request.schema.as_deref(), Some(OUTLOOK_SCHEMA));
    let prefixed = br#"<a:Autodiscover xmlns:a="x"><a:Request><a:EMailAddress> u@example.org </a:EMailAddress></a:Request></a:Autodiscover>"#;
    let request = autodiscover_request(prefixed).unwrap();
    assert_eq!(request.address.as_deref(), Some("u@example.org"));
    assert_eq!(request.schema, None);
}

/// Not XML, or an address that is not one, is refused with what was wrong.
#[test]
fn autodiscover_request_refuses_garbage() {
    assert!(matches!(
        autodiscover_request(b"<a><b></a>"),
        Err(RequestError::Xml(_))
    ));
    assert!(matches!(
        autodiscover_request(&[0xff, 0xfe]),
        Err(RequestError::Xml(_))
    ));
    for bad in [
        "nobody",
        "a b@example.com",
        "u@-bad-",
        "u@localhost",
        "\"x\"@example.com",
    ] {
        let body = format!(
            "<Autodiscover><Request><EMailAddress>{}</EMailAddress></Request></Autodiscover>",
            escape(bad)
        );
        assert_eq!(
            autodiscover_request(body.as_bytes()),
            Err(RequestError::Address(bad.into())),
            "{bad}"
        );
    }
}

/// The answer names every service with the user's login and the right encryption.
#[test]
fn autodiscover_answer() {
    let xml = autodiscover(&setup(), "jane@example.com");
    assert_eq!(xml.matches("<Protocol>").count(), 4);
    assert_eq!(
        xml.matches("<LoginName>jane@example.com</LoginName>")
            .count(),
        4
    );
    assert_eq!(xml.matches("<Encryption>TLS</Encryption>").count(), 2);
    assert_eq!(xml.matches("<Encryption>SSL</Encryption>").count(), 2);
    assert!(xml.contains("<Type>SMTP</Type>"));
    well_formed(&xml);
    let mut s = setup();
    s.username = Username::LocalPart;
    let xml = autodiscover(&s, "jane@example.com");
    assert_eq!(xml.matches("<LoginName>jane</LoginName>").count(), 4);
    well_formed(&autodiscover_error(600, "Invalid Request <x>"));
}

/// The policy is RFC 8461's: CRLF lines, one `mx` each.
#[test]
fn mta_sts_policy_lines() {
    let policy = mta_sts_policy(
        MtaStsMode::Enforce,
        &["mail.example.com".into(), "*.example.net".into()],
        Duration::from_secs(604_800),
    );
    assert_eq!(
        policy,
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"
    );
}

fn well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0i32;
    loop {
        match reader.read_event().expect("well-formed") {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0);
}
