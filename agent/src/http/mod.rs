//! The MCP-aware HTTP proxy: admit, read and decode the request, forward it, stream the answer.
//! Every request gets exactly one audit record, written when it ends, however it ends.
pub mod admit;
pub mod authorize;
pub mod body;
pub mod error;
pub mod filter;
pub mod forward;
pub mod legacy;
pub mod listing;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument as _;

use self::{
    admit::Route,
    body::{Audited, ProxyBody, full},
    error::ProxyError,
};
use crate::{
    admin::{ServerMetrics, TokenOutcome},
    audit::{AuditLog, Http, Mcp, RequestRecord},
    auth::{
        Authenticator, Principal,
        sessions::{Binding, Owner, Sessions},
        upstream::{Credential, JWKS_PATH, UpstreamKeys},
    },
    config::Server,
    idle::InFlight,
    mcp::{self, Decoded, Revision},
    policy::{Live, Process, Rates},
    steer::identity::Identity,
    upstream::pool::{self, Pool},
};

/// One protected server, as the proxy serves it.
pub struct Site {
    pub server: Server,
    /// The server's name, shared by every audit record.
    pub name: Arc<str>,
    pub legacy: Arc<legacy::Sessions>,
    pub limits: mcp::Limits,
    /// The resource server; None only with `dangerous: { unauthenticated: true }`.
    pub auth: Option<Authenticator>,
    /// Streamable HTTP sessions and the principals they belong to.
    pub sessions: Sessions,
    /// What the upstream gets instead of the client's token.
    pub credential: Credential,
    /// Published at JWKS_PATH when the upstream gets JWTs minted by Moat.
    pub upstream_keys: Option<Arc<UpstreamKeys>>,
    /// The Cedar policies deciding each request; None: every authenticated caller may.
    pub policy: Option<Live>,
    pub rates: Rates,
    /// What this server's requests are counted in.
    pub metrics: ServerMetrics,
}

impl Site {
    pub fn new(
        server: Server,
        auth: Option<Authenticator>,
        credential: Credential,
        upstream_keys: Option<Arc<UpstreamKeys>>,
        policy: Option<Live>,
        metrics: ServerMetrics,
    ) -> Self {
        let limits = mcp::Limits {
            max_body: server.limits.max_body,
            ..mcp::Limits::default()
        };
        Self {
            name: server.name.as_str().into(),
            server,
            legacy: Arc::default(),
            limits,
            auth,
            sessions: Sessions::default(),
            credential,
            upstream_keys,
            policy,
            rates: Rates::default(),
            metrics,
        }
    }
}

/// What answers a request: the upstream, or Moat itself (metadata, keys).
enum Answer {
    /// The upstream's response, what watches it, and the policy filter of a list result.
    Upstream(
        Response<pool::Body>,
        Option<Box<dyn body::Observer>>,
        Option<filter::Lister>,
    ),
    Local(Response<ProxyBody>),
}

/// What every request handler shares.
pub struct Proxy {
    /// This worker's upstream connections.
    pub client: Pool,
    pub audit: AuditLog,
    /// Names the local process behind a connection (None if the kernel program is missing).
    pub identity: Option<Arc<Identity>>,
}

/// Who is asking, from the connection.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub dst: SocketAddr,
    /// The TLS version, e.g. `TLSv1_3`; None for plaintext.
    pub tls: Option<Arc<str>>,
    /// The local process that opened it, when it came from this host.
    pub process: Option<Arc<Process>>,
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
            conn.process.clone(),
            http,
        );
        record.count_in(site.metrics.clone());
        // Log lines written while the request is served carry its audit record's id.
        let span = tracing::info_span!("request", request_id = %record.id(), server = %site.name);
        match self
            .proxy(site, conn, req, &mut record)
            .instrument(span.clone())
            .await
        {
            Ok(Answer::Local(resp)) => {
                record.answered_locally(resp.status().as_u16());
                Ok(resp)
            }
            Ok(Answer::Upstream(resp, observer, lister)) => {
                record.answered(resp.status().as_u16());
                let (mut parts, body) = resp.into_parts();
                let content_type = header_str(&parts.headers, header::CONTENT_TYPE.as_str());
                let body = match lister {
                    None => ProxyBody::new(Audited::new(body, record, observer, in_flight)),
                    Some(l) => match filter::Filtered::new(body, l, content_type) {
                        Some(f) => {
                            parts.headers.remove(header::CONTENT_LENGTH);
                            ProxyBody::new(Audited::new(f, record, observer, in_flight))
                        }
                        // Neither JSON nor SSE: no list in it to filter.
                        None => ProxyBody::new(Audited::new(
                            http_body_util::Empty::new().map_err(|never| match never {}),
                            record,
                            observer,
                            in_flight,
                        )),
                    },
                };
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                let resp = e.response(record.mcp_id());
                record.fail(resp.status().as_u16(), &e.to_string());
                if let ProxyError::Auth { .. } | ProxyError::Session(_) = e {
                    record.deny(e.to_string());
                }
                if let ProxyError::UpstreamConnect(_) | ProxyError::UpstreamTimeout = e {
                    span.in_scope(|| tracing::warn!(upstream = %site.server.upstream, "{e}"));
                    record.upstream_failed(&e.to_string());
                }
                Ok(resp)
            }
        }
    }

    async fn proxy(
        &self,
        site: &Site,
        conn: &Conn,
        req: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Result<Answer, ProxyError> {
        let server = &site.server;
        let (parts, incoming) = req.into_parts();
        // Nothing goes through unaudited.
        if !self.audit.accepting() {
            drain(incoming).await;
            return Err(ProxyError::AuditUnavailable);
        }
        let Admitted {
            route,
            session,
            principal,
        } = match admit(site, &parts, record).await {
            Ok(Ok(a)) => a,
            Ok(Err(local)) => return Ok(Answer::Local(local)),
            Err(e) => {
                drain(incoming).await;
                return Err(e);
            }
        };
        let mut list = None;
        let body = if parts.method == Method::POST {
            let bytes = read_body(site, &parts.headers, incoming).await?;
            let decoded = decode(
                site,
                &parts.headers,
                &bytes,
                route == Route::Streamable,
                record,
            )?;
            if let Some(p) = &principal {
                authorize::authorize(site, conn, p, session.as_deref(), &decoded, record)?;
            }
            list = decoded
                .messages
                .iter()
                .find_map(|m| m.method.as_deref().and_then(filter::List::of_method));
            full(bytes)
        } else {
            full(Bytes::new())
        };
        let mut up = forward::upstream_request(&parts, server.upstream, body);
        if let Some((name, value)) = site.credential.header(principal.as_deref()) {
            up.headers_mut().insert(name, value);
        }
        // Each principal's requests go on connections of their own.
        let key = pool::Key {
            addr: server.upstream,
            principal: principal.as_deref().map(Owner::from),
        };
        let resp = forward::send(&self.client, key, up, server.limits.upstream_timeout).await?;
        if let Some(p) = &principal
            && route == Route::Streamable
            && resp.status().is_success()
        {
            if let Some(id) = header_str(resp.headers(), "mcp-session-id") {
                site.sessions.bind(id, p);
            } else if parts.method == Method::DELETE
                && let Some(id) = &session
            {
                site.sessions.end(id);
            }
        }
        let observer = if !resp.status().is_success() {
            None
        } else if route == Route::LegacyStream {
            Some(site.legacy.observer(principal.as_deref().map(Owner::from)))
        } else if matches!(list, Some(filter::List::Tools)) {
            listing::ListObserver::for_content_type(header_str(
                resp.headers(),
                header::CONTENT_TYPE.as_str(),
            ))
        } else {
            None
        };
        let lister = match (list, &site.policy, &principal) {
            (Some(list), Some(live), Some(p)) if resp.status().is_success() => {
                Some(filter::Lister {
                    list,
                    engine: live.current(),
                    server: site.name.clone(),
                    principal: p.clone(),
                    source_ip: conn.peer.ip(),
                    tls: conn.tls.clone(),
                    session: session.clone(),
                    process: conn.process.clone(),
                })
            }
            _ => None,
        };
        Ok(Answer::Upstream(resp, observer, lister))
    }
}

/// A request that may go on to its body: where it goes, its session, who sent it.
struct Admitted {
    route: Route,
    session: Option<String>,
    principal: Option<Arc<Principal>>,
}

/// The checks on a request's head: the host, documents Moat serves itself (the `Err` of the
/// inner result), the origin, the route, the token and the session.
async fn admit(
    site: &Site,
    parts: &http::request::Parts,
    record: &mut RequestRecord,
) -> Result<Result<Admitted, Response<ProxyBody>>, ProxyError> {
    let server = &site.server;
    admit::check_host(server, &parts.uri, &parts.headers)?;
    if let Some(resp) = local_answer(site, parts) {
        return Ok(Err(resp));
    }
    admit::check_origin(server, &parts.headers)?;
    let route = admit::route(server, &parts.method, &parts.uri, |t| {
        site.legacy.is_live(t)
    })?;
    let session = header_str(&parts.headers, "mcp-session-id")
        .or_else(|| {
            parts
                .uri
                .path_and_query()
                .and_then(|pq| legacy::session_of(pq.as_str()))
        })
        .map(str::to_string);
    record.mcp().session.clone_from(&session);
    let principal = match &site.auth {
        Some(a) => {
            let checked = a.authenticate(&parts.headers, &parts.uri).await;
            site.metrics.token(match &checked {
                Ok((_, true)) => TokenOutcome::Cached,
                Ok((_, false)) => TokenOutcome::Valid,
                Err(e) => TokenOutcome::of_error(e),
            });
            let (p, _) = checked.map_err(|error| ProxyError::Auth {
                challenge: a.challenge(&error),
                error,
            })?;
            record.principal(p.clone());
            Some(p)
        }
        None => None,
    };
    if let Some(p) = &principal {
        check_session(site, route, &parts.uri, session.as_deref(), p)?;
    }
    Ok(Ok(Admitted {
        route,
        session,
        principal,
    }))
}

/// Reads and discards what is left of a refused request's body (a little, briefly), so that
/// an HTTP/2 client that is still sending it reads the refusal rather than a reset stream.
async fn drain(body: Incoming) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        Limited::new(body, 64 * 1024).collect(),
    )
    .await;
}

/// A session id must belong to the principal presenting it: on the Streamable HTTP endpoint,
/// one Moat saw the upstream issue to them; on a legacy message URL, one whose stream they
/// opened.
fn check_session(
    site: &Site,
    route: Route,
    uri: &http::Uri,
    session: Option<&str>,
    p: &Principal,
) -> Result<(), ProxyError> {
    match route {
        Route::LegacyMessage => {
            let target = uri.path_and_query().map_or("", |pq| pq.as_str());
            match site.legacy.owner(target) {
                Some(Some(owner)) if owner == Owner::from(p) => Ok(()),
                Some(_) => Err(ProxyError::Session("belongs to another principal")),
                None => Err(ProxyError::UnknownSession),
            }
        }
        Route::Streamable => match session.map(|id| site.sessions.check(id, p)) {
            None | Some(Binding::Own) => Ok(()),
            Some(Binding::Foreign) => Err(ProxyError::Session("belongs to another principal")),
            Some(Binding::Unknown) => Err(ProxyError::Session("was not created through Moat")),
        },
        Route::LegacyStream => Ok(()),
    }
}

/// Documents Moat serves itself, to anyone: the protected resource metadata (RFC 9728) and
/// the public keys of the JWTs it mints for the upstream.
fn local_answer(site: &Site, req: &http::request::Parts) -> Option<Response<ProxyBody>> {
    let path = req.uri.path();
    let document = if let Some(a) = site.auth.as_ref().filter(|a| a.metadata.serves(path)) {
        a.metadata.document.clone()
    } else if let Some(k) = site.upstream_keys.as_ref().filter(|_| path == JWKS_PATH) {
        k.jwks()
    } else {
        return None;
    };
    let any = http::HeaderValue::from_static("*");
    let allow = http::HeaderValue::from_static("GET, HEAD, OPTIONS");
    let b = Response::builder().header(header::ACCESS_CONTROL_ALLOW_ORIGIN, any);
    let resp = match req.method {
        Method::GET | Method::HEAD => b
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "max-age=300")
            .body(full(if req.method == Method::GET {
                document
            } else {
                Bytes::new()
            })),
        Method::OPTIONS => b
            .status(http::StatusCode::NO_CONTENT)
            .header(header::ACCESS_CONTROL_ALLOW_METHODS, allow)
            .body(full(Bytes::new())),
        _ => b
            .status(http::StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, allow)
            .body(full(Bytes::new())),
    };
    resp.ok()
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
    if let Some(args) = decoded.messages.first().and_then(|m| m.arguments.as_ref()) {
        record.arguments(args);
    }
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
