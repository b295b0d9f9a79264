//! The token endpoint: an authorization code (once, by its client, with its redirect URI, PKCE
//! verifier and resource) or a refresh token (rotated on every use; a rotated one presented
//! again revokes its whole family) for a short-lived access token bound to one server.
use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};

use super::{
    AuthServer, Code, Resource,
    authorize::requested_scopes,
    consent::constant_time_eq,
    error::OAuthError,
    form::Params,
    random,
    reply::{self, Reply},
};
use crate::store::{
    grants::{NewFamily, RotateError},
    record::{Timestamp, TokenHash},
};

/// What an access token says.
struct Grant<'a> {
    sub: &'a str,
    client_id: &'a str,
    resource: &'a Resource,
    scopes: &'a [String],
    claims: &'a Map<String, Value>,
}

impl AuthServer {
    /// `POST /token`
    pub(super) async fn token(&self, headers: &HeaderMap, form: Params) -> Reply {
        let answer = match self.client_of(headers, &form) {
            Ok(client_id) => match form.get("grant_type") {
                Some("authorization_code") => self.redeem_code(&client_id, &form).await,
                Some("refresh_token") => self.refresh(&client_id, &form).await,
                Some(other) => Err(OAuthError::UnsupportedGrantType(other.to_string())),
                None => Err(OAuthError::InvalidRequest(
                    "missing parameter `grant_type`".into(),
                )),
            },
            Err(e) => Err(e),
        };
        match answer {
            Ok(body) => reply::json(StatusCode::OK, &body),
            Err(e) => reply::error_json(&e),
        }
    }

    /// The client of a token or revocation request: public clients name themselves with
    /// `client_id` (PKCE and the code's binding prove the rest); a live client.
    pub(super) fn client_of(
        &self,
        headers: &HeaderMap,
        form: &Params,
    ) -> Result<String, OAuthError> {
        if headers.contains_key(header::AUTHORIZATION) {
            return Err(OAuthError::InvalidClient(
                "clients here are public (token_endpoint_auth_method `none`): send `client_id`, no credentials".into(),
            ));
        }
        let id = form.require("client_id")?;
        match self.store.clients().get(id)? {
            Some(c) if c.revoked_at.is_none() => Ok(id.to_string()),
            Some(_) => Err(OAuthError::InvalidClient(format!(
                "client {id:?} was revoked"
            ))),
            None => Err(OAuthError::InvalidClient(format!("unknown client {id:?}"))),
        }
    }

    async fn redeem_code(&self, client_id: &str, form: &Params) -> Result<Value, OAuthError> {
        let code = form.require("code")?;
        let Some(grant) = self.codes.take(code) else {
            if let Some(family) = self.used_codes.take(code) {
                // A code used twice: whoever holds it now is not the client it was for.
                if let Some(f) = &family {
                    self.store.grants().revoke(f)?;
                }
                self.event(
                    "code_replayed",
                    json!({"client_id": client_id, "family": family}),
                )
                .await;
                return Err(OAuthError::InvalidGrant(
                    "the authorization code was used already; the tokens issued for it are revoked"
                        .into(),
                ));
            }
            return Err(OAuthError::InvalidGrant(
                "unknown or expired authorization code".into(),
            ));
        };
        let refused = |why: &str| Err(OAuthError::InvalidGrant(why.to_string()));
        if grant.client_id != client_id {
            return refused("the authorization code was issued to another client");
        }
        if form.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
            return refused("redirect_uri differs from the authorization request's");
        }
        let verifier = form.require("code_verifier")?;
        if !pkce_matches(verifier, &grant.code_challenge) {
            return refused("PKCE: code_verifier does not match the code_challenge");
        }
        if let Some(resource) = form.get("resource")
            && resource != grant.resource.audience
        {
            return Err(OAuthError::InvalidTarget(format!(
                "resource {resource:?} is not the one the code was issued for"
            )));
        }
        let (body, family) = self.tokens(&grant).await?;
        self.used_codes.insert(code.to_string(), Some(family));
        Ok(body)
    }

    /// An access token and the first refresh token of a new family.
    async fn tokens(&self, c: &Code) -> Result<(Value, String), OAuthError> {
        let mut claims = c.identity.claims.clone();
        if !c.identity.groups.is_empty() {
            claims.insert("groups".into(), json!(c.identity.groups));
        }
        let access = self.access_token(&Grant {
            sub: &c.identity.sub,
            client_id: &c.client_id,
            resource: &c.resource,
            scopes: &c.scopes,
            claims: &claims,
        })?;
        let refresh = random()?;
        let family = self.store.grants().create(
            NewFamily {
                sub: c.identity.sub.clone(),
                client_id: c.client_id.clone(),
                scopes: c.scopes.clone(),
                resource: c.resource.name.clone(),
                claims: claims.into_iter().collect::<BTreeMap<_, _>>(),
            },
            &TokenHash::of(&refresh),
        )?;
        self.event(
            "token_issued",
            json!({"sub": c.identity.sub, "client_id": c.client_id, "server": c.resource.name, "scopes": c.scopes, "family": family.id}),
        )
        .await;
        Ok((self.token_answer(&access, &refresh, &c.scopes), family.id))
    }

    async fn refresh(&self, client_id: &str, form: &Params) -> Result<Value, OAuthError> {
        let presented = form.require("refresh_token")?;
        let next = random()?;
        let family = match self.store.grants().rotate(
            &TokenHash::of(presented),
            &TokenHash::of(&next),
            client_id,
        ) {
            Ok(f) => f,
            Err(RotateError::Store(e)) => return Err(e.into()),
            Err(e) => {
                if let RotateError::Reuse { family } | RotateError::WrongClient { family } = &e {
                    self.event(
                        "refresh_reuse",
                        json!({"client_id": client_id, "family": family, "detail": e.to_string()}),
                    )
                    .await;
                }
                return Err(OAuthError::InvalidGrant(e.to_string()));
            }
        };
        let expires = family.created.plus(self.config.refresh_token_ttl.as_secs());
        if Timestamp::now() >= expires {
            self.store.grants().revoke(&family.id)?;
            return Err(OAuthError::InvalidGrant(
                "the refresh token expired: sign in again".into(),
            ));
        }
        let resource = self
            .resources
            .iter()
            .find(|r| r.name == family.resource)
            .ok_or_else(|| {
                OAuthError::InvalidTarget(format!(
                    "server {:?} is no longer served",
                    family.resource
                ))
            })?
            .clone();
        if let Some(r) = form.get("resource")
            && r != resource.audience
        {
            return Err(OAuthError::InvalidTarget(format!(
                "resource {r:?} is not this grant's"
            )));
        }
        let scopes = match form.get("scope") {
            None => family.scopes.clone(),
            Some(s) => {
                let asked = requested_scopes(Some(s), &family.scopes)?;
                if asked.iter().any(|x| !family.scopes.contains(x)) {
                    return Err(OAuthError::InvalidScope(
                        "more scopes than were granted".into(),
                    ));
                }
                asked
            }
        };
        let claims: Map<String, Value> = family.claims.clone().into_iter().collect();
        let access = self.access_token(&Grant {
            sub: &family.sub,
            client_id,
            resource: &resource,
            scopes: &scopes,
            claims: &claims,
        })?;
        self.event(
            "token_refreshed",
            json!({"sub": family.sub, "client_id": client_id, "server": resource.name, "family": family.id}),
        )
        .await;
        Ok(self.token_answer(&access, &next, &scopes))
    }

    fn access_token(&self, g: &Grant<'_>) -> Result<String, OAuthError> {
        let iat = Timestamp::now().0;
        let mut claims = g.claims.clone();
        for (k, v) in [
            ("iss", json!(self.issuer())),
            ("sub", json!(g.sub)),
            ("aud", json!(g.resource.audience)),
            ("client_id", json!(g.client_id)),
            ("scope", json!(g.scopes.join(" "))),
            ("iat", json!(iat)),
            ("exp", json!(iat + self.config.access_token_ttl.as_secs())),
            ("jti", json!(random()?)),
        ] {
            claims.insert(k.into(), v);
        }
        Ok(self.signer.sign("at+jwt", &claims)?)
    }

    fn token_answer(&self, access: &str, refresh: &str, scopes: &[String]) -> Value {
        json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.config.access_token_ttl.as_secs(),
            "refresh_token": refresh,
            "scope": scopes.join(" "),
        })
    }
}

/// RFC 7636 S256: BASE64URL(SHA256(verifier)) is the challenge; the verifier is 43 to 128
/// unreserved characters.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    well_formed && constant_time_eq(B64.encode(digest.as_ref()).as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(super::pkce_matches(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!super::pkce_matches(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!super::pkce_matches(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }
}
