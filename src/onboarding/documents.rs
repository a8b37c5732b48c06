//! The three client-setup documents, written from the listeners: Thunderbird's autoconfig
//! (`config-v1.1.xml`), Outlook's POX autodiscover answer, and the MTA-STS policy. Pure
//! functions of their inputs; every value from a request is checked and escaped.

use std::fmt::Write as _;
use std::time::Duration;

use quick_xml::escape::escape;
use quick_xml::events::Event;

use crate::config::{Mail, MtaStsMode, Username};
use crate::names::Pattern;

/// One mail service the documents list: a listener's protocol, port and kind of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// SMTP submission, IMAP or POP3.
    pub mail: Mail,
    /// The listener's port.
    pub port: u16,
    /// Implicit TLS (465, 993, 995) rather than STARTTLS (587, 143, 110).
    pub implicit: bool,
}

/// What one document is written for.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// The customer's domain.
    pub domain: &'a str,
    /// The host name clients connect to: one the customer's certificate covers.
    pub host: &'a str,
    /// mailfront's mail listeners, implicit TLS first.
    pub services: &'a [Service],
    /// The login name's form.
    pub username: Username,
    /// The provider's name shown by clients.
    pub display_name: &'a str,
}

/// Thunderbird's autoconfig document (`clientConfig` version 1.1), one server per service,
/// in the order given (clients try the first of each kind first).
pub fn autoconfig(setup: &Setup<'_>) -> String {
    let domain = escape(setup.domain);
    let host = escape(setup.host);
    let name = escape(setup.display_name);
    let username = match setup.username {
        Username::Address => "%EMAILADDRESS%",
        Username::LocalPart => "%EMAILLOCALPART%",
    };
    let mut xml = String::with_capacity(2048);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n");
    let _ = writeln!(xml, "  <emailProvider id=\"{domain}\">");
    let _ = writeln!(xml, "    <domain>{domain}</domain>");
    let _ = writeln!(xml, "    <displayName>{name}</displayName>");
    let _ = writeln!(xml, "    <displayShortName>{name}</displayShortName>");
    for incoming in [true, false] {
        for s in setup
            .services
            .iter()
            .filter(|s| (s.mail != Mail::Smtp) == incoming)
        {
            let (element, kind) = match s.mail {
                Mail::Imap => ("incomingServer", "imap"),
                Mail::Pop3 => ("incomingServer", "pop3"),
                Mail::Smtp => ("outgoingServer", "smtp"),
            };
            let socket = if s.implicit { "SSL" } else { "STARTTLS" };
            let _ = write!(
                xml,
                "    <{element} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      \
                 <port>{}</port>\n      <socketType>{socket}</socketType>\n      \
                 <authentication>password-cleartext</authentication>\n      \
                 <username>{username}</username>\n    </{element}>\n",
                s.port
            );
        }
    }
    xml.push_str("  </emailProvider>\n</clientConfig>\n");
    xml
}

/// The response schema Outlook asks for; the only one answered.
pub const OUTLOOK_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// What an autodiscover request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutodiscoverRequest {
    /// The user's address, checked (`EMailAddress`).
    pub address: Option<String>,
    /// `AcceptableResponseSchema`, as sent.
    pub schema: Option<String>,
}

/// Why an autodiscover request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Not well-formed XML.
    #[error("autodiscover request is not XML: {0}")]
    Xml(String),
    /// The address is not one.
    #[error("autodiscover request: {0:?} is not an email address")]
    Address(String),
}

/// Reads Outlook's POX request (`Autodiscover/Request/EMailAddress` and
/// `AcceptableResponseSchema`), whatever the namespace prefixes.
pub fn autodiscover_request(body: &[u8]) -> Result<AutodiscoverRequest, RequestError> {
    let text = std::str::from_utf8(body).map_err(|e| RequestError::Xml(e.to_string()))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut field: Option<&'static str> = None;
    let (mut address, mut schema) = (None::<String>, None::<String>);
    loop {
        let event = reader
            .read_event()
            .map_err(|e| RequestError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) => {
                field = match e.local_name().as_ref() {
                    "EMailAddress" => Some("address"),
                    "AcceptableResponseSchema" => Some("schema"),
                    _ => None,
                };
            }
            Event::End(_) => field = None,
            Event::Text(t) => push_text(&mut address, &mut schema, field, &t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&r)
                        .ok_or_else(|| RequestError::Xml("unknown entity".into()))?
                        .to_owned(),
                };
                push_text(&mut address, &mut schema, field, &c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let address = match address.map(|a| a.trim().to_owned()) {
        Some(a) if checked_address(&a).is_some() => Some(a),
        Some(a) => return Err(RequestError::Address(a)),
        None => None,
    };
    Ok(AutodiscoverRequest {
        address,
        schema: schema.map(|s| s.trim().to_owned()),
    })
}

fn push_text(
    address: &mut Option<String>,
    schema: &mut Option<String>,
    field: Option<&str>,
    text: &str,
) {
    let slot = match field {
        Some("address") => address,
        Some("schema") => schema,
        _ => return,
    };
    let s = slot.get_or_insert_with(String::new);
    // An address is at most 254 bytes; anything longer is refused as it is.
    if s.len() < 1024 {
        s.push_str(text);
    }
}

/// `(local part, domain)` of an address a client may log in with: at most 254 bytes, a
/// local part of printable ASCII without spaces or quotes, a domain that is a host name.
pub fn checked_address(address: &str) -> Option<(&str, String)> {
    if address.len() > 254 {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"<>&'@\\".contains(&b));
    match Pattern::parse(domain) {
        Ok(Pattern::Exact(d)) if local_ok && d.contains('.') => Some((local, d.to_string())),
        _ => None,
    }
}

/// Outlook's POX answer: the user's account with one `Protocol` per service (IMAP, POP3,
/// SMTP). `address` is the one the request carried.
pub fn autodiscover(setup: &Setup<'_>, address: &str) -> String {
    let login = match (setup.username, checked_address(address)) {
        (Username::LocalPart, Some((local, _))) => local,
        _ => address,
    };
    let (login, address, host) = (escape(login), escape(address), escape(setup.host));
    let mut xml = String::with_capacity(2048);
    xml.push_str(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover \
         xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n",
    );
    let _ = writeln!(xml, "  <Response xmlns=\"{OUTLOOK_SCHEMA}\">");
    let _ = writeln!(
        xml,
        "    <User>\n      <DisplayName>{address}</DisplayName>\n    </User>"
    );
    xml.push_str(
        "    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n",
    );
    for s in setup.services {
        let kind = match s.mail {
            Mail::Imap => "IMAP",
            Mail::Pop3 => "POP3",
            Mail::Smtp => "SMTP",
        };
        // `Encryption` (which overrides `SSL`): SSL is implicit TLS, TLS is STARTTLS.
        let encryption = if s.implicit { "SSL" } else { "TLS" };
        let _ = write!(
            xml,
            "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{host}</Server>\n        \
             <Port>{}</Port>\n        <LoginName>{login}</LoginName>\n        \
             <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        \
             <SSL>on</SSL>\n        <Encryption>{encryption}</Encryption>\n        \
             <AuthRequired>on</AuthRequired>\n      </Protocol>\n",
            s.port
        );
    }
    xml.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    xml
}

/// Autodiscover's error answer (`ErrorCode` 600: invalid request; 601: the schema asked
/// for is not provided), which makes Outlook try its next method.
pub fn autodiscover_error(code: u16, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover \
         xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  \
         <Response>\n    <Error Id=\"0\">\n      <ErrorCode>{code}</ErrorCode>\n      \
         <Message>{}</Message>\n      <DebugData />\n    </Error>\n  </Response>\n</Autodiscover>\n",
        escape(message)
    )
}

/// The MTA-STS policy (RFC 8461 §3.2), lines ending in CRLF.
pub fn mta_sts_policy(mode: MtaStsMode, mx: &[String], max_age: Duration) -> String {
    let mut policy = format!("version: STSv1\r\nmode: {}\r\n", mode.as_str());
    for m in mx {
        let _ = write!(policy, "mx: {m}\r\n");
    }
    let _ = write!(policy, "max_age: {}\r\n", max_age.as_secs());
    policy
}

#[cfg(test)]
mod tests;
