//! Which files a writer may touch, decided from the store's own discovery (the code that
//! pairs files into entries), not from a list of layouts: each writer owns one layout of
//! its own and nothing else, and anything else that would be, or be paired with, the entry
//! for a name belongs to the operator or another tool.

use std::path::{Path, PathBuf};

use super::files::Record;
use crate::certs::catalog::Catalog;
use crate::certs::check::domain_of_entry;
use crate::certs::discover;

/// Who writes into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The admin interface (uploads): `NAME.pem` at the top of the store.
    Admin,
    /// The ACME client: `acme/NAME/`.
    Acme,
}

impl Writer {
    /// The id of the entry it writes for `name`, as the store names entries.
    pub fn id(self, name: &str) -> String {
        match self {
            Self::Admin => format!("{name}.pem"),
            Self::Acme => format!("acme/{name}/"),
        }
    }

    /// Where that entry's certificate file is.
    pub fn path(self, root: &Path, name: &str) -> PathBuf {
        match self {
            Self::Admin => root.join(format!("{name}.pem")),
            Self::Acme => root.join("acme").join(name),
        }
    }
}

/// Why `writer` may not write the entry for `name`, if it may not: a file or folder it
/// did not write is there, or the store holds an entry for the name in another layout.
pub fn conflict(catalog: &Catalog, writer: Writer, name: &str) -> Option<String> {
    let root = catalog.root();
    match writer {
        Writer::Admin => admin_conflict(catalog, root, name),
        Writer::Acme => acme_conflict(root, name),
    }
}

fn admin_conflict(catalog: &Catalog, root: &Path, name: &str) -> Option<String> {
    let ours = Writer::Admin.path(root, name);
    // Files the store would pair with `NAME.pem` by name, and `NAME.pem` itself unless
    // its bytes are what the interface wrote.
    for path in discover::stem_paths(root, name) {
        if path != ours || !owned(&path, name) {
            return Some(format!(
                "{} is there and was not written by the admin interface (another tool, or by \
                 hand): update those files, or remove them and upload again",
                path.display()
            ));
        }
    }
    let own_id = Writer::Admin.id(name);
    let other = catalog.ids().find(|id| {
        ***id != *own_id && id.contains(name) && domain_of_entry(id).is_some_and(|d| d.name == name)
    });
    if let Some(id) = other {
        return Some(format!(
            "{} is the entry for {name} that another tool writes (certbot, Kubernetes, ACME, \
             or files by hand); the admin interface does not write beside it: update those \
             files, or remove them and upload again",
            root.join(&**id).display()
        ));
    }
    let folders = [root.join(name), root.join("acme").join(name)];
    let found = folders.iter().map(PathBuf::as_path);
    let found = found.filter(|p| std::fs::symlink_metadata(p).is_ok());
    if let Some(path) = found.chain(catalog.strays_named(name)).next() {
        return Some(format!(
            "{} is there and was not written by the admin interface; the admin interface \
             does not write beside it: move it away, or remove it and upload again",
            path.display()
        ));
    }
    None
}

/// Whether `path`, `NAME.pem`, holds bytes the interface wrote: a regular file (not a
/// link to the operator's files) whose digest the record lists.
fn owned(path: &Path, name: &str) -> bool {
    let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
    let dir = path.parent().unwrap_or(path);
    // A record that cannot be read owns nothing: the file is left alone.
    let owns = |bytes: Vec<u8>| Record::read(dir).is_ok_and(|r| r.owns(name, &bytes));
    regular && crate::certs::load::read(path).is_ok_and(owns)
}

/// ACME owns `acme/NAME/` when it is absent or a directory in its layout (`..data`
/// linked to a version); anything else there is not its own. Asked before an order too,
/// so that no certificate is ordered that could not be installed.
pub fn acme_conflict(root: &Path, name: &str) -> Option<String> {
    let entry = Writer::Acme.path(root, name);
    let Ok(meta) = std::fs::symlink_metadata(&entry) else {
        return None;
    };
    let versioned = meta.is_dir()
        && std::fs::symlink_metadata(entry.join("..data")).is_ok_and(|m| m.is_symlink());
    (!versioned).then(|| {
        format!(
            "{} is there and was not written by the ACME client (no ..data link): move it \
             away for certificates to be ordered for {name}",
            entry.display()
        )
    })
}

/// Whether the admin interface wrote what `dir/NAME.pem` holds now: `Ok(false)` when
/// there is no such file.
pub fn admin_owns(dir: &Path, name: &str) -> Result<bool, String> {
    let path = Writer::Admin.path(dir, name);
    match std::fs::symlink_metadata(&path) {
        Err(_) => Ok(false),
        Ok(_) if owned(&path, name) => Ok(true),
        Ok(_) => Err(format!(
            "{} was not written by the admin interface; remove it yourself",
            path.display()
        )),
    }
}
