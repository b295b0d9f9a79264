//! What a client learns before it has a token: the protected resource metadata (RFC 9728) and
//! the `WWW-Authenticate` challenges (RFC 6750) that point to it.
use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;

use super::AuthError;
use crate::config::{Auth, scope_token};

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

pub struct Metadata {
    /// Where the challenge says the metadata is (the path-inserted form).
    pub url: String,
    /// The paths it is served at: the path-inserted form and the root form.
    pub paths: [String; 2],
    pub document: Bytes,
    /// The `scope` of a challenge without a token: the required scopes, else those supported.
    scope: String,
}

impl Metadata {
    pub fn new(config: &Auth, public_url: &str, endpoint: &str) -> Self {
        let origin_end = public_url
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| public_url[start..].find('/').map(|j| start + j))
            .unwrap_or(public_url.len());
        let origin = &public_url[..origin_end];
        let path = match &public_url[origin_end..] {
            "" | "/" => endpoint,
            p => p,
        };
        let inserted = if path == "/" {
            WELL_KNOWN.to_string()
        } else {
            format!("{WELL_KNOWN}{path}")
        };
        let document = json!({
            "resource": public_url,
            "authorization_servers": config.authorization_servers,
            "scopes_supported": config.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        let scope = if config.required_scopes.is_empty() {
            &config.scopes_supported
        } else {
            &config.required_scopes
        };
        Self {
            url: format!("{origin}{inserted}"),
            paths: [inserted, WELL_KNOWN.to_string()],
            document: Bytes::from(document.to_string()),
            scope: scope.join(" "),
        }
    }

    pub fn serves(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// The `WWW-Authenticate` value for a refusal; none when the keys are unavailable (the
    /// client can do nothing about that).
    pub fn challenge(&self, e: &AuthError) -> Option<HeaderValue> {
        let mut v = String::from("Bearer ");
        if let Some(code) = e.code() {
            v.push_str(&format!("error=\"{code}\", "));
        }
        match e {
            AuthError::Unavailable(_) => return None,
            AuthError::Missing => {}
            AuthError::BadRequest(why) => v.push_str(&format!("error_description=\"{why}\", ")),
            AuthError::Invalid(why) => {
                v.push_str(&format!("error_description=\"token {why}\", "));
            }
            AuthError::InsufficientScope { granted, missing } => {
                // Granted scopes come from the token: only well-formed ones are repeated.
                let all: Vec<&str> = granted
                    .iter()
                    .chain(missing)
                    .map(String::as_str)
                    .filter(|s| scope_token(s))
                    .collect();
                v.push_str(&format!("scope=\"{}\", ", all.join(" ")));
            }
        }
        v.push_str(&format!("resource_metadata=\"{}\"", self.url));
        if matches!(e, AuthError::Missing) && !self.scope.is_empty() {
            v.push_str(&format!(", scope=\"{}\"", self.scope));
        }
        HeaderValue::from_str(&v).ok()
    }
}
