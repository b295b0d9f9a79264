//! The documents Moat serves itself, to anyone: the protected resource metadata (RFC 9728)
//! and the public keys of the JWTs it mints for the upstream.
use bytes::Bytes;
use http::{Method, Response, header};

use super::{
    Site,
    body::{ProxyBody, full},
};
use crate::auth::upstream::JWKS_PATH;

/// The response when `req` asks for one of these documents.
pub fn answer(site: &Site, req: &http::request::Parts) -> Option<Response<ProxyBody>> {
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
