//! `upstream_auth: { oauth2: ... }`: the server acts for each user at a third party; Moat runs
//! the third party's authorization (code flow with PKCE) for the user, keeps their tokens, and
//! gives the upstream the token of the user each request is from.
use std::path::PathBuf;

use super::{
    values::{absolute_path, fetch_url, scopes},
    yaml::{Node, Report},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2 {
    /// Given, or read from the provider's metadata (see `discovery`) when the agent starts.
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// The provider's issuer and the URL of its metadata (RFC 8414 or OpenID discovery),
    /// instead of the endpoints.
    pub discovery: Option<(String, String)>,
    /// RFC 7009; tokens are revoked there when a user's grants are revoked.
    pub revocation_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub scopes: Vec<String>,
    /// RFC 8707 `resource`, sent in the authorization and token requests when given.
    pub resource: Option<String>,
    /// The header the token goes in: `Authorization` (as `Bearer TOKEN`, the default), or
    /// another name (the token as it is).
    pub header: http::HeaderName,
    /// CA certificates (PEM) trusted for the provider, besides the system's.
    pub ca_file: Option<PathBuf>,
}

pub(super) fn read_oauth2(n: &Node<'_>, r: &mut Report) -> Option<OAuth2> {
    let m = n.mapping(
        &[
            "authorization_endpoint",
            "token_endpoint",
            "issuer",
            "metadata_url",
            "revocation_endpoint",
            "client_id",
            "client_secret_file",
            "scopes",
            "resource",
            "header",
            "ca_file",
        ],
        r,
    )?;
    let url = |key: &str, r: &mut Report| m.require(key, r).and_then(|v| fetch_url(v, r));
    let discovery = match (m.get("metadata_url"), m.get("issuer")) {
        (None, None) => Some(None),
        (Some(u), Some(i)) => {
            for k in [
                "authorization_endpoint",
                "token_endpoint",
                "revocation_endpoint",
            ] {
                if let Some(v) = m.get(k) {
                    r.add(
                        v,
                        "read from `metadata_url`: give either the endpoints or it",
                    );
                }
            }
            match (fetch_url(i, r), fetch_url(u, r)) {
                (Some(i), Some(u)) => Some(Some((i, u))),
                _ => None,
            }
        }
        _ => {
            r.add(&m.at, "`metadata_url` and `issuer` go together");
            None
        }
    };
    let (authorization_endpoint, token_endpoint) = match &discovery {
        Some(Some(_)) => (Some(String::new()), Some(String::new())),
        _ => (url("authorization_endpoint", r), url("token_endpoint", r)),
    };
    let revocation_endpoint = match m.get("revocation_endpoint") {
        Some(v) => fetch_url(v, r).map(Some),
        None => Some(None),
    };
    let client_id = m.require("client_id", r).and_then(|v| v.string(r));
    let client_secret_file = m
        .require("client_secret_file", r)
        .and_then(|v| absolute_path(v, r));
    let scopes = scopes(m.get("scopes"), r);
    let resource = match m.get("resource") {
        Some(v) => v.string(r).map(Some),
        None => Some(None),
    };
    let header = match m.get("header") {
        None => Some(http::header::AUTHORIZATION),
        Some(v) => v
            .string(r)
            .and_then(|h| match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    r.add(v, format!("{h:?} is not a valid header name"));
                    None
                }
            }),
    };
    let ca_file = match m.get("ca_file") {
        Some(v) => absolute_path(v, r).map(Some),
        None => Some(None),
    };
    Some(OAuth2 {
        authorization_endpoint: authorization_endpoint?,
        token_endpoint: token_endpoint?,
        discovery: discovery?,
        revocation_endpoint: revocation_endpoint?,
        client_id: client_id?,
        client_secret_file: client_secret_file?,
        scopes: scopes?,
        resource: resource?,
        header: header?,
        ca_file: ca_file?,
    })
}
