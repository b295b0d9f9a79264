//! The seam for secrets the store keeps encrypted: a [`Sealed`] value is what a table of
//! secrets stores in place of the secret, sealed by a key-encryption key ([`Kek`]) that lives
//! outside the store and is bound to the record it belongs to.
//!
//! The users' upstream tokens are stored sealed ([`super::upstream_tokens`]); the signing keys
//! are stored as they are (see [`super::keys`]).
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::StoreError;

/// A secret sealed under a key-encryption key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The id of the key that sealed it: values sealed under an older key still name theirs,
    /// so the key can be rotated.
    pub kek: String,
    /// What the key made of the secret (nonce, ciphertext and tag, as it lays them out).
    #[serde(serialize_with = "to_b64", deserialize_with = "from_b64")]
    pub ciphertext: Vec<u8>,
}

/// A key-encryption key: an AEAD whose key is kept outside the store (a file readable only by
/// Moat, the kernel keyring, a KMS).
pub trait Kek: Send + Sync {
    /// Names this key in the values it seals.
    fn id(&self) -> &str;
    /// Encrypts and authenticates `plaintext`, and authenticates `aad` with it.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String>;
    /// The plaintext, if `ciphertext` was sealed by this key with this `aad`.
    fn open(&self, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, String>;
}

/// What a sealed value is bound to: its table and key, so that a value copied into another
/// record (another user's) does not open there.
fn aad(table: &str, key: &str) -> Vec<u8> {
    [table.as_bytes(), b"\0", key.as_bytes()].concat()
}

/// Seals `secret`, to be stored under `key` in `table`.
pub fn seal(
    kek: &dyn Kek,
    table: &'static str,
    key: &str,
    secret: &[u8],
) -> Result<Sealed, StoreError> {
    let ciphertext = kek
        .seal(&aad(table, key), secret)
        .map_err(|e| StoreError::record(table, key, format!("sealing: {e}")))?;
    Ok(Sealed {
        kek: kek.id().to_string(),
        ciphertext,
    })
}

/// Opens `sealed`, stored under `key` in `table`, with whichever of `keks` sealed it.
pub fn open(
    keks: &[&dyn Kek],
    table: &'static str,
    key: &str,
    sealed: &Sealed,
) -> Result<Vec<u8>, StoreError> {
    let kek = keks.iter().find(|k| k.id() == sealed.kek).ok_or_else(|| {
        StoreError::record(
            table,
            key,
            format!("sealed under key {:?}, which is not loaded", sealed.kek),
        )
    })?;
    kek.open(&aad(table, key), &sealed.ciphertext)
        .map_err(|e| StoreError::record(table, key, format!("does not open: {e}")))
}

fn to_b64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(bytes))
}

fn from_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    B64.decode(String::deserialize(d)?)
        .map_err(serde::de::Error::custom)
}
