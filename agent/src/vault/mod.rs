//! The users' third-party tokens, kept for them (`upstream_auth: { oauth2 }`): sealed with
//! AES-256-GCM under a key-encryption key kept in its own file in the state directory
//! (`upstream-tokens.keys`, created 0600, refused when others can read it), bound to the record
//! they belong to (server and subject), and stored in the embedded store. Rotating the key
//! re-seals every record under a new key in one transaction, then drops the old key.
mod error;
mod kek;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use serde::{Deserialize, Serialize};

pub use self::{error::VaultError, kek::FileKek};
use crate::store::{
    Store,
    sealed::{self, Kek},
    upstream_tokens::{self, UpstreamToken},
};

/// The file of the key-encryption keys, under the state directory.
pub const KEYS_FILE: &str = "upstream-tokens.keys";

/// What is sealed: the tokens themselves.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The sealed tokens of every server with `oauth2` upstream auth.
pub struct Vault {
    store: Arc<Store>,
    path: PathBuf,
    /// The keys, the current (sealing) one first.
    keys: RwLock<Vec<FileKek>>,
}

impl Vault {
    /// The vault of `state_dir`: its keys read, or a first key made.
    pub fn open(state_dir: &Path, store: Arc<Store>) -> Result<Self, VaultError> {
        let path = state_dir.join(KEYS_FILE);
        let keys = kek::load_or_create(&path)?;
        Ok(Self {
            store,
            path,
            keys: RwLock::new(keys),
        })
    }

    /// Seals and stores `secret` for `sub` on `server`, with what may be shown of it.
    pub fn put(
        &self,
        server: &str,
        sub: &str,
        secret: &Secret,
        mut shown: UpstreamToken,
    ) -> Result<(), VaultError> {
        let plain = serde_json::to_vec(secret).map_err(|e| VaultError::Secret(e.to_string()))?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        shown.sealed = sealed::seal(
            &keys[0],
            upstream_tokens::TABLE,
            &upstream_tokens::key(server, sub),
            &plain,
        )?;
        shown.refreshable = secret.refresh_token.is_some();
        self.store.upstream_tokens().put(server, sub, &shown)?;
        Ok(())
    }

    /// The tokens of `sub` on `server`, and their record, if any.
    pub fn get(
        &self,
        server: &str,
        sub: &str,
    ) -> Result<Option<(Secret, UpstreamToken)>, VaultError> {
        let Some(record) = self.store.upstream_tokens().get(server, sub)? else {
            return Ok(None);
        };
        let key = upstream_tokens::key(server, sub);
        let secret = self.unseal(&key, &record)?;
        Ok(Some((secret, record)))
    }

    fn unseal(&self, key: &str, record: &UpstreamToken) -> Result<Secret, VaultError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let refs: Vec<&dyn Kek> = keys.iter().map(|k| k as &dyn Kek).collect();
        let plain = sealed::open(&refs, upstream_tokens::TABLE, key, &record.sealed)?;
        serde_json::from_slice(&plain)
            .map_err(|e| VaultError::Secret(format!("{}: {key}: {e}", upstream_tokens::TABLE)))
    }

    /// Deletes the tokens of `sub` on every server; the servers and the tokens deleted (to
    /// revoke at their providers).
    pub fn delete_sub(&self, sub: &str) -> Result<Vec<(String, Option<Secret>)>, VaultError> {
        let mut out = Vec::new();
        for (server, record) in self.store.upstream_tokens().of_sub(sub)? {
            let secret = self
                .unseal(&upstream_tokens::key(&server, sub), &record)
                .ok();
            self.store.upstream_tokens().delete(&server, sub)?;
            out.push((server, secret));
        }
        Ok(out)
    }

    /// What `sub` has connected: server and record (no secret).
    pub fn connected(&self, sub: &str) -> Result<Vec<(String, UpstreamToken)>, VaultError> {
        Ok(self.store.upstream_tokens().of_sub(sub)?)
    }

    /// A new key: every record re-sealed under it in one transaction, then the old keys
    /// dropped from the file. The number of records re-sealed.
    pub fn rotate(&self) -> Result<usize, VaultError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let new = FileKek::generate().map_err(|why| VaultError::Keys {
            path: self.path.clone(),
            why,
        })?;
        // The new key is written beside the old ones first: a crash between the steps
        // leaves every record readable.
        let mut both = vec![new.clone()];
        both.extend(keys.iter().cloned());
        kek::write(&self.path, &both)?;
        let refs: Vec<&dyn Kek> = keys.iter().map(|k| k as &dyn Kek).collect();
        let mut resealed = Vec::new();
        for (key, mut record) in self.store.upstream_tokens().all()? {
            let plain = sealed::open(&refs, upstream_tokens::TABLE, &key, &record.sealed)?;
            record.sealed = sealed::seal(&new, upstream_tokens::TABLE, &key, &plain)?;
            resealed.push((key, record));
        }
        self.store.upstream_tokens().replace_all(&resealed)?;
        kek::write(&self.path, std::slice::from_ref(&new))?;
        *keys = vec![new];
        Ok(resealed.len())
    }
}

#[cfg(test)]
mod tests;
