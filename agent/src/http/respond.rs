//! The upstream's answer, as the client gets it: streamed through, read while it passes (a
//! POST's event stream, a legacy stream, a list result filtered by the policies), or refused
//! when Moat must read it and cannot (encoded, of another type, not JSON).
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response, header};
use http_body_util::{BodyExt as _, Limited};
use serde_json::Value;

use super::{
    Site,
    admit::Route,
    answers::Answers,
    body::{OnEnd, ProxyBody, Reader, full},
    error::ProxyError,
    fields::header_str,
    filter::{self, ListRead, ListStream},
    inspect::{InspectStream, Results},
    judged::{self, Judged, JudgedStream},
    legacy,
    watch::ListChanged,
};
use crate::{
    audit::RequestRecord,
    auth::sessions::Owner,
    mcp::{Decoded, Kind},
    upstream::pool,
    vocab::Method,
};

/// What answers a request.
pub enum Answer {
    /// The upstream's response, streamed through the reader, if any. `on_end` takes the
    /// record when the response ends (a legacy request answered later on its stream).
    Upstream {
        resp: Response<pool::Body>,
        reader: Option<Box<dyn Reader>>,
        on_end: Option<OnEnd>,
    },
    /// An upstream result Moat read whole and rebuilt (`upstream`: the status the upstream
    /// answered with).
    Whole {
        resp: Response<ProxyBody>,
        upstream: u16,
    },
}

impl Answer {
    fn streamed(resp: Response<pool::Body>, reader: Option<Box<dyn Reader>>) -> Self {
        Self::Upstream {
            resp,
            reader,
            on_end: None,
        }
    }
}

/// What was asked, as far as reading its answer goes.
pub struct Asked<'a> {
    pub route: Route,
    /// The POST's message.
    pub decoded: Option<&'a Decoded>,
    /// The list it asks for, and how its result is read.
    pub list: Option<ListRead>,
    /// The legacy session a message was posted to.
    pub legacy: Option<Arc<legacy::Session>>,
    /// Who asked (None on a server without `auth`).
    pub owner: Option<Owner>,
}

/// How the client gets `resp`, the upstream's answer to `asked`. With `integrity` on, an
/// event stream is also watched for the server's `list_changed` notifications.
pub async fn answer(
    site: &Site,
    asked: Asked<'_>,
    resp: Response<pool::Body>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    let answer = read_as(site, asked, resp, record).await?;
    Ok(match (answer, &site.integrity) {
        (
            Answer::Upstream {
                resp,
                reader,
                on_end,
            },
            Some(guard),
        ) if content_type(resp.headers()).as_deref() == Some("text/event-stream") => {
            Answer::Upstream {
                resp,
                reader: Some(Box::new(ListChanged::new(guard.clone(), reader))),
                on_end,
            }
        }
        (answer, _) => answer,
    })
}

/// How the client gets `resp`: streamed through (read as it passes, or not), or read whole.
async fn read_as(
    site: &Site,
    asked: Asked<'_>,
    resp: Response<pool::Body>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    if !resp.status().is_success() {
        return Ok(Answer::streamed(resp, None));
    }
    if asked.route == Route::LegacyStream {
        expect_content_type(&resp, "text/event-stream")?;
        let legacy = site.legacy.stream(asked.owner);
        let reader = match Results::stream(site) {
            Some(r) => Box::new(InspectStream::new(r, site.metrics.clone(), Some(legacy))),
            None => legacy,
        };
        return Ok(Answer::streamed(resp, Some(reader)));
    }
    let messages = asked.decoded.map_or(&[][..], |d| &d.messages[..]);
    if let Some(legacy) = asked.legacy {
        // The result comes on the stream: a list's record waits for it there.
        let list_id = messages
            .iter()
            .find(|m| m.call().and_then(|c| c.list()).is_some())
            .and_then(|m| m.id.clone());
        let on_end =
            list_id.map(|id| -> OnEnd { Box::new(move |record| legacy.park(&id, record)) });
        return Ok(Answer::Upstream {
            resp,
            reader: None,
            on_end,
        });
    }
    let content_type = content_type(resp.headers());
    // Only servers with pins read these results.
    let judged = site.integrity.as_ref().and_then(|guard| {
        let what = messages.iter().find_map(|m| match m.call() {
            Some(Method::Initialize) => Some(Judged::Instructions),
            Some(Method::ResourcesTemplatesList) => Some(Judged::Templates),
            _ => None,
        })?;
        Some((what, guard))
    });
    if let Some((what, guard)) = judged {
        return match content_type.as_deref() {
            Some("text/event-stream") => Ok(Answer::streamed(
                resp,
                Some(Box::new(JudgedStream::new(what, guard.clone()))),
            )),
            Some("application/json") => {
                rebuilt(site, resp, filter::MAX, |b| {
                    judged::read_json(what, guard, b, record)
                })
                .await
            }
            other => Err(ProxyError::UpstreamUnreadable(format!(
                "a {} result of content type {}",
                what.method(),
                other.unwrap_or("(none)")
            ))),
        };
    }
    let Some(read) = asked.list else {
        // An event stream is complete once the requests' answers have passed.
        let ids: Vec<Value> = messages
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .filter_map(|m| m.id.clone())
            .collect();
        let stream = content_type.as_deref() == Some("text/event-stream");
        let reader = (stream && !ids.is_empty()).then(|| Box::new(Answers::new(ids)) as _);
        // The server's own stream (a GET): what it sends there is inspected too.
        let own_stream = (stream && asked.decoded.is_none())
            .then(|| Results::stream(site))
            .flatten();
        if let Some(results) = own_stream {
            let inspect = InspectStream::new(results, site.metrics.clone(), reader);
            return Ok(Answer::streamed(resp, Some(Box::new(inspect))));
        }
        let Some(results) = Results::of(site, messages) else {
            return Ok(Answer::streamed(resp, reader));
        };
        // A result for the client is inspected before it passes.
        return match content_type.as_deref() {
            Some("text/event-stream") => Ok(Answer::streamed(
                resp,
                Some(Box::new(InspectStream::new(
                    results,
                    site.metrics.clone(),
                    reader,
                ))),
            )),
            Some("application/json") => {
                let limit = results.max_size();
                rebuilt(site, resp, limit, |b| {
                    results.read_json(&site.metrics, b, record)
                })
                .await
            }
            other => Err(ProxyError::UpstreamUnreadable(format!(
                "a result to inspect of content type {}",
                other.unwrap_or("(none)")
            ))),
        };
    };
    // A list result is read before it passes: filtered by the policies, and noted.
    match content_type.as_deref() {
        Some("text/event-stream") => Ok(Answer::streamed(
            resp,
            Some(Box::new(ListStream::new(read))),
        )),
        Some("application/json") => {
            rebuilt(site, resp, filter::MAX, |b| {
                filter::read_whole(&read, b, record)
            })
            .await
        }
        other => Err(ProxyError::UpstreamUnreadable(format!(
            "a {} result of content type {}",
            read.list.method().spec().name,
            other.unwrap_or("(none)")
        ))),
    }
}

/// A JSON result read whole (within `limit` bytes and the upstream's time) and passed on as
/// `read` makes it.
async fn rebuilt(
    site: &Site,
    resp: Response<pool::Body>,
    limit: usize,
    read: impl FnOnce(&[u8]) -> Result<Bytes, String>,
) -> Result<Answer, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let bytes = read_whole(body, limit, site.server.limits.upstream_timeout).await?;
    let bytes = read(&bytes).map_err(ProxyError::UpstreamUnreadable)?;
    parts.headers.remove(header::CONTENT_LENGTH);
    let status = parts.status.as_u16();
    Ok(Answer::Whole {
        resp: Response::from_parts(parts, full(bytes)),
        upstream: status,
    })
}

/// Moat asks the upstream for unencoded responses; an encoded one is not passed on (Moat could
/// not read it, and the client never asked for that encoding).
pub fn check_encoding(resp: Response<pool::Body>) -> Result<Response<pool::Body>, ProxyError> {
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

fn expect_content_type(resp: &Response<pool::Body>, want: &str) -> Result<(), ProxyError> {
    match content_type(resp.headers()) {
        Some(ct) if ct == want => Ok(()),
        other => Err(ProxyError::UpstreamUnreadable(format!(
            "content type {} where {want} is read",
            other.as_deref().unwrap_or("(none)")
        ))),
    }
}

/// Reads a whole upstream body Moat must read (a list result, a result to inspect), within
/// `limit` bytes and the upstream timeout.
async fn read_whole(
    body: pool::Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ProxyError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ProxyError::UpstreamTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(ProxyError::UpstreamUnreadable(format!(
            "{e} (a result read whole is at most {limit} bytes)"
        ))),
    }
}
