//! The one place where the authorization server's answers are made: JSON documents, HTML pages
//! (with the headers that keep them out of frames and caches), redirects, and errors in each of
//! these three forms.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::error::OAuthError;

pub type Reply = Response<Full<Bytes>>;

/// Every HTML page: no framing (clickjacking of the consent page), no caching, no referrer to
/// other sites (the query of an authorization request stays here), no scripts.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub fn json(status: StatusCode, v: &Value) -> Reply {
    build(status, "application/json", Bytes::from(v.to_string()))
}

/// A public document (metadata, keys): cacheable for a minute, readable from any origin.
pub fn document(v: &Value) -> Reply {
    let mut r = json(StatusCode::OK, v);
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    h.remove(header::PRAGMA);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

pub fn html(status: StatusCode, page: String) -> Reply {
    let mut r = build(status, "text/html; charset=utf-8", Bytes::from(page));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the page's own form posts,
    // which the origin check then cannot tell from a forged one.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// 303 See Other to `location` (a URL Moat built).
pub fn redirect(location: &str) -> Reply {
    let mut r = build(StatusCode::SEE_OTHER, "text/plain", Bytes::new());
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            r
        }
        Err(_) => error_page(&OAuthError::Server(format!(
            "unusable redirect {location:?}"
        ))),
    }
}

pub fn with_cookie(mut r: Reply, cookie: &str) -> Reply {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// An error of the token, registration or revocation endpoint.
pub fn error_json(e: &OAuthError) -> Reply {
    log(e);
    let mut r = json(
        e.status(),
        &json!({"error": e.code(), "error_description": e.description()}),
    );
    if matches!(e, OAuthError::InvalidClient(_)) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"moat\""),
        );
    }
    r
}

/// An error shown to the user: the client or its redirect URI could not be trusted, so nothing
/// is redirected (RFC 6749 section 4.1.2.1).
pub fn error_page(e: &OAuthError) -> Reply {
    log(e);
    let status = match e {
        OAuthError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        OAuthError::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    html(status, super::pages::error(e.code(), &e.description()))
}

/// An error sent back to the client at its (checked) redirect URI, with `state` and `iss`.
pub fn error_redirect(e: &OAuthError, redirect_uri: &str, state: Option<&str>, iss: &str) -> Reply {
    log(e);
    let mut params = vec![
        ("error", e.code().to_string()),
        ("error_description", e.description()),
    ];
    if let Some(s) = state {
        params.push(("state", s.to_string()));
    }
    params.push(("iss", iss.to_string()));
    redirect(&with_query(redirect_uri, &params))
}

/// `base` with `params` added to its query.
pub fn with_query(base: &str, params: &[(&str, String)]) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => base.to_string(),
    }
}

fn log(e: &OAuthError) {
    match e {
        OAuthError::Server(detail) => tracing::error!("authorization server: {detail}"),
        e => tracing::debug!(error = e.code(), "authorization server refused: {e}"),
    }
}
