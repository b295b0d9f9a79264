//! The MCP-aware HTTP proxy. A request goes through its phases in order, each a module:
//! admit (host, origin, route, header fields) -> authenticate -> session -> decode -> conduct
//! (behaviour) -> pins -> authorize -> forward -> respond. Each phase goes on with its output or stops the request
//! (`flow`); only a request that `authorize` permitted can be forwarded. Every request gets
//! exactly one audit record, written when it ends, however it ends; its refusals are
//! recorded in one place, [`Proxy::handle`].
pub mod admit;
pub mod answers;
pub mod approve;
pub mod authenticate;
pub mod authorize;
pub mod body;
pub mod conduct;
pub mod decode;
pub mod deliver;
pub mod error;
pub mod fields;
pub mod filter;
pub mod flow;
pub mod forward;
pub mod held;
pub mod inspect;
pub mod judged;
pub mod legacy;
pub mod local;
pub mod pins;
pub mod respond;
pub mod session;
pub mod site;
#[cfg(test)]
mod tests;
pub mod watch;

use std::{convert::Infallible, sync::Arc};

use http::{Request, Response, header};
use hyper::body::Incoming;

pub use self::site::Site;
use self::{
    admit::Admitted,
    body::ProxyBody,
    decode::drain,
    error::ProxyError,
    filter::{List, ListRead, Lister},
    flow::{Flow, Stop},
    forward::Outgoing,
    respond::Answer,
};
use crate::{
    audit::{AuditLog, Http, RequestRecord},
    auth::sessions::Owner,
    idle::InFlight,
    log_lines::Tag,
    steer::identity::Identity,
    upstream::pool::{self, Pool},
    vocab::Conn,
};

/// What the request's phases come to: an answer now, or a request held for approval whose
/// answer comes on a stream of Moat's own.
enum Reply {
    Now(Answer),
    Held(Box<held::HeldCall>),
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
        site: &Arc<Site>,
        conn: &Conn,
        req: Request<Incoming>,
        in_flight: InFlight,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let http = Http {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            version: version_name(req.version()),
        };
        let mut record = RequestRecord::new(&self.audit, site.name.clone(), conn, http);
        record.observed_by(site.metrics.observer());
        // Log lines written while the request is served carry its audit record's id.
        let tag = Tag {
            request_id: record.id(),
            server: site.name.clone(),
        };
        let flow = tag
            .clone()
            .tag(self.proxy(site, conn, req, &mut record))
            .await;
        let answer = match flow {
            Ok(Reply::Held(call)) => {
                return Ok(held::start(
                    site.clone(),
                    self.client.clone(),
                    *call,
                    record,
                    in_flight,
                ));
            }
            Ok(Reply::Now(answer)) => answer,
            Err(Stop::Serve(resp)) => {
                record.answered_locally(resp.status().as_u16());
                return Ok(*resp);
            }
            Err(Stop::Refuse(e)) => {
                let resp = e.response(record.mcp_id());
                tag.in_scope(|| refused(site, &e, resp.status().as_u16(), &mut record));
                return Ok(resp);
            }
            Err(Stop::RefuseWith(e, resp)) => {
                tag.in_scope(|| refused(site, &e, resp.status().as_u16(), &mut record));
                return Ok(*resp);
            }
        };
        Ok(deliver::deliver(site, answer, record, in_flight))
    }

    /// The request's phases, in order.
    async fn proxy(
        &self,
        site: &Site,
        conn: &Conn,
        req: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Flow<Reply> {
        let (parts, incoming) = req.into_parts();
        let head = async {
            // Nothing goes through unaudited.
            if !self.audit.accepting() {
                return Err(ProxyError::AuditUnavailable.into());
            }
            let admitted = admit::admit(site, &parts)?;
            record.mcp().session.clone_from(&admitted.fields.session);
            let principal = authenticate::authenticate(site, &parts).await?;
            if site
                .lockdowns
                .as_ref()
                .is_some_and(|l| l.stops(&site.name, principal.as_deref()))
            {
                return Err(ProxyError::LockedDown.into());
            }
            if let Some(p) = &principal {
                record.principal(p.clone());
            }
            let session = session::check(site, &admitted, principal.as_deref())?;
            Ok((admitted, principal, session))
        };
        let (mut admitted, principal, session) = match head.await {
            Ok(head) => head,
            Err(stop) => {
                drain(incoming).await;
                return Err(stop);
            }
        };
        let asked = decode::read(
            site,
            &parts,
            admitted.route,
            &mut admitted.fields,
            incoming,
            record,
        )
        .await?;
        // The client's answers to Moat's own elicitations are Moat's, not the server's.
        if let Some(stop) = held::answered(
            site,
            principal.as_deref(),
            admitted.fields.session.as_deref(),
            &asked,
        ) {
            return Err(stop);
        }
        let at = conduct::now();
        let judged = conduct::judge(site, principal.as_deref(), &asked, conn, at);
        if let Some(a) = judged {
            record.assessed(a);
        }
        let content = inspect::arguments(site, &asked, record);
        let decided = content.and_then(|content| {
            let caller = authorize::Caller {
                conn,
                principal: principal.as_deref(),
                session: admitted.fields.session.as_deref(),
                behaviour: judged.as_ref().filter(|a| !a.shadow),
                content: content.as_ref(),
            };
            pins::check(site, &asked, record)?;
            authorize::authorize(site, &caller, &asked)
        });
        if let (Some(a), Some(p)) = (&judged, &principal) {
            conduct::settle(site, p, &asked, conn, at, a, decided.is_ok());
        }
        let (permitted, decision) = match decided {
            Ok(p) => p,
            Err(e) => {
                conduct::lock_down(site, principal.as_deref(), &e);
                return Err(session.refuse(&asked, e));
            }
        };
        let held = approve::ask(
            site,
            principal.as_deref(),
            admitted.fields.session.as_deref(),
            &asked,
            &decision,
            record,
        );
        record.decide(decision);
        if let Some(pending) = held.map_err(|e| session.refuse(&asked, e))? {
            // Asked through the client when it can be, else out of band.
            if let (true, Some(p)) = (held::can_ask(site, &admitted, &asked), &principal) {
                let message =
                    held::message(site, &asked, record.arguments_kept(), &pending.note.policy);
                return Ok(Reply::Held(Box::new(held::HeldCall {
                    pending,
                    id: record.mcp_id().cloned().unwrap_or_default(),
                    permitted: permitted.to_owned(),
                    admitted,
                    origin: parts.headers.contains_key(header::ORIGIN),
                    principal: p.clone(),
                    message,
                })));
            }
            approve::wait(site, pending, record)
                .await
                .map_err(|e| session.refuse(&asked, e))?;
        }
        let reader = |list: List| ListRead {
            list,
            lister: site
                .policy
                .as_ref()
                .zip(principal.as_ref())
                .map(|(live, p)| Lister {
                    list,
                    engine: live.current(),
                    server: site.name.clone(),
                    principal: p.clone(),
                    source_ip: conn.peer.ip(),
                    tls: conn.tls.clone(),
                    session: admitted.fields.session.clone(),
                    process: conn.process.clone(),
                }),
            pins: site.integrity.clone(),
        };
        // On a legacy session the answers come on the stream: note what is expected there.
        let expected = session.expect(&asked, reader)?;
        let resp = self
            .forward(
                site,
                &admitted,
                &parts,
                principal.as_deref(),
                &permitted,
                record,
            )
            .await
            .inspect_err(|_| session.failed(&expected))?;
        session.answered(
            site,
            &admitted,
            principal.as_deref(),
            &asked,
            &resp,
            &expected,
        );
        let list = asked
            .decoded()
            .and_then(|d| d.messages.iter().find_map(|m| m.call()?.list()));
        Ok(Reply::Now(
            respond::answer(
                site,
                respond::Asked {
                    route: admitted.route,
                    decoded: asked.decoded(),
                    list: list.map(reader),
                    legacy: session.legacy().cloned(),
                    owner: principal.as_deref().map(Owner::from),
                },
                resp,
                record,
            )
            .await?,
        ))
    }

    /// Sends the upstream request Moat builds from what it permitted, on a connection of the
    /// principal's own; the response when it is one the client may get.
    async fn forward(
        &self,
        site: &Site,
        admitted: &Admitted,
        parts: &http::request::Parts,
        principal: Option<&crate::vocab::Principal>,
        permitted: &authorize::Permitted<&decode::Asked>,
        record: &mut RequestRecord,
    ) -> Result<Response<pool::Body>, ProxyError> {
        let server = &site.server;
        // Asked only when the caller has no third-party token to give.
        let url_mode = || {
            admitted
                .fields
                .session
                .as_deref()
                .is_some_and(|s| site.sessions.elicits(s).url)
                || permitted
                    .get()
                    .decoded()
                    .is_some_and(|d| d.messages.iter().any(|m| m.elicits_url))
        };
        let credential = forward::credential(site, principal, url_mode, record).await?;
        let up = forward::upstream_request(
            &Outgoing {
                asked: permitted,
                target: &admitted.target,
                fields: &admitted.fields,
                origin: parts.headers.contains_key(header::ORIGIN),
                credential,
            },
            server.upstream,
        );
        let key = pool::Key {
            addr: server.upstream,
            principal: principal.map(Owner::from),
        };
        forward::send(&self.client, key, up, server.limits.upstream_timeout)
            .await
            .and_then(respond::check_encoding)
    }
}

/// Records a refusal (`status` the client gets): the one place where a refused request's
/// record gets its error and, when it was refused for who sent it or what the policies
/// decided, its decision.
fn refused(site: &Site, e: &ProxyError, status: u16, record: &mut RequestRecord) {
    record.fail(status, &e.to_string());
    match e {
        ProxyError::Auth { .. } | ProxyError::Session(_) | ProxyError::RateLimited(_) => {
            record.deny(e.to_string());
        }
        ProxyError::Denied { decision, .. } => record.decide(decision.clone()),
        ProxyError::ContentRefused { .. }
        | ProxyError::Uninspectable(_)
        | ProxyError::Unapproved { .. }
        | ProxyError::ApprovalUnavailable(_) => record.deny(e.to_string()),
        ProxyError::UpstreamConnect(_) | ProxyError::UpstreamTimeout => {
            tracing::warn!(upstream = %site.server.upstream, "{e}");
            record.upstream_failed(&e.to_string());
        }
        ProxyError::UpstreamUnreadable(_) => {
            tracing::warn!(upstream = %site.server.upstream, "{e}");
        }
        _ => {}
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
