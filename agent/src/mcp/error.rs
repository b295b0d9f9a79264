//! Decode errors, their JSON-RPC codes, and JSON-RPC error bodies.
use serde_json::{Value, json};

use super::Revision;

/// Why a body or its headers were refused. Each maps to a JSON-RPC error code
/// ([`DecodeError::jsonrpc_code`]) and, where the request's id was readable, carries it ([`DecodeError::id`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("request too large: {size} {unit}, the limit is {limit}")]
    TooLarge {
        size: usize,
        limit: usize,
        unit: &'static str,
    },
    #[error("parse error: {0}")]
    Parse(String),
    #[error("request too deeply nested: the limit is {limit} levels")]
    TooDeep { limit: usize },
    #[error("invalid request: {reason}")]
    InvalidRequest { id: Option<Value>, reason: String },
    #[error("invalid params: {reason}")]
    InvalidParams { id: Option<Value>, reason: String },
    #[error("invalid request: JSON-RPC batches are not allowed in protocol revision {revision}")]
    BatchNotAllowed { revision: Revision },
    #[error("header mismatch: {reason}")]
    HeaderMismatch { id: Option<Value>, reason: String },
}

impl DecodeError {
    /// The JSON-RPC error code to answer with.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            DecodeError::Parse(_) => -32700,
            DecodeError::TooLarge { .. }
            | DecodeError::TooDeep { .. }
            | DecodeError::InvalidRequest { .. }
            | DecodeError::BatchNotAllowed { .. } => -32600,
            DecodeError::InvalidParams { .. } => -32602,
            DecodeError::HeaderMismatch { .. } => -32020,
        }
    }

    /// The id of the request the error is about, when it could be read (a string or an integer).
    #[cfg(test)]
    pub fn id(&self) -> Option<&Value> {
        match self {
            DecodeError::InvalidRequest { id, .. }
            | DecodeError::InvalidParams { id, .. }
            | DecodeError::HeaderMismatch { id, .. } => id.as_ref(),
            _ => None,
        }
    }
}

/// `{"jsonrpc":"2.0","id":<id or null>,"error":{"code":<code>,"message":<message>}}`.
pub fn error_body(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    })
}

/// A client-supplied string for an error message: quoted, escaped, at most 64 characters.
pub(super) fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}
