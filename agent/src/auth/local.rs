//! The local issuer (`issuer: local`), for development and tests: `moat token mint` signs access
//! tokens with a key kept in the state directory, and servers configured with it trust that key.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::{
    clock::now,
    jwks::{Key, KeySet},
    signing::{SigningKey, jti},
};
use crate::config::LOCAL_ISSUER;

pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("issuer").join("local.pem")
}

/// The local issuer's verifying key (the key is created on first use).
pub fn verifying_keys(state_dir: &Path) -> Result<KeySet, String> {
    let k = SigningKey::load_or_create(&key_path(state_dir))?;
    Ok(KeySet {
        keys: vec![Key {
            kid: Some(k.kid.clone()),
            alg: Some(Algorithm::ES256),
            key: k.decoding,
        }],
    })
}

/// What `moat token mint` puts in a token.
pub struct Mint {
    pub sub: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub audience: String,
    pub ttl: Duration,
    /// More claims (e.g. groups); the registered ones above cannot be overridden.
    pub extra: Vec<(String, serde_json::Value)>,
}

/// An access token from the local issuer (an RFC 9068 JWT).
pub fn mint(state_dir: &Path, m: &Mint) -> Result<String, String> {
    let key = SigningKey::load_or_create(&key_path(state_dir))?;
    let iat = now();
    let mut claims = json!({
            "iss": LOCAL_ISSUER,
            "sub": m.sub,
            "aud": m.audience,
            "client_id": m.client_id,
            "scope": m.scopes.join(" "),
            "iat": iat,
            "exp": iat + m.ttl.as_secs(),
            "jti": jti(),
    });
    for (k, v) in &m.extra {
        if claims.get(k).is_none() {
            claims[k] = v.clone();
        }
    }
    key.sign("at+jwt", &claims)
}
