//! The signing keys, and the seam for sealed secrets.
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};

use super::Dir;
use crate::store::{
    Store, StoreError,
    record::Timestamp,
    sealed::{self, Kek, Sealed},
};

fn pem() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}

#[test]
fn signing_keys_rotate_and_stay_valid_until_not_after() {
    let dir = Dir::new("keys");
    let s = Store::open(&dir.state()).unwrap();
    let k = s.keys();
    let now = Timestamp::now();
    assert_eq!(k.current(now).unwrap(), None);
    let k1 = k.add("k1", &pem(), now.plus(3600)).unwrap();
    assert_eq!(k.current(now).unwrap().unwrap().kid, "k1");
    // A newer key takes over; the old one retires but stays in the JWKS.
    let k2 = k.add("k2", &pem(), now.plus(7200)).unwrap();
    assert!(k.retire("k1").unwrap());
    assert!(!k.retire("k1").unwrap());
    assert_eq!(k.current(now).unwrap(), Some(k2.clone()));
    let valid: Vec<_> = k
        .all_valid(now)
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(valid, ["k1", "k2"]);
    // Past k1's not_after: gone from the JWKS, then from the store.
    let later = now.plus(3600);
    let valid: Vec<_> = k
        .all_valid(later)
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(valid, ["k2"]);
    assert_eq!(k.remove_expired(later).unwrap(), 1);
    assert_eq!(k.all_valid(now).unwrap(), vec![k2.clone()]);
    // A key past its not_after never signs, retired or not.
    assert_eq!(k.current(now.plus(7200)).unwrap(), None);
    assert_eq!(
        k1.pkcs8_pem.lines().next(),
        Some("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        !format!("{k2:?}").contains("PRIVATE KEY"),
        "Debug shows the key"
    );
}

#[test]
fn a_signing_key_must_be_a_usable_private_key_and_its_kid_unique() {
    let dir = Dir::new("keys-bad");
    let s = Store::open(&dir.state()).unwrap();
    let far = Timestamp::now().plus(60);
    let public = rcgen::KeyPair::generate().unwrap().public_key_pem();
    let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    for bad in ["", "not a key", public.as_str(), garbage] {
        let err = s.keys().add("k", bad, far).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
    s.keys().add("k", &pem(), far).unwrap();
    let err = s.keys().add("k", &pem(), far).unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err:?}");
    assert!(matches!(
        s.keys().retire("nope"),
        Err(StoreError::NotFound { .. })
    ));
}

/// A key-encryption key as a real one would be: AES-256-GCM, a random nonce per value.
struct Aes(&'static str, LessSafeKey);

impl Aes {
    fn new(id: &'static str) -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new().fill(&mut key).unwrap();
        Self(
            id,
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap()),
        )
    }
}

impl Kek for Aes {
    fn id(&self) -> &str {
        self.0
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|e| e.to_string())?;
        let mut out = plaintext.to_vec();
        self.1
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out,
            )
            .map_err(|e| e.to_string())?;
        Ok([nonce.as_slice(), &out].concat())
    }

    fn open(&self, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, String> {
        let (nonce, sealed) = ciphertext.split_at_checked(NONCE_LEN).ok_or("too short")?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|e| e.to_string())?;
        let mut buf = sealed.to_vec();
        let plain = self
            .1
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|e| e.to_string())?;
        Ok(plain.to_vec())
    }
}

#[test]
fn a_sealed_secret_opens_only_where_it_was_sealed_and_with_its_key() {
    let (old, new) = (Aes::new("kek-1"), Aes::new("kek-2"));
    let secret = b"an upstream refresh token";
    let sealed = sealed::seal(&old, "secrets", "alice", secret).unwrap();
    assert_eq!(sealed.kek, "kek-1");
    assert!(!sealed.ciphertext.windows(secret.len()).any(|w| w == secret));
    // Stored as JSON and read back, with the current and the previous key loaded.
    let json = serde_json::to_string(&sealed).unwrap();
    let back: Sealed = serde_json::from_str(&json).unwrap();
    assert_eq!(
        sealed::open(&[&new, &old], "secrets", "alice", &back).unwrap(),
        secret
    );
    // Copied into bob's record, or another table: it does not open.
    assert!(sealed::open(&[&old], "secrets", "bob", &back).is_err());
    assert!(sealed::open(&[&old], "other", "alice", &back).is_err());
    // Without its key, or altered: refused, naming the record.
    let err = sealed::open(&[&new], "secrets", "alice", &back).unwrap_err();
    assert!(err.to_string().contains("kek-1"), "{err}");
    let mut altered = back.clone();
    altered.ciphertext[NONCE_LEN] ^= 1;
    let err = sealed::open(&[&old], "secrets", "alice", &altered).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Record {
                table: "secrets",
                ..
            }
        ),
        "{err:?}"
    );
    // A key claiming another's id does not open it either.
    let impostor = Aes::new("kek-1");
    assert!(sealed::open(&[&impostor], "secrets", "alice", &back).is_err());
}
