//! The standard MCP headers (`Mcp-Method`, `Mcp-Name`) checked against the body they travel with.
//!
//! From 2026-07-28 on, a request must carry `Mcp-Method` and, for a method that names something,
//! `Mcp-Name`: the tool for `tools/call`, the prompt for `prompts/get`, the uri for
//! `resources/read`, `resources/subscribe` and `resources/unsubscribe`. Intermediaries may route
//! on them, so a header that disagrees with the body is refused in every revision.
use std::borrow::Cow;

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};

use super::{
    Revision,
    error::{DecodeError, excerpt},
    jsonrpc::{Kind, Message},
};

/// Standard alphabet; padding optional (the decoded value is compared exactly, so leniency here
/// cannot make two different values equal).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Checks the `Mcp-Method` and `Mcp-Name` header values (as received, `None` when absent) against
/// `msg`. A present header must match the body in every revision; from 2026-07-28 on a request
/// must also carry both where they apply (the spec leaves the headers of notifications open).
pub fn check_headers(
    msg: &Message,
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    revision: Revision,
) -> Result<(), DecodeError> {
    let required = revision.requires_standard_headers() && msg.kind == Kind::Request;
    let body_name = msg.target();
    check_one(
        "Mcp-Method",
        mcp_method,
        msg.method.as_deref(),
        required,
        msg,
    )?;
    check_one("Mcp-Name", mcp_name, body_name, required, msg)
}

fn check_one(
    header: &str,
    value: Option<&str>,
    body: Option<&str>,
    required: bool,
    msg: &Message,
) -> Result<(), DecodeError> {
    let mismatch = |reason: String| DecodeError::HeaderMismatch {
        id: msg.id.clone().filter(|_| msg.kind == Kind::Request),
        reason,
    };
    let Some(raw) = value else {
        return match body {
            Some(_) if required => Err(mismatch(format!("{header} header is missing"))),
            _ => Ok(()),
        };
    };
    let mut decoded =
        decode_value(raw).map_err(|why| mismatch(format!("{header} header {why}")))?;
    if header == "Mcp-Name" && msg.resource.is_some() {
        // The body's URI was normalised: the header names the same resource when it
        // normalises to it.
        if let Ok(uri) = super::uri::normalise(&decoded) {
            decoded = Cow::Owned(uri);
        }
    }
    match body {
        Some(body) if body == decoded => Ok(()),
        Some(body) => Err(mismatch(format!(
            "{header} header {} does not match the body's {}",
            excerpt(&decoded),
            excerpt(body)
        ))),
        None => Err(mismatch(format!(
            "{header} header {} given, but the body has no such value",
            excerpt(&decoded)
        ))),
    }
}

/// A header value as the client meant it: `=?base64?<b64>?=` (markers case-sensitive) is decoded
/// to UTF-8; anything else is taken literally and must be visible ASCII, space or tab.
pub(super) fn decode_value(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => {
            let bytes = BASE64.decode(encoded).map_err(|_| "is not valid base64")?;
            String::from_utf8(bytes)
                .map(Cow::Owned)
                .map_err(|_| "does not decode to UTF-8")
        }
        None if raw.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) => {
            Ok(Cow::Borrowed(raw))
        }
        None => Err("has characters that are not visible ASCII (use =?base64?...?=)"),
    }
}

/// A value as a header carries it: as it is when it is visible ASCII (inner spaces allowed),
/// else `=?base64?<b64>?=`.
pub fn encode_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if plain {
        value.to_string()
    } else {
        format!("=?base64?{}?=", BASE64.encode(value))
    }
}
