//! The store's one report: every entry with its state, which entry serves each name, the
//! files that are not entries, and the trust files not used. `mailfront run` logs from it,
//! `mailfront certs` prints it, `check-config` judges it, and the admin interface serves
//! it: all from the catalog that serves, never from a second pipeline.

use std::path::PathBuf;

use serde::Serialize;

use super::check::Finding;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The store directory.
    pub store: PathBuf,
    pub server_wide: Row,
    /// Every entry, by id.
    pub entries: Vec<Row>,
    /// Every name, with the entry that serves it.
    pub names: Vec<NameRow>,
    /// Files and links below the store that are not entries, with why.
    pub not_entries: Vec<NotEntry>,
    /// Files of `issuers_dir` and `crl_dir` not used, with why.
    pub trust_skipped: Vec<NotEntry>,
    /// Why the store directory cannot be read, when it cannot.
    pub unreadable: Option<String>,
}

/// The state of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// It serves at least one of its names, without errors.
    Serving,
    /// It serves with errors (expired, chain incomplete...), since nothing better covers
    /// its names: see the store's rule in DESIGN.md.
    ServingWithErrors,
    /// It could serve, but other entries serve all its names.
    Superseded,
    /// No version of it serves.
    Refused,
    /// The server-wide certificate does not exist yet: `run` generates it.
    Absent,
}

impl State {
    /// The word printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::ServingWithErrors => "serving-with-errors",
            Self::Superseded => "superseded",
            Self::Refused => "refused",
            Self::Absent => "absent",
        }
    }
}

/// One entry (or the server-wide certificate).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub entry: String,
    /// `single`, `pair`, `certbot` or `kubernetes`.
    pub layout: &'static str,
    pub state: State,
    /// The names of the version that serves (or of the refused one's leaf).
    pub names: Vec<String>,
    pub issuer: Option<String>,
    pub key: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    /// `acme` for an entry mailfront's ACME client writes (`acme/NAME/`), else `files`.
    pub source: &'static str,
    /// When an ACME entry is renewed (two thirds into its lifetime, or earlier when the
    /// CA's renewal information says so).
    pub renews: Option<String>,
    /// Its OCSP response file's fate, when it has one.
    pub ocsp: Option<OcspRow>,
    pub files: Vec<PathBuf>,
    /// The codes of what the checks found: the errors and warnings of the version that
    /// serves, or the errors of a refused one.
    pub codes: Vec<&'static str>,
    /// The findings in full where they are kept: a refused version's, and those of a
    /// version serving with errors (a serving version's warnings were logged when it
    /// loaded).
    pub findings: Vec<Finding>,
    /// Why it is refused when no finding says so (unreadable, no key...).
    pub reason: Option<String>,
    /// A newer version refused while this one serves.
    pub refused_version: Option<Refusal>,
}

/// An entry's OCSP response, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OcspRow {
    /// Whether handshakes get it stapled.
    pub stapled: bool,
    /// Its nextUpdate, while stapled.
    pub until: Option<String>,
    /// Why it is not stapled: the finding's code and message.
    pub reason: Option<String>,
}

/// Why a version was refused.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub codes: Vec<&'static str>,
    pub findings: Vec<Finding>,
    pub reason: Option<String>,
}

/// Which entry serves a name, and the others that claim it.
#[derive(Debug, Clone, Serialize)]
pub struct NameRow {
    pub name: String,
    pub serves: String,
    /// An entry with another key type also serves it (RSA beside ECDSA) to clients that
    /// cannot use the first.
    pub also: Option<String>,
    pub superseded: Vec<String>,
}

/// A file that is not used, with why.
#[derive(Debug, Clone, Serialize)]
pub struct NotEntry {
    pub path: PathBuf,
    pub reason: String,
}

impl Report {
    /// Rows in the given state.
    pub fn count(&self, state: State) -> usize {
        self.entries.iter().filter(|r| r.state == state).count()
    }
}
