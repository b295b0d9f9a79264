//! Tests of the MCP decoder: JSON-RPC bodies, headers, SSE, and property tests over arbitrary input.
mod decode;
mod headers;
mod limits;
mod props;
mod sse;

use serde_json::Value;

use super::{DecodeError, Decoded, Limits, Revision, decode, jsonrpc::Message};

/// Decodes under 2025-06-18 (no batches) with the default limits.
fn dec(body: &str) -> Result<Decoded, DecodeError> {
    decode(body.as_bytes(), Revision::V2025_06_18, &Limits::default())
}

/// The single message of a body that must decode.
fn one(body: &str) -> Message {
    match dec(body) {
        Ok(d) if !d.batch && d.messages.len() == 1 => d.messages.into_iter().next().unwrap(),
        other => panic!("{body}: {other:?}"),
    }
}

/// A `tools/call` request body with the given params (raw JSON text).
fn call(params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{params}}}"#)
}

fn is_invalid_request(r: &Result<Decoded, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::InvalidRequest { .. }))
}

fn is_invalid_params(r: &Result<Decoded, DecodeError>, id: Option<&Value>) -> bool {
    matches!(r, Err(e @ DecodeError::InvalidParams { .. }) if e.id() == id)
}
