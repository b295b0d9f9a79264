//! Forwarding: the upstream request Moat builds, the exchange with the upstream through the
//! worker's pool (connections from the reserved identity, one set per principal), and the
//! response's hop-by-hop headers.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};

use super::{
    authorize::Permitted, body::ProxyBody, decode::Asked, error::ProxyError, fields::Fields,
};
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

/// What the upstream request is built from: what Moat routed and decided, never the client's
/// request itself.
pub struct Outgoing<'a> {
    /// What was asked, and permitted: the method and body.
    pub asked: &'a Permitted<&'a Asked>,
    /// The path (and query) Moat routed: the endpoint, or a message URL of a legacy stream.
    pub target: &'a str,
    /// The header fields Moat read and checked.
    pub fields: &'a Fields,
    /// The client sent an `Origin` (which Moat checked): the upstream gets its own.
    pub origin: bool,
    /// What the upstream gets instead of the client's token.
    pub credential: Option<(HeaderName, HeaderValue)>,
}

/// Builds the upstream request for the upstream at `addr`. Its headers are an allowlist, each
/// the one value Moat checked: content type and length (of the body Moat encoded), accept,
/// the MCP headers, trace context, Host and Origin naming the upstream (servers bound to
/// loopback check them) and Moat's own credential. Framing, connection and credential headers
/// from the client never go upstream; the upstream is asked for unencoded responses.
pub fn upstream_request(out: &Outgoing<'_>, addr: SocketAddr) -> Request<ProxyBody> {
    let (method, body) = (out.asked.get().method(), out.asked.get().body());
    let authority = addr.to_string();
    let uri: Uri = format!("http://{authority}{}", out.target)
        .parse()
        .expect("a routed target is a valid URI path");
    let mut h = HeaderMap::with_capacity(12);
    let mut put = |name: HeaderName, value: &str| {
        // Every value was checked to be visible ASCII (or built by Moat).
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put(header::HOST, &authority);
    if out.origin {
        put(header::ORIGIN, &format!("http://{authority}"));
    }
    let f = out.fields;
    for (name, value) in [
        (header::ACCEPT, &f.accept),
        (HeaderName::from_static("mcp-session-id"), &f.session),
        (
            HeaderName::from_static("mcp-protocol-version"),
            &f.protocol_version,
        ),
        (HeaderName::from_static("mcp-method"), &f.mcp_method),
        (HeaderName::from_static("mcp-name"), &f.mcp_name),
        (HeaderName::from_static("last-event-id"), &f.last_event_id),
        (HeaderName::from_static("traceparent"), &f.traceparent),
        (HeaderName::from_static("tracestate"), &f.tracestate),
    ] {
        if let Some(v) = value {
            put(name, v);
        }
    }
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if method == Method::POST {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    if let Some((name, value)) = &out.credential {
        h.insert(name.clone(), value.clone());
    }
    let mut req = Request::new(super::body::full(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = h;
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

/// What the upstream gets instead of the client's token: the server's own credential, or, on a
/// server that acts for each user at a third party, the caller's token there (the record
/// notes the provider, and a refresh made now). `url_mode`: the client declared elicitation's
/// URL mode (a missing connection is then MCP's URL elicitation error).
pub async fn credential(
    site: &super::Site,
    principal: Option<&crate::vocab::Principal>,
    url_mode: impl FnOnce() -> bool,
    record: &mut crate::audit::RequestRecord,
) -> Result<Option<(HeaderName, HeaderValue)>, ProxyError> {
    match (&site.connector, principal) {
        (Some(c), Some(p)) => match c.header(&p.sub).await {
            Ok((name, value, refreshed)) => {
                record.third_party(crate::vocab::ThirdParty {
                    provider: c.provider.origin().to_string(),
                    refreshed,
                });
                Ok(Some((name, value)))
            }
            Err(crate::thirdparty::ThirdPartyError::NotConnected { url }) => {
                Err(ProxyError::NotConnected {
                    provider: c.provider.origin().to_string(),
                    url,
                    url_mode: url_mode(),
                })
            }
            Err(e) => Err(ProxyError::UpstreamConnect(e.to_string())),
        },
        (Some(_), None) => Err(ProxyError::UpstreamConnect(
            "a server that acts for each user needs a caller".into(),
        )),
        (None, _) => Ok(site.credential.header(principal)),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::mcp::{self, Limits, Revision};

    fn post(body: &str) -> Asked {
        Asked::Messages(
            mcp::decode(body.as_bytes(), Revision::V2025_03_26, &Limits::default()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_upstream_request_is_built_from_the_checked_fields_only() {
        let fields = Fields {
            session: Some("s1".into()),
            protocol_version: Some("2025-06-18".into()),
            accept: Some("application/json, text/event-stream".into()),
            ..Fields::default()
        };
        let asked = post(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        let permitted = Permitted::assume(&asked);
        let out = Outgoing {
            asked: &permitted,
            target: "/mcp",
            fields: &fields,
            origin: true,
            credential: Some((header::AUTHORIZATION, HeaderValue::from_static("Bearer up"))),
        };
        let up = upstream_request(&out, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(up.uri(), "http://127.0.0.1:9000/mcp");
        let h = up.headers();
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "accept-encoding",
                "authorization",
                "content-length",
                "content-type",
                "host",
                "mcp-protocol-version",
                "mcp-session-id",
                "origin"
            ]
        );
        assert_eq!(h["host"], "127.0.0.1:9000");
        assert_eq!(h["origin"], "http://127.0.0.1:9000");
        assert_eq!(h["authorization"], "Bearer up");
        assert_eq!(h["accept-encoding"], "identity");
        let sent = asked.body();
        assert_eq!(h["content-length"], sent.len().to_string());
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(up.into_body().collect().await.unwrap().to_bytes(), sent);

        let stream = Asked::Http(crate::vocab::HttpAction::StreamOpen);
        let permitted = Permitted::assume(&stream);
        let get = Outgoing {
            asked: &permitted,
            target: "/mcp",
            fields: &Fields::default(),
            origin: false,
            credential: None,
        };
        let up = upstream_request(&get, "127.0.0.1:9000".parse().unwrap());
        let mut names: Vec<&str> = up.headers().keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept-encoding", "host"],
            "a GET carries no framing"
        );
    }
}
