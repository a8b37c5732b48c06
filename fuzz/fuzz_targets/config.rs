//! Arbitrary config text: it parses, or the error names what and where; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailfront::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(Path::new("/etc/mailfront/mailfront.toml"), text) {
        assert!(!e.to_string().is_empty());
    }
});
