//! Who the user is: the sign-in form of local users (argon2id hashes in the store), and the
//! browser session that remembers them for `session_ttl`. Posts must come from Moat's own
//! pages (Origin and Fetch Metadata checked) and from the browser that started the request.
use http::{HeaderMap, header};

use super::{
    AuthServer, Identity, Pending,
    error::OAuthError,
    form::{Params, cookie},
    pages, random,
    reply::{self, Reply},
};
use crate::config::Login;

impl AuthServer {
    /// Who is signed in in this browser, if anyone.
    pub(super) fn signed_in(&self, headers: &HeaderMap) -> Option<Identity> {
        let value = cookie(headers, &self.cookie_name("session"))?;
        self.sessions.get(value)
    }

    /// The browser's session (its cookie value) and who is signed in there.
    pub(super) fn session_of(&self, headers: &HeaderMap) -> Option<(String, Identity)> {
        let value = cookie(headers, &self.cookie_name("session"))?;
        let identity = self.sessions.get(value)?;
        Some((value.to_string(), identity))
    }

    /// Sends the browser to sign in for request `id`: Moat's form, or the provider.
    pub(super) async fn begin_login(&self, id: &str) -> Reply {
        match &self.config.login {
            Login::Local => reply::redirect(&reply::with_query(
                &self.url("login"),
                &[("request", id.to_string())],
            )),
            Login::Oidc(_) => self.begin_federated(id).await,
        }
    }

    /// The request `id`, if it is live and this browser started it.
    pub(super) fn pending_for(&self, id: &str, headers: &HeaderMap) -> Result<Pending, OAuthError> {
        let p = self.requests.get(id).ok_or_else(|| {
            OAuthError::InvalidRequest("this sign-in request expired or is unknown".into())
        })?;
        match cookie(headers, &self.cookie_name("browser")) {
            Some(b) if b == p.browser => Ok(p),
            _ => Err(OAuthError::AccessDenied(
                "this request was started in another browser".into(),
            )),
        }
    }

    /// `GET /login?request=ID`
    pub(super) fn login_page(&self, query: Option<&str>, headers: &HeaderMap) -> Reply {
        let shown = Params::parse(query.unwrap_or_default().as_bytes()).and_then(|p| {
            let id = p.require("request")?.to_string();
            Ok((self.pending_for(&id, headers)?, id))
        });
        match shown {
            Ok((p, id)) => reply::html(
                http::StatusCode::OK,
                pages::login(&id, &p.client.name, None),
            ),
            Err(e) => reply::error_page(&e),
        }
    }

    /// `POST /login`: checks the password; on success a session and on to consent.
    pub(super) async fn login_post(&self, headers: &HeaderMap, form: Params) -> Reply {
        if let Err(e) = same_origin(headers, self.issuer()) {
            return reply::error_page(&e);
        }
        let (id, user, password) = match (
            form.require("request"),
            form.require("username"),
            form.require("password"),
        ) {
            (Ok(i), Ok(u), Ok(p)) => (i.to_string(), u.to_string(), p.to_string()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return reply::error_page(&e),
        };
        let pending = match self.pending_for(&id, headers) {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        if !matches!(self.config.login, Login::Local) {
            return reply::error_page(&OAuthError::AccessDenied("local sign-in is off".into()));
        }
        if self.failures.locked(&user) {
            self.event(
                "login_failed",
                serde_json::json!({"sub": user, "client_id": pending.client.id, "method": "local", "locked": true}),
            )
            .await;
            return reply::html(
                http::StatusCode::TOO_MANY_REQUESTS,
                pages::login(
                    &id,
                    &pending.client.name,
                    Some("Too many failed sign-ins for this user; try again later."),
                ),
            );
        }
        let store = self.store.clone();
        let name = user.clone();
        // Each check takes 19 MiB and tens of milliseconds: a few at a time, the others wait.
        let Ok(_permit) = self.hashing.acquire().await else {
            return reply::error_page(&OAuthError::TemporarilyUnavailable("stopping".into()));
        };
        let ok =
            tokio::task::spawn_blocking(move || store.users().verify_password(&name, &password))
                .await
                .map_err(|e| OAuthError::Server(format!("password check: {e}")))
                .and_then(|r| r.map_err(OAuthError::from));
        match ok {
            Ok(true) => self.failures.succeeded(&user),
            Ok(false) => {
                self.failures.failed(&user);
                self.event("login_failed", serde_json::json!({"sub": user, "client_id": pending.client.id, "method": "local"})).await;
                return reply::html(
                    http::StatusCode::OK,
                    pages::login(
                        &id,
                        &pending.client.name,
                        Some("Wrong user name or password."),
                    ),
                );
            }
            Err(e) => return reply::error_page(&e),
        }
        let identity = Identity {
            sub: user.clone(),
            groups: Vec::new(),
            claims: serde_json::Map::new(),
        };
        self.start_session(identity, &id, &pending, "local").await
    }

    /// A new session for `identity` (a new cookie value: never one the browser had before),
    /// then on to consent for request `id`.
    pub(super) async fn start_session(
        &self,
        identity: Identity,
        id: &str,
        pending: &Pending,
        method: &str,
    ) -> Reply {
        let session = match random() {
            Ok(s) => s,
            Err(e) => return reply::error_page(&e),
        };
        self.event(
            "login",
            serde_json::json!({"sub": identity.sub, "client_id": pending.client.id, "method": method}),
        )
        .await;
        if !self.sessions.insert(session.clone(), identity) {
            return reply::error_page(&OAuthError::TemporarilyUnavailable(
                "too many sessions".into(),
            ));
        }
        let next = reply::redirect(&reply::with_query(
            &self.url("consent"),
            &[("request", id.to_string())],
        ));
        reply::with_cookie(
            next,
            &self.set_cookie("session", &session, self.config.session_ttl),
        )
    }
}

/// A post must come from a page of the issuer's own origin: a browser says where a request
/// came from (Origin, Sec-Fetch-Site); a cross-site one is refused (with SameSite cookies,
/// the second line of defence against cross-site request forgery).
pub(super) fn same_origin(headers: &HeaderMap, issuer: &str) -> Result<(), OAuthError> {
    let refused = || OAuthError::AccessDenied("a form of another site was posted here".into());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(refused());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let want = url::Url::parse(issuer).map(|u| u.origin().ascii_serialization());
        if want.ok().as_deref() != origin.to_str().ok() {
            return Err(refused());
        }
    }
    Ok(())
}
