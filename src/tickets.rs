//! Session ticket keys shared by a fleet: `server.ticket_keys`, a file in HAProxy's
//! `tls-ticket-keys` format, so that a session made on one instance resumes on another.
//!
//! The file holds one base64 key per line, 48 bytes (a 16-byte name, an AES-128 key, a
//! 16-byte HMAC key) or 80 bytes (name, AES-256 key, 32-byte HMAC key), all of one size.
//! As in HAProxy, the last [`KEPT`] keys are in use: the penultimate one encrypts new
//! tickets and all three decrypt. Rotating is appending a freshly made key (and dropping
//! the oldest): the appended key reaches every instance one rotation before any instance
//! encrypts with it, and a ticket stays readable for one rotation after its key stops
//! encrypting. A file HAProxy refuses (fewer than three keys, a blank line, mixed sizes)
//! is refused here too, so one file serves a mixed fleet of both.
//!
//! Tickets are laid out as OpenSSL's (RFC 5077 §4): key name, IV, the session state
//! encrypted with AES-CBC, and an HMAC-SHA256 over all of it. The state inside is
//! rustls' own, prefixed with the listener's name so that a session never crosses from
//! one listener (protocol) to another; a HAProxy ticket reaching mailfront, or the
//! reverse, is authenticated but not understood, and the client gets a full handshake.
//!
//! The file is checked once a second (one `stat`) and read again when it changed, which
//! also works where inotify sees nothing (NFS, a Kubernetes secret volume). A file that
//! cannot be read or parsed keeps the keys in use, with one warning. Handshakes read the
//! keys with one `ArcSwap::load`, never a lock.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_lc_rs::cipher::{
    DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
    AES_128, AES_256,
};
use aws_lc_rs::hmac;
use base64::Engine as _;
use rustls::server::ProducesTickets;
use tokio_util::sync::CancellationToken;

use crate::certs::check::now;
use crate::certs::limits::{self, ReadError};

/// Keys in use, the last ones of the file: HAProxy's `TLS_TICKETS_NO`.
pub const KEPT: usize = 3;

/// A key file larger than this is refused: a thousand keys is far more than any rotation
/// keeps, and a stray huge file is never read whole.
const MAX_FILE: u64 = 128 * 1024;

/// How often the file's metadata is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The lifetime announced with each ticket: rustls' own rotating keys' (6 hours). Rotating
/// the file at most every 6 hours keeps every ticket readable for its whole lifetime.
const LIFETIME: u32 = 6 * 60 * 60;

const NAME_LEN: usize = 16;
const IV_LEN: usize = 16;
const MAC_LEN: usize = 32;
const BLOCK: usize = 16;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeysError {
    /// The file cannot be read.
    #[error("server.ticket_keys {}: cannot read: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Every user of the host can read the file.
    #[error("server.ticket_keys {}: readable by every user (mode {mode:04o}): whoever reads it can open the sessions' tickets; chmod 600 it (or 640, with server.user's group)", .path.display())]
    Readable { path: PathBuf, mode: u32 },
    /// The file is larger than any key file.
    #[error("server.ticket_keys {}: {size} bytes, more than a key file holds (at most {MAX_FILE})", .path.display())]
    TooLarge { path: PathBuf, size: u64 },
    /// A line is not a key.
    #[error("server.ticket_keys {}: line {line}: {problem}", .path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// Fewer keys than are kept in use.
    #[error("server.ticket_keys {}: {count} keys; at least {KEPT} are needed (make one with: openssl rand 80 | base64 -w0)", .path.display())]
    TooFew { path: PathBuf, count: usize },
}

/// One key of the file.
struct Key {
    name: [u8; NAME_LEN],
    encrypting: PaddedBlockEncryptingKey,
    decrypting: PaddedBlockDecryptingKey,
    mac: hmac::Key,
}

/// The keys in use: the last [`KEPT`] of the file, oldest first.
pub struct KeySet {
    keys: Vec<Key>,
    /// What the file's bytes were, to tell a rewrite that changed nothing.
    digest: u64,
}

impl KeySet {
    /// Parses a key file's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, TicketKeysError> {
        let line_error = |line: usize, problem: String| TicketKeysError::Line {
            path: path.to_owned(),
            line,
            problem,
        };
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let mut decoded: Vec<Vec<u8>> = Vec::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Err(line_error(
                    i + 1,
                    "empty; every line must be one key".into(),
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|e| line_error(i + 1, format!("not base64: {e}")))?;
            if bytes.len() != 48 && bytes.len() != 80 {
                return Err(line_error(
                    i + 1,
                    format!(
                        "{} bytes; a key is 48 (AES-128) or 80 (AES-256)",
                        bytes.len()
                    ),
                ));
            }
            if let Some(first) = decoded.first() {
                if first.len() != bytes.len() {
                    return Err(line_error(
                        i + 1,
                        format!(
                            "{} bytes where line 1 has {}; keys of one file are all of one size",
                            bytes.len(),
                            first.len()
                        ),
                    ));
                }
            }
            decoded.push(bytes);
        }
        if decoded.len() < KEPT {
            return Err(TicketKeysError::TooFew {
                path: path.to_owned(),
                count: decoded.len(),
            });
        }
        let keys = decoded[decoded.len() - KEPT..]
            .iter()
            .map(|bytes| Key::new(bytes))
            .collect();
        Ok(Self {
            keys,
            digest: digest(text),
        })
    }

    /// The key that encrypts new tickets: the penultimate of the file.
    fn encrypting(&self) -> &Key {
        &self.keys[KEPT - 2]
    }

    /// The name of the key that encrypts, in hex: it is in every ticket, so not secret,
    /// and lets an operator see that a fleet agrees.
    pub fn encrypting_name(&self) -> String {
        self.encrypting()
            .name
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn seal(&self, context: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.encrypting();
        let mut state = Vec::with_capacity(context.len() + plain.len() + BLOCK);
        state.extend_from_slice(context);
        state.extend_from_slice(plain);
        let iv = key.encrypting.encrypt(&mut state).ok()?;
        let iv: &[u8] = (&iv).try_into().ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + IV_LEN + state.len() + MAC_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(iv);
        ticket.extend_from_slice(&state);
        let tag = hmac::sign(&key.mac, &ticket);
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn open(&self, context: &[u8], ticket: &[u8]) -> Option<Vec<u8>> {
        let body_len = ticket.len().checked_sub(NAME_LEN + IV_LEN + MAC_LEN)?;
        if body_len == 0 || body_len % BLOCK != 0 {
            return None;
        }
        let (signed, tag) = ticket.split_at(ticket.len() - MAC_LEN);
        let name = &signed[..NAME_LEN];
        let key = self.keys.iter().find(|k| k.name == name)?;
        hmac::verify(&key.mac, signed, tag).ok()?;
        let iv: [u8; IV_LEN] = signed[NAME_LEN..NAME_LEN + IV_LEN].try_into().ok()?;
        let mut state = signed[NAME_LEN + IV_LEN..].to_vec();
        let plain = key
            .decrypting
            .decrypt(&mut state, DecryptionContext::Iv128(iv.into()))
            .ok()?;
        let rest = plain.strip_prefix(context)?;
        Some(rest.to_vec())
    }
}

impl Key {
    /// `bytes` is 48 or 80 bytes long ([`KeySet::parse`] checked).
    fn new(bytes: &[u8]) -> Self {
        let (algorithm, half) = if bytes.len() == 48 {
            (&AES_128, 16)
        } else {
            (&AES_256, 32)
        };
        let (name, rest) = bytes.split_at(NAME_LEN);
        let (aes, mac) = rest.split_at(half);
        // The lengths are the algorithms' own, so neither construction can fail.
        let unbound = || UnboundCipherKey::new(algorithm, aes).expect("an AES key of its size");
        Self {
            name: name.try_into().expect("16 bytes"),
            encrypting: PaddedBlockEncryptingKey::cbc_pkcs7(unbound()).expect("AES-CBC key"),
            decrypting: PaddedBlockDecryptingKey::cbc_pkcs7(unbound()).expect("AES-CBC key"),
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac),
        }
    }
}

/// A stable digest of the file's bytes (not secret-safe, only to compare two reads).
fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Reads and parses the key file.
pub fn read(path: &Path) -> Result<KeySet, TicketKeysError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read_error = |error| TicketKeysError::Read {
        path: path.to_owned(),
        error,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o004 != 0 {
        return Err(TicketKeysError::Readable {
            path: path.to_owned(),
            mode,
        });
    }
    let text = limits::read(path, MAX_FILE).map_err(|e| match e {
        ReadError::Io(source) => read_error(source),
        ReadError::TooLarge { size, .. } => TicketKeysError::TooLarge {
            path: path.to_owned(),
            size,
        },
    })?;
    KeySet::parse(path, &text)
}

/// The fleet's ticket keys in force, swapped whole when the file changes.
pub struct TicketKeys {
    path: PathBuf,
    current: ArcSwap<KeySet>,
    /// Loads that changed the keys (the first at start included), and files refused.
    loaded: AtomicU64,
    refused: AtomicU64,
    /// When the keys in force were loaded, in seconds since the epoch.
    loaded_at: AtomicU64,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// Loads the file; at start a file that cannot be used is an error.
    pub fn open(path: &Path) -> Result<Arc<Self>, TicketKeysError> {
        let keys = read(path)?;
        tracing::info!(path = %path.display(), encrypting = %keys.encrypting_name(), "ticket keys loaded");
        Ok(Arc::new(Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(keys),
            loaded: AtomicU64::new(1),
            refused: AtomicU64::new(0),
            loaded_at: AtomicU64::new(now().max(0) as u64),
        }))
    }

    /// The file it reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the key that encrypts now, in hex.
    pub fn encrypting_name(&self) -> String {
        self.current.load().encrypting_name()
    }

    /// Loads that changed the keys, files refused, and when the keys in force were loaded
    /// (seconds since the epoch): for metrics.
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.loaded.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.loaded_at.load(Ordering::Relaxed),
        )
    }

    /// What one listener hands rustls: these keys, with its name bound into each ticket.
    pub fn for_listener(self: &Arc<Self>, listener: &str) -> Arc<dyn ProducesTickets> {
        let mut context = Vec::with_capacity(listener.len() + 1);
        // Length-prefixed, so that no listener's name is a prefix of another's context.
        context.push(listener.len().min(255) as u8);
        context.extend_from_slice(&listener.as_bytes()[..listener.len().min(255)]);
        Arc::new(ListenerTickets {
            keys: Arc::clone(self),
            context: context.into(),
        })
    }

    /// Reads the file again; a file that cannot be used keeps the keys in force.
    /// Returns whether the keys changed.
    pub fn reload(&self) -> Result<bool, TicketKeysError> {
        let keys = match read(&self.path) {
            Ok(keys) => keys,
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if keys.digest == self.current.load().digest {
            return Ok(false);
        }
        self.current.store(Arc::new(keys));
        self.loaded.fetch_add(1, Ordering::Relaxed);
        self.loaded_at.store(now().max(0) as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Looks at the file every second until `stop`, and reloads it when its metadata
    /// changed (a rewrite, an append, a rename over it, a re-pointed symlink).
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = stamp(&self.path).await;
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = stamp(&self.path).await;
            if now == seen {
                continue;
            }
            seen = now;
            let keys = Arc::clone(&self);
            let outcome = tokio::task::spawn_blocking(move || keys.reload()).await;
            match outcome {
                Ok(Ok(true)) => tracing::info!(
                    path = %self.path.display(),
                    encrypting = %self.encrypting_name(),
                    "ticket keys reloaded"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!("{e}; keeping the ticket keys in use"),
                Err(e) => tracing::error!(reason = %e, "ticket key reload failed"),
            }
        }
    }
}

/// What tells one version of the file from another without reading it: `None` while it
/// cannot be looked at.
type Stamp = Option<(u64, u64, u64, Option<SystemTime>, (i64, i64))>;

async fn stamp(path: &Path) -> Stamp {
    let path = path.to_owned();
    // A network file system can take its time answering; never on the async threads.
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some((
            m.dev(),
            m.ino(),
            m.len(),
            m.modified().ok(),
            (m.ctime(), m.ctime_nsec()),
        ))
    })
    .await
    .ok()
    .flatten()
}

/// One listener's tickets: the shared keys, its name bound into each ticket.
struct ListenerTickets {
    keys: Arc<TicketKeys>,
    context: Box<[u8]>,
}

impl fmt::Debug for ListenerTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTickets")
            .field("keys", &self.keys.path)
            .finish_non_exhaustive()
    }
}

impl ProducesTickets for ListenerTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.keys.current.load().seal(&self.context, plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.keys.current.load().open(&self.context, cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(seed: u8, len: usize) -> String {
        let bytes: Vec<u8> = (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn file(seeds: &[u8], len: usize) -> String {
        seeds.iter().map(|&s| key_line(s, len) + "\n").collect()
    }

    fn parse(text: &str) -> Result<KeySet, TicketKeysError> {
        KeySet::parse(Path::new("keys"), text.as_bytes())
    }

    /// A ticket sealed with one file's keys opens with them, for the same listener only.
    #[test]
    fn seals_and_opens() {
        for len in [48, 80] {
            let keys = parse(&file(&[1, 2, 3], len)).unwrap();
            let ticket = keys.seal(b"\x05imaps", b"session state").unwrap();
            assert_eq!(keys.open(b"\x05imaps", &ticket).unwrap(), b"session state");
            assert!(keys.open(b"\x05https", &ticket).is_none());
            assert_eq!(
                &ticket[..16],
                &keys.keys[1].name,
                "the penultimate key encrypts"
            );
        }
    }

    /// HAProxy's rotation: after appending a key, tickets of the key that encrypted still
    /// open; after two more, they do not.
    #[test]
    fn rotation_keeps_tickets_for_one_rotation() {
        let before = parse(&file(&[1, 2, 3], 80)).unwrap();
        let ticket = before.seal(b"", b"s").unwrap();
        let once = parse(&file(&[1, 2, 3, 4], 80)).unwrap();
        assert_eq!(once.open(b"", &ticket).unwrap(), b"s");
        assert_ne!(once.encrypting_name(), before.encrypting_name());
        let twice = parse(&file(&[3, 4, 5], 80)).unwrap();
        assert!(twice.open(b"", &ticket).is_none());
    }

    /// A ticket altered anywhere, cut short or made of nothing is refused, never a panic.
    #[test]
    fn tampered_tickets_are_refused() {
        let keys = parse(&file(&[1, 2, 3], 48)).unwrap();
        let ticket = keys.seal(b"", b"session state").unwrap();
        for i in 0..ticket.len() {
            let mut t = ticket.clone();
            t[i] ^= 1;
            assert!(keys.open(b"", &t).is_none(), "byte {i} flipped");
        }
        for len in 0..ticket.len() {
            assert!(keys.open(b"", &ticket[..len]).is_none());
        }
    }

    /// Files HAProxy refuses are refused, each naming the line and the problem.
    #[test]
    fn bad_files_name_the_line() {
        let good = file(&[1, 2, 3], 80);
        let cases = [
            (file(&[1, 2], 80), "2 keys; at least 3"),
            (format!("{good}\n"), "line 4: empty"),
            (format!("{good}not*base64\n"), "line 4: not base64"),
            (format!("{good}{}\n", key_line(9, 32)), "line 4: 32 bytes"),
            (
                format!("{good}{}\n", key_line(9, 48)),
                "line 4: 48 bytes where line 1 has 80",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(&text).err().expect(expected).to_string();
            assert!(e.contains(expected), "{e}");
        }
        assert!(parse(&good.replace('\n', "\r\n")).is_ok(), "CRLF lines");
        assert!(parse(good.trim_end()).is_ok(), "no final newline");
    }

    /// A reload that fails keeps the keys in force; one with new keys swaps them.
    #[test]
    fn a_bad_reload_keeps_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, file(&[1, 2, 3], 80)).unwrap();
        let private = |mode| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        private(0o644);
        assert!(matches!(
            TicketKeys::open(&path),
            Err(TicketKeysError::Readable { mode: 0o644, .. })
        ));
        private(0o600);
        let keys = TicketKeys::open(&path).unwrap();
        let tickets = keys.for_listener("imaps");
        let ticket = tickets.encrypt(b"s").unwrap();
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(tickets.decrypt(&ticket).unwrap(), b"s");
        std::fs::write(&path, vec![b'A'; MAX_FILE as usize + 1]).unwrap();
        assert!(matches!(
            keys.reload(),
            Err(TicketKeysError::TooLarge { .. })
        ));
        std::fs::write(&path, file(&[2, 3, 4], 80)).unwrap();
        assert!(keys.reload().unwrap());
        assert!(
            !keys.reload().unwrap(),
            "the same file again changes nothing"
        );
        assert_eq!(tickets.decrypt(&ticket).unwrap(), b"s");
        assert_eq!(keys.stats().0, 2);
        assert_eq!(keys.stats().1, 2);
    }
}
