//! The authorization server's signing keys: kept in the store, one signs at a time, a new one
//! every `key_rotation`; the previous ones stay published (and verify) until every token they
//! signed has expired. The resource servers of `issuer: local` verify with [`Signer::keys`].
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use jsonwebtoken::Algorithm;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    auth::{Key, KeySet, SigningKey},
    store::{Store, StoreError, keys::KeyRecord, record::Timestamp},
};

/// The keys: the one that signs, and every one that verifies.
pub struct Signer {
    store: Arc<Store>,
    rotation: Duration,
    /// How long a key verifies after it stopped signing: the longest token lifetime.
    overlap: Duration,
    current: RwLock<Option<Arc<SigningKey>>>,
    /// What the resource servers verify with (shared with them; replaced on rotation).
    verifying: Arc<RwLock<Arc<KeySet>>>,
    jwks: RwLock<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("signing keys: {0}")]
    Store(#[from] StoreError),
    #[error("signing key {kid}: {message}")]
    Key { kid: String, message: String },
}

impl Signer {
    /// The keys in the store; a new one when none signs or the newest is older than `rotation`.
    pub fn open(
        store: Arc<Store>,
        rotation: Duration,
        overlap: Duration,
    ) -> Result<Self, SignerError> {
        let signer = Self {
            store,
            rotation,
            overlap,
            current: RwLock::new(None),
            verifying: Arc::default(),
            jwks: RwLock::new(json!({"keys": []})),
        };
        signer.rotate_if_due()?;
        Ok(signer)
    }

    /// Makes a new signing key when the current one is due (or there is none), retires the
    /// old one, drops expired ones, and reloads what verifies. Whether it rotated.
    pub fn rotate_if_due(&self) -> Result<bool, SignerError> {
        let now = Timestamp::now();
        let keys = self.store.keys();
        let due = match keys.current(now)? {
            None => true,
            Some(k) => now.0 >= k.created.0 + self.rotation.as_secs(),
        };
        if due {
            let old = keys.current(now)?;
            let pair =
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
                    SignerError::Key {
                        kid: "(new)".into(),
                        message: e.to_string(),
                    }
                })?;
            let pem = pair.serialize_pem();
            let key = parse(&pem, "(new)")?;
            // Signs for `rotation`, then verifies for `overlap` more.
            let not_after = now.plus(self.rotation.as_secs() + self.overlap.as_secs());
            keys.add(&key.kid, &pem, not_after)?;
            if let Some(old) = old {
                keys.retire(&old.kid)?;
            }
        }
        keys.remove_expired(now)?;
        self.reload(now)?;
        Ok(due)
    }

    fn reload(&self, now: Timestamp) -> Result<(), SignerError> {
        let keys = self.store.keys();
        let current = keys.current(now)?.ok_or_else(|| SignerError::Key {
            kid: "(none)".into(),
            message: "no key signs".into(),
        })?;
        let valid: Vec<KeyRecord> = keys.all_valid(now)?;
        let mut set = Vec::new();
        let mut published = Vec::new();
        for k in &valid {
            let s = parse(&k.pkcs8_pem, &k.kid)?;
            published.push(s.jwk.clone());
            set.push(Key {
                kid: Some(s.kid.clone()),
                alg: Some(Algorithm::ES256),
                key: s.decoding.clone(),
            });
        }
        *self.current.write().expect("signer lock") =
            Some(Arc::new(parse(&current.pkcs8_pem, &current.kid)?));
        *self.verifying.write().expect("signer lock") = Arc::new(KeySet { keys: set });
        *self.jwks.write().expect("signer lock") = json!({ "keys": published });
        Ok(())
    }

    /// A JWT of type `typ` with `claims`, signed with the current key.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, SignerError> {
        let key = self
            .current
            .read()
            .expect("signer lock")
            .clone()
            .ok_or_else(|| SignerError::Key {
                kid: "(none)".into(),
                message: "no key signs".into(),
            })?;
        key.sign(typ, claims).map_err(|message| SignerError::Key {
            kid: key.kid.clone(),
            message,
        })
    }

    /// The public keys, as a JWKS document.
    pub fn jwks(&self) -> Value {
        self.jwks.read().expect("signer lock").clone()
    }

    /// What resource servers verify this issuer's tokens with; follows rotations.
    pub fn keys(&self) -> Arc<RwLock<Arc<KeySet>>> {
        self.verifying.clone()
    }
}

fn parse(pem: &str, kid: &str) -> Result<SigningKey, SignerError> {
    SigningKey::from_pem_text(pem).map_err(|message| SignerError::Key {
        kid: kid.into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rotate_and_the_previous_one_still_verifies() {
        let dir = std::env::temp_dir().join(format!("moat-signer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let day = Duration::from_secs(86_400);
        let first = Signer::open(store.clone(), day, Duration::from_secs(600)).unwrap();
        assert!(!first.rotate_if_due().unwrap(), "a fresh key is not due");
        let kid_of = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
        let a = kid_of(&first.sign("at+jwt", &json!({"sub": "x"})).unwrap());
        drop(first);
        // Reopened: the same key (it survives restarts).
        let again = Signer::open(store.clone(), day, Duration::from_secs(600)).unwrap();
        assert_eq!(kid_of(&again.sign("at+jwt", &json!({})).unwrap()), a);
        drop(again);
        // Due at once: a new key signs; the old one is still published and verifies.
        let rotating =
            Signer::open(store.clone(), Duration::ZERO, Duration::from_secs(600)).unwrap();
        let b = kid_of(&rotating.sign("at+jwt", &json!({})).unwrap());
        assert_ne!(a, b);
        let published: Vec<String> = rotating.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        assert!(
            published.contains(&a) && published.contains(&b),
            "{published:?}"
        );
        let verifying = rotating.keys();
        let set = verifying.read().unwrap().clone();
        assert!(set.find(Some(&a), Algorithm::ES256).is_some());
        assert!(set.find(Some(&b), Algorithm::ES256).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
