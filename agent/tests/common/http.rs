//! Raw HTTP/1.1 as the tests speak it: requests written byte for byte, responses read whole.
use std::{
    io::{BufRead, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use serde_json::Value;

use super::RESERVED;

/// Reads one HTTP/1.1 message (head and content-length body); None at EOF.
pub fn read_http(r: &mut impl BufRead) -> Option<Vec<u8>> {
    read_http_with_head(r).map(|(_, body)| body)
}

/// Reads one HTTP/1.1 message; returns its head (start line and headers) and body.
pub fn read_http_with_head(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut len = 0usize;
    let mut chunked = false;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if !chunked {
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        return Some((head, body));
    }
    // Chunked: size lines, data, and a last chunk of size 0 (no trailers).
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).ok()?;
        if n == 0 {
            return Some((head, body));
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// POSTs a JSON-RPC ping over plain HTTP and returns the peer address the server saw. Err when
/// refused, timed out, or answered without a result.
pub fn fetch(addr: SocketAddr, source_port: Option<u16>) -> std::io::Result<SocketAddr> {
    let s = match source_port {
        None => TcpStream::connect_timeout(&addr, Duration::from_secs(3))?,
        Some(port) => {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            let local: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], port).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, port).into()
            };
            sock.set_reuse_address(true)?;
            sock.bind(&local.into())?;
            sock.connect_timeout(&addr.into(), Duration::from_secs(3))?;
            sock.into()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    (&s).write_all(req.as_bytes())?;
    let mut reader = BufReader::new(&s);
    let reply = read_http(&mut reader)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no HTTP reply"))?;
    let v: Value = serde_json::from_slice(&reply).map_err(std::io::Error::other)?;
    v["result"]["peer"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no peer in reply {v}")))
}

pub fn in_reserved(addr: SocketAddr) -> bool {
    (RESERVED.0..=RESERVED.1).contains(&addr.port())
}

/// An HTTP response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

/// Sends `raw` (a whole HTTP/1.1 request) on a new connection to `addr` and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Reply> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&s).write_all(raw)?;
    let mut reader = BufReader::new(&s);
    let (head, body) = read_http_with_head(&mut reader)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no HTTP reply"))?;
    Ok(Reply::of(head, &body))
}

impl Reply {
    /// A response as read: its status from the head, its body as JSON when it is JSON.
    fn of(head: String, body: &[u8]) -> Self {
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = serde_json::from_slice(body)
            .unwrap_or(Value::String(String::from_utf8_lossy(body).into_owned()));
        Reply { status, head, body }
    }
}

/// Sends `raw` (one or more whole HTTP/1.1 requests) on one new connection to `addr` and reads
/// every response until the connection closes or stays quiet for a second.
pub fn exchanges(addr: SocketAddr, raw: &[u8]) -> Vec<Reply> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    (&s).write_all(raw).unwrap();
    let mut reader = BufReader::new(&s);
    let mut replies = Vec::new();
    while let Some((head, body)) = read_http_with_head(&mut reader) {
        replies.push(Reply::of(head, &body));
    }
    replies
}

/// A JSON-RPC POST to /mcp with extra header lines (each ending in \r\n).
pub fn post(addr: SocketAddr, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl super::Host {
    /// GET `path` from the admin listener at `addr`, in the host's namespace: (status, body,
    /// as text).
    pub fn admin_get_at(&self, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let raw = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes();
        let r = self.in_ns(false, move || exchange(addr, &raw))?;
        let body = match r.body {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok((r.status, body))
    }

    /// GET `path` from the agent's admin listener.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.admin_get_at(self.admin_addr(), path)
            .expect("the admin listener answers")
    }
}

/// Opens an MCP session at `addr` with raw requests (`initialize`, then
/// `notifications/initialized`, each with `extra_headers`); the header lines (each ending in
/// \r\n) that carry the session on the next requests, `extra_headers` included.
pub fn mcp_session(addr: SocketAddr, extra_headers: &str) -> String {
    mcp_session_declaring(addr, extra_headers, "{}")
}

/// [`mcp_session`] with a client that declares `capabilities` (a JSON object).
pub fn mcp_session_declaring(addr: SocketAddr, extra_headers: &str, capabilities: &str) -> String {
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{capabilities},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
    );
    let r = exchange(addr, &post(addr, &init, extra_headers)).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let session = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .expect("a session id")
        .trim()
        .to_string();
    let h =
        format!("{extra_headers}mcp-session-id: {session}\r\nmcp-protocol-version: 2025-06-18\r\n");
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    exchange(addr, &post(addr, note, &h)).unwrap();
    h
}
