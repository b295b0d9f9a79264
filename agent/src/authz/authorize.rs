//! The authorization request (`GET /authorize`): the client and its redirect URI are checked
//! first (if either is wrong, nothing is redirected: the user sees an error page), then the
//! rest (PKCE S256, the `resource`, scopes), whose errors go back to the client. A checked
//! request waits for the user to sign in and consent.
use http::HeaderMap;

use super::{
    AuthServer, Pending, clients,
    error::OAuthError,
    form::{Params, cookie},
    random,
    reply::{self, Reply},
};
use crate::vocab::{redirect_uri_matches, redirect_uri_ok};

/// Longest `state` accepted (it comes back to the client as it was sent).
const MAX_STATE: usize = 2048;

impl AuthServer {
    pub(super) async fn authorize(&self, query: Option<&str>, headers: &HeaderMap) -> Reply {
        let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
            Ok(p) => p,
            Err(e) => return reply::error_page(&e),
        };
        // Who the client is, and where it may be sent: until both are known, only a page.
        let client_id = match params.require("client_id") {
            Ok(c) => c,
            Err(e) => return reply::error_page(&e),
        };
        let client = match clients::resolve(&self.store, self.cimd.as_ref(), client_id).await {
            Ok(c) => c,
            Err(e) => return reply::error_page(&e),
        };
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return reply::error_page(&OAuthError::InvalidRequest(
                "missing parameter `redirect_uri` (required here)".into(),
            ));
        };
        let registered = client
            .redirect_uris
            .iter()
            .any(|r| redirect_uri_matches(r, redirect_uri));
        if !registered || redirect_uri_ok(redirect_uri).is_err() {
            return reply::error_page(&OAuthError::InvalidRequest(format!(
                "redirect_uri {redirect_uri:?} is not one client {:?} registered",
                client.id
            )));
        }
        let state = params.get("state");
        let back = |e: OAuthError| reply::error_redirect(&e, redirect_uri, state, self.issuer());
        if state.is_some_and(|s| s.len() > MAX_STATE) {
            return back(OAuthError::InvalidRequest("`state` is too long".into()));
        }
        let pending = match self.check(&params, client, redirect_uri, state) {
            Ok(p) => p,
            Err(e) => return back(e),
        };
        // The browser that asks is the one that must answer (its own cookie, set here once).
        let browser_cookie = self.cookie_name("browser");
        let (browser, new_browser) = match cookie(headers, &browser_cookie) {
            Some(b) if b.len() == 43 => (b.to_string(), false),
            _ => match random() {
                Ok(b) => (b, true),
                Err(e) => return back(e),
            },
        };
        let id = match random() {
            Ok(id) => id,
            Err(e) => return back(e),
        };
        let pending = Pending {
            browser: browser.clone(),
            ..pending
        };
        if !self.requests.insert(id.clone(), pending) {
            return back(OAuthError::TemporarilyUnavailable(
                "too many authorization requests in progress".into(),
            ));
        }
        let next = match self.signed_in(headers) {
            Some(_) => {
                reply::redirect(&reply::with_query(&self.url("consent"), &[("request", id)]))
            }
            None => self.begin_login(&id).await,
        };
        if new_browser {
            let week = std::time::Duration::from_secs(7 * 86_400);
            reply::with_cookie(next, &self.set_cookie("browser", &browser, week))
        } else {
            next
        }
    }

    /// The rest of the request, once the client and redirect URI are trusted.
    fn check(
        &self,
        params: &Params,
        client: clients::ClientInfo,
        redirect_uri: &str,
        state: Option<&str>,
    ) -> Result<Pending, OAuthError> {
        match params.require("response_type")? {
            "code" => {}
            other => {
                return Err(OAuthError::UnsupportedResponseType(format!(
                    "response_type {other:?}: only `code` is supported"
                )));
            }
        }
        let challenge = params.get("code_challenge").ok_or_else(|| {
            OAuthError::InvalidRequest("PKCE is required: missing `code_challenge`".into())
        })?;
        if params.get("code_challenge_method") != Some("S256") {
            return Err(OAuthError::InvalidRequest(
                "PKCE: `code_challenge_method` must be S256".into(),
            ));
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(OAuthError::InvalidRequest(
                "PKCE: `code_challenge` is not a base64url SHA-256".into(),
            ));
        }
        let audience = params.get("resource").ok_or_else(|| {
            OAuthError::InvalidTarget(
                "missing `resource` (RFC 8707): name the MCP server the token is for".into(),
            )
        })?;
        let resource = self
            .resource(audience)
            .ok_or_else(|| {
                OAuthError::InvalidTarget(format!("{audience:?} is not a server of this issuer"))
            })?
            .clone();
        let scopes = requested_scopes(params.get("scope"), &resource.scopes_supported)?;
        Ok(Pending {
            client,
            redirect_uri: redirect_uri.to_string(),
            state: state.map(str::to_string),
            code_challenge: challenge.to_string(),
            resource,
            scopes,
            browser: String::new(),
            csrf: random()?,
        })
    }
}

/// The scopes asked for, each one the server supports; none asked: all it supports.
pub(super) fn requested_scopes(
    scope: Option<&str>,
    supported: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(scope) = scope else {
        return Ok(supported.to_vec());
    };
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !supported.is_empty() && !supported.iter().any(|x| x == s) {
            return Err(OAuthError::InvalidScope(format!(
                "scope {s:?} is not offered (supported: {})",
                supported.join(" ")
            )));
        }
        if !crate::config::scope_token(s) {
            return Err(OAuthError::InvalidScope(format!("{s:?} is not a scope")));
        }
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}
