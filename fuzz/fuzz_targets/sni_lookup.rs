//! Any name a client may send, against a store with exact and wildcard names: the lookup
//! answers (an entry or the server-wide certificate), never panics, and an exact name's
//! entry wins.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mailfront::certs::{Fixed, Index, Match, Served, Store};
use mailfront::names::{normalize, Pattern};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let key = signing_key();
        let resolver = Arc::new(Fixed(Arc::new(CertifiedKey::new(vec![], key))));
        let served = |id: &str| {
            Arc::new(Served {
                id: id.into(),
                resolver: resolver.clone(),
                algorithm: rustls::SignatureAlgorithm::ECDSA,
                schemes: vec![SignatureScheme::ECDSA_NISTP256_SHA256].into(),
                not_after: 0,
                not_before: 0,
                problems: Default::default(),
                trusted: true,
            })
        };
        let fallback = served("server");
        let names = [
            "mail.example.com",
            "*.example.com",
            "xn--bcher-kva.example",
            "a.b.c.d.e",
        ];
        let updates: Vec<_> = names
            .iter()
            .map(|n| (Pattern::parse(n).unwrap(), vec![served(n)]))
            .collect();
        let len = updates.len();
        Store::new(Index::empty(fallback.clone()).with_updates(fallback, len, updates))
    })
}

/// The entries' key: the lookup never signs, so none is needed.
#[derive(Debug)]
struct NoKey;

impl rustls::sign::SigningKey for NoKey {
    fn choose_scheme(&self, _offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        None
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

fn signing_key() -> Arc<dyn rustls::sign::SigningKey> {
    Arc::new(NoKey)
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let index = store().index();
    let (served, how) = index.select(Some(name), &[SignatureScheme::ECDSA_NISTP256_SHA256]);
    if normalize(name) == "mail.example.com" {
        assert_eq!((&*served.id, how), ("mail.example.com", Match::Exact));
    }
    if how == Match::Fallback {
        assert_eq!(&*served.id, "server");
    }
    let _ = Pattern::parse(name).map(|p| p.covers("mail.example.com"));
});
