//! What the request asks: a POST's body read whole within its size and time limits, decoded
//! as one JSON-RPC message (or a batch where the revision allows it), checked against the MCP
//! headers and noted in the audit record; a GET (the server's stream) or a DELETE (ending a
//! session), which carry no body.
use bytes::Bytes;
use http::{HeaderMap, Method, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{
    Site,
    admit::Route,
    error::ProxyError,
    fields::{Fields, header_str},
};
use crate::{
    audit::{Mcp, RequestRecord},
    mcp::{self, Decoded, Revision},
    vocab::HttpAction,
};

/// What a request asks of the server.
#[derive(Clone)]
pub enum Asked {
    /// A POST: its JSON-RPC message(s).
    Messages(Decoded),
    /// A GET of the server's stream, or a DELETE of a session.
    Http(HttpAction),
}

impl Asked {
    pub fn decoded(&self) -> Option<&Decoded> {
        match self {
            Asked::Messages(d) => Some(d),
            Asked::Http(_) => None,
        }
    }

    /// The HTTP method the upstream request has.
    pub fn method(&self) -> Method {
        match self {
            Asked::Messages(_) => Method::POST,
            Asked::Http(HttpAction::StreamOpen) => Method::GET,
            Asked::Http(HttpAction::SessionEnd) => Method::DELETE,
        }
    }

    /// The body the upstream gets: the message Moat encoded from what it decoded; none with
    /// a GET or DELETE.
    pub fn body(&self) -> Bytes {
        self.decoded().map_or_else(Bytes::new, |d| d.body.clone())
    }
}

/// Reads what `parts` and `body` ask (routed as `route`); `fields` gets the `Mcp-Name` Moat
/// forwards (its own spelling of what the body names).
pub async fn read(
    site: &Site,
    parts: &http::request::Parts,
    route: Route,
    fields: &mut Fields,
    body: Incoming,
    record: &mut RequestRecord,
) -> Result<Asked, ProxyError> {
    if parts.method == Method::POST {
        let bytes = read_body(site, &parts.headers, body).await?;
        let decoded = decode(site, fields, &bytes, route == Route::Streamable, record)?;
        return Ok(Asked::Messages(decoded));
    }
    // Moat forwards no body with these, so none may come: its framing would reach the
    // upstream as the start of another request.
    let framed = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if framed || !http_body::Body::is_end_stream(&body) {
        drain(body).await;
        return Err(ProxyError::BodyNotAllowed(parts.method.to_string()));
    }
    Ok(Asked::Http(if parts.method == Method::DELETE {
        HttpAction::SessionEnd
    } else {
        HttpAction::StreamOpen
    }))
}

/// Reads the whole body, within the size and time limits; a body over the limit is refused
/// before it is read to the end, and never forwarded.
async fn read_body(site: &Site, headers: &HeaderMap, body: Incoming) -> Result<Bytes, ProxyError> {
    let json = header_str(headers, header::CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ProxyError::UnsupportedMediaType);
    }
    let max = site.server.limits.max_body;
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ProxyError::BodyTooLarge(max));
    }
    let collect = Limited::new(body, max).collect();
    match tokio::time::timeout(site.server.limits.body_timeout, collect).await {
        Err(_) => Err(ProxyError::BodyTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge(max))
        }
        Ok(Err(e)) => Err(ProxyError::ClientBody(e.to_string())),
    }
}

/// Decodes the whole message and checks the headers that must agree with it.
fn decode(
    site: &Site,
    fields: &mut Fields,
    bytes: &[u8],
    streamable: bool,
    record: &mut RequestRecord,
) -> Result<Decoded, ProxyError> {
    let revision = match fields.protocol_version.as_deref() {
        None if streamable => Revision::WITHOUT_HEADER,
        None => Revision::V2024_11_05,
        Some(v) => {
            Revision::from_header(v).ok_or_else(|| ProxyError::BadProtocolVersion(v.into()))?
        }
    };
    let decoded = mcp::decode(bytes, revision, &site.limits)?;
    if let Some(args) = decoded.messages.first().and_then(|m| m.arguments.as_ref()) {
        record.arguments(args);
    }
    // Recorded before the header checks, so a refusal answers with the request's id.
    note_mcp(&decoded, fields.protocol_version.as_deref(), record.mcp());
    for m in &decoded.messages {
        mcp::check_headers(
            m,
            fields.mcp_method.as_deref(),
            fields.mcp_name.as_deref(),
            revision,
        )?;
    }
    // The name the server checks against the body is Moat's spelling of what it decided.
    if fields.mcp_name.is_some() {
        fields.mcp_name = decoded
            .messages
            .first()
            .and_then(|m| m.target())
            .map(mcp::encode_value);
    }
    Ok(decoded)
}

/// The audit record's MCP fields: the first message, and each message of a batch.
fn note_mcp(d: &Decoded, version_header: Option<&str>, mcp: &mut Mcp) {
    if let Some(m) = d.messages.first() {
        mcp.method.clone_from(&m.method);
        mcp.id.clone_from(&m.id);
        mcp.tool.clone_from(&m.tool);
        mcp.resource.clone_from(&m.resource);
        mcp.prompt.clone_from(&m.prompt);
        mcp.protocol_version = version_header
            .map(str::to_string)
            .or_else(|| m.protocol_version.clone());
    }
    if d.batch {
        mcp.batch = Some(
            d.messages
                .iter()
                .map(|m| json!({"method": m.method, "id": m.id, "tool": m.tool}))
                .collect(),
        );
    }
}

/// Reads and discards what is left of a refused request's body (a little, briefly), so that
/// an HTTP/2 client that is still sending it reads the refusal rather than a reset stream.
pub async fn drain(body: Incoming) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        Limited::new(body, 64 * 1024).collect(),
    )
    .await;
}
