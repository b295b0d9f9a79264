//! Sessions, on both transports. A session belongs to the principal who opened it: on
//! Streamable HTTP, an `Mcp-Session-Id` the upstream issued to them through Moat; on the
//! legacy transport, the message URL of a stream they opened. On a legacy session the answers
//! come on the stream, so the requests in flight there are noted (and forgotten when they will
//! not be answered there), and a refusal is sent there too.
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::Value;

use super::{
    Site,
    admit::{Admitted, Route},
    body::full,
    decode::Asked,
    error::ProxyError,
    fields::header_str,
    filter::{List, ListRead},
    flow::Stop,
    legacy,
};
use crate::{
    auth::sessions::{Binding, Owner},
    mcp::Kind,
    upstream::pool,
    vocab::{HttpAction, Principal},
};

/// The session a request belongs to, as far as Moat tracks it.
pub enum Session {
    /// Streamable HTTP, or opening a legacy stream: the session (if any) is in the
    /// `Mcp-Session-Id` the client sent, already checked.
    Http,
    /// A message posted to a live legacy session.
    Legacy(Arc<legacy::Session>),
}

/// The session of an admitted request, which must be its principal's (None: the server has
/// no authentication, and sessions belong to no one).
pub fn check(
    site: &Site,
    admitted: &Admitted,
    principal: Option<&Principal>,
) -> Result<Session, ProxyError> {
    let foreign = ProxyError::Session("belongs to another principal");
    match admitted.route {
        Route::LegacyMessage => {
            let s = site
                .legacy
                .get(&admitted.target)
                .ok_or(ProxyError::UnknownSession)?;
            match principal {
                Some(p) if s.owner.as_ref() != Some(&Owner::from(p)) => Err(foreign),
                _ => Ok(Session::Legacy(s)),
            }
        }
        Route::Streamable => {
            let id = admitted.fields.session.as_deref();
            match principal.zip(id).map(|(p, id)| site.sessions.check(id, p)) {
                None | Some(Binding::Own) => Ok(Session::Http),
                Some(Binding::Foreign) => Err(foreign),
                Some(Binding::Unknown) => Err(ProxyError::Session("was not created through Moat")),
            }
        }
        Route::LegacyStream => Ok(Session::Http),
    }
}

impl Session {
    pub fn legacy(&self) -> Option<&Arc<legacy::Session>> {
        match self {
            Session::Legacy(s) => Some(s),
            Session::Http => None,
        }
    }

    /// A refusal, answered where the session's client reads answers: on a legacy session a
    /// denial (or rate limit) is accepted here (202) and its error sent on the stream for
    /// each request of the message, when the stream can take them.
    pub fn refuse(&self, asked: &Asked, e: ProxyError) -> Stop {
        let (Session::Legacy(s), Some(d)) = (self, asked.decoded()) else {
            return Stop::Refuse(e);
        };
        if !matches!(e, ProxyError::Denied { .. } | ProxyError::RateLimited(_)) {
            return Stop::Refuse(e);
        }
        let ids = d
            .messages
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .filter_map(|m| m.id.as_ref());
        for id in ids {
            if !s.send(&e.response_body(Some(id))) {
                return Stop::Refuse(e);
            }
        }
        match Response::builder()
            .status(StatusCode::ACCEPTED)
            .body(full(Bytes::new()))
        {
            Ok(resp) => Stop::RefuseWith(e, Box::new(resp)),
            Err(_) => Stop::Refuse(e),
        }
    }

    /// Notes the requests about to be forwarded on a legacy session (their answers come on
    /// the stream, a list result read as `reader` says); gives their ids.
    pub fn expect(
        &self,
        asked: &Asked,
        reader: impl Fn(List) -> ListRead,
    ) -> Result<Vec<Value>, ProxyError> {
        let (Session::Legacy(s), Some(d)) = (self, asked.decoded()) else {
            return Ok(Vec::new());
        };
        let expected = d
            .messages
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .filter_map(|m| {
                let l = m.call().and_then(|c| c.list());
                Some((m.id.as_ref()?, l.map(&reader)))
            })
            .collect::<Vec<_>>();
        let ids = expected.iter().map(|(id, _)| (*id).clone()).collect();
        s.expect(expected)?;
        Ok(ids)
    }

    /// The upstream could not be asked: the requests noted will not be answered.
    pub fn failed(&self, expected: &[Value]) {
        if let Session::Legacy(s) = self {
            s.forget(expected);
        }
    }

    /// What the upstream's answer does to the sessions: on Streamable HTTP, a session id it
    /// issues is bound to the principal, and a session it let the principal end is
    /// forgotten; on a legacy session, requests it answered here (an error) or that were
    /// cancelled will not be answered on the stream.
    pub fn answered(
        &self,
        site: &Site,
        admitted: &Admitted,
        principal: Option<&Principal>,
        asked: &Asked,
        resp: &Response<pool::Body>,
        expected: &[Value],
    ) {
        let ok = resp.status().is_success();
        match self {
            Session::Http => {
                let Some(p) = principal.filter(|_| ok && admitted.route == Route::Streamable)
                else {
                    return;
                };
                if let Some(id) = header_str(resp.headers(), "mcp-session-id") {
                    let declared = |f: fn(&crate::mcp::Message) -> bool| {
                        asked.decoded().is_some_and(|d| d.messages.iter().any(f))
                    };
                    let elicits = crate::auth::sessions::Elicits {
                        form: declared(|m| m.elicits),
                        url: declared(|m| m.elicits_url),
                    };
                    site.sessions.bind(id, p, elicits);
                } else if let (Asked::Http(HttpAction::SessionEnd), Some(id)) =
                    (asked, admitted.fields.session.as_deref())
                {
                    site.sessions.end(id);
                }
            }
            Session::Legacy(s) if !ok => s.forget(expected),
            Session::Legacy(s) => {
                let cancelled = asked
                    .decoded()
                    .into_iter()
                    .flat_map(|d| &d.messages)
                    .filter_map(|m| m.cancels.as_ref());
                s.forget(cancelled);
            }
        }
    }
}
