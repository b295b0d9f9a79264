//! The admin listener's approval endpoints, on only with `approvals.token_file` and only for
//! the bearer of that token: `GET /approvals` lists the approvals waiting for an answer (as
//! `moat approvals list`), `POST /approvals/ID/approve` and `POST /approvals/ID/deny` answer
//! one (`?by=NAME` names the approver in the audit record).
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::{
    approval::{Answer, Approvals},
    vocab::Via,
};

/// The answer to `req` when it is for an approvals endpoint (None: another endpoint's).
pub fn answer<B>(approvals: Option<&Approvals>, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    let rest = path.strip_prefix("/approvals")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let Some(approvals) = approvals.filter(|a| a.admin_on()) else {
        return Some(reply(
            StatusCode::NOT_FOUND,
            json!({"error": "not found (approvals.token_file is not set)"}),
        ));
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !approvals.admits(bearer) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "a bearer token is required"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return Some(r);
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match (req.method(), segments.as_slice()) {
        (&Method::GET, []) => reply(StatusCode::OK, Value::Array(approvals.list())),
        (&Method::POST, [id, verb @ ("approve" | "deny")]) => {
            let by = req
                .uri()
                .query()
                .and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "by")
                        .map(|(_, v)| v.into_owned())
                })
                .filter(|b| !b.is_empty() && b.len() <= 128)
                .unwrap_or_else(|| "admin token".into());
            let a = Answer {
                approve: *verb == "approve",
                via: Via::Admin,
                by,
                at: SystemTime::now(),
            };
            match approvals.answer(id, a, None) {
                Ok(()) => reply(StatusCode::OK, json!({"id": id, "answer": verb})),
                Err(e) => reply(StatusCode::NOT_FOUND, json!({"error": e.to_string()})),
            }
        }
        (_, [] | [_, "approve" | "deny"]) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "GET /approvals, POST /approvals/ID/approve or /deny"}),
        ),
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    })
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
