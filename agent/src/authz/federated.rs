//! Sign-in at the organisation's OpenID provider (`login: {oidc: ...}`): Moat, a relying party
//! with one client of its own, sends the browser there after it checked the client's request,
//! and takes the user back at `/callback`. The provider is discovered on first use (and again
//! after a failure), from the pinned issuer only.
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use serde_json::json;

use super::{
    AuthServer, Identity,
    error::OAuthError,
    federation::{CallbackParams, Federation, OidcLogin},
    reply::{self, Reply},
};
use crate::config::Login;

impl AuthServer {
    /// The provider, discovered now if it was not yet.
    async fn provider(&self) -> Result<Arc<Federation>, OAuthError> {
        let Login::Oidc(c) = &self.config.login else {
            return Err(OAuthError::AccessDenied(
                "sign-in at a provider is off".into(),
            ));
        };
        let mut slot = self.federation.lock().await;
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        let rp = OidcLogin::from_config(c).map_err(OAuthError::Server)?;
        let f = Arc::new(Federation::discover(rp).await.map_err(|e| {
            OAuthError::TemporarilyUnavailable(format!(
                "the identity provider cannot be reached: {e}"
            ))
        })?);
        *slot = Some(f.clone());
        Ok(f)
    }

    /// Sends the browser to the provider for request `id`.
    pub(super) async fn begin_federated(&self, id: &str) -> Reply {
        let provider = match self.provider().await {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        let (url, pending) = provider.begin(&self.url("callback"));
        let state = pending.state().to_string();
        if !self
            .underway
            .insert(state, Arc::new(Mutex::new(Some((pending, id.to_string())))))
        {
            return reply::error_page(&OAuthError::TemporarilyUnavailable(
                "too many sign-ins under way".into(),
            ));
        }
        reply::redirect(url.as_str())
    }

    /// `GET /callback`: the provider's answer; then a session and on to consent.
    pub(super) async fn callback(&self, query: Option<&str>, headers: &HeaderMap) -> Reply {
        let params = match CallbackParams::parse(query.unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => return reply::error_page(&OAuthError::InvalidRequest(e.to_string())),
        };
        // Single use: whoever comes back with this state first takes it.
        let taken = params
            .state
            .as_deref()
            .and_then(|s| self.underway.take(s))
            .and_then(|u| u.lock().expect("sign-in lock").take());
        let Some((pending, id)) = taken else {
            return reply::error_page(&OAuthError::InvalidRequest(
                "this sign-in is unknown, expired or was completed already".into(),
            ));
        };
        let request = match self.pending_for(&id, headers) {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        let provider = match self.provider().await {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        let user = match provider.complete(pending, &params).await {
            Ok(u) => u,
            Err(e) => {
                self.event("login_failed", json!({"client_id": request.client.id, "method": "oidc", "idp": provider.issuer(), "detail": e.to_string()}))
                    .await;
                return reply::error_page(&OAuthError::AccessDenied(format!(
                    "sign-in at the identity provider failed: {e}"
                )));
            }
        };
        let identity = Identity {
            sub: user.sub,
            groups: user.groups,
            claims: user.claims,
        };
        self.start_session(identity, &id, &request, "oidc").await
    }
}
