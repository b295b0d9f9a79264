//! The MCP-aware HTTP proxy: admit, read and decode the request, forward it, stream the answer.
//! Every request gets exactly one audit record, written when it ends, however it ends.
pub mod admit;
pub mod answers;
pub mod authorize;
pub mod body;
pub mod error;
pub mod fields;
pub mod filter;
pub mod forward;
pub mod legacy;
#[cfg(test)]
mod tests;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument as _;

use self::{
    admit::Route,
    authorize::Ask,
    body::{Audited, ProxyBody, Reader, full},
    error::ProxyError,
    fields::Fields,
    filter::{List, Lister},
    forward::{Outgoing, UpstreamClient},
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
    mcp::{self, Decoded, Kind, Revision},
    policy::{Live, Process, Rates, SESSION_END, STREAM_OPEN},
    steer::identity::Identity,
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

/// What answers a request.
enum Answer {
    /// The upstream's response, streamed through the reader, if any. `on_end` takes the
    /// record when the response ends (a legacy request answered later on its stream).
    Upstream {
        resp: Response<Incoming>,
        reader: Option<Box<dyn Reader>>,
        on_end: Option<body::OnEnd>,
    },
    /// A response Moat built whole: its own documents and answers (`upstream` None), or an
    /// upstream result it read whole (`upstream`: the status the upstream answered with).
    Whole {
        resp: Response<ProxyBody>,
        upstream: Option<u16>,
    },
}

/// What every request handler shares.
pub struct Proxy {
    pub client: UpstreamClient,
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
            Ok(Answer::Whole {
                resp,
                upstream: None,
            }) => {
                record.answered_locally(resp.status().as_u16());
                Ok(resp)
            }
            Ok(Answer::Whole {
                resp,
                upstream: Some(status),
            }) => {
                record.answered(status);
                record.complete();
                Ok(resp)
            }
            Ok(Answer::Upstream {
                resp,
                reader,
                on_end,
            }) => {
                record.answered(resp.status().as_u16());
                let (mut parts, body) = resp.into_parts();
                if reader.as_ref().is_some_and(|r| r.rewrites()) {
                    // The reader may change what passes.
                    parts.headers.remove(header::CONTENT_LENGTH);
                } else if http_body::Body::is_end_stream(&body) {
                    // Nothing to send after the head (a 202, `Content-Length: 0`): hyper may
                    // never poll such a body, and the response is complete once it is sent.
                    record.complete();
                }
                let mut body = Audited::new(body, record, reader, in_flight);
                if let Some(f) = on_end {
                    body = body.on_end(f);
                }
                Ok(Response::from_parts(parts, ProxyBody::new(body)))
            }
            Err(e) => {
                let resp = e.response(record.mcp_id());
                record.fail(resp.status().as_u16(), &e.to_string());
                if let ProxyError::Auth { .. } | ProxyError::Session(_) = e {
                    record.deny(e.to_string());
                }
                match &e {
                    ProxyError::UpstreamConnect(_) | ProxyError::UpstreamTimeout => {
                        span.in_scope(|| tracing::warn!(upstream = %site.server.upstream, "{e}"));
                        record.upstream_failed(&e.to_string());
                    }
                    ProxyError::UpstreamUnreadable(_) => {
                        span.in_scope(|| tracing::warn!(upstream = %site.server.upstream, "{e}"));
                    }
                    _ => {}
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
            target,
            mut fields,
            principal,
        } = match admit(site, &parts, record).await {
            Ok(Ok(a)) => a,
            Ok(Err(local)) => {
                return Ok(Answer::Whole {
                    resp: local,
                    upstream: None,
                });
            }
            Err(e) => {
                drain(incoming).await;
                return Err(e);
            }
        };
        let legacy = match route {
            Route::LegacyMessage => {
                Some(site.legacy.get(&target).ok_or(ProxyError::UnknownSession)?)
            }
            _ => None,
        };
        let session_id = fields.session.clone();
        let session = session_id.as_deref();
        let lister = |list: List| -> Option<Lister> {
            let (live, p) = (site.policy.as_ref()?, principal.as_ref()?);
            Some(Lister {
                list,
                engine: live.current(),
                server: site.name.clone(),
                principal: p.clone(),
                source_ip: conn.peer.ip(),
                tls: conn.tls.clone(),
                session: session_id.clone(),
                process: conn.process.clone(),
            })
        };
        if principal.is_none() {
            record.allow("the server is unauthenticated (dangerous.unauthenticated): anyone may");
        }
        let mut list = None;
        let mut decoded = None;
        let body = if parts.method == Method::POST {
            let bytes = read_body(site, &parts.headers, incoming).await?;
            let d = decode(
                site,
                &mut fields,
                &bytes,
                route == Route::Streamable,
                record,
            )?;
            if let Some(p) = &principal {
                let decided =
                    authorize::authorize(site, conn, p, session, Ask::messages(&d), record);
                if let (Err(e), Some(legacy)) = (&decided, &legacy)
                    && let Some(resp) = answer_on_stream(legacy, &d, e, record)
                {
                    return Ok(Answer::Whole {
                        resp,
                        upstream: None,
                    });
                }
                decided?;
            }
            list = d
                .messages
                .iter()
                .find_map(|m| m.method.as_deref().and_then(List::of_method));
            let body = d.body.clone();
            decoded = Some(d);
            body
        } else {
            // Moat forwards no body with these, so none may come: its framing would reach
            // the upstream as the start of another request.
            let framed = parts.headers.contains_key(header::TRANSFER_ENCODING)
                || parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != b"0");
            if framed || !http_body::Body::is_end_stream(&incoming) {
                drain(incoming).await;
                return Err(ProxyError::BodyNotAllowed(parts.method.to_string()));
            }
            if let Some(p) = &principal {
                let action = if parts.method == Method::DELETE {
                    SESSION_END
                } else {
                    STREAM_OPEN
                };
                authorize::authorize(site, conn, p, session, [Ask::http(action)], record)?;
            }
            Bytes::new()
        };
        // On a legacy session the answers come on the stream: note what is expected there.
        let requests: Vec<&serde_json::Value> = match (&legacy, &decoded) {
            (Some(legacy), Some(d)) => {
                let expected = d
                    .messages
                    .iter()
                    .filter(|m| m.kind == Kind::Request)
                    .filter_map(|m| {
                        let l = m.method.as_deref().and_then(List::of_method);
                        Some((m.id.as_ref()?, l.map(|l| (l, lister(l)))))
                    })
                    .collect::<Vec<_>>();
                let ids = expected.iter().map(|(id, _)| *id).collect();
                legacy.expect(expected)?;
                ids
            }
            _ => Vec::new(),
        };
        let up = forward::upstream_request(
            &Outgoing {
                method: &parts.method,
                target: &target,
                fields: &fields,
                origin: parts.headers.contains_key(header::ORIGIN),
                credential: site.credential.header(principal.as_deref()),
            },
            server.upstream,
            body,
        );
        let sent = forward::send(&self.client, up, server.limits.upstream_timeout).await;
        let resp = match sent.and_then(check_encoding) {
            Ok(r) => r,
            Err(e) => {
                if let Some(legacy) = &legacy {
                    legacy.forget(requests.iter().copied());
                }
                return Err(e);
            }
        };
        if let Some(p) = &principal
            && route == Route::Streamable
            && resp.status().is_success()
        {
            if let Some(id) = header_str(resp.headers(), "mcp-session-id") {
                site.sessions.bind(id, p);
            } else if parts.method == Method::DELETE
                && let Some(id) = session
            {
                site.sessions.end(id);
            }
        }
        if let Some(legacy) = &legacy {
            if !resp.status().is_success() {
                // Answered here, not on the stream.
                legacy.forget(requests.iter().copied());
            } else if let Some(d) = &decoded {
                // A cancelled request is not answered.
                for m in &d.messages {
                    if let Some(id) = &m.cancels {
                        legacy.forget([id]);
                    }
                }
            }
        }
        if !resp.status().is_success() {
            return Ok(Answer::Upstream {
                resp,
                reader: None,
                on_end: None,
            });
        }
        if route == Route::LegacyStream {
            expect_content_type(&resp, "text/event-stream")?;
            let owner = principal.as_deref().map(Owner::from);
            return Ok(Answer::Upstream {
                resp,
                reader: Some(site.legacy.stream(owner)),
                on_end: None,
            });
        }
        if let Some(legacy) = legacy {
            // The result comes on the stream: a list's record waits for it there.
            let list_id = decoded.as_ref().and_then(|d| {
                d.messages
                    .iter()
                    .find(|m| m.method.as_deref().and_then(List::of_method).is_some())
                    .and_then(|m| m.id.clone())
            });
            let on_end = list_id
                .map(|id| -> body::OnEnd { Box::new(move |record| legacy.park(&id, record)) });
            return Ok(Answer::Upstream {
                resp,
                reader: None,
                on_end,
            });
        }
        let Some(list) = list else {
            // An event stream is complete once the requests' answers have passed.
            let ids: Vec<serde_json::Value> = decoded
                .iter()
                .flat_map(|d| &d.messages)
                .filter(|m| m.kind == Kind::Request)
                .filter_map(|m| m.id.clone())
                .collect();
            let stream = content_type(resp.headers()).as_deref() == Some("text/event-stream");
            let reader: Option<Box<dyn Reader>> = (stream && !ids.is_empty())
                .then(|| Box::new(answers::Answers::new(ids)) as Box<dyn Reader>);
            return Ok(Answer::Upstream {
                resp,
                reader,
                on_end: None,
            });
        };
        // A list result is read before it passes: filtered by the policies, and noted.
        match content_type(resp.headers()).as_deref() {
            Some("text/event-stream") => Ok(Answer::Upstream {
                resp,
                reader: Some(Box::new(filter::ListStream::new(list, lister(list)))),
                on_end: None,
            }),
            Some("application/json") => {
                let (mut parts, body) = resp.into_parts();
                let bytes = read_upstream(body, server.limits.upstream_timeout).await?;
                let bytes = filter::read_whole(list, lister(list).as_ref(), &bytes, record)
                    .map_err(ProxyError::UpstreamUnreadable)?;
                parts.headers.remove(header::CONTENT_LENGTH);
                let status = parts.status.as_u16();
                Ok(Answer::Whole {
                    resp: Response::from_parts(parts, full(bytes)),
                    upstream: Some(status),
                })
            }
            other => Err(ProxyError::UpstreamUnreadable(format!(
                "a {} result of content type {}",
                list.method(),
                other.unwrap_or("(none)")
            ))),
        }
    }
}

/// A denied (or rate-limited) request on a legacy session is answered where the client reads
/// answers: accepted (202), with the error as an event on the session's stream for each
/// request of the message. None if the stream cannot take it (the error is then the answer).
fn answer_on_stream(
    legacy: &legacy::Session,
    d: &Decoded,
    e: &ProxyError,
    record: &mut RequestRecord,
) -> Option<Response<ProxyBody>> {
    if !matches!(e, ProxyError::Denied { .. } | ProxyError::RateLimited(_)) {
        return None;
    }
    let ids: Vec<&serde_json::Value> = d
        .messages
        .iter()
        .filter(|m| m.kind == Kind::Request)
        .filter_map(|m| m.id.as_ref())
        .collect();
    for id in &ids {
        let body = e.response_body(Some(id));
        if !legacy.send(legacy::event(&body)) {
            return None;
        }
    }
    let resp = Response::builder()
        .status(http::StatusCode::ACCEPTED)
        .body(full(Bytes::new()))
        .ok()?;
    record.fail(202, &e.to_string());
    Some(resp)
}

/// Moat asks the upstream for unencoded responses; an encoded one is not passed on (Moat could
/// not read it, and the client never asked for that encoding).
fn check_encoding(resp: Response<Incoming>) -> Result<Response<Incoming>, ProxyError> {
    match header_str(resp.headers(), header::CONTENT_ENCODING.as_str()) {
        None => Ok(resp),
        Some(e) if e.trim().eq_ignore_ascii_case("identity") => Ok(resp),
        Some(e) => Err(ProxyError::UpstreamUnreadable(format!(
            "content encoding {e:?} (identity was asked for)"
        ))),
    }
}

/// The media type of a response, lower-case, without parameters.
fn content_type(h: &HeaderMap) -> Option<String> {
    header_str(h, header::CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
}

fn expect_content_type(resp: &Response<Incoming>, want: &str) -> Result<(), ProxyError> {
    match content_type(resp.headers()) {
        Some(ct) if ct == want => Ok(()),
        other => Err(ProxyError::UpstreamUnreadable(format!(
            "content type {} where {want} is read",
            other.as_deref().unwrap_or("(none)")
        ))),
    }
}

/// Reads a whole upstream body Moat must read (a list result), within the list size limit and
/// the upstream timeout.
async fn read_upstream(body: Incoming, timeout: std::time::Duration) -> Result<Bytes, ProxyError> {
    let collect = Limited::new(body, filter::MAX).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ProxyError::UpstreamTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(ProxyError::UpstreamUnreadable(e.to_string())),
    }
}

/// A request that may go on to its body: where it goes, its checked headers, who sent it.
struct Admitted {
    route: Route,
    /// The path (and query) the upstream request goes to: what was routed.
    target: String,
    fields: Fields,
    principal: Option<Arc<Principal>>,
}

/// The checks on a request's head: the host, documents Moat serves itself (the `Err` of the
/// inner result), the origin, the route, the headers, the token and the session.
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
    let target = match route {
        Route::Streamable => server.endpoint.clone(),
        Route::LegacyStream | Route::LegacyMessage => parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
    };
    let mut fields = Fields::read(&parts.headers)?;
    if route == Route::LegacyMessage {
        // The session of a legacy message is the one its URL names.
        fields.session = legacy::session_of(&target).map(str::to_string);
    }
    record.mcp().session.clone_from(&fields.session);
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
        check_session(site, route, &target, fields.session.as_deref(), p)?;
    }
    Ok(Ok(Admitted {
        route,
        target,
        fields,
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
    target: &str,
    session: Option<&str>,
    p: &Principal,
) -> Result<(), ProxyError> {
    match route {
        Route::LegacyMessage => match site.legacy.get(target) {
            Some(s) if s.owner.as_ref() == Some(&Owner::from(p)) => Ok(()),
            Some(_) => Err(ProxyError::Session("belongs to another principal")),
            None => Err(ProxyError::UnknownSession),
        },
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
    fields: &mut Fields,
    bytes: &[u8],
    streamable: bool,
    record: &mut RequestRecord,
) -> Result<Decoded, ProxyError> {
    let revision = match fields.protocol_version.as_deref() {
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
