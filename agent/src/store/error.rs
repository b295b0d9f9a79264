//! What can go wrong with the store, naming the file, the table and the key concerned.
use std::path::PathBuf;

/// An error of the store. Every variant names where it happened, so that a message alone is
/// enough to find the file or the record at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is locked by another process (or another handle of this one).
    #[error(
        "{path}: the store is open in another process (one agent per state directory; \
         stop it or use its commands)"
    )]
    AlreadyOpen { path: PathBuf },
    /// The file is not a Moat store: another program's file, or damaged.
    #[error("{path}: not a Moat store, or damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// The file (or its schema) was written by a newer release than this one.
    #[error("{path}: written by a newer release of Moat ({detail}); upgrade Moat to open it")]
    Newer { path: PathBuf, detail: String },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// The database engine failed (I/O underneath, a full disk, ...).
    #[error("{path}: {detail}")]
    Database { path: PathBuf, detail: String },
    /// A record that does not decode as its table's type.
    #[error("store table {table}, key {key}: undecodable record: {detail}")]
    Record {
        table: &'static str,
        key: String,
        detail: String,
    },
    /// A record written by a newer release than this one reads.
    #[error(
        "store table {table}, key {key}: record version {version} is newer than this release reads (up to {known})"
    )]
    NewerRecord {
        table: &'static str,
        key: String,
        version: u32,
        known: u32,
    },
    #[error("store table {table}: {key} already exists")]
    Exists { table: &'static str, key: String },
    #[error("store table {table}: no {key}")]
    NotFound { table: &'static str, key: String },
    /// An argument the store refuses before writing anything.
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// Hashing a password failed (not a wrong password: that is `Ok(false)`).
    #[error("password hashing: {0}")]
    Password(String),
    #[error("the system's random number generator failed")]
    Random,
}

impl StoreError {
    pub(super) fn record(table: &'static str, key: impl ToString, detail: impl ToString) -> Self {
        Self::Record {
            table,
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }
}
