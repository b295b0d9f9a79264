//! The users' third-party tokens (`upstream_auth: { oauth2 }`): per server and subject, the
//! access and refresh tokens sealed under a key-encryption key ([`super::sealed`]) that lives
//! outside the store, with what may be shown of them (the provider, the scopes, when they were
//! obtained, refreshed and expire). The tokens themselves are never stored in the clear.
use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, all, check_key, get, put},
    error::StoreError,
    record::Record,
    sealed::Sealed,
};

pub const TABLE: &str = "upstream_tokens";
const UPSTREAM_TOKENS: Records = Records::new(TABLE);

/// One user's tokens for one server's provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamToken {
    /// The provider (its token endpoint's origin), for `moat grants list`.
    pub provider: String,
    /// The access token and refresh token, sealed.
    pub sealed: Sealed,
    /// The scopes the provider granted.
    #[serde(default)]
    pub scope: String,
    /// Seconds since the epoch.
    pub obtained: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// A refresh token is sealed with it.
    pub refreshable: bool,
}

impl Record for UpstreamToken {
    const TABLE: &'static str = TABLE;
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(UPSTREAM_TOKENS).map(drop)
}

/// `server/sub`: server names hold no `/`.
pub fn key(server: &str, sub: &str) -> String {
    format!("{server}/{sub}")
}

pub struct UpstreamTokens<'a>(&'a Store);

impl Store {
    pub fn upstream_tokens(&self) -> UpstreamTokens<'_> {
        UpstreamTokens(self)
    }
}

impl UpstreamTokens<'_> {
    pub fn get(&self, server: &str, sub: &str) -> Result<Option<UpstreamToken>, StoreError> {
        let key = key(server, sub);
        self.0
            .read(|r| get(&r.table(UPSTREAM_TOKENS)?, &key, r.path))
    }

    pub fn put(&self, server: &str, sub: &str, t: &UpstreamToken) -> Result<(), StoreError> {
        let key = key(server, sub);
        check_key("subject", &key)?;
        self.0
            .write(|w| put(&mut w.table(UPSTREAM_TOKENS)?, &key, t, w.path))
    }

    /// Every record (for a key rotation), in key order.
    pub fn all(&self) -> Result<Vec<(String, UpstreamToken)>, StoreError> {
        self.0.read(|r| all(&r.table(UPSTREAM_TOKENS)?, r.path))
    }

    /// Replaces records (by key) in one transaction: a rotation re-seals all or none.
    pub fn replace_all(&self, records: &[(String, UpstreamToken)]) -> Result<(), StoreError> {
        self.0.write(|w| {
            let mut t = w.table(UPSTREAM_TOKENS)?;
            for (key, r) in records {
                put(&mut t, key, r, w.path)?;
            }
            Ok(())
        })
    }

    /// The servers `sub` has tokens for, and their records.
    pub fn of_sub(&self, sub: &str) -> Result<Vec<(String, UpstreamToken)>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter_map(|(k, t)| {
                let (server, s) = k.split_once('/')?;
                (s == sub).then(|| (server.to_string(), t))
            })
            .collect())
    }

    /// Deletes `sub`'s tokens for `server`; the record deleted.
    pub fn delete(&self, server: &str, sub: &str) -> Result<Option<UpstreamToken>, StoreError> {
        let key = key(server, sub);
        self.0.write(|w| {
            let mut t = w.table(UPSTREAM_TOKENS)?;
            let old = get::<UpstreamToken>(&t, &key, w.path)?;
            t.remove(key.as_str()).db(w.path)?;
            Ok(old)
        })
    }
}
