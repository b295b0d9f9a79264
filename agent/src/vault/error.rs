//! Why the vault cannot do what was asked: its keys file, the store, or a sealed value.
use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {why}")]
    Keys { path: PathBuf, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sealed value that opened but is not the tokens it should be, or tokens that could
    /// not be encoded.
    #[error("upstream tokens: {0}")]
    Secret(String),
}
