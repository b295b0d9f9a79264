//! RFC 7662 token introspection, for access tokens that are not JWTs: the issuer says whether
//! the token is active, for whom, with which scopes and for which audience.
use serde::Deserialize;

use super::{AuthError, Invalid, Principal, clock::now};
use crate::config::{Auth, Introspection};

/// An introspected token is trusted for at most this long before it is asked about again.
const MAX_CACHE_S: u64 = 60;

pub struct Introspector {
    url: String,
    client_id: String,
    secret: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Answer {
    active: bool,
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    iss: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Introspector {
    pub fn new(c: &Introspection, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let secret = std::fs::read_to_string(&c.client_secret_file)
            .map_err(|e| format!("{}: {e}", c.client_secret_file.display()))?;
        Ok(Self {
            url: c.url.clone(),
            client_id: c.client_id.clone(),
            secret: secret.trim_end_matches(['\r', '\n']).to_string(),
            client: super::fetch::client(ca_file)?,
        })
    }

    pub async fn introspect(
        &self,
        token: &str,
        config: &Auth,
    ) -> Result<(Principal, u64), AuthError> {
        let unavailable =
            |e: String| AuthError::Unavailable(format!("introspection at {}: {e}", self.url));
        let resp = self
            .client
            .post(&self.url)
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status())));
        }
        let all: serde_json::Map<String, serde_json::Value> =
            resp.json().await.map_err(|e| unavailable(e.to_string()))?;
        let a: Answer = serde_json::from_value(serde_json::Value::Object(all.clone()))
            .map_err(|e| unavailable(format!("not an introspection answer: {e}")))?;
        let invalid = AuthError::Invalid;
        if !a.active {
            return Err(invalid(Invalid::Inactive));
        }
        let t = now();
        let leeway = config.leeway.as_secs();
        if a.exp.is_some_and(|e| e.saturating_add(leeway) < t) {
            return Err(invalid(Invalid::Expired));
        }
        if a.nbf.is_some_and(|n| n > t.saturating_add(leeway)) {
            return Err(invalid(Invalid::NotYetValid));
        }
        if a.iss.as_deref().is_some_and(|i| i != config.issuer.id()) {
            return Err(invalid(Invalid::Issuer));
        }
        let for_us = match &a.aud {
            Some(Audience::One(x)) => *x == config.audience,
            Some(Audience::Many(xs)) => xs.contains(&config.audience),
            None => false,
        };
        if !for_us {
            return Err(invalid(Invalid::Audience));
        }
        let sub = a
            .sub
            .or_else(|| a.client_id.clone())
            .ok_or(invalid(Invalid::MissingClaim("sub".into())))?;
        let until = a.exp.map_or(t + MAX_CACHE_S, |e| e.min(t + MAX_CACHE_S));
        Ok((
            Principal {
                sub,
                client_id: a.client_id,
                iss: config.issuer.id().to_string(),
                scopes: a
                    .scope
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                claims: all,
            },
            until,
        ))
    }
}
