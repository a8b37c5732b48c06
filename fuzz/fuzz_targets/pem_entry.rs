//! A store entry's file with arbitrary bytes (a half-written PEM, a wrong file, noise):
//! loading it returns an entry or an error naming the file, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailfront::certs::check::Trust;
use mailfront::certs::testing::{self as load, Contents, Context, Layout, Role, Source};

fn context() -> &'static Context {
    static CONTEXT: OnceLock<Context> = OnceLock::new();
    CONTEXT.get_or_init(|| Context {
        provider: mailfront::tls::provider(),
        trust: Trust::load(None, None, None).expect("no trust store loads"),
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the layout: one file with both, or the key apart.
    let (split, data) = match data.split_first() {
        Some((b, rest)) => (*b % 2 == 1, rest),
        None => (false, data),
    };
    let source = Source {
        id: "fuzz.example.com.pem".into(),
        cert: PathBuf::from("/nonexistent/fuzz.example.com.pem"),
        key: split.then(|| PathBuf::from("/nonexistent/fuzz.example.com.key")),
        extra: Box::default(),
        layout: if split { Layout::Pair } else { Layout::Single },
        ocsp: None,
    };
    let contents = if split {
        let at = data.len() / 2;
        Contents {
            cert: data[..at].to_vec(),
            key: Some(data[at..].to_vec()),
            extra: Vec::new(),
            ocsp: None,
        }
    } else {
        Contents {
            cert: data.to_vec(),
            key: None,
            extra: Vec::new(),
            ocsp: None,
        }
    };
    for role in [Role::Entry, Role::ServerWide, Role::Check(None)] {
        match load::parse(&source, &contents, context(), role) {
            Ok(loaded) => assert!(!loaded.served.id.is_empty()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
