//! The MCP-aware HTTP proxy: admit, read and decode the request, forward it, stream the answer.
//! Every request gets exactly one audit record, written when it ends, however it ends.
pub mod admit;
pub mod body;
pub mod error;
pub mod forward;
pub mod legacy;
pub mod listing;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;

use self::{
    admit::Route,
    body::{Audited, ProxyBody, full},
    error::ProxyError,
    forward::UpstreamClient,
};
use crate::{
    audit::{AuditLog, Http, Mcp, RequestRecord},
    config::Server,
    idle::InFlight,
    mcp::{self, Decoded, Revision},
};

/// One protected server, as the proxy serves it.
pub struct Site {
    pub server: Server,
    /// The server's name, shared by every audit record.
    pub name: Arc<str>,
    pub legacy: Arc<legacy::Sessions>,
    pub limits: mcp::Limits,
}

impl Site {
    pub fn new(server: Server) -> Self {
        let limits = mcp::Limits {
            max_body: server.limits.max_body,
            ..mcp::Limits::default()
        };
        Self {
            name: server.name.as_str().into(),
            server,
            legacy: Arc::default(),
            limits,
        }
    }
}

/// What every request handler shares.
pub struct Proxy {
    pub client: UpstreamClient,
    pub audit: AuditLog,
}

/// Who is asking, from the connection.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub dst: SocketAddr,
    /// The TLS version, e.g. `TLSv1_3`; None for plaintext.
    pub tls: Option<Arc<str>>,
}

impl Proxy {
    /// Serves one request; `in_flight` lives as long as its response.
    pub async fn handle(
        &self,
        site: &Site,
        conn: &Conn,
        req: Request<Incoming>,
        in_flight: InFlight,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let http = Http {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            version: version_name(req.version()),
        };
        let mut record = RequestRecord::new(
            &self.audit,
            site.name.clone(),
            conn.peer,
            conn.dst,
            conn.tls.clone(),
            http,
        );
        match self.proxy(site, req, &mut record).await {
            Ok((resp, observer)) => {
                record.answered(resp.status().as_u16());
                let (parts, body) = resp.into_parts();
                Ok(Response::from_parts(
                    parts,
                    ProxyBody::new(Audited::new(body, record, observer, in_flight)),
                ))
            }
            Err(e) => {
                let resp = e.response(record.mcp_id());
                record.fail(resp.status().as_u16(), &e.to_string());
                if let ProxyError::UpstreamConnect(_) | ProxyError::UpstreamTimeout = e {
                    record.upstream_failed(&e.to_string());
                }
                Ok(resp)
            }
        }
    }

    async fn proxy(
        &self,
        site: &Site,
        req: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Result<(Response<Incoming>, Option<Box<dyn body::Observer>>), ProxyError> {
        let server = &site.server;
        admit::check_host(server, req.uri(), req.headers())?;
        admit::check_origin(server, req.headers())?;
        let route = admit::route(server, req.method(), req.uri(), |t| site.legacy.is_live(t))?;
        let session = header_str(req.headers(), "mcp-session-id")
            .or_else(|| {
                req.uri()
                    .path_and_query()
                    .and_then(|pq| legacy::session_of(pq.as_str()))
            })
            .map(str::to_string);
        record.mcp().session.clone_from(&session);

        let (parts, incoming) = req.into_parts();
        let mut lists_tools = false;
        let body = if parts.method == Method::POST {
            let bytes = read_body(site, &parts.headers, incoming).await?;
            let decoded = decode(
                site,
                &parts.headers,
                &bytes,
                route == Route::Streamable,
                record,
            )?;
            lists_tools = decoded
                .messages
                .iter()
                .any(|m| m.method.as_deref() == Some("tools/list"));
            full(bytes)
        } else {
            full(Bytes::new())
        };
        let up = forward::upstream_request(&parts, server.upstream, body);
        let resp = forward::send(&self.client, up, server.limits.upstream_timeout).await?;
        let observer = if !resp.status().is_success() {
            None
        } else if route == Route::LegacyStream {
            Some(site.legacy.observer())
        } else if lists_tools {
            listing::ListObserver::for_content_type(header_str(
                resp.headers(),
                header::CONTENT_TYPE.as_str(),
            ))
        } else {
            None
        };
        Ok((resp, observer))
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
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
    headers: &HeaderMap,
    bytes: &[u8],
    streamable: bool,
    record: &mut RequestRecord,
) -> Result<Decoded, ProxyError> {
    let revision = match header_str(headers, "mcp-protocol-version") {
        None if streamable => Revision::V2025_03_26,
        None => Revision::V2024_11_05,
        Some(v) => {
            Revision::from_header(v).ok_or_else(|| ProxyError::BadProtocolVersion(v.into()))?
        }
    };
    let decoded = mcp::decode(bytes, revision, &site.limits)?;
    // Recorded before the header checks, so a refusal answers with the request's id.
    note_mcp(
        &decoded,
        header_str(headers, "mcp-protocol-version"),
        record.mcp(),
    );
    for m in &decoded.messages {
        mcp::check_headers(
            m,
            header_str(headers, "mcp-method"),
            header_str(headers, "mcp-name"),
            revision,
        )?;
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

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}
