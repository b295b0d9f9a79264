//! The request headers Moat reads, decides on and passes on: each one read once, as one checked
//! value. The upstream request is built from these and nothing else the client sent.
use http::{HeaderMap, header};

use super::error::ProxyError;

/// The most bytes of an `Accept` header passed on (clients send a few dozen).
const MAX_ACCEPT: usize = 1024;
/// W3C trace context: `tracestate` is at most 32 members of at most 256 bytes; 512 is what
/// the spec says a vendor must pass on at least.
const MAX_TRACESTATE: usize = 512;

/// The checked header fields of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields {
    /// `Mcp-Session-Id`.
    pub session: Option<String>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<String>,
    /// `Mcp-Method`, as sent (a `=?base64?...?=` value is decoded when checked against the body).
    pub mcp_method: Option<String>,
    /// `Mcp-Name`, as sent.
    pub mcp_name: Option<String>,
    /// `Last-Event-ID` (resuming a stream).
    pub last_event_id: Option<String>,
    /// `Accept`, its values joined.
    pub accept: Option<String>,
    /// W3C trace context, when well formed (otherwise not passed on).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// The MCP headers a request may carry at most once, each a non-empty visible-ASCII value.
const MCP_HEADERS: [&str; 5] = [
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

impl Fields {
    /// Reads the fields from `headers`. An MCP header that is repeated, empty or not visible
    /// ASCII is refused: Moat would decide on one value while the server may read another.
    pub fn read(headers: &HeaderMap) -> Result<Self, ProxyError> {
        let [
            session,
            protocol_version,
            mcp_method,
            mcp_name,
            last_event_id,
        ] = MCP_HEADERS.map(|name| single(headers, name));
        Ok(Self {
            session: session?,
            protocol_version: protocol_version?,
            mcp_method: mcp_method?,
            mcp_name: mcp_name?,
            last_event_id: last_event_id?,
            accept: accept(headers),
            traceparent: unique(headers, "traceparent").filter(|v| traceparent_ok(v)),
            tracestate: unique(headers, "tracestate")
                .filter(|v| v.len() <= MAX_TRACESTATE && visible(v)),
        })
    }
}

fn single(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let bad = |why| ProxyError::BadHeader { name, why };
    if values.next().is_some() {
        return Err(bad("is repeated"));
    }
    let text = std::str::from_utf8(first.as_bytes()).map_err(|_| bad("is not visible ASCII"))?;
    if text.is_empty() {
        return Err(bad("is empty"));
    }
    if !visible(text) {
        return Err(bad("is not visible ASCII"));
    }
    Ok(Some(text.to_string()))
}

/// Visible ASCII (and spaces inside): what every MCP header value is.
fn visible(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A header sent exactly once, as text.
fn unique(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let v = values.next()?.to_str().ok()?;
    values.next().is_none().then(|| v.to_string())
}

/// Every `Accept` value, joined (a list header: repeating it means the same as one joined value).
fn accept(headers: &HeaderMap) -> Option<String> {
    let mut joined = String::new();
    for v in headers.get_all(header::ACCEPT) {
        let v = v.to_str().ok().filter(|v| visible(v))?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(v);
    }
    (!joined.is_empty() && joined.len() <= MAX_ACCEPT).then_some(joined)
}

/// `version-traceid-parentid-flags`, lower-case hex (W3C Trace Context, level 1).
fn traceparent_ok(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// A header's value as text, when it is.
pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            // Bytes hyper accepts on the wire (obs-text included), not only what
            // HeaderValue::from_str would.
            h.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn mcp_headers_are_one_visible_ascii_value() {
        let f = Fields::read(&headers(&[
            ("mcp-session-id", b"abc-1"),
            ("mcp-protocol-version", b"2025-06-18"),
            ("last-event-id", b"7"),
        ]))
        .unwrap();
        assert_eq!(f.session.as_deref(), Some("abc-1"));
        assert_eq!(f.protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(f.last_event_id.as_deref(), Some("7"));
        for name in MCP_HEADERS {
            for bad in [
                &[(name, &b"a"[..]), (name, &b"b"[..])][..],
                &[(name, &b""[..])],
                &[(name, &b"caf\xc3\xa9"[..])],
                &[(name, &b"a\tb"[..])],
                &[(name, &b" padded"[..])],
                &[(name, &b"\xff"[..])],
            ] {
                match Fields::read(&headers(bad)) {
                    Err(ProxyError::BadHeader { name: n, .. }) => assert_eq!(n, name),
                    other => panic!("{bad:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn accept_is_joined_and_trace_context_kept_only_when_well_formed() {
        let f = Fields::read(&headers(&[
            ("accept", b"application/json"),
            ("accept", b"text/event-stream"),
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", b"vendor=1"),
        ]))
        .unwrap();
        assert_eq!(
            f.accept.as_deref(),
            Some("application/json, text/event-stream")
        );
        assert!(f.traceparent.is_some() && f.tracestate.is_some());
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            let Ok(h) = HeaderValue::from_bytes(bad) else {
                continue;
            };
            let mut map = HeaderMap::new();
            map.insert("traceparent", h);
            assert_eq!(Fields::read(&map).unwrap().traceparent, None);
        }
        let twice = headers(&[("tracestate", b"a=1"), ("tracestate", b"b=2")]);
        assert_eq!(Fields::read(&twice).unwrap().tracestate, None);
    }
}
