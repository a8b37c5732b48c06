//! How much of a file the store reads. A certificate entry is a few KB, yet anything in
//! the store, `issuers_dir` or `crl_dir` is read whole, by up to 64 loader threads at once:
//! a stray multi-gigabyte `*.pem` (a dump, a log) would take the process's memory at start
//! or at a rescan. Files above their bound are refused unread, with their size.

use std::io::Read;
use std::path::Path;

/// A store entry's file (certificate chain, key, or both), an intermediate in
/// `issuers_dir`, a file given to `mailfront check`: ample room for a long chain with
/// `openssl x509 -text` dumps in it, or for the system bundle appended by mistake.
pub const ENTRY: u64 = 512 * 1024;
/// `ca_bundle` (the system bundle is about 220 KB).
pub const BUNDLE: u64 = 4 * 1024 * 1024;
/// A CRL in `crl_dir`: a large CA's full CRL runs to tens of megabytes.
pub const CRL: u64 = 64 * 1024 * 1024;

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be opened or read.
    #[error("{0}")]
    Io(std::io::Error),
    /// The file is larger than `limit`; nothing of it was kept.
    #[error(
        "it is {}, more than the {} such a file may be (a certificate file is a few KB): \
         not read",
        size_text(*size),
        size_text(*limit)
    )]
    TooLarge { size: u64, limit: u64 },
}

/// Reads `path` whole when it is at most `limit` bytes. The size is asked first, and the
/// read is cut at `limit` anyway, for a file that grows while it is read.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let size = file.metadata().map_err(ReadError::Io)?.len();
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// A size as operators read it: `512 KiB`, `3.0 GiB`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(size_text(100), "100 bytes");
        assert_eq!(size_text(ENTRY), "512 KiB");
        assert_eq!(size_text(CRL), "64 MiB");
        assert_eq!(size_text(3 << 30), "3 GiB");
        assert_eq!(size_text(1536), "1.5 KiB");
    }

    /// A sparse 3 GiB file is refused by its size, without reading it; one at the limit
    /// is read.
    #[test]
    fn oversized_files_are_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let huge = tmp.path().join("dump.pem");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(3 << 30)
            .unwrap();
        let e = read(&huge, ENTRY).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { size, .. } if size == 3 << 30));
        assert!(e.to_string().contains("3 GiB"), "{e}");
        let fits = tmp.path().join("fits.pem");
        std::fs::write(&fits, vec![b'x'; ENTRY as usize]).unwrap();
        assert_eq!(read(&fits, ENTRY).unwrap().len() as u64, ENTRY);
    }
}
