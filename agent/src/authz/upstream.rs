//! Connecting a user's account at a third party (servers with `upstream_auth: { oauth2 }`):
//! `GET /upstream/connect?server=NAME` sends the signed-in user to the provider (PKCE, a
//! `state` bound to this browser's session and used once), and `GET /upstream/callback`
//! redeems the code and keeps the user's tokens sealed (see `thirdparty`). The browser never
//! sees the tokens; the audit says who connected which provider.
use std::sync::Arc;

use http::HeaderMap;
use serde_json::json;

use super::{
    AuthServer,
    error::OAuthError,
    form::Params,
    pages, random,
    reply::{self, Reply},
};
use crate::{
    thirdparty::{Connecting, Connectors, Upstream, provider::Pkce},
    vault::Vault,
};

impl AuthServer {
    /// The servers whose users connect a third party here.
    pub fn set_connectors(&self, vault: Option<Arc<Vault>>, connectors: Connectors) {
        let _ = self.upstream.set(Upstream { vault, connectors });
    }

    pub(super) fn upstream(&self) -> Option<&Upstream> {
        self.upstream.get()
    }

    /// `GET /upstream/connect?server=NAME`
    pub(super) fn upstream_connect(&self, query: Option<&str>, headers: &HeaderMap) -> Reply {
        let started = (|| {
            let p = Params::parse(query.unwrap_or_default().as_bytes())?;
            let server = p.require("server")?.to_string();
            let c = self
                .upstream()
                .and_then(|u| u.connectors.get(&server))
                .ok_or_else(|| {
                    OAuthError::InvalidRequest(format!(
                        "server {server:?} does not act for its users at a third party"
                    ))
                })?;
            let (session, identity) = self.session_of(headers).ok_or_else(|| {
                OAuthError::AccessDenied(
                    "sign in first: connect your MCP client (which signs you in here), then open \
                     this link again in the same browser"
                        .into(),
                )
            })?;
            let pkce = Pkce::new().map_err(OAuthError::Server)?;
            let state = random()?;
            self.connecting.insert(
                state.clone(),
                Connecting {
                    sub: identity.sub,
                    server,
                    verifier: pkce.verifier,
                    session,
                },
            );
            Ok::<_, OAuthError>(c.provider.authorize_url(&state, &pkce.challenge))
        })();
        match started {
            Ok(url) => reply::redirect(&url),
            Err(e) => reply::error_page(&e),
        }
    }

    /// When `server` acts for its users at a third party that `sub` has not connected: where
    /// the browser goes first (the provider), and the `state` that brings it back.
    pub(super) fn detour(
        &self,
        sub: &str,
        server: &str,
        headers: &HeaderMap,
    ) -> Option<(String, String)> {
        let c = self.upstream().and_then(|u| u.connectors.get(server))?;
        let (session, _) = self.session_of(headers)?;
        if c.connected(sub) {
            return None;
        }
        let (pkce, state) = (Pkce::new().ok()?, random().ok()?);
        let connecting = Connecting {
            sub: sub.to_string(),
            server: server.to_string(),
            verifier: pkce.verifier,
            session,
        };
        self.connecting
            .insert(state.clone(), connecting)
            .then(|| (c.provider.authorize_url(&state, &pkce.challenge), state))
    }

    /// `GET /upstream/callback?code=..&state=..` (or `error=..`)
    pub(super) async fn upstream_callback(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Reply {
        let state = Params::parse(query.unwrap_or_default().as_bytes())
            .ok()
            .and_then(|p| p.get("state").map(str::to_string))
            .unwrap_or_default();
        let connected = self.connected(query, headers).await;
        // During a sign-in: the client gets its code now, connected or not (the user may have
        // declined; a call asks again).
        if let Some(r) = self.resuming.take(&state) {
            if let Err(e) = &connected {
                tracing::warn!("connecting a third party during sign-in: {e}");
            }
            return self.issue_code_now(r.pending, r.identity, &r.how).await;
        }
        match connected {
            Ok((server, provider)) => {
                reply::html(http::StatusCode::OK, pages::connected(&server, &provider))
            }
            Err(e) => reply::error_page(&e),
        }
    }

    async fn connected(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(String, String), OAuthError> {
        let p = Params::parse(query.unwrap_or_default().as_bytes())?;
        let state = p.require("state")?;
        let c = self.connecting.take(state).ok_or_else(|| {
            OAuthError::InvalidRequest("this connection expired or is unknown".into())
        })?;
        // The browser that started it, still signed in as the same user.
        match self.session_of(headers) {
            Some((session, identity)) if session == c.session && identity.sub == c.sub => {}
            _ => {
                return Err(OAuthError::AccessDenied(
                    "this connection was started in another browser session".into(),
                ));
            }
        }
        if let Some(e) = p.get("error") {
            return Err(OAuthError::AccessDenied(format!(
                "the provider did not grant access ({e})"
            )));
        }
        let code = p.require("code")?;
        let connector = self
            .upstream()
            .and_then(|u| u.connectors.get(&c.server))
            .ok_or_else(|| OAuthError::Server(format!("no connector for {}", c.server)))?;
        let tokens = connector
            .provider
            .exchange(code, &c.verifier)
            .await
            .map_err(|e| OAuthError::AccessDenied(format!("the provider's token endpoint: {e}")))?;
        connector
            .keep(&c.sub, tokens)
            .map_err(|e| OAuthError::Server(e.to_string()))?;
        let provider = connector.provider.origin().to_string();
        self.event(
            "upstream_connected",
            json!({"sub": c.sub, "server": c.server, "provider": provider}),
        )
        .await;
        Ok((c.server, provider))
    }

    /// What `sub` has connected, for `moat grants list`.
    pub(super) fn upstream_connected(&self, sub: &str) -> Vec<serde_json::Value> {
        let Some(vault) = self.upstream().and_then(|u| u.vault.as_ref()) else {
            return Vec::new();
        };
        vault
            .connected(sub)
            .unwrap_or_default()
            .into_iter()
            .map(|(server, t)| {
                json!({"sub": sub, "server": server, "upstream": {
                    "provider": t.provider, "scope": t.scope, "obtained": t.obtained,
                    "refreshed": t.refreshed, "expires": t.expires, "refreshable": t.refreshable}})
            })
            .collect()
    }

    /// Re-seals every user's tokens under a new key (`moat grants rotate-key`).
    pub async fn upstream_rotate_key(&self) -> Result<serde_json::Value, OAuthError> {
        let vault = self
            .upstream()
            .and_then(|u| u.vault.as_ref())
            .ok_or_else(|| {
                OAuthError::InvalidRequest(
                    "no server has `upstream_auth: { oauth2 }`: there are no tokens to re-seal"
                        .into(),
                )
            })?;
        let n = vault
            .rotate()
            .map_err(|e| OAuthError::Server(e.to_string()))?;
        self.event("upstream_key_rotated", json!({"resealed": n}))
            .await;
        Ok(json!({"resealed": n}))
    }

    /// Deletes `sub`'s upstream tokens and revokes them at their providers; the servers.
    pub(super) async fn upstream_revoke(&self, sub: &str) -> Vec<String> {
        let Some(u) = self.upstream() else {
            return Vec::new();
        };
        let Some(vault) = &u.vault else {
            return Vec::new();
        };
        crate::thirdparty::revoke_sub(vault, &u.connectors, sub).await
    }
}
