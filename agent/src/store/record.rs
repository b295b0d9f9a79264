//! How records are kept: JSON objects with a version field `v`, read by the version they were
//! written with; and the small types records share (timestamps, token hashes, random tokens).
//!
//! Every value in the store is `{"v": N, ...fields}`. A release writes its record types at their
//! `VERSION` and reads every version up to it: when a record type changes, its old shape stays
//! as a type of its own, `older` reads it and converts it, and `VERSION` goes up. A record
//! whose version is newer than the release is an error, never a guess.
use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

use super::error::StoreError;

/// A record type of the store and the versions of it this release reads.
pub(super) trait Record: Serialize + DeserializeOwned {
    /// The table its records are in (for errors).
    const TABLE: &'static str;
    /// The version this release writes.
    const VERSION: u32;
    /// Reads a record of the older version `v`, converted to this one; `None` if there is no
    /// such version (every table is at its first version so far).
    fn older(v: u32, json: &[u8]) -> Option<serde_json::Result<Self>> {
        let _ = (v, json);
        None
    }
}

#[derive(Serialize)]
struct Out<'a, R> {
    v: u32,
    #[serde(flatten)]
    record: &'a R,
}

#[derive(Deserialize)]
struct Head {
    v: u32,
}

/// The bytes of `record`, as stored under `key`.
pub(super) fn encode<R: Record>(key: &dyn fmt::Display, record: &R) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Out {
        v: R::VERSION,
        record,
    })
    .map_err(|e| StoreError::record(R::TABLE, key, e))
}

/// The record stored under `key`, whichever version it was written with.
pub(super) fn decode<R: Record>(key: &dyn fmt::Display, bytes: &[u8]) -> Result<R, StoreError> {
    let bad = |e: serde_json::Error| StoreError::record(R::TABLE, key, e);
    let Head { v } = serde_json::from_slice(bytes).map_err(bad)?;
    if v == R::VERSION {
        return serde_json::from_slice(bytes).map_err(bad);
    }
    if v > R::VERSION {
        return Err(StoreError::NewerRecord {
            table: R::TABLE,
            key: key.to_string(),
            version: v,
            known: R::VERSION,
        });
    }
    match R::older(v, bytes) {
        Some(read) => read.map_err(bad),
        None => Err(StoreError::record(
            R::TABLE,
            key,
            format!("no reader for record version {v}"),
        )),
    }
}

/// A moment, in whole seconds since the Unix epoch (as JWTs' `iat` and `exp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }

    /// This moment plus `secs` seconds (saturating).
    pub fn plus(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(self.0);
        write!(f, "{}", humantime::format_rfc3339_seconds(t))
    }
}

/// The SHA-256 of a secret token (a refresh token, a registration access token). The store
/// keeps only these: the tokens are 256-bit random values, so a hash cannot be reversed and
/// needs no salt or stretching (unlike a password).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenHash(pub(super) [u8; 32]);

impl TokenHash {
    /// The hash of `token` as presented by a client.
    pub fn of(token: &str) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Whether `token` is the one this is the hash of (in constant time over the hashes).
    pub fn matches(&self, token: &str) -> bool {
        let other = Self::of(token);
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = B64.decode(&text).map_err(serde::de::Error::custom)?;
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a token hash is 32 bytes"))?;
        Ok(Self(hash))
    }
}

/// A new secret token: 256 random bits, base64url. Give it to the client; store its
/// [`TokenHash`].
pub fn random_token() -> Result<String, StoreError> {
    random_b64::<32>()
}

/// A new random identifier (128 bits, base64url), for records the store names itself.
pub(super) fn random_id() -> Result<String, StoreError> {
    random_b64::<16>()
}

fn random_b64<const N: usize>() -> Result<String, StoreError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| StoreError::Random)?;
    Ok(B64.encode(b))
}
