//! Consent: the page naming the client, where it came from, the servers and the scopes; the
//! answer (only from the browser that started the request, with the page's CSRF token); the
//! consent remembered per user and client; and the authorization code sent to the client.
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{
    AuthServer, Code, Identity, Pending, clients,
    error::OAuthError,
    form::Params,
    login::same_origin,
    pages::{self, ConsentView},
    random,
    reply::{self, Reply},
};

impl AuthServer {
    /// `GET /consent?request=ID`: the page, or straight on when the user allowed it before.
    pub(super) async fn consent_page(&self, query: Option<&str>, headers: &HeaderMap) -> Reply {
        let id = match Params::parse(query.unwrap_or_default().as_bytes())
            .and_then(|p| p.require("request").map(str::to_string))
        {
            Ok(id) => id,
            Err(e) => return reply::error_page(&e),
        };
        let pending = match self.pending_for(&id, headers) {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        let Some(identity) = self.signed_in(headers) else {
            return self.begin_login(&id).await;
        };
        match self.remembered(&identity.sub, &pending) {
            Ok(true) => {
                let Some(pending) = self.requests.take(&id) else {
                    return reply::error_page(&OAuthError::InvalidRequest(
                        "this request was answered already".into(),
                    ));
                };
                return self
                    .issue_code(pending, identity, "remembered", headers)
                    .await;
            }
            Ok(false) => {}
            Err(e) => return reply::error_page(&e),
        }
        let servers = vec![(
            pending.resource.name.clone(),
            pending.resource.audience.clone(),
        )];
        let page = pages::consent(&ConsentView {
            request: &id,
            csrf: &pending.csrf,
            user: &identity.sub,
            client_name: &pending.client.name,
            client_id: &pending.client.id,
            client_origin: &pending.client.origin,
            redirect_host: &clients::redirect_host(&pending.redirect_uri),
            scopes: &pending.scopes,
            servers: &servers,
        });
        reply::html(StatusCode::OK, page)
    }

    /// Whether `sub` allowed this client these scopes for this server before.
    fn remembered(&self, sub: &str, p: &Pending) -> Result<bool, OAuthError> {
        Ok(self
            .store
            .consents()
            .get(sub, &p.client.id)?
            .is_some_and(|c| {
                c.resources.contains(&p.resource.name)
                    && p.scopes.iter().all(|s| c.scopes.contains(s))
            }))
    }

    /// `POST /consent`: the user's answer.
    pub(super) async fn consent_post(&self, headers: &HeaderMap, form: Params) -> Reply {
        if let Err(e) = same_origin(headers, self.issuer()) {
            return reply::error_page(&e);
        }
        let (id, csrf, decision) = match (
            form.require("request"),
            form.require("csrf"),
            form.require("decision"),
        ) {
            (Ok(i), Ok(c), Ok(d)) => (i.to_string(), c.to_string(), d.to_string()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return reply::error_page(&e),
        };
        let pending = match self.pending_for(&id, headers) {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        if !constant_time_eq(csrf.as_bytes(), pending.csrf.as_bytes()) {
            return reply::error_page(&OAuthError::AccessDenied(
                "the consent form is not this request's".into(),
            ));
        }
        let Some(identity) = self.signed_in(headers) else {
            return self.begin_login(&id).await;
        };
        // Answered once: the request is gone for any other answer.
        let Some(pending) = self.requests.take(&id) else {
            return reply::error_page(&OAuthError::InvalidRequest(
                "this request was answered already".into(),
            ));
        };
        match decision.as_str() {
            "allow" => {
                if pending.client.document
                    && let Err(e) = clients::keep_document_client(&self.store, &pending.client)
                {
                    return reply::error_page(&e);
                }
                let mut scopes = pending.scopes.clone();
                let mut resources = vec![pending.resource.name.clone()];
                if let Ok(Some(old)) = self.store.consents().get(&identity.sub, &pending.client.id)
                {
                    scopes.extend(
                        old.scopes
                            .into_iter()
                            .filter(|s| !pending.scopes.contains(s)),
                    );
                    resources.extend(
                        old.resources
                            .into_iter()
                            .filter(|r| *r != pending.resource.name),
                    );
                }
                if let Err(e) = self.store.consents().grant(
                    &identity.sub,
                    &pending.client.id,
                    scopes,
                    resources,
                ) {
                    return reply::error_page(&e.into());
                }
                self.event(
                    "consent_given",
                    json!({"sub": identity.sub, "client_id": pending.client.id, "server": pending.resource.name, "scopes": pending.scopes}),
                )
                .await;
                self.issue_code(pending, identity, "consent", headers).await
            }
            _ => {
                self.event(
                    "consent_refused",
                    json!({"sub": identity.sub, "client_id": pending.client.id, "server": pending.resource.name}),
                )
                .await;
                reply::error_redirect(
                    &OAuthError::AccessDenied("the user refused".into()),
                    &pending.redirect_uri,
                    pending.state.as_deref(),
                    self.issuer(),
                )
            }
        }
    }

    /// Sends the client its authorization code: at once, or, for a server that acts for its
    /// users at a third party the user has not connected, once the browser is back from the
    /// third party's consent (the code is made then, so its lifetime is the client's).
    async fn issue_code(
        &self,
        p: Pending,
        identity: Identity,
        how: &str,
        headers: &HeaderMap,
    ) -> Reply {
        if let Some((url, state)) = self.detour(&identity.sub, &p.resource.name, headers) {
            let resume = super::Resume {
                pending: p,
                identity,
                how: how.to_string(),
            };
            if self.resuming.insert(state, resume) {
                return reply::redirect(&url);
            }
            return reply::error_page(&OAuthError::TemporarilyUnavailable(
                "too many sign-ins under way".into(),
            ));
        }
        self.issue_code_now(p, identity, how).await
    }

    /// Sends the client its authorization code (with `state` and RFC 9207 `iss`).
    pub(super) async fn issue_code_now(&self, p: Pending, identity: Identity, how: &str) -> Reply {
        let back = |e: OAuthError| {
            reply::error_redirect(&e, &p.redirect_uri, p.state.as_deref(), self.issuer())
        };
        let code = match random() {
            Ok(c) => c,
            Err(e) => return back(e),
        };
        let sub = identity.sub.clone();
        let grant = Code {
            client_id: p.client.id.clone(),
            redirect_uri: p.redirect_uri.clone(),
            code_challenge: p.code_challenge.clone(),
            resource: p.resource.clone(),
            scopes: p.scopes.clone(),
            identity,
        };
        if !self.codes.insert(code.clone(), grant) {
            return back(OAuthError::TemporarilyUnavailable(
                "too many codes outstanding".into(),
            ));
        }
        self.event(
            "code_issued",
            json!({"sub": sub, "client_id": p.client.id, "server": p.resource.name, "consent": how}),
        )
        .await;
        let mut params = vec![("code", code)];
        if let Some(s) = &p.state {
            params.push(("state", s.clone()));
        }
        params.push(("iss", self.issuer().to_string()));
        reply::redirect(&reply::with_query(&p.redirect_uri, &params))
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
