//! Whether an entry's files changed since the catalog last looked: their metadata first
//! (a `stat`), then their contents (a read and a hash), and a parse only when the
//! contents changed. A full rescan of an unchanged store costs a `stat` per file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Entry;
use crate::certs::discover::Source;
use crate::certs::load::{parse, Contents, Context, LoadError, Loaded, Role};

/// File metadata that changes whenever a file is replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// Follows symlinks: a re-pointed certbot or Kubernetes link changes the stamp.
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The stamps of an entry's files (`None`: missing, or not known yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Stamp {
    cert: Option<FileStamp>,
    key: Option<FileStamp>,
    extra: Box<[Option<FileStamp>]>,
    /// The OCSP response file's, boxed: most entries have none.
    ocsp: Option<Box<FileStamp>>,
}

pub(super) fn stamp_of(source: &Source) -> Stamp {
    Stamp {
        cert: FileStamp::of(&source.cert),
        key: source.key.as_deref().and_then(FileStamp::of),
        extra: source.extra.iter().map(|p| FileStamp::of(p)).collect(),
        ocsp: source
            .ocsp_path()
            .and_then(|p| FileStamp::of(&p))
            .map(Box::new),
    }
}

/// What was found in one source during a refresh, computed in parallel. A full rescan of
/// an unchanged store makes one per entry, all `Same`: the others are boxed so that this
/// list stays at 16 bytes an entry (it was 30 MiB at 100,000 entries unboxed).
pub(super) enum Look {
    Same,
    Restamped(Box<Stamp>),
    Changed(Box<(Stamp, Option<u64>, Result<Loaded, LoadError>)>),
}

/// Compares a source with what the catalog knows of it, and loads it when its contents
/// changed.
pub(super) fn look(source: &Source, known: Option<&Entry>, ctx: &Context, role: Role) -> Look {
    let stamp = stamp_of(source);
    let same_source = known.is_some_and(|e| e.source == *source);
    if same_source && known.is_some_and(|e| e.stamp == stamp) {
        return Look::Same;
    }
    let contents = Contents::read(source);
    // Unreadable for a passing reason (out of descriptors or memory): the stamp is left
    // unknown, so that the next refresh (the periodic rescan at the latest) reads it again
    // instead of taking it as seen.
    let stamp = match &contents {
        Err(LoadError::Read { error, .. }) if passing(error) => Stamp::default(),
        _ => stamp,
    };
    let digest = contents.as_ref().ok().map(Contents::digest);
    if same_source && digest.is_some() && known.is_some_and(|e| e.digest == digest) {
        return Look::Restamped(Box::new(stamp));
    }
    let result = contents.and_then(|c| parse(source, &c, ctx, role));
    Look::Changed(Box::new((stamp, digest, result)))
}

/// Whether a read failed for a reason of the moment rather than of the file.
fn passing(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR)
    )
}
