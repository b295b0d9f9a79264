//! The response the client gets of an answer: streamed through the audited body (its reader,
//! the record finished when it ends, the stream cut on a revoked grant or a lockdown), or a
//! result Moat read whole.
use http::{Response, header};

use super::{
    Site,
    body::{Audited, ProxyBody},
    respond::Answer,
};
use crate::{audit::RequestRecord, idle::InFlight};

/// The response the client gets of `answer`: a result read whole, or the upstream's response
/// streamed through its reader, the record finished when it ends (and the stream cut when the
/// caller's grant is revoked or a lockdown stops it).
pub fn deliver(
    site: &Site,
    answer: Answer,
    mut record: RequestRecord,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    match answer {
        Answer::Whole {
            resp,
            upstream: status,
        } => {
            record.answered(status);
            record.complete();
            resp
        }
        Answer::Upstream {
            resp,
            reader,
            on_end,
        } => {
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
            let principal = record.principal_of().cloned();
            let revoked = principal
                .as_ref()
                .and_then(|p| site.auth.as_ref()?.revoked(p));
            // Only an event stream stays open long enough to need cutting: the rest of
            // the answers go without the lockdown's watch (and its allocation).
            let stream = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let locked = site
                .lockdowns
                .as_ref()
                .filter(|_| stream)
                .map(|l| l.cut(site.name.clone(), principal));
            let cut: Option<crate::auth::Revoked> = match (revoked, locked) {
                (Some(r), Some(l)) => Some(Box::pin(async move {
                    tokio::select! {
                        () = r => {}
                        () = l => {}
                    }
                })),
                (r, l) => r.or(l),
            };
            let in_flight = if stream {
                in_flight.into_stream()
            } else {
                in_flight
            };
            let mut body = Audited::new(body, record, reader, in_flight);
            if let Some(c) = cut {
                body = body.cut_when(c);
            }
            if let Some(f) = on_end {
                body = body.on_end(f);
            }
            Response::from_parts(parts, ProxyBody::new(body))
        }
    }
}
