//! The ID token (OpenID Connect Core 3.1.3.7): a compact JWS signed with an asymmetric algorithm
//! by one of the provider's keys (keys named in the token itself are never used), issued by the
//! pinned issuer for Moat's client, current, and carrying the pending login's nonce.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::text::printable;

/// Clock difference tolerated for `exp`, `iat` and `nbf`, in seconds.
pub const LEEWAY: u64 = 30;

/// The algorithms accepted: asymmetric ones only (never `none`, never HMAC, whose key would be
/// the client secret or, worse, a public key).
const ALGORITHMS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("type {0:?} is not an ID token's")]
    Type(String),
    #[error("critical header parameters are not understood")]
    Critical,
    #[error("signed with a key the provider does not publish")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("issued by {0:?}, not the provider")]
    Issuer(String),
    #[error("not issued for this client")]
    Audience,
    #[error("authorized party is not this client")]
    AuthorizedParty,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("not valid yet")]
    NotYetValid,
    #[error("the nonce is not the login's")]
    Nonce,
    #[error("no {0} claim")]
    MissingClaim(&'static str),
}

/// What the token's header says about how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// What the token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Reads the header, before any key is looked up: the algorithm must be one of the allowlist.
pub fn header(token: &str) -> Result<Header, IdTokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    match parts.len() {
        3 => {}
        5 => {
            return Err(IdTokenError::Malformed(
                "encrypted ID tokens are not supported",
            ));
        }
        _ => return Err(IdTokenError::Malformed("not a compact JWS")),
    }
    let bytes = B64
        .decode(parts[0])
        .map_err(|_| IdTokenError::Malformed("header is not base64url"))?;
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(IdTokenError::Malformed("header is not a JSON object"));
    };
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a,
        _ => return Err(IdTokenError::Malformed("no algorithm in the header")),
    };
    let alg = ALGORITHMS
        .iter()
        .find(|(name, _)| name == alg)
        .map(|(_, a)| *a)
        .ok_or_else(|| IdTokenError::Algorithm(printable(alg)))?;
    if h.contains_key("crit") {
        return Err(IdTokenError::Critical);
    }
    // RFC 8725 3.11: explicitly typed JWTs of other kinds (at+jwt, logout+jwt, ...) are not ID tokens.
    match h.get("typ") {
        None => {}
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt") => {}
        Some(Value::String(t)) => return Err(IdTokenError::Type(printable(t))),
        Some(_) => return Err(IdTokenError::Malformed("typ is not a string")),
    }
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(IdTokenError::Malformed("kid is not a string")),
    };
    Ok(Header { alg, kid })
}

/// Checks the signature with `key` (found for `header`) and the claims against `expected`;
/// all the claims on success.
pub fn verify(
    token: &str,
    header: &Header,
    key: &DecodingKey,
    expected: &Expected,
) -> Result<Map<String, Value>, IdTokenError> {
    let mut v = Validation::new(header.alg);
    v.algorithms = vec![header.alg];
    v.required_spec_claims.clear();
    (v.validate_exp, v.validate_nbf, v.validate_aud) = (false, false, false);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &v)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_) => IdTokenError::Signature,
            _ => IdTokenError::Malformed("claims are not a JSON object"),
        })?
        .claims;
    check_claims(&claims, expected)?;
    Ok(claims)
}

/// The claims' checks, in the order of OpenID Connect Core 3.1.3.7.
fn check_claims(c: &Map<String, Value>, expected: &Expected) -> Result<(), IdTokenError> {
    let text = |name: &'static str| match c.get(name) {
        None => Err(IdTokenError::MissingClaim(name)),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(IdTokenError::Malformed("a claim of the wrong type")),
    };
    let time = |name: &'static str| match c.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(IdTokenError::Malformed(
                "a time that is not a number of seconds",
            )),
        Some(_) => Err(IdTokenError::Malformed("a time that is not a number")),
    };

    let iss = text("iss")?;
    if iss != expected.issuer {
        return Err(IdTokenError::Issuer(printable(iss)));
    }
    let audiences: Vec<&str> = match c.get("aud") {
        None => return Err(IdTokenError::MissingClaim("aud")),
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| {
                a.as_str()
                    .ok_or(IdTokenError::Malformed("aud holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(IdTokenError::Malformed(
                "aud is neither a string nor a list",
            ));
        }
    };
    if !audiences.contains(&expected.client_id) {
        return Err(IdTokenError::Audience);
    }
    // Another audience besides Moat's client: the token must say it was issued to Moat.
    match c.get("azp") {
        None if audiences.len() > 1 => return Err(IdTokenError::AuthorizedParty),
        None => {}
        Some(Value::String(azp)) if azp == expected.client_id => {}
        Some(_) => return Err(IdTokenError::AuthorizedParty),
    }
    let exp = time("exp")?.ok_or(IdTokenError::MissingClaim("exp"))?;
    if expected.now >= exp.saturating_add(LEEWAY) {
        return Err(IdTokenError::Expired);
    }
    let iat = time("iat")?.ok_or(IdTokenError::MissingClaim("iat"))?;
    if iat > expected.now.saturating_add(LEEWAY) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if time("nbf")?.is_some_and(|nbf| nbf > expected.now.saturating_add(LEEWAY)) {
        return Err(IdTokenError::NotYetValid);
    }
    if text("nonce")? != expected.nonce {
        return Err(IdTokenError::Nonce);
    }
    if text("sub")?.is_empty() {
        return Err(IdTokenError::MissingClaim("sub"));
    }
    Ok(())
}
