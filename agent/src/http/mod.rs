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
pub mod message;
pub mod respond;
#[cfg(test)]
mod tests;

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use tracing::Instrument as _;

use self::{
    admit::Route,
    authorize::Ask,
    body::{Audited, ProxyBody, full},
    error::ProxyError,
    fields::Fields,
    filter::{List, Lister},
    forward::Outgoing,
    respond::Answer,
};
use crate::{
    admin::{ServerMetrics, TokenOutcome},
    audit::{AuditLog, Http, RequestRecord},
    auth::{
        Authenticator, Principal,
        sessions::{Binding, Owner, Sessions},
        upstream::{Credential, JWKS_PATH, UpstreamKeys},
    },
    config::Server,
    idle::InFlight,
    mcp::{self, Kind},
    policy::{Live, Rates},
    steer::identity::Identity,
    upstream::pool::{self, Pool},
    vocab::{Conn, HttpAction},
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

/// What every request handler shares.
pub struct Proxy {
    /// This worker's upstream connections.
    pub client: Pool,
    pub audit: AuditLog,
    /// Names the local process behind a connection (None if the kernel program is missing).
    pub identity: Option<Arc<Identity>>,
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
        record.observed_by(site.metrics.observer());
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
            let bytes = message::read_body(site, &parts.headers, incoming).await?;
            let d = message::decode(
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
                    && let Some(resp) = legacy.refuse(&d, e, record)
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
                .find_map(|m| m.call().and_then(|c| c.list()));
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
                    HttpAction::SessionEnd
                } else {
                    HttpAction::StreamOpen
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
                        let l = m.call().and_then(|c| c.list());
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
        // Each principal's requests go on connections of their own.
        let key = pool::Key {
            addr: server.upstream,
            principal: principal.as_deref().map(Owner::from),
        };
        let sent = forward::send(&self.client, key, up, server.limits.upstream_timeout).await;
        let resp = match sent.and_then(respond::check_encoding) {
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
        let lister = list.map(|l| (l, lister(l)));
        respond::answer(
            site,
            respond::Asked {
                route,
                decoded: decoded.as_ref(),
                list: lister,
                legacy,
                owner: principal.as_deref().map(Owner::from),
            },
            resp,
            record,
        )
        .await
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
