//! Who sent a request: the identity a validated access token names.
use serde::Serialize;

/// The caller, from a validated access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub iss: String,
    pub scopes: Vec<String>,
    /// The token's claims (from the JWT, or the introspection answer), for policies; not
    /// audited.
    #[serde(skip)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}
