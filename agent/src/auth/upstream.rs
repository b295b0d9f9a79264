//! What Moat presents to the upstream instead of the client's token: nothing, a fixed header
//! read from a secret file, or a short-lived JWT minted for the caller, signed with keys that
//! rotate in the state directory and are published as a JWKS.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, header};
use serde_json::json;

use super::{
    Principal, now,
    signing::{SigningKey, jti},
};
use crate::config::UpstreamAuth;

/// Where upstream signing keys live, under the state directory.
pub const KEYS_DIR: &str = "upstream-keys";
/// The published JWKS's path on every protected port (public keys only; no token needed).
pub const JWKS_PATH: &str = "/.well-known/moat/upstream-jwks.json";
/// A new key is made this often; the previous one stays published for as long again.
pub const ROTATE: Duration = Duration::from_secs(24 * 3600);

/// The credential for one server's upstream.
pub enum Credential {
    None,
    Header(HeaderName, HeaderValue),
    Jwt(Minter),
}

impl Credential {
    pub fn new(
        config: &UpstreamAuth,
        issuer: &str,
        keys: Option<&Arc<UpstreamKeys>>,
    ) -> Result<Self, String> {
        Ok(match config {
            // Each user's own token comes from the server's connector (`thirdparty`).
            UpstreamAuth::None | UpstreamAuth::OAuth2(_) => Self::None,
            UpstreamAuth::Header { name, secret_file } => {
                let text = std::fs::read_to_string(secret_file)
                    .map_err(|e| format!("{}: {e}", secret_file.display()))?;
                let mut value = HeaderValue::from_str(text.trim_end_matches(['\r', '\n']))
                    .map_err(|_| {
                        format!(
                            "{}: not usable as a header value (one line of visible text)",
                            secret_file.display()
                        )
                    })?;
                value.set_sensitive(true);
                Self::Header(name.clone(), value)
            }
            UpstreamAuth::Jwt { audience, ttl } => Self::Jwt(Minter {
                keys: keys.ok_or("no upstream signing keys")?.clone(),
                issuer: issuer.to_string(),
                audience: audience.clone(),
                ttl: *ttl,
                cache: Mutex::default(),
            }),
        })
    }

    /// The header to add to a request made for `principal`.
    pub fn header(&self, principal: Option<&Principal>) -> Option<(HeaderName, HeaderValue)> {
        match self {
            Self::None => None,
            Self::Header(n, v) => Some((n.clone(), v.clone())),
            Self::Jwt(m) => m.bearer(principal?).map(|v| (header::AUTHORIZATION, v)),
        }
    }
}

/// Mints upstream JWTs; one is reused for the same caller during half its lifetime.
pub struct Minter {
    keys: Arc<UpstreamKeys>,
    issuer: String,
    audience: String,
    ttl: Duration,
    cache: Mutex<HashMap<Caller, (HeaderValue, Instant)>>,
}

/// Who a minted token names: sub, client_id, scopes.
type Caller = (String, Option<String>, Vec<String>);

impl Minter {
    fn bearer(&self, p: &Principal) -> Option<HeaderValue> {
        let key = (p.sub.clone(), p.client_id.clone(), p.scopes.clone());
        if let Ok(cache) = self.cache.lock()
            && let Some((v, until)) = cache.get(&key)
            && Instant::now() < *until
        {
            return Some(v.clone());
        }
        let iat = now();
        let token = self
            .keys
            .current()
            .sign(
                "at+jwt",
                &json!({
                    "iss": self.issuer,
                    "aud": self.audience,
                    "sub": p.sub,
                    "client_id": p.client_id,
                    "scope": p.scopes.join(" "),
                    "iat": iat,
                    "exp": iat + self.ttl.as_secs(),
                    "jti": jti(),
                }),
            )
            .map_err(|e| tracing::error!("minting an upstream token: {e}"))
            .ok()?;
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        v.set_sensitive(true);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, (v.clone(), Instant::now() + self.ttl / 2));
        }
        Some(v)
    }
}

/// The upstream signing keys: the newest signs, every key still in the directory is published.
pub struct UpstreamKeys {
    dir: PathBuf,
    rotate: Duration,
    keys: RwLock<(Arc<SigningKey>, Bytes)>,
}

impl UpstreamKeys {
    /// Loads the keys under `state_dir`, making a new one if the newest is older than `rotate`,
    /// and deleting keys older than twice that.
    pub fn open(state_dir: &Path, rotate: Duration) -> Result<Self, String> {
        let dir = state_dir.join(KEYS_DIR);
        let (current, jwks) = rotate_keys(&dir, rotate)?;
        Ok(Self {
            dir,
            rotate,
            keys: RwLock::new((current, jwks)),
        })
    }

    pub fn current(&self) -> Arc<SigningKey> {
        self.keys.read().expect("upstream keys lock").0.clone()
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.keys.read().expect("upstream keys lock").1.clone()
    }

    /// Rotates if due; run now and then.
    pub fn tick(&self) -> Result<(), String> {
        let (current, jwks) = rotate_keys(&self.dir, self.rotate)?;
        *self.keys.write().expect("upstream keys lock") = (current, jwks);
        Ok(())
    }
}

/// Keys are files named `<unix seconds>.pem`.
fn rotate_keys(dir: &Path, rotate: Duration) -> Result<(Arc<SigningKey>, Bytes), String> {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut keys: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let p = e.path();
                let born = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".pem")?
                    .parse()
                    .ok()?;
                Some((born, p))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    keys.sort();
    let rotate = rotate.as_secs().max(1);
    for (born, path) in &keys {
        if born + 2 * rotate <= t {
            let _ = std::fs::remove_file(path);
        }
    }
    keys.retain(|(born, _)| born + 2 * rotate > t);
    if keys.last().is_none_or(|(born, _)| born + rotate <= t) {
        let path = dir.join(format!("{t}.pem"));
        if !path.exists() {
            SigningKey::create(&path)?;
        }
        keys.push((t, path));
    }
    let loaded: Vec<SigningKey> = keys
        .iter()
        .map(|(_, p)| SigningKey::load(p))
        .collect::<Result<_, _>>()?;
    let jwks = json!({"keys": loaded.iter().map(|k| &k.jwk).collect::<Vec<_>>()});
    let jwks = Bytes::from(jwks.to_string());
    let file = dir.join("jwks.json");
    std::fs::write(&file, &jwks).map_err(|e| format!("{}: {e}", file.display()))?;
    let current = loaded.into_iter().last().expect("at least one key");
    Ok((Arc::new(current), jwks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rotate_and_old_ones_are_retired() {
        let dir = std::env::temp_dir().join(format!("moat-upkeys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let keys = UpstreamKeys::open(&dir, ROTATE).unwrap();
        let first = keys.current().kid.clone();
        // Not due: the same key.
        keys.tick().unwrap();
        assert_eq!(keys.current().kid, first);
        // A key born two rotations ago is deleted; one born one rotation ago is replaced as
        // the signing key but stays published.
        let kd = dir.join(KEYS_DIR);
        let t = now();
        let old = kd.join(format!("{}.pem", t - 2 * ROTATE.as_secs()));
        std::fs::rename(
            std::fs::read_dir(&kd)
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| e.path().extension().is_some_and(|x| x == "pem"))
                .unwrap()
                .path(),
            &old,
        )
        .unwrap();
        let prev = kd.join(format!("{}.pem", t - ROTATE.as_secs()));
        let prev_kid = SigningKey::create(&prev).unwrap().kid;
        keys.tick().unwrap();
        assert!(!old.exists(), "a key two rotations old is deleted");
        assert!(prev.exists(), "the previous key stays published");
        let jwks: serde_json::Value = serde_json::from_slice(&keys.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_ne!(keys.current().kid, first);
        assert_ne!(
            keys.current().kid,
            prev_kid,
            "the previous key no longer signs"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
