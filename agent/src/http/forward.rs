//! Forwarding: the upstream request and response header rewriting, and the exchange with the
//! upstream through the worker's pool (connections from the reserved identity, one set per
//! principal).
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};

use super::{body::ProxyBody, error::ProxyError};
use crate::upstream::{
    Upstream,
    pool::{self, Key, Pool},
};

/// A worker's upstream connections (one pool per worker thread).
pub fn client(upstream: Arc<Upstream>) -> Pool {
    Pool::new(upstream)
}

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&listed) {
        h.remove(name);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// Rewrites a client request for the upstream at `addr`: its URI, Host and Origin name the
/// upstream (servers bound to loopback check them), hop-by-hop headers go, and the client's
/// credentials never leave Moat.
pub fn upstream_request(
    parts: &http::request::Parts,
    addr: SocketAddr,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let authority = addr.to_string();
    let uri: Uri = format!("http://{authority}{pq}")
        .parse()
        .expect("valid upstream URI");
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::COOKIE);
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&authority).expect("address is a valid header"),
    );
    if headers.contains_key(header::ORIGIN) {
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_str(&format!("http://{authority}")).expect("valid origin"),
        );
    }
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

/// Sends the request on a connection of `key` (its upstream and principal); the upstream has
/// `timeout` to answer with response headers.
pub async fn send(
    pool: &Pool,
    key: Key,
    req: Request<ProxyBody>,
    timeout: Duration,
) -> Result<Response<pool::Body>, ProxyError> {
    match tokio::time::timeout(timeout, pool.send(key, req)).await {
        Err(_) => Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let text = s.to_string();
                if !msg.contains(&text) {
                    msg = format!("{msg}: {text}");
                }
                src = s.source();
            }
            Err(ProxyError::UpstreamConnect(msg))
        }
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::full;

    #[test]
    fn the_upstream_request_names_the_upstream_and_carries_no_credentials() {
        let req = Request::builder()
            .method("POST")
            .uri("/mcp?x=1")
            .header("host", "files.example.com")
            .header("origin", "https://claude.ai")
            .header("authorization", "Bearer secret")
            .header("cookie", "sid=1")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("te", "trailers")
            .header("mcp-session-id", "s1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let up = upstream_request(
            &parts,
            "127.0.0.1:9000".parse().unwrap(),
            full(bytes::Bytes::new()),
        );
        assert_eq!(up.uri(), "http://127.0.0.1:9000/mcp?x=1");
        let h = up.headers();
        assert_eq!(h["host"], "127.0.0.1:9000");
        assert_eq!(h["origin"], "http://127.0.0.1:9000");
        assert_eq!(h["mcp-session-id"], "s1");
        for gone in ["authorization", "cookie", "connection", "x-private", "te"] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
    }
}
