//! Dynamic client registration (RFC 7591: open, limited to configured redirect hosts, or off)
//! and token revocation (RFC 7009).
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{
    AuthServer, clients,
    error::OAuthError,
    form::Params,
    random,
    reply::{self, Reply},
};
use crate::{
    config::Dynamic,
    store::{
        clients::{Client, ClientKind},
        record::{Timestamp, TokenHash},
    },
    vocab::redirect_uri_ok,
};

/// Longest client name kept (it is shown on the consent page, marked as the client's claim).
const MAX_NAME: usize = 100;
impl AuthServer {
    /// `POST /register`
    pub(super) async fn register(&self, body: &[u8]) -> Reply {
        match self.try_register(body).await {
            Ok(v) => reply::json(StatusCode::CREATED, &v),
            Err(e) => reply::error_json(&e),
        }
    }

    async fn try_register(&self, body: &[u8]) -> Result<Value, OAuthError> {
        let meta = |m: &str| OAuthError::InvalidClientMetadata(m.to_string());
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| meta(&format!("not JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| meta("expected a JSON object"))?;
        let uris: Vec<String> = match obj.get("redirect_uris") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|u| {
                    u.as_str().map(str::to_string).ok_or_else(|| {
                        OAuthError::InvalidRedirectUri("redirect_uris holds strings".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(OAuthError::InvalidRedirectUri(
                    "`redirect_uris` must list at least one URI".into(),
                ));
            }
        };
        for u in &uris {
            redirect_uri_ok(u)
                .map_err(|why| OAuthError::InvalidRedirectUri(format!("{u:?}: {why}")))?;
        }
        if let Dynamic::RedirectHosts(hosts) = &self.config.registration.dynamic {
            for u in &uris {
                let url =
                    url::Url::parse(u).map_err(|_| OAuthError::InvalidRedirectUri(u.clone()))?;
                let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
                let loopback = url.scheme() == "http";
                if !loopback && !hosts.contains(&host) {
                    return Err(OAuthError::InvalidRedirectUri(format!(
                        "{u:?}: registration is open only to redirect hosts {}",
                        hosts.join(", ")
                    )));
                }
            }
        }
        for (key, allowed) in [
            ("grant_types", &["authorization_code", "refresh_token"][..]),
            ("response_types", &["code"][..]),
        ] {
            if let Some(v) = obj.get(key) {
                let list = v
                    .as_array()
                    .ok_or_else(|| meta(&format!("`{key}` must be a list")))?;
                if let Some(bad) = list
                    .iter()
                    .find(|g| !g.as_str().is_some_and(|g| allowed.contains(&g)))
                {
                    return Err(meta(&format!(
                        "{key}: {bad} is not supported (only {})",
                        allowed.join(", ")
                    )));
                }
            }
        }
        if !self.registrations.take() {
            return Err(OAuthError::TemporarilyUnavailable(
                "too many registrations lately; try again later".into(),
            ));
        }
        let name: String = obj
            .get("client_name")
            .and_then(Value::as_str)
            .unwrap_or("unnamed client")
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
        let id = random()?;
        let client = Client {
            id: id.clone(),
            kind: ClientKind::Registered,
            name: name.clone(),
            redirect_uris: uris.clone(),
            created: Timestamp::now(),
            revoked_at: None,
            registration_token: None,
        };
        self.store.clients().insert(&client)?;
        self.event(
            "client_registered",
            json!({"client_id": id, "client_name": name, "redirect_hosts": clients::redirect_hosts(&uris)}),
        )
        .await;
        Ok(json!({
            "client_id": id,
            "client_id_issued_at": client.created.0,
            "client_name": name,
            "redirect_uris": uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
    }

    /// `POST /revoke`: a refresh token ends its family (its client's only); anything else is
    /// answered 200 as RFC 7009 asks (access tokens are short-lived; `moat grants revoke`
    /// refuses them at once).
    pub(super) async fn revoke(&self, headers: &HeaderMap, form: Params) -> Reply {
        let client_id = match self.client_of(headers, &form) {
            Ok(c) => c,
            Err(e) => return reply::error_json(&e),
        };
        let token = match form.require("token") {
            Ok(t) => t,
            Err(e) => return reply::error_json(&e),
        };
        match self.store.grants().family_of(&TokenHash::of(token)) {
            Ok(Some(f)) if f.client_id == client_id => {
                if let Err(e) = self.store.grants().revoke(&f.id) {
                    return reply::error_json(&e.into());
                }
                self.event(
                    "revoked",
                    json!({"sub": f.sub, "client_id": client_id, "family": f.id, "by": "client"}),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => return reply::error_json(&e.into()),
        }
        reply::json(StatusCode::OK, &json!({}))
    }
}
