//! The PROXY header for any addresses, ALPN id and SNI name rustls can hand over: it
//! always encodes, and a PROXY parser reads back what was put in.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use mailfront::config::ProxyProtocol;
use mailfront::proxy_header::{header, ConnectionFacts};

fn addr(bytes: &[u8]) -> SocketAddr {
    let mut b = [0u8; 19];
    let n = bytes.len().min(19);
    b[..n].copy_from_slice(&bytes[..n]);
    let port = u16::from_be_bytes([b[17], b[18]]);
    let ip = if b[0] % 2 == 0 {
        IpAddr::V4(Ipv4Addr::new(b[1], b[2], b[3], b[4]))
    } else {
        let mut v6 = [0u8; 16];
        v6.copy_from_slice(&b[1..17]);
        IpAddr::V6(Ipv6Addr::from(v6))
    };
    SocketAddr::new(ip, port)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let (peer, local) = (addr(&data[..19]), addr(&data[19..38]));
    let flags = data[38];
    let rest = &data[39..];
    // An ALPN id is 1 to 255 bytes; an SNI name at most 255 (rustls enforces both).
    let alpn_len = rest
        .len()
        .min(usize::from(rest.first().copied().unwrap_or(0)));
    let (alpn, sni) = rest.split_at(alpn_len);
    let sni = std::str::from_utf8(&sni[..sni.len().min(255)]).ok();
    let facts = ConnectionFacts {
        peer,
        local,
        alpn: (flags & 1 == 1 && !alpn.is_empty()).then_some(alpn),
        sni: if flags & 2 == 2 { sni } else { None },
        tls_version: Some(if flags & 4 == 4 { "TLSv1.3" } else { "TLSv1.2" }),
    };
    let v1 = header(ProxyProtocol::V1, &facts).expect("v1 header");
    let line = std::str::from_utf8(&v1).expect("v1 is text");
    assert!(ppp::v1::Header::try_from(line).is_ok(), "{line:?}");
    let v2 = header(ProxyProtocol::V2, &facts).expect("v2 header");
    let parsed = ppp::v2::Header::try_from(v2.as_slice()).expect("v2 parses");
    let tlvs: Vec<_> = parsed.tlvs().map(|t| t.expect("a TLV")).collect();
    if let Some(alpn) = facts.alpn {
        assert!(tlvs
            .iter()
            .any(|t| t.kind == ppp::v2::Type::ALPN as u8 && &*t.value == alpn));
    }
    if let Some(sni) = facts.sni {
        assert!(tlvs
            .iter()
            .any(|t| t.kind == ppp::v2::Type::Authority as u8 && &*t.value == sni.as_bytes()));
    }
    assert!(header(ProxyProtocol::None, &facts).is_none());
});
