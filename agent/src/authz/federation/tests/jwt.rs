//! Signing keys made in the test (ES256 and EdDSA), their JWKs, and tokens signed with them, or
//! forged: unsigned, or HMAC with a public key as the secret.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{self as sig, KeyPair as _},
};
use serde_json::{Value, json};

enum Pair {
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    pair: Pair,
}

impl TestKey {
    pub fn es256(kid: &str) -> Self {
        let pkcs8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_der();
        let pair = sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .unwrap();
        Self {
            kid: kid.into(),
            alg: "ES256",
            pair: Pair::Ec(pair),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let pkcs8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_der();
        let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
        Self {
            kid: kid.into(),
            alg: "EdDSA",
            pair: Pair::Ed(pair),
        }
    }

    /// The raw public key.
    pub fn public(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Ec(p) => p.public_key().as_ref().to_vec(),
            Pair::Ed(p) => p.public_key().as_ref().to_vec(),
        }
    }

    pub fn jwk(&self) -> Value {
        let public = self.public();
        match &self.pair {
            Pair::Ec(_) => json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..]),
            }),
            Pair::Ed(_) => json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
                "x": B64.encode(&public),
            }),
        }
    }

    /// A token with the usual header (`alg`, `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let signature = match &self.pair {
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Pair::Ed(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", B64.encode(signature))
    }
}

pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

/// `alg: none`, no signature.
pub fn unsigned(claims: &Value) -> String {
    format!("{}.", signing_input(&json!({"alg": "none"}), claims))
}

/// HS256 with `secret` as the HMAC key (the key confusion attack, with a public key).
pub fn hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let input = signing_input(&json!({"alg": "HS256", "kid": kid, "typ": "JWT"}), claims);
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        input.as_bytes(),
    );
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

/// Claims of a good ID token for `client_id` with `nonce`, issued now by `issuer`.
pub fn claims(issuer: &str, client_id: &str, nonce: &str) -> Value {
    let now = super::super::login::now();
    json!({
        "iss": issuer, "sub": "alice", "aud": client_id, "nonce": nonce,
        "iat": now, "exp": now + 300,
    })
}
