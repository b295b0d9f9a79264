//! Moat's own signing keys (ES256, P-256), kept as PKCS#8 PEM files in the state directory:
//! the local issuer's key and the keys of the JWTs minted for upstreams.
use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public key as a JWK.
    pub jwk: Value,
}

impl SigningKey {
    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_pem(path, &pem)
    }

    /// A new key written to `path` (which must not exist).
    pub fn create(path: &Path) -> Result<Self, String> {
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let pem = pair.serialize_pem();
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(pem.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        Self::from_pem(path, &pem)
    }

    /// A key from its PKCS#8 PEM text.
    pub fn from_pem_text(pem: &str) -> Result<Self, String> {
        Self::from_pem(Path::new("(stored key)"), pem)
    }

    fn from_pem(path: &Path, pem: &str) -> Result<Self, String> {
        let bad = |e: String| format!("{}: not an ES256 (P-256) private key: {e}", path.display());
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        let raw = pair.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(bad("not an uncompressed P-256 point".into()));
        }
        let (x, y) = (B64.encode(&raw[1..33]), B64.encode(&raw[33..]));
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        let kid = B64.encode(&digest.as_ref()[..12]);
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}),
            kid,
            encoding,
            decoding,
        })
    }

    /// A signed JWT (`typ` names what it is, e.g. `at+jwt`).
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }
}

/// A random token id.
pub fn jti() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    B64.encode(b)
}
