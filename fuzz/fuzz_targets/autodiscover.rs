//! Outlook's autodiscover request with arbitrary bytes (anyone can POST it to
//! autodiscover.DOMAIN): read or refused with a reason, never a panic; an address it
//! accepts is one the answer can carry, and the answer stays well-formed XML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront::config::{Mail, Username};
use mailfront::onboarding::documents::{autodiscover, autodiscover_request, Service, Setup};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = autodiscover_request(data) else {
        return;
    };
    let Some(address) = request.address else {
        return;
    };
    let services = [Service {
        mail: Mail::Imap,
        port: 993,
        implicit: true,
    }];
    let setup = Setup {
        domain: "example.com",
        host: "mail.example.com",
        services: &services,
        username: Username::LocalPart,
        display_name: "example.com",
    };
    let xml = autodiscover(&setup, &address);
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the answer is not XML: {e}\n{xml}"),
        }
    }
});
