//! A request held for approval, asked through the MCP client that sent it (its session
//! declared the elicitation capability): the client gets an event stream at once, whose first
//! event is Moat's `elicitation/create` (the server, the call, its arguments as the audit record
//! keeps them); the client's answer comes back as a POST of a JSON-RPC response, which Moat
//! takes itself ([`answered`]) and never forwards. Approved, the request is forwarded as Moat
//! built it and the upstream's answer follows on the same stream (a JSON body as one event);
//! otherwise the stream ends with a JSON-RPC error. The approval is bound like any other: an
//! answer from another principal or session is refused.
use std::{sync::Arc, task::Poll, time::SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Site,
    admit::Admitted,
    approve::{self, Pending},
    authorize::Permitted,
    body::{ProxyBody, full},
    decode::Asked,
    deliver,
    error::ProxyError,
    filter,
    flow::Stop,
    forward::{self, Outgoing},
    respond,
};
use crate::{
    approval::Answer,
    audit::RequestRecord,
    auth::sessions::Owner,
    idle::InFlight,
    mcp::Kind,
    upstream::pool::{self, Pool},
    vocab::{Principal, Via},
};

/// The JSON-RPC ids of Moat's elicitations: this, then the approval's id.
const ID_PREFIX: &str = "moat-approval-";

/// A held request and what forwarding it later takes.
pub struct HeldCall {
    pub pending: Pending,
    /// The request's JSON-RPC id.
    pub id: Value,
    pub permitted: Permitted<Asked>,
    pub admitted: Admitted,
    /// The client sent an `Origin`.
    pub origin: bool,
    pub principal: Arc<Principal>,
    /// What the person is shown.
    pub message: String,
}

/// Whether the request's client can be asked on its stream: a Streamable HTTP session whose
/// client declared elicitation, and one JSON-RPC request that is not a list.
pub fn can_ask(site: &Site, admitted: &Admitted, asked: &Asked) -> bool {
    let Some(session) = admitted.fields.session.as_deref() else {
        return false;
    };
    let one_request = asked.decoded().is_some_and(|d| {
        d.messages.len() == 1
            && d.messages[0].kind == Kind::Request
            && d.messages[0].call().is_some_and(|c| c.list().is_none())
    });
    admitted.route == super::admit::Route::Streamable
        && one_request
        && site.sessions.elicits(session).form
}

/// What the person is asked.
pub fn message(site: &Site, asked: &Asked, arguments: Option<&Value>, policy: &str) -> String {
    let m = asked.decoded().and_then(|d| d.messages.first());
    let method = m.and_then(|m| m.method.as_deref()).unwrap_or_default();
    let target = m
        .and_then(|m| m.target())
        .map_or(String::new(), |t| format!(" `{t}`"));
    let mut args = arguments.map_or("none".to_string(), Value::to_string);
    if args.len() > 2000 {
        let mut end = 2000;
        while !args.is_char_boundary(end) {
            end -= 1;
        }
        args.truncate(end);
        args.push_str("...");
    }
    format!(
        "Approve this call? Server `{}`: {method}{target} with arguments {args} (policy `{policy}`). \
         Nothing is done unless you approve.",
        site.server.name
    )
}

/// An event carrying `message` (each line of its JSON a `data:` line).
fn event(message: &str) -> Bytes {
    let mut out = String::with_capacity(message.len() + 32);
    out.push_str("event: message\n");
    for line in message.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The event stream the client gets at once; the held request goes on in a task of its own.
pub fn start(
    site: Arc<Site>,
    pool: Pool,
    held: HeldCall,
    record: RequestRecord,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(site, pool, held, record, in_flight.into_stream(), tx));
    let mut resp = Response::new(ProxyBody::new(Channel(rx)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn run(
    site: Arc<Site>,
    pool: Pool,
    held: HeldCall,
    mut record: RequestRecord,
    in_flight: InFlight,
    tx: mpsc::Sender<Bytes>,
) {
    let HeldCall {
        pending,
        id,
        permitted,
        admitted,
        origin,
        principal,
        message,
    } = held;
    let Pending {
        held,
        mut note,
        approvals,
    } = pending;
    record.approval(note.clone());
    let ask = json!({
        "jsonrpc": "2.0",
        "id": format!("{ID_PREFIX}{}", held.id),
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {"approve": {
                    "type": "boolean",
                    "title": "Approve",
                    "description": "Let this call through to the server",
                }},
                "required": ["approve"],
            },
        },
    });
    if tx.send(event(&ask.to_string())).await.is_err() {
        return;
    }
    let (verdict, answer) = approvals.wait(held, tx.closed()).await;
    site.metrics.approval(verdict);
    approve::settle(&mut note, verdict, answer.as_ref());
    record.approval(note.clone());
    let allowed = if verdict.permits() {
        approve::still_allowed(&site, &principal)
    } else {
        Err(ProxyError::Unapproved {
            id: note.id,
            verdict,
        })
    };
    if let Err(e) = allowed {
        refuse(&mut record, &e, &id, &tx).await;
        return;
    }
    let server = &site.server;
    let url_mode = || {
        admitted
            .fields
            .session
            .as_deref()
            .is_some_and(|s| site.sessions.elicits(s).url)
    };
    let credential = match forward::credential(&site, Some(&principal), url_mode, &mut record).await
    {
        Ok(c) => c,
        Err(e) => {
            refuse(&mut record, &e, &id, &tx).await;
            return;
        }
    };
    let up = forward::upstream_request(
        &Outgoing {
            asked: &permitted.as_ref(),
            target: &admitted.target,
            fields: &admitted.fields,
            origin,
            credential,
        },
        server.upstream,
    );
    let key = pool::Key {
        addr: server.upstream,
        principal: Some(Owner::from(&*principal)),
    };
    let sent = forward::send(&pool, key, up, server.limits.upstream_timeout)
        .await
        .and_then(respond::check_encoding);
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            if matches!(
                e,
                ProxyError::UpstreamConnect(_) | ProxyError::UpstreamTimeout
            ) {
                record.upstream_failed(&e.to_string());
            }
            refuse(&mut record, &e, &id, &tx).await;
            return;
        }
    };
    let asked = respond::Asked {
        route: admitted.route,
        decoded: permitted.get().decoded(),
        list: None,
        legacy: None,
        owner: Some(Owner::from(&*principal)),
    };
    let answer = match respond::answer(&site, asked, resp, &mut record).await {
        Ok(a) => a,
        Err(e) => {
            refuse(&mut record, &e, &id, &tx).await;
            return;
        }
    };
    let resp = deliver::deliver(&site, answer, record, in_flight.also());
    pump(resp, &id, &tx).await;
    drop(in_flight);
}

/// The request ends with error `e`, as an event.
async fn refuse(record: &mut RequestRecord, e: &ProxyError, id: &Value, tx: &mpsc::Sender<Bytes>) {
    record.fail(StatusCode::OK.as_u16(), &e.to_string());
    record.deny(e.to_string());
    let _ = tx.send(event(&e.response_body(Some(id)).to_string())).await;
}

/// Passes the upstream's answer on the stream: an event stream as it comes, a JSON body as
/// one event, anything else as an error.
async fn pump(resp: Response<ProxyBody>, id: &Value, tx: &mpsc::Sender<Bytes>) {
    let media = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let status = resp.status();
    let mut body = resp.into_body();
    match media.as_deref() {
        Some("text/event-stream") => {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(data).await.is_err()
                {
                    return;
                }
            }
        }
        Some("application/json") => {
            let mut whole = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    whole.extend_from_slice(&data);
                    if whole.len() > filter::MAX {
                        let e = ProxyError::UpstreamUnreadable("a result too large".into());
                        let _ = tx.send(event(&e.response_body(Some(id)).to_string())).await;
                        return;
                    }
                }
            }
            let _ = tx.send(event(&String::from_utf8_lossy(&whole))).await;
        }
        _ => {
            let e = ProxyError::UpstreamUnreadable(format!("the upstream answered {status}"));
            let _ = tx.send(event(&e.response_body(Some(id)).to_string())).await;
        }
    }
}

/// The response body: what the task sends, until it ends.
struct Channel(mpsc::Receiver<Bytes>);

impl Body for Channel {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A POST of the client's answers to Moat's elicitations: taken here, never forwarded (202);
/// None when the body is not one. A body mixing them with other messages is refused.
pub fn answered(
    site: &Site,
    principal: Option<&Principal>,
    session: Option<&str>,
    asked: &Asked,
) -> Option<Stop> {
    let d = asked.decoded()?;
    let ours = |m: &crate::mcp::Message| {
        m.kind == Kind::Response
            && m.id
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with(ID_PREFIX))
    };
    let n = d.messages.iter().filter(|m| ours(m)).count();
    if n == 0 {
        return None;
    }
    if n != d.messages.len() {
        return Some(Stop::Refuse(ProxyError::ApprovalUnavailable(
            "an answer to an approval must come alone",
        )));
    }
    let (Some(p), Some(approvals)) = (principal, &site.approvals) else {
        return Some(Stop::Refuse(ProxyError::ApprovalUnavailable(
            "no approvals here",
        )));
    };
    // The decoded messages keep no results: read them from the body Moat re-encoded.
    let body: Value = serde_json::from_slice(&d.body).unwrap_or(Value::Null);
    let messages = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    for m in &messages {
        let Some(id) = m["id"].as_str().and_then(|i| i.strip_prefix(ID_PREFIX)) else {
            continue;
        };
        let approve =
            m["result"]["action"] == "accept" && m["result"]["content"]["approve"] == true;
        let answer = Answer {
            approve,
            via: Via::Elicitation,
            by: p.sub.clone(),
            at: SystemTime::now(),
        };
        if let Err(e) = approvals.answer(id, answer, Some((&p.sub, session))) {
            return Some(Stop::Refuse(ProxyError::ApprovalAnswer(e)));
        }
    }
    let resp = Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(full(Bytes::new()))
        .ok()?;
    Some(Stop::Serve(Box::new(resp)))
}
