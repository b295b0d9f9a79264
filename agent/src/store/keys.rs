//! The authorization server's signing keys: kid -> PKCS#8 PEM private key, when it was made,
//! when it stopped signing (retired) and until when its tokens are accepted (`not_after`).
//!
//! These are private keys stored as they are, in the clear: they are protected by the file's
//! mode (0600, in a 0700 state directory) like the PEM files Moat keeps beside it. Secrets that
//! belong to users (their upstream tokens) will not be kept this way: they go in a table of
//! their own, sealed under a key-encryption key (see [`super::sealed`]).
use std::fmt;

use redb::ReadableTable as _;
use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, all, check_key, get, put},
    error::StoreError,
    record::{Record, Timestamp},
};

const KEYS: Records = Records::new("signing_keys");

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    /// The private key, PKCS#8 PEM.
    pub pkcs8_pem: String,
    pub created: Timestamp,
    /// After this, the key is gone from the JWKS and its tokens are refused.
    pub not_after: Timestamp,
    /// When it stopped signing (a newer key took over); it still verifies until `not_after`.
    #[serde(default)]
    pub retired: Option<Timestamp>,
}

impl Record for KeyRecord {
    const TABLE: &'static str = "signing_keys";
    const VERSION: u32 = 1;
}

/// Never prints the private key.
impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("created", &self.created)
            .field("not_after", &self.not_after)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// Whether it may sign at `now`.
    fn signs(&self, now: Timestamp) -> bool {
        self.retired.is_none() && now < self.not_after
    }
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(KEYS).map(drop)
}

/// The signing keys.
pub struct Keys<'a>(&'a Store);

impl Store {
    pub fn keys(&self) -> Keys<'_> {
        Keys(self)
    }
}

impl Keys<'_> {
    /// Adds a key (it becomes the current one, as the newest). `pkcs8_pem` must be a private
    /// key Moat can sign with.
    pub fn add(
        &self,
        kid: &str,
        pkcs8_pem: &str,
        not_after: Timestamp,
    ) -> Result<KeyRecord, StoreError> {
        check_key("kid", kid)?;
        if !pkcs8_pem
            .trim_start()
            .starts_with("-----BEGIN PRIVATE KEY-----")
        {
            return Err(StoreError::Invalid {
                what: "signing key",
                why: "not a PKCS#8 PEM private key".into(),
            });
        }
        rcgen::KeyPair::from_pem(pkcs8_pem).map_err(|e| StoreError::Invalid {
            what: "signing key",
            why: e.to_string(),
        })?;
        let key = KeyRecord {
            kid: kid.to_string(),
            pkcs8_pem: pkcs8_pem.to_string(),
            created: Timestamp::now(),
            not_after,
            retired: None,
        };
        self.0.write(|w| {
            let mut table = w.table(KEYS)?;
            if table.get(kid).db(w.path)?.is_some() {
                return Err(StoreError::Exists {
                    table: KeyRecord::TABLE,
                    key: kid.to_string(),
                });
            }
            put(&mut table, kid, &key, w.path)?;
            Ok(key.clone())
        })
    }

    /// The key to sign with at `now`: the newest that is neither retired nor past `not_after`.
    pub fn current(&self, now: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .every()?
            .into_iter()
            .filter(|k| k.signs(now))
            .max_by(|a, b| (a.created, &a.kid).cmp(&(b.created, &b.kid))))
    }

    /// The keys whose tokens are accepted at `now` (the JWKS), retired ones included, by kid.
    pub fn all_valid(&self, now: Timestamp) -> Result<Vec<KeyRecord>, StoreError> {
        let mut keys = self.every()?;
        keys.retain(|k| now < k.not_after);
        Ok(keys)
    }

    /// Stops `kid` signing from now on; it verifies until its `not_after`. `false` if it was
    /// retired already.
    pub fn retire(&self, kid: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.0.write(|w| {
            let mut table = w.table(KEYS)?;
            let Some(mut key) = get::<KeyRecord>(&table, kid, w.path)? else {
                return Err(StoreError::NotFound {
                    table: KeyRecord::TABLE,
                    key: kid.to_string(),
                });
            };
            if key.retired.is_some() {
                return Ok(false);
            }
            key.retired = Some(now);
            put(&mut table, kid, &key, w.path)?;
            Ok(true)
        })
    }

    /// Removes the keys past their `not_after` at `now`; how many.
    pub fn remove_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.0.write(|w| {
            let mut table = w.table(KEYS)?;
            let expired: Vec<String> = all::<KeyRecord>(&table, w.path)?
                .into_iter()
                .filter(|(_, k)| now >= k.not_after)
                .map(|(kid, _)| kid)
                .collect();
            for kid in &expired {
                table.remove(kid.as_str()).db(w.path)?;
            }
            Ok(expired.len())
        })
    }

    fn every(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let keys = self.0.read(|r| all::<KeyRecord>(&r.table(KEYS)?, r.path))?;
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    }
}
