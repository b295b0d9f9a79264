//! What the authorization server publishes: its RFC 8414 metadata (also at the OpenID
//! discovery paths MCP clients try) and its JWKS.
use serde_json::{Value, json};

use super::AuthServer;
use crate::config::Dynamic;

impl AuthServer {
    pub(super) fn metadata(&self) -> Value {
        let mut scopes: Vec<&str> = Vec::new();
        for r in &self.resources {
            for s in &r.scopes_supported {
                if !scopes.contains(&s.as_str()) {
                    scopes.push(s);
                }
            }
        }
        let mut m = json!({
            "issuer": self.issuer(),
            "authorization_endpoint": self.url("authorize"),
            "token_endpoint": self.url("token"),
            "revocation_endpoint": self.url("revoke"),
            "jwks_uri": self.url("jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": scopes,
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": self.cimd.is_some(),
            // OpenID discovery asks for these; Moat issues access tokens, no ID tokens.
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        if self.config.registration.dynamic != Dynamic::Off {
            m["registration_endpoint"] = json!(self.url("register"));
        }
        m
    }

    pub(super) fn jwks(&self) -> Value {
        self.signer.jwks()
    }
}
