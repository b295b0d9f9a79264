//! The open store and what every table uses: transactions that name the file in their
//! errors, and reading and writing versioned records in string-keyed tables.
use std::path::{Path, PathBuf};

use redb::{Database, MultimapTableDefinition, ReadableDatabase as _, TableDefinition};

use super::{
    error::StoreError,
    record::{self, Record},
};

/// The open store. Cheap to share (`&Store` across threads): redb serialises write
/// transactions and lets reads run beside them on a snapshot.
pub struct Store {
    pub(super) db: Database,
    pub(super) path: PathBuf,
}

impl Store {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction: committed if it returns `Ok`, rolled back otherwise.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&Write<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let w = Write {
            txn: self.db.begin_write().db(&self.path)?,
            path: &self.path,
        };
        let out = f(&w)?;
        w.txn.commit().db(&self.path)?;
        Ok(out)
    }

    /// Runs `f` on a snapshot of the store.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Read<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let r = Read {
            txn: self.db.begin_read().db(&self.path)?,
            path: &self.path,
        };
        f(&r)
    }
}

pub(super) fn from_redb(path: &Path, e: redb::Error) -> StoreError {
    let path = path.to_path_buf();
    match e {
        redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen { path },
        e => StoreError::Database {
            path,
            detail: e.to_string(),
        },
    }
}

/// A table of records keyed by a string.
pub(super) type Records = TableDefinition<'static, &'static str, &'static [u8]>;

/// The record under `key`, if there is one.
pub(super) fn get<R: Record>(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    path: &Path,
) -> Result<Option<R>, StoreError> {
    match table.get(key).db(path)? {
        Some(g) => record::decode(&key, g.value()).map(Some),
        None => Ok(None),
    }
}

/// Writes `record` under `key`, replacing what was there.
pub(super) fn put<R: Record>(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    record: &R,
    path: &Path,
) -> Result<(), StoreError> {
    let bytes = record::encode(&key, record)?;
    table.insert(key, bytes.as_slice()).db(path)?;
    Ok(())
}

/// Every record of the table, in key order.
pub(super) fn all<R: Record>(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<Vec<(String, R)>, StoreError> {
    let mut out = Vec::new();
    for item in table.iter().db(path)? {
        let (k, v) = item.db(path)?;
        let key = k.value().to_string();
        let r = record::decode(&key, v.value())?;
        out.push((key, r));
    }
    Ok(out)
}

/// The longest key (a client id may be a URL) the store accepts.
const MAX_KEY: usize = 2048;

/// Refuses an empty, overlong or control-character key before anything is written.
pub(super) fn check_key(what: &'static str, key: &str) -> Result<(), StoreError> {
    let why = if key.is_empty() {
        "empty"
    } else if key.len() > MAX_KEY {
        "longer than 2048 bytes"
    } else if key.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid {
        what,
        why: why.into(),
    })
}

/// Attaches the file's path to redb's errors.
pub(super) trait Db<T> {
    fn db(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Db<T> for Result<T, E> {
    fn db(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| from_redb(path, e.into()))
    }
}

/// A write transaction, and the file it is on (for errors).
pub(super) struct Write<'a> {
    pub(super) txn: redb::WriteTransaction,
    pub(super) path: &'a Path,
}

/// A read transaction (a snapshot), and the file it is on.
pub(super) struct Read<'a> {
    pub(super) txn: redb::ReadTransaction,
    pub(super) path: &'a Path,
}

impl Write<'_> {
    pub(super) fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<redb::Table<'_, K, V>, StoreError> {
        self.txn.open_table(def).db(self.path)
    }

    pub(super) fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &self,
        def: MultimapTableDefinition<K, V>,
    ) -> Result<redb::MultimapTable<'_, K, V>, StoreError> {
        self.txn.open_multimap_table(def).db(self.path)
    }

    pub(super) fn corrupt(&self, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

impl Read<'_> {
    pub(super) fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<redb::ReadOnlyTable<K, V>, StoreError> {
        self.txn.open_table(def).db(self.path)
    }

    pub(super) fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &self,
        def: MultimapTableDefinition<K, V>,
    ) -> Result<redb::ReadOnlyMultimapTable<K, V>, StoreError> {
        self.txn.open_multimap_table(def).db(self.path)
    }
}
