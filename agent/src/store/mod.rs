//! The embedded store: what must survive a restart, in one file, `<state_dir>/moat.redb`.
//!
//! One [redb](https://www.redb.org) database (pure Rust, ACID, copy-on-write B-trees, one file),
//! opened once by the agent: redb locks the file, so a second open (another process, or a second
//! handle in this one) fails with [`StoreError::AlreadyOpen`] naming it. Each table has one job
//! and its own module; the API is typed and no redb type leaves this module:
//!
//! | table | key | value | module |
//! | --- | --- | --- | --- |
//! | `meta` | `"store"` | what the file is (`app`, `schema`) | here |
//! | `clients` | client id | [`clients::Client`] | [`clients`] |
//! | `consents` (+ index by client) | (subject, client id) | [`consents::Consent`] | [`consents`] |
//! | `families` (+ indexes by subject, by client) | family id | [`grants::Family`] | [`grants`] |
//! | `refresh_tokens` | SHA-256 of the token | its family, current or rotated | [`grants`] |
//! | `revoked_subjects`, `revoked_clients` | subject / client id | [`revocations::Revoked`] | [`revocations`] |
//! | `users` | user name | argon2id PHC string | [`users`] |
//! | `signing_keys` | kid | [`keys::KeyRecord`] (PKCS#8 PEM) | [`keys`] |
//! | `pins` | `server/kind/name` | [`pins::Pin`] | [`pins`] |
//! | `lockdowns` | `all`, `server/NAME`, `sub/SUB`, `client/ID` | [`lockdowns::Lockdown`] | [`lockdowns`] |
//! | `baselines` | `server/sub/SUB`, `server/client/ID` | [`baselines::Baseline`] | [`baselines`] |
//! | `upstream_tokens` | `server/SUB` | [`upstream_tokens::UpstreamToken`] (tokens sealed) | [`upstream_tokens`] |
//!
//! Values are versioned JSON records (see [`record`]). Secret tokens are never stored: only
//! their SHA-256 ([`record::TokenHash`]); passwords only as argon2id hashes.
//!
//! The file is private: created 0600, its directory 0700 when Moat creates it. It holds the
//! signing keys' private keys as they are (see [`keys`]); the users' upstream tokens are in a
//! table of their own, sealed under a key-encryption key kept outside it ([`sealed`]).
//!
//! Every open checks the whole file (redb's integrity check: the checksum of every page), so a
//! damaged or foreign file is a [`StoreError`], never a panic or a silent misread.
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "used by the authorization server, which comes next"
    )
)]
use std::{
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use redb::{
    Database, DatabaseError, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
    TableHandle as _, backends::FileBackend,
};
use serde::{Deserialize, Serialize};

use db::{Db as _, from_redb};
use record::Record;

pub mod baselines;
pub mod clients;
pub mod consents;
mod db;
mod error;
pub mod grants;
pub mod keys;
pub mod lockdowns;
pub mod pins;
pub mod record;
pub mod revocations;
pub mod sealed;
pub mod upstream_tokens;
pub mod users;

#[cfg(test)]
pub(crate) mod tests;

pub use db::Store;
pub use error::StoreError;

/// The store's file name in the state directory.
pub const FILE: &str = "moat.redb";

/// The schema this release writes: the tables above, their keys and record types. A file of a
/// newer schema is refused.
const SCHEMA: u32 = 1;

/// How much of the file redb keeps in memory (the store is small; redb's default is 1 GiB).
const CACHE_BYTES: usize = 16 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What the file is: written once, when Moat creates it.
#[derive(Serialize, Deserialize)]
struct Meta {
    app: String,
    schema: u32,
}

impl Record for Meta {
    const TABLE: &'static str = "meta";
    const VERSION: u32 = 1;
}

impl Store {
    /// Opens `<state_dir>/moat.redb`, creating it (0600, and `state_dir` 0700) if there is none.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(FILE);
        let io = |op| {
            let path = path.clone();
            move |source| StoreError::Io { path, op, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Io {
                path: state_dir.to_path_buf(),
                op: "creating the state directory",
                source,
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("opening"))?;
        let meta = file.metadata().map_err(io("reading metadata"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{}: readable by others (mode {:o}): it holds private keys; chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let backend = FileBackend::new(file).map_err(|e| opening(&path, e))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create_with_backend(backend)
            .map_err(|e| opening(&path, e))?;
        let store = Self { db, path };
        store.init()?;
        Ok(store)
    }

    /// Checks that the file is Moat's (or new, then makes it so) and creates every table, so
    /// that reads never meet a missing one.
    fn init(&self) -> Result<(), StoreError> {
        self.write(|w| {
            let mut meta = w.table(META)?;
            let found = meta.get("store").db(w.path)?.map(|g| g.value().to_vec());
            match found {
                Some(bytes) => {
                    let m: Meta = record::decode(&"store", &bytes).map_err(|e| w.corrupt(e))?;
                    if m.app != "moat" {
                        return Err(w.corrupt(format!("a store of {:?}", m.app)));
                    }
                    if m.schema > SCHEMA {
                        return Err(StoreError::Newer {
                            path: w.path.to_path_buf(),
                            detail: format!("schema {}, this release reads {SCHEMA}", m.schema),
                        });
                    }
                }
                None => {
                    let foreign = w.txn.list_tables().db(w.path)?.any(|t| t.name() != "meta")
                        || w.txn.list_multimap_tables().db(w.path)?.next().is_some();
                    if foreign || meta.len().db(w.path)? > 0 {
                        return Err(w.corrupt("a redb database of another program"));
                    }
                    let m = Meta {
                        app: "moat".into(),
                        schema: SCHEMA,
                    };
                    let bytes = record::encode(&"store", &m)?;
                    meta.insert("store", bytes.as_slice()).db(w.path)?;
                }
            }
            drop(meta);
            clients::init(w)?;
            consents::init(w)?;
            grants::init(w)?;
            revocations::init(w)?;
            users::init(w)?;
            pins::init(w)?;
            lockdowns::init(w)?;
            baselines::init(w)?;
            upstream_tokens::init(w)?;
            keys::init(w)
        })
    }
}

/// The error of opening `path`.
fn opening(path: &Path, e: DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::AlreadyOpen { path }
        }
        DatabaseError::UpgradeRequired(v) => StoreError::Corrupt {
            path,
            detail: format!("an older redb file format ({v})"),
        },
        DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Corrupt {
                path,
                detail: e.to_string(),
            }
        }
        e => from_redb(&path, e.into()),
    }
}
