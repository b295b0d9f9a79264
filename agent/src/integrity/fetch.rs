//! Moat's own MCP client: asks a protected server what it offers, as a client would
//! (`initialize`, `notifications/initialized`, then every page of `tools/list`,
//! `prompts/list` and `resources/list` the server's capabilities announce, and the session's
//! DELETE), from the agent's upstream identity with the server's upstream credential. Used to
//! check a server when no client lists (on a schedule, after a `list_changed` notification)
//! and by `moat tools pin`.
use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::{Value, json};

use crate::{
    mcp::SseParser,
    upstream::pool::{Key, Pool},
    vocab::List,
};

/// The protocol revision Moat asks for (the server answers with the one it speaks).
const PROTOCOL: &str = "2025-06-18";

/// The largest answer read (as for list results passing through).
const MAX: usize = 16 * 1024 * 1024;

/// The most pages of one list read.
const MAX_PAGES: usize = 100;

/// What a server offers.
#[derive(Debug, Default)]
pub struct Offer {
    /// `initialize`'s `instructions`.
    pub instructions: Option<String>,
    /// The entries of each list the server has, every page.
    pub lists: Vec<(List, Vec<Value>)>,
    /// Its resource templates, every page.
    pub templates: Vec<Value>,
}

/// Where a server is, and how Moat speaks to it.
pub struct Target {
    pub addr: SocketAddr,
    pub endpoint: String,
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// Each exchange's limit (the server's `upstream_timeout`).
    pub timeout: Duration,
}

struct Session<'a> {
    pool: &'a Pool,
    target: &'a Target,
    id: Option<String>,
    version: Option<String>,
    next: u64,
}

/// Asks the server at `target` what it offers.
pub async fn offer(pool: &Pool, target: &Target) -> Result<Offer, String> {
    let mut s = Session {
        pool,
        target,
        id: None,
        version: None,
        next: 0,
    };
    let init = s
        .request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "moat", "version": env!("CARGO_PKG_VERSION")},
            }),
        )
        .await?;
    s.version = init
        .get("protocolVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let result = s.fetch(&init).await;
    s.end().await;
    result
}

impl Session<'_> {
    async fn fetch(&mut self, init: &Value) -> Result<Offer, String> {
        self.notify("notifications/initialized").await?;
        let mut offer = Offer {
            instructions: init
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_string),
            lists: Vec::new(),
            templates: Vec::new(),
        };
        let capabilities = init.get("capabilities");
        for (list, capability) in [
            (List::Tools, "tools"),
            (List::Prompts, "prompts"),
            (List::Resources, "resources"),
        ] {
            if capabilities.and_then(|c| c.get(capability)).is_some() {
                let entries = self.pages(list.method().spec().name, list.array()).await?;
                offer.lists.push((list, entries));
            }
        }
        if capabilities.and_then(|c| c.get("resources")).is_some() {
            offer.templates = self
                .pages("resources/templates/list", "resourceTemplates")
                .await?;
        }
        Ok(offer)
    }

    /// Every page of a list (`key`: its result's array).
    async fn pages(&mut self, method: &str, key: &str) -> Result<Vec<Value>, String> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let mut page = self.request(method, params).await?;
            if let Some(Value::Array(a)) = page.get_mut(key).map(Value::take) {
                entries.extend(a);
            }
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(entries)
    }

    fn headers(&self) -> HeaderMap {
        let t = self.target;
        let mut h = HeaderMap::new();
        let authority = t.addr.to_string();
        if let Ok(v) = HeaderValue::from_str(&authority) {
            h.insert(header::HOST, v);
        }
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        for (name, value) in [
            ("mcp-session-id", &self.id),
            ("mcp-protocol-version", &self.version),
        ] {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        if let Some((n, v)) = &t.credential {
            h.insert(n.clone(), v.clone());
        }
        h
    }

    async fn exchange(
        &self,
        method: Method,
        body: Option<Value>,
    ) -> Result<http::Response<crate::upstream::pool::Body>, String> {
        let t = self.target;
        let mut h = self.headers();
        let body = match body {
            Some(b) => {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let mut req = Request::new(Full::new(body).map_err(|e| match e {}).boxed());
        *req.method_mut() = method;
        *req.uri_mut() = format!("http://{}{}", t.addr, t.endpoint)
            .parse()
            .map_err(|e| format!("the endpoint {}: {e}", t.endpoint))?;
        *req.headers_mut() = h;
        let key = Key {
            addr: t.addr,
            principal: None,
        };
        match tokio::time::timeout(t.timeout, self.pool.send(key, req)).await {
            Err(_) => Err(format!("no answer within {:?}", t.timeout)),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    async fn notify(&mut self, method: &str) -> Result<(), String> {
        let msg = json!({"jsonrpc": "2.0", "method": method});
        let resp = self.exchange(Method::POST, Some(msg)).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("{method}: HTTP {status}")),
        }
    }

    /// Sends a request; its result.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next += 1;
        let id = self.next;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let err = |e: String| format!("{method}: {e}");
        let resp = self.exchange(Method::POST, Some(msg)).await.map_err(err)?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.id = Some(s.to_string());
        }
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let answer = match sse {
            true => read_sse(resp.into_body(), id, self.target.timeout).await,
            false => read_json(resp.into_body(), id, self.target.timeout).await,
        }
        .map_err(err)?;
        match (answer.get("result"), answer.get("error")) {
            (Some(r), _) => Ok(r.clone()),
            (None, Some(e)) => Err(err(format!("error {e}"))),
            _ => Err(err("an answer with neither result nor error".into())),
        }
    }

    /// Ends the session (a server that does not let clients end sessions answers 405).
    async fn end(&mut self) {
        if self.id.is_some() {
            let _ = self.exchange(Method::DELETE, None).await;
        }
    }
}

/// The answer to request `id` in a JSON body (one message, or a batch).
async fn read_json(
    body: crate::upstream::pool::Body,
    id: u64,
    timeout: Duration,
) -> Result<Value, String> {
    let bytes = tokio::time::timeout(timeout, Limited::new(body, MAX).collect())
        .await
        .map_err(|_| format!("the body did not arrive within {timeout:?}"))?
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let answers = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    answers
        .into_iter()
        .find(|m| m.get("id") == Some(&json!(id)))
        .ok_or_else(|| "no answer to the request in the body".into())
}

/// The answer to request `id` on an event stream (what comes before it, progress or the
/// server's own requests, is passed over).
async fn read_sse(
    mut body: crate::upstream::pool::Body,
    id: u64,
    timeout: Duration,
) -> Result<Value, String> {
    let mut parser = SseParser::new(MAX);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| format!("no answer on the stream within {timeout:?}"))?;
        let Some(frame) = frame else {
            return Err("the stream ended without the answer".into());
        };
        let frame = frame.map_err(|e| format!("reading the stream: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in parser.push(&data).map_err(|e| e.to_string())? {
            if event.data.is_empty() {
                continue;
            }
            let m: Value = serde_json::from_str(&event.data)
                .map_err(|e| format!("an event is not JSON: {e}"))?;
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return Ok(m);
            }
        }
    }
}
