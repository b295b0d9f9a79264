//! JWT access tokens: the signature against the issuer's keys, with an algorithm from the
//! allowlist, then `iss`, `aud`, `exp` and `nbf`, and the caller's identity and scopes.
use std::collections::HashSet;

use jsonwebtoken::{Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{AuthError, Invalid, Principal, jwks::KeySource};
use crate::config::Auth;

/// Three base64url segments: header, claims, signature.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    /// Some issuers name the client `azp` (OpenID Connect) or `cid`.
    azp: Option<String>,
    cid: Option<String>,
    /// RFC 9068 / 8693: space-separated scopes; some issuers send `scp` as a list instead.
    scope: Option<String>,
    scp: Option<Scopes>,
    exp: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    List(Vec<String>),
    Text(String),
}

/// Validates `token`; on success the principal and the expiry (seconds since the epoch).
pub async fn validate(
    token: &str,
    config: &Auth,
    keys: &KeySource,
) -> Result<(Principal, u64), AuthError> {
    let invalid = AuthError::Invalid;
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            invalid(Invalid::Algorithm("(unsupported)".into()))
        }
        _ => invalid(Invalid::Malformed),
    })?;
    if !config.algorithms.contains(&header.alg) {
        return Err(invalid(Invalid::Algorithm(format!("{:?}", header.alg))));
    }
    let key = keys.find(header.kid.as_deref(), header.alg).await?;
    let mut v = Validation::new(header.alg);
    v.algorithms = vec![header.alg];
    v.leeway = config.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[config.issuer.id()]);
    v.set_audience(&[config.audience.as_str()]);
    v.required_spec_claims = HashSet::from(["exp".into(), "iss".into(), "aud".into()]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
        .map_err(|e| {
            invalid(match e.kind() {
                ErrorKind::InvalidSignature => Invalid::Signature,
                ErrorKind::ExpiredSignature => Invalid::Expired,
                ErrorKind::ImmatureSignature => Invalid::NotYetValid,
                ErrorKind::InvalidIssuer => Invalid::Issuer,
                ErrorKind::InvalidAudience => Invalid::Audience,
                ErrorKind::MissingRequiredClaim(c) => Invalid::MissingClaim(c.clone()),
                ErrorKind::InvalidAlgorithm => Invalid::Algorithm(format!("{:?}", header.alg)),
                _ => Invalid::Malformed,
            })
        })?;
    let all = data.claims;
    let c: Claims = serde_json::from_value(serde_json::Value::Object(all.clone()))
        .map_err(|_| invalid(Invalid::Malformed))?;
    let exp = c.exp.ok_or(invalid(Invalid::MissingClaim("exp".into())))?;
    let client_id = c.client_id.or(c.azp).or(c.cid);
    let sub = c
        .sub
        .or_else(|| client_id.clone())
        .ok_or(invalid(Invalid::MissingClaim("sub".into())))?;
    let scopes = match (c.scope, c.scp) {
        (Some(s), _) | (None, Some(Scopes::Text(s))) => {
            s.split_whitespace().map(str::to_string).collect()
        }
        (None, Some(Scopes::List(l))) => l,
        (None, None) => Vec::new(),
    };
    Ok((
        Principal {
            sub,
            client_id,
            iss: config.issuer.id().to_string(),
            scopes,
            claims: all,
        },
        exp.saturating_add(config.leeway.as_secs()),
    ))
}
