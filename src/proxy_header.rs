//! PROXY protocol headers (HAProxy's spec, v1 and v2) so that Dovecot, Postfix and nginx
//! behind mailfront log and rate-limit the real client address. Encoding is `ppp`'s; this
//! module decides what goes in.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Type, Version};

use crate::config::ProxyProtocol;

/// PP2_CLIENT_SSL: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;
/// The SSL TLV's version sub-type.
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;

/// What the backend is told about one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The negotiated ALPN protocol.
    pub alpn: Option<&'a [u8]>,
    /// The name the client asked for.
    pub sni: Option<&'a str>,
    /// "TLSv1.3" or "TLSv1.2".
    pub tls_version: Option<&'a str>,
}

/// The header bytes to send before any payload, or `None` for `proxy_protocol = "none"`.
pub fn header(kind: ProxyProtocol, facts: &ConnectionFacts<'_>) -> Option<Vec<u8>> {
    let (peer, local) = same_family(facts.peer, facts.local);
    match kind {
        ProxyProtocol::None => None,
        ProxyProtocol::V1 => Some(
            ppp::v1::Addresses::from((peer, local))
                .to_string()
                .into_bytes(),
        ),
        ProxyProtocol::V2 => Some(v2(peer, local, facts)),
    }
}

fn v2(peer: SocketAddr, local: SocketAddr, facts: &ConnectionFacts<'_>) -> Vec<u8> {
    let mut ssl = vec![PP2_CLIENT_SSL, 0, 0, 0, 0];
    if let Some(version) = facts.tls_version {
        ssl.push(PP2_SUBTYPE_SSL_VERSION);
        ssl.extend_from_slice(&(version.len() as u16).to_be_bytes());
        ssl.extend_from_slice(version.as_bytes());
    }
    let build = || -> std::io::Result<Vec<u8>> {
        let mut builder = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (peer, local),
        );
        if let Some(alpn) = facts.alpn {
            builder = builder.write_tlv(Type::ALPN, alpn)?;
        }
        if let Some(sni) = facts.sni {
            builder = builder.write_tlv(Type::Authority, sni.as_bytes())?;
        }
        builder.write_tlv(Type::SSL, &ssl)?.build()
    };
    // Writing into a Vec cannot fail, and the TLVs (an ALPN id, a DNS name of at most
    // 253 bytes, a version string) are far below the header's 64 KiB limit.
    build().expect("a PROXY v2 header of bounded size always encodes")
}

/// Both addresses in one family, as the header requires: an IPv4 client on a dual-stack
/// socket arrives as `::ffff:a.b.c.d` and is written as plain IPv4.
fn same_family(peer: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    };
    let (peer, local) = (unmap(peer), unmap(local));
    let map = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (peer.is_ipv4(), local.is_ipv4()) {
        (true, false) => (map(peer), local),
        (false, true) => (peer, map(local)),
        _ => (peer, local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(peer: &str, local: &str) -> ConnectionFacts<'a> {
        ConnectionFacts {
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
            alpn: Some(b"imap"),
            sni: Some("mail.example.com"),
            tls_version: Some("TLSv1.3"),
        }
    }

    #[test]
    fn v1_is_the_text_line() {
        let h = header(
            ProxyProtocol::V1,
            &facts("192.0.2.7:50000", "127.0.0.1:993"),
        )
        .unwrap();
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 127.0.0.1 50000 993\r\n");
        let h = header(
            ProxyProtocol::V1,
            &facts("[::ffff:192.0.2.7]:1", "[::ffff:127.0.0.1]:2"),
        )
        .unwrap();
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\n");
        let h = header(ProxyProtocol::V1, &facts("[2001:db8::1]:1", "127.0.0.1:2")).unwrap();
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1 2\r\n");
    }

    #[test]
    fn v2_carries_addresses_alpn_sni_and_tls() {
        let h = header(
            ProxyProtocol::V2,
            &facts("192.0.2.7:50000", "127.0.0.1:993"),
        )
        .unwrap();
        let parsed = ppp::v2::Header::try_from(h.as_slice()).unwrap();
        assert_eq!(
            parsed.addresses,
            ppp::v2::Addresses::from((
                "192.0.2.7:50000".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:993".parse::<SocketAddr>().unwrap()
            ))
        );
        let tlvs: Vec<_> = parsed.tlvs().map(|t| t.unwrap()).collect();
        assert_eq!(tlvs[0].kind, Type::ALPN as u8);
        assert_eq!(&*tlvs[0].value, b"imap");
        assert_eq!(tlvs[1].kind, Type::Authority as u8);
        assert_eq!(&*tlvs[1].value, b"mail.example.com");
        assert_eq!(tlvs[2].kind, Type::SSL as u8);
        assert_eq!(tlvs[2].value[0], PP2_CLIENT_SSL);
        assert!(tlvs[2].value.ends_with(b"TLSv1.3"));
    }

    #[test]
    fn none_sends_nothing() {
        assert!(header(ProxyProtocol::None, &facts("192.0.2.7:1", "127.0.0.1:2")).is_none());
    }
}
