//! What operators do to the authorization server (`moat users`, `moat clients`, `moat grants`,
//! `moat token mint`), each audited; run in the agent (through its control socket) or, while
//! no agent runs, on the store directly.
use serde_json::{Value, json};

use super::{AuthServer, error::OAuthError, random};
use crate::store::record::Timestamp;

impl AuthServer {
    /// `moat token mint`: access tokens for server `name`, as this issuer: one for `sub`, or
    /// with `count`, one for each of `sub-0` .. `sub-(count-1)` (audited as one event).
    #[allow(clippy::too_many_arguments)]
    pub async fn mint(
        &self,
        name: &str,
        sub: &str,
        count: Option<u32>,
        client_id: &str,
        scopes: &[String],
        extra: &serde_json::Map<String, Value>,
        ttl: u64,
    ) -> Result<Vec<String>, String> {
        let resource = self
            .resources
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                format!("server `{name}` does not trust this issuer (`auth: {{ issuer: local }}`)")
            })?;
        let subjects: Vec<String> = match count {
            None => vec![sub.to_string()],
            Some(n) => (0..n).map(|i| format!("{sub}-{i}")).collect(),
        };
        let iat = Timestamp::now().0;
        let mut claims = extra.clone();
        for (k, v) in [
            ("iss", json!(self.issuer())),
            ("aud", json!(resource.audience)),
            ("client_id", json!(client_id)),
            ("scope", json!(scopes.join(" "))),
            ("iat", json!(iat)),
            ("exp", json!(iat + ttl)),
        ] {
            claims.insert(k.into(), v);
        }
        // Off the runtime's threads: a large batch takes seconds to sign.
        let signer = self.signer.clone();
        let tokens = tokio::task::spawn_blocking(move || {
            subjects
                .into_iter()
                .map(|sub| {
                    let mut claims = claims.clone();
                    claims.insert("sub".into(), json!(sub));
                    claims.insert("jti".into(), json!(random().map_err(|e| e.to_string())?));
                    signer.sign("at+jwt", &claims).map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut fields = json!({"client_id": client_id, "server": name, "scopes": scopes, "ttl_s": ttl, "by": "operator"});
        match count {
            None => fields["sub"] = json!(sub),
            Some(n) => {
                fields["sub_prefix"] = json!(sub);
                fields["count"] = json!(n);
            }
        }
        self.event("token_minted", fields).await;
        Ok(tokens)
    }

    pub async fn user_add(&self, name: &str, password: &str) -> Result<Value, OAuthError> {
        if password.chars().count() < 8 {
            return Err(OAuthError::InvalidRequest(
                "a password has at least 8 characters".into(),
            ));
        }
        let (store, n, p) = (self.store.clone(), name.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || store.users().set_password(&n, &p))
            .await
            .map_err(|e| OAuthError::Server(e.to_string()))??;
        self.event("user_set", json!({"sub": name, "by": "operator"}))
            .await;
        Ok(json!({"user": name}))
    }

    pub async fn user_remove(&self, name: &str) -> Result<Value, OAuthError> {
        let removed = self.store.users().remove(name)?;
        if removed {
            self.revoke_subject(name, "user removed").await?;
        }
        Ok(json!({"user": name, "removed": removed}))
    }

    pub fn users(&self) -> Result<Value, OAuthError> {
        Ok(json!(
            self.store
                .users()
                .list()?
                .into_iter()
                .map(|u| u.name)
                .collect::<Vec<_>>()
        ))
    }

    pub fn clients_list(&self) -> Result<Value, OAuthError> {
        Ok(json!(self.store.clients().list()?))
    }

    pub fn client_show(&self, id: &str) -> Result<Value, OAuthError> {
        let c = self
            .store
            .clients()
            .get(id)?
            .ok_or_else(|| OAuthError::InvalidRequest(format!("no client {id:?}")))?;
        let consents = self.store.consents().by_client(id)?;
        let grants = self.store.grants().by_client(id)?;
        Ok(json!({"client": c, "consents": consents, "grants": grants}))
    }

    /// Revokes client `id`: its refresh tokens, consents and (at once) its access tokens.
    pub async fn client_revoke(&self, id: &str) -> Result<Value, OAuthError> {
        let fresh = self.store.revocations().revoke_client(id)?;
        let r = self.store.revocations().client(id)?;
        if let Some(r) = r {
            self.revocations.client_revoked(id, r.before);
        }
        self.event(
            "revoked",
            json!({"client_id": id, "by": "operator", "what": "client"}),
        )
        .await;
        Ok(json!({"client_id": id, "revoked": fresh}))
    }

    pub fn grants_list(
        &self,
        sub: Option<&str>,
        client: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let families = match (sub, client) {
            (Some(s), _) => self.store.grants().by_subject(s)?,
            (None, Some(c)) => self.store.grants().by_client(c)?,
            (None, None) => {
                let mut all = Vec::new();
                for c in self.store.clients().list()? {
                    all.extend(self.store.grants().by_client(&c.id)?);
                }
                all
            }
        };
        let families: Vec<Value> = families
            .into_iter()
            .filter(|f| client.is_none_or(|c| f.client_id == c))
            .map(|f| {
                json!({"family": f.id, "sub": f.sub, "client_id": f.client_id, "server": f.resource,
                       "scopes": f.scopes, "created": f.created.0, "revoked": f.revoked.map(|r| r.reason.to_string())})
            })
            .collect();
        // A user's grants, then the third parties they connected (entries with `upstream`).
        let mut all = families;
        if let Some(s) = sub {
            all.extend(self.upstream_connected(s));
        }
        Ok(json!(all))
    }

    /// `moat grants revoke --client Y`: what users granted Y ends (its refresh tokens, its
    /// access tokens issued so far, which are refused at once, and the consents, so users are
    /// asked again); the client stays registered (`moat clients revoke` ends it for good).
    pub async fn revoke_client_grants(&self, id: &str) -> Result<Value, OAuthError> {
        if self.store.clients().get(id)?.is_none() {
            return Err(OAuthError::InvalidRequest(format!("no client {id:?}")));
        }
        let r = self.store.revocations().revoke_client_tokens(id)?;
        self.revocations.client_revoked(id, r.before);
        for f in self.store.grants().by_client(id)? {
            self.store.grants().revoke(&f.id)?;
        }
        for (sub, _) in self.store.consents().by_client(id)? {
            self.store.consents().withdraw(&sub, id)?;
        }
        self.event(
            "revoked",
            json!({"client_id": id, "by": "operator", "what": "grants"}),
        )
        .await;
        Ok(json!({"client_id": id, "revoked": true}))
    }

    /// `moat grants revoke --sub X`: every refresh token of X ends, X's access tokens are
    /// refused from now on, X's open streams are closed, and X's consents are withdrawn.
    pub async fn revoke_subject(&self, sub: &str, why: &str) -> Result<Value, OAuthError> {
        let r = self.store.revocations().revoke_subject(sub)?;
        self.revocations.subject_revoked(sub, r.before);
        // Signed in nowhere any more: no browser session gets them a new code.
        self.sessions.remove_where(|identity| identity.sub == sub);
        for (client, _) in self.store.consents().by_subject(sub)? {
            self.store.consents().withdraw(sub, &client)?;
        }
        let upstream = self.upstream_revoke(sub).await;
        self.event(
            "revoked",
            json!({"sub": sub, "by": "operator", "what": "user", "reason": why,
                   "upstream_tokens_deleted": upstream}),
        )
        .await;
        Ok(json!({"sub": sub, "revoked": true, "upstream_tokens_deleted": upstream}))
    }
}
