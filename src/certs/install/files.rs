//! The two layouts the store's writers put in place, each written so that a reader sees the
//! old version or the new one and never a mix, and each undone when the store does not
//! take what was written:
//!
//! - the admin interface's `NAME.pem` (the chain, then the key), replaced by a rename, with
//!   the SHA-256 of what it wrote kept in the dot-file [`RECORD`]: a `NAME.pem` whose bytes
//!   the record does not list is the operator's, whatever its name;
//! - ACME's `acme/NAME/`, certbot's names through a swapped link as Kubernetes does it:
//!   the files go into a new `..VERSION` directory, `..data` is re-pointed at it by one
//!   rename, and `fullchain.pem` and `privkey.pem` are links through `..data`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::certs::limits::ReadError;

/// The dot-file (which the store ignores) listing what the admin interface wrote: one
/// line per version, the entry's name and the SHA-256 of its bytes in hex.
pub const RECORD: &str = ".mailfront-admin-written";
/// The largest record read: 100,000 names with their digests take about 10 MB.
const RECORD_MAX: u64 = 64 << 20;

/// The SHA-256 of `bytes`, in hex.
pub fn digest(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the admin interface wrote: names and the digests of their bytes. A line with a
/// name alone (written by mailfront before digests were kept) owns whatever the file
/// holds.
#[derive(Debug, Default)]
pub struct Record {
    lines: Vec<(String, Option<String>)>,
}

impl Record {
    /// The record in `dir` (empty when there is none). One that cannot be read is an
    /// error, never taken as empty: the next write would lose what it lists.
    pub fn read(dir: &Path) -> io::Result<Self> {
        let path = dir.join(RECORD);
        let text = match crate::certs::limits::read(&path, RECORD_MAX) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::TooLarge { size, limit }) => {
                let why = format!("{} is {size} bytes, more than {limit}", path.display());
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
        };
        let lines = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?.to_owned();
                Some((name, words.next().map(str::to_owned)))
            })
            .collect();
        Ok(Self { lines })
    }

    /// Whether the admin interface wrote `bytes` as `name`.
    pub fn owns(&self, name: &str, bytes: &[u8]) -> bool {
        let digest = digest(bytes);
        self.lines
            .iter()
            .any(|(n, d)| n == name && d.as_ref().is_none_or(|d| *d == digest))
    }

    /// Lists `digest` for `name`; whether it was not listed already.
    fn add(&mut self, name: &str, digest: &str) -> bool {
        let line = (name.to_owned(), Some(digest.to_owned()));
        let new = !self.lines.contains(&line);
        if new {
            self.lines.push(line);
        }
        new
    }

    /// Keeps only `digest` for `name` (`None`: forgets `name`).
    fn keep(&mut self, name: &str, digest: Option<&str>) {
        self.lines
            .retain(|(n, d)| n != name || (digest.is_some() && d.as_deref() == digest));
    }

    fn save(&self, dir: &Path) -> io::Result<()> {
        let mut text = String::new();
        for (name, digest) in &self.lines {
            match digest {
                Some(d) => text.push_str(&format!("{name} {d}\n")),
                None => text.push_str(&format!("{name}\n")),
            }
        }
        write_replacing(dir, RECORD, text.as_bytes(), 0o600)
    }
}

/// A version written and in place, to be kept or undone once the store has looked at it.
#[derive(Debug)]
pub enum Written {
    /// `dir/NAME.pem`, and what it held before (`None`: nothing); whether the record
    /// listed `digest` only for this write.
    Single {
        dir: PathBuf,
        name: String,
        digest: String,
        listed: bool,
        previous: Option<Vec<u8>>,
    },
    /// A new `..VERSION` of `entry` linked in, and the version it replaced.
    Versioned {
        entry: PathBuf,
        new: std::ffi::OsString,
        old: Option<PathBuf>,
    },
}

/// Writes `dir/NAME.pem` (mode 0600) in place of what is there. The record lists the new
/// digest beside the old one before the rename, so that whatever moment a crash comes at,
/// the file's bytes are listed as the interface's.
pub fn write_single(dir: &Path, name: &str, pem: &[u8]) -> io::Result<Written> {
    let file = format!("{name}.pem");
    let previous = match std::fs::read(dir.join(&file)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let digest = digest(pem);
    let mut record = Record::read(dir)?;
    let listed = record.add(name, &digest);
    record.save(dir)?;
    let written = Written::Single {
        dir: dir.to_owned(),
        name: name.to_owned(),
        digest,
        listed,
        previous,
    };
    if let Err(e) = write_replacing(dir, &file, pem, 0o600) {
        let _ = written.roll_back();
        return Err(e);
    }
    Ok(written)
}

/// Removes `dir/NAME.pem`, written by the interface, and its lines in the record.
pub fn remove_single(dir: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(format!("{name}.pem"))) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut record = Record::read(dir)?;
    record.keep(name, None);
    record.save(dir)?;
    sync_dir(dir)
}

/// Writes `dir/NAME/` as a new version of certbot's names through `..data`.
pub fn write_versioned(dir: &Path, name: &str, chain: &str, key_pem: &str) -> io::Result<Written> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let entry = dir.join(name);
    let fresh = std::fs::symlink_metadata(&entry).is_err();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&entry)?;
    let version = tempfile::Builder::new()
        .prefix(&format!("..{}.", crate::certs::now()))
        .tempdir_in(&entry)?
        .keep();
    let new = version.file_name().expect("a directory name").to_owned();
    let data = entry.join("..data");
    let old = std::fs::read_link(&data).ok();
    let written = Written::Versioned {
        entry: entry.clone(),
        new: new.clone(),
        old,
    };
    let wrote = (|| {
        std::fs::set_permissions(&version, std::fs::Permissions::from_mode(0o755))?;
        write_new(&version.join("fullchain.pem"), chain.as_bytes(), 0o644)?;
        write_new(&version.join("privkey.pem"), key_pem.as_bytes(), 0o600)?;
        sync_dir(&version)?;
        swap_link(&entry, Path::new(&new), &data)?;
        for file in ["fullchain.pem", "privkey.pem"] {
            let link = entry.join(file);
            let want = Path::new("..data").join(file);
            if std::fs::read_link(&link).ok().as_deref() != Some(want.as_path()) {
                swap_link(&entry, &want, &link)?;
            }
        }
        sync_dir(&entry)
    })();
    match wrote {
        Ok(()) => Ok(written),
        // Half written (a full disk): undone, so that the entry stays ACME's (or absent).
        Err(e) => {
            match fresh {
                true => {
                    let _ = std::fs::remove_dir_all(&entry);
                }
                false => {
                    let _ = written.roll_back();
                    let _ = std::fs::remove_dir_all(&version);
                }
            }
            Err(e)
        }
    }
}

impl Written {
    /// The new version serves: the old one goes.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Self::Single {
                dir, name, digest, ..
            } => {
                let mut record = Record::read(&dir)?;
                record.keep(&name, Some(&digest));
                record.save(&dir)
            }
            Self::Versioned { entry, new, old } => {
                if let Some(old) = old.as_deref().and_then(|o| version(&entry, &new, o)) {
                    std::fs::remove_dir_all(old)?;
                }
                Ok(())
            }
        }
    }

    /// The new version does not serve: what was there before is put back (the running
    /// store kept serving it), and the new one goes, so that nothing of it is left.
    pub fn roll_back(self) -> io::Result<()> {
        match self {
            Self::Single {
                dir,
                name,
                digest,
                listed,
                previous,
            } => {
                let mut record = Record::read(&dir)?;
                match previous {
                    Some(bytes) => {
                        write_replacing(&dir, &format!("{name}.pem"), &bytes, 0o600)?;
                        // Only a line this write added: the same bytes written again
                        // leave the record owning them.
                        record.lines.retain(|(n, d)| {
                            !listed || n != &name || d.as_deref() != Some(digest.as_str())
                        });
                    }
                    None => {
                        remove_file(&dir.join(format!("{name}.pem")))?;
                        record.keep(&name, None);
                    }
                }
                record.save(&dir)?;
                sync_dir(&dir)
            }
            Self::Versioned { entry, new, old } => {
                match old
                    .as_deref()
                    .filter(|o| version(&entry, &new, o).is_some())
                {
                    Some(old) => swap_link(&entry, old, &entry.join("..data"))?,
                    // The first version: the entry goes whole.
                    None => return std::fs::remove_dir_all(&entry),
                }
                std::fs::remove_dir_all(entry.join(&new))?;
                sync_dir(&entry)
            }
        }
    }
}

/// `..VERSION` inside `entry`, for a link's `target`, when it is not the new version.
fn version(entry: &Path, new: &std::ffi::OsStr, target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?;
    let ok =
        target.components().count() == 1 && name.to_string_lossy().starts_with("..") && name != new;
    ok.then(|| entry.join(name))
}

/// Writes `dir/file` whole: a dot-file beside it, synced, renamed over it, the directory
/// synced.
fn write_replacing(dir: &Path, file: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(file)).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Points `link` at `target` by making a link beside it and renaming it over.
fn swap_link(dir: &Path, target: &Path, link: &Path) -> io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let temp = dir.join(format!("..tmp.{}.{nanos}", std::process::id()));
    std::os::unix::fs::symlink(target, &temp)?;
    std::fs::rename(&temp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(entry: &Path, file: &str) -> String {
        std::fs::read_to_string(entry.join(file)).unwrap()
    }

    fn versions(entry: &Path) -> usize {
        std::fs::read_dir(entry)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("..") && name != "..data"
            })
            .count()
    }

    #[test]
    fn a_new_version_is_swapped_in_and_committed_or_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("mail.example.com");
        write_versioned(dir.path(), "mail.example.com", "chain1", "key1")
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(read(&entry, "fullchain.pem"), "chain1");
        assert_eq!(read(&entry, "privkey.pem"), "key1");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(entry.join("privkey.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let second = write_versioned(dir.path(), "mail.example.com", "chain2", "key2").unwrap();
        assert_eq!(read(&entry, "fullchain.pem"), "chain2");
        assert_eq!(versions(&entry), 2);
        second.commit().unwrap();
        assert_eq!(versions(&entry), 1);
        assert_eq!(read(&entry, "privkey.pem"), "key2");

        // Not served: the version before is linked back and the refused one removed.
        let third = write_versioned(dir.path(), "mail.example.com", "chain3", "key3").unwrap();
        assert_eq!(read(&entry, "fullchain.pem"), "chain3");
        third.roll_back().unwrap();
        assert_eq!(read(&entry, "fullchain.pem"), "chain2");
        assert_eq!(read(&entry, "privkey.pem"), "key2");
        assert_eq!(versions(&entry), 1);
        assert!(!std::fs::read_dir(&entry).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("..tmp")));

        // A first version not served: nothing of the entry is left.
        let first = write_versioned(dir.path(), "new.example.com", "c", "k").unwrap();
        first.roll_back().unwrap();
        assert!(!dir.path().join("new.example.com").exists());
    }

    /// The record owns exactly the bytes written; a roll-back puts the previous bytes and
    /// the record back as they were, and a first version leaves nothing.
    #[test]
    fn single_files_are_recorded_by_digest_and_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mail.example.com.pem");
        write_single(dir.path(), "mail.example.com", b"one")
            .unwrap()
            .commit()
            .unwrap();
        let record = Record::read(dir.path()).unwrap();
        assert!(record.owns("mail.example.com", b"one"));
        assert!(!record.owns("mail.example.com", b"edited by hand"));
        assert!(!record.owns("other.example.com", b"one"));

        let two = write_single(dir.path(), "mail.example.com", b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        two.roll_back().unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"one");
        let record = Record::read(dir.path()).unwrap();
        assert!(record.owns("mail.example.com", b"one"));
        assert!(!record.owns("mail.example.com", b"two"));

        // The same bytes written again and not taken: still the interface's.
        let again = write_single(dir.path(), "mail.example.com", b"one").unwrap();
        again.roll_back().unwrap();
        assert!(Record::read(dir.path())
            .unwrap()
            .owns("mail.example.com", b"one"));

        let fresh = write_single(dir.path(), "new.example.com", b"new").unwrap();
        fresh.roll_back().unwrap();
        assert!(!dir.path().join("new.example.com.pem").exists());
        assert!(!Record::read(dir.path())
            .unwrap()
            .owns("new.example.com", b"new"));
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "the entry and the record only: {left:?}");

        // A record that cannot be read is an error, not an empty record.
        std::fs::write(dir.path().join(RECORD), b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let record = dir.path().join(RECORD);
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&record).is_err() {
            assert!(Record::read(dir.path()).is_err());
            assert!(write_single(dir.path(), "x.example.com", b"x").is_err());
        }
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).unwrap();

        // A line without a digest (an earlier mailfront's) owns whatever the file holds.
        std::fs::write(dir.path().join(RECORD), "old.example.com\n").unwrap();
        assert!(Record::read(dir.path())
            .unwrap()
            .owns("old.example.com", b"anything"));
        remove_single(dir.path(), "old.example.com").unwrap();
        assert!(!Record::read(dir.path())
            .unwrap()
            .owns("old.example.com", b"anything"));
    }
}
