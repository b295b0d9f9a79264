//! Key-encryption keys kept in a file of their own: AES-256-GCM keys, each with an id, one JSON
//! object per file (`{"keys": [{"id", "key"}]}`, the sealing key first). The file is created
//! 0600 and written by rename; one readable by others is refused.
use std::{
    fs::OpenOptions,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};
use serde::{Deserialize, Serialize};

use super::error::VaultError;
use crate::store::sealed::Kek;

/// One key.
#[derive(Clone)]
pub struct FileKek {
    id: String,
    key: Arc<LessSafeKey>,
    raw: Arc<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct File {
    keys: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    id: String,
    key: String,
}

impl FileKek {
    /// A new random key, named by when it was made.
    pub fn generate() -> Result<Self, String> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| "no randomness".to_string())?;
        let mut tag = [0u8; 4];
        SystemRandom::new()
            .fill(&mut tag)
            .map_err(|_| "no randomness".to_string())?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("k{secs}-{}", B64.encode(tag));
        Self::new(id, raw)
    }

    fn new(id: String, raw: [u8; 32]) -> Result<Self, String> {
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| "a bad key".to_string())?;
        Ok(Self {
            id,
            key: Arc::new(LessSafeKey::new(key)),
            raw: Arc::new(raw),
        })
    }
}

impl Kek for FileKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness".to_string())?;
        let mut out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out,
            )
            .map_err(|_| "sealing failed".to_string())?;
        Ok([nonce.as_slice(), &out].concat())
    }

    fn open(&self, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, String> {
        let (nonce, sealed) = ciphertext.split_at_checked(NONCE_LEN).ok_or("too short")?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "a bad nonce")?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| "it does not open (another key, or altered)".to_string())?;
        Ok(plain.to_vec())
    }
}

/// The keys in `path`, or, when there is no such file, a first key written there.
pub fn load_or_create(path: &Path) -> Result<Vec<FileKek>, VaultError> {
    let err = |why: String| VaultError::Keys {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = FileKek::generate().map_err(err)?;
            write(path, std::slice::from_ref(&k))?;
            return Ok(vec![k]);
        }
        Err(e) => return Err(err(e.to_string())),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            return Err(err(format!(
                "readable by others (mode {:o}): it holds the keys of the users' upstream \
                 tokens; chmod 600 it",
                m.permissions().mode() & 0o777
            )));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: File = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let keys = file
        .keys
        .into_iter()
        .map(|e| {
            let raw: [u8; 32] = B64
                .decode(&e.key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| err(format!("key {}: not 32 bytes of base64url", e.id)))?;
            FileKek::new(e.id, raw).map_err(err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(err("no key".into()));
    }
    Ok(keys)
}

/// Writes `keys` to `path` (0600, by rename).
pub fn write(path: &Path, keys: &[FileKek]) -> Result<(), VaultError> {
    let err = |why: String| VaultError::Keys {
        path: path.to_path_buf(),
        why,
    };
    let file = File {
        keys: keys
            .iter()
            .map(|k| Entry {
                id: k.id.clone(),
                key: B64.encode(*k.raw),
            })
            .collect(),
    };
    let text = serde_json::to_string(&file).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(e.to_string()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}
