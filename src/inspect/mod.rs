//! The operator's commands that look at certificates rather than serve them.
//!
//! - [`check`]: `mailfront check FILE...`, the checks on files about to be installed.
//! - [`certs`]: `mailfront certs --config FILE`, the certificate in use for each name.

pub mod certs;
pub mod check;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// For tools: one JSON document.
    Json,
}
