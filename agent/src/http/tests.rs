//! Property test: whatever headers and body a client sends, the bytes the upstream receives
//! are one request built only from what Moat read, checked and decided.
use std::collections::HashSet;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    authorize::Permitted,
    decode::Asked,
    fields::Fields,
    forward::{Outgoing, upstream_request},
};
use crate::{
    mcp::{self, Limits, Revision},
    vocab::HttpAction,
};

/// Header names a client might send: what Moat passes on (checked), what frames a message or
/// belongs to a connection, credentials, and anything else.
const NAMES: &[&str] = &[
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "accept",
    "traceparent",
    "tracestate",
    "content-type",
    "content-length",
    "transfer-encoding",
    "te",
    "expect",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "trailer",
    "authorization",
    "cookie",
    "host",
    "origin",
    "accept-encoding",
    "x-forwarded-for",
    "x-api-key",
    "forwarded",
];

/// What the upstream may receive, and nothing else.
const ALLOWED: &[&str] = &[
    "host",
    "origin",
    "accept-encoding",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "traceparent",
    "tracestate",
    "content-type",
    "content-length",
    "x-upstream-key",
];

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        Just(b"0".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"5".to_vec()),
        Just(b"100-continue".to_vec()),
        Just(b"2025-06-18".to_vec()),
        Just(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec(
        (
            prop_oneof![
                prop::sample::select(NAMES).prop_map(str::to_string),
                "x-[a-z]{1,8}"
            ],
            header_value(),
        ),
        0..16,
    )
    .prop_map(|pairs| {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                h.append(n, v);
            }
        }
        h
    })
}

/// JSON-RPC bodies in varied spellings: whitespace, escapes, extra keys, batches.
fn body() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec![
        "tools/call",
        "tools/list",
        "ping",
        "initialize",
        "notifications/initialized",
    ]);
    let ws = prop::sample::select(vec!["", " ", "\n", "\t "]);
    (
        method,
        ws,
        "[a-z]{1,6}",
        any::<i64>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(method, ws, name, id, batch, big)| {
            let id = if method.starts_with("notifications/") {
                String::new()
            } else {
                format!(",{ws}\"id\":{id}")
            };
            let msg = format!(
                "{{{ws}\"jsonrpc\"{ws}:{ws}\"2.0\"{id},\"method\":\"{method}\",\"params\":{{\"na\\u006de\":\"{name}\",\"protocolVersion\":\"2025-03-26\",\"arguments\":{{\"n\":{big}0000}}}}}}{ws}"
            );
            if batch { format!("[{msg}]") } else { msg }
        })
}

/// The bytes the upstream receives for `req`, sent by hyper's client: everything up to the
/// connection's end (the upstream answers the first request, then the client goes away).
async fn wire(mut req: http::Request<super::body::ProxyBody>) -> Vec<u8> {
    // On the wire the target is in origin form (the pooled client sends it so).
    *req.uri_mut() = req
        .uri()
        .path_and_query()
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let upstream = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut answered = false;
        loop {
            if !answered {
                let mut h = [httparse::EMPTY_HEADER; 32];
                let mut r = httparse::Request::new(&mut h);
                if let Ok(httparse::Status::Complete(head)) = r.parse(&buf) {
                    let len = r
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                        .unwrap_or(0usize);
                    if buf.len() >= head + len {
                        server
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .unwrap();
                        answered = true;
                    }
                }
            }
            match server.read(&mut chunk).await {
                Ok(0) | Err(_) => break buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let resp = send.send_request(req).await.unwrap();
    drop(resp);
    drop(send);
    let _ = conn.await;
    upstream.await.unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_upstream_gets_only_what_was_decided(
        client_headers in headers(),
        text in body(),
        post in any::<bool>(),
    ) {
        let Ok(fields) = Fields::read(&client_headers) else {
            // Refused: nothing goes upstream.
            return Ok(());
        };
        let method = if post { Method::POST } else { Method::GET };
        let decoded = mcp::decode(text.as_bytes(), Revision::V2025_03_26, &Limits::default());
        let asked = match (&method, &decoded) {
            (&Method::POST, Ok(d)) => Asked::Messages(d.clone()),
            (&Method::POST, Err(_)) => return Ok(()),
            _ => Asked::Http(HttpAction::StreamOpen),
        };
        let body = asked.body();
        let permitted = Permitted::assume(&asked);
        let out = Outgoing {
            asked: &permitted,
            target: "/mcp",
            fields: &fields,
            origin: client_headers.contains_key("origin"),
            credential: Some((
                HeaderName::from_static("x-upstream-key"),
                HeaderValue::from_static("moat-secret"),
            )),
        };
        let req = upstream_request(&out, "127.0.0.1:9000".parse().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bytes = rt.block_on(wire(req));

        let mut parsed = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut parsed);
        let head = match r.parse(&bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete request: {:?}", String::from_utf8_lossy(&bytes)),
        };
        prop_assert_eq!(r.method, Some(method.as_str()));
        prop_assert_eq!(r.path, Some("/mcp"));
        let mut seen = HashSet::new();
        for h in r.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            prop_assert!(ALLOWED.contains(&name.as_str()), "{} went upstream", name);
            prop_assert!(seen.insert(name.clone()), "{} twice", name);
            let value = std::str::from_utf8(h.value).unwrap();
            let want: Option<String> = match name.as_str() {
                "host" => Some("127.0.0.1:9000".into()),
                "origin" => Some("http://127.0.0.1:9000".into()),
                "accept-encoding" => Some("identity".into()),
                "accept" => fields.accept.clone(),
                "mcp-session-id" => fields.session.clone(),
                "mcp-protocol-version" => fields.protocol_version.clone(),
                "mcp-method" => fields.mcp_method.clone(),
                "mcp-name" => fields.mcp_name.clone(),
                "last-event-id" => fields.last_event_id.clone(),
                "traceparent" => fields.traceparent.clone(),
                "tracestate" => fields.tracestate.clone(),
                "content-type" => Some("application/json".into()),
                "content-length" => Some(body.len().to_string()),
                "x-upstream-key" => Some("moat-secret".into()),
                _ => None,
            };
            prop_assert_eq!(Some(value.to_string()), want, "{}", name);
        }
        // Exactly the body Moat encoded, and nothing after it (no second request).
        prop_assert_eq!(&bytes[head..], &body[..]);
        if method == Method::GET {
            prop_assert!(!seen.contains("content-length") && body.is_empty());
        }
        // The body is the decoded JSON: what Moat decided on, whatever the client's spelling.
        if let Ok(d) = &decoded && post {
            let again = mcp::decode(&bytes[head..], Revision::V2025_03_26, &Limits::default()).unwrap();
            prop_assert_eq!(&again.messages, &d.messages);
        }
    }
}

#[tokio::test]
async fn wire_shows_what_hyper_sends() {
    // The capture itself: a request's bytes come through whole.
    let asked = Asked::Messages(
        mcp::decode(
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            Revision::V2025_03_26,
            &Limits::default(),
        )
        .unwrap(),
    );
    let permitted = Permitted::assume(&asked);
    let out = Outgoing {
        asked: &permitted,
        target: "/mcp",
        fields: &Fields::default(),
        origin: false,
        credential: None,
    };
    let req = upstream_request(&out, "127.0.0.1:9000".parse().unwrap());
    let (_, body) = upstream_request(&out, "127.0.0.1:9000".parse().unwrap()).into_parts();
    let sent = asked.body();
    assert_eq!(body.collect().await.unwrap().to_bytes(), sent);
    let bytes = wire(req).await;
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("POST /mcp HTTP/1.1\r\n"), "{text}");
    assert!(
        text.ends_with(&format!("\r\n\r\n{}", String::from_utf8_lossy(&sent))),
        "{text}"
    );
}
