//! The client of `bench streams`: the hidden subcommand CLIENT_CMD, which opens MCP sessions
//! and holds their event streams (tokio, one thread, HTTP/1.1 of its own: http1.rs). Each
//! session is one connection, as a client with one keep-alive connection makes it: POST
//! `initialize` (its `Mcp-Session-Id` kept), POST `notifications/initialized`, then the GET of
//! the session's event stream, which stays open and is read event by event. The connections
//! come from loopback addresses 127.1.x.y, at most PER_SOURCE from each, within Moat's default
//! limit per source.
//!
//! Commands (control.rs): `open N` (N more streams, OPENING at a time; how many opened and why
//! the others failed), `stats` (events received, and their latency from the upstream's send
//! time, since the last `stats`; streams held and ended), `close` (closes every stream),
//! `probe N` (probe.rs: N more connections, which Moat must refuse at once when full).
use std::{
    collections::BTreeMap,
    io,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};
use tokio::{net::TcpSocket, task::JoinSet};

use super::{control, event, http1::Conn, probe};
use crate::{
    Result,
    bench::stats::{percentile, round2},
};

/// The hidden subcommand run by the release build.
pub const CLIENT_CMD: &str = "bench-streams-client";

/// Streams opened at a time.
const OPENING: usize = 64;
/// Connections from one source address (Moat's default limit per source is 256).
pub const PER_SOURCE: usize = 200;
/// Bounds opening one stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
const PROTOCOL: &str = "2025-06-18";
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench-streams","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Where the streams go, and how.
pub struct Target {
    pub port: u16,
    /// HTTPS, trusting this config's roots.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// Sent as a bearer token with every request.
    pub token: Option<String>,
}

impl Target {
    /// A connection from `source` (TCP, then TLS when the target has it).
    pub async fn connect(&self, source: Ipv4Addr) -> io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
            .await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Conn::new(Box::new(tcp))),
            Some(tls) => {
                let name = ServerName::try_from("localhost").expect("a DNS name");
                Ok(Conn::new(Box::new(tls.connect(name, tcp).await?)))
            }
        }
    }

    /// A request to /mcp with the common headers, `extra` ones and `body`.
    pub fn request(&self, method: &str, extra: &str, body: &str) -> Vec<u8> {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let length = if method == "POST" {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        } else {
            String::new()
        };
        format!(
            "{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}{extra}{length}\r\n{body}",
            self.port
        )
        .into_bytes()
    }

    pub fn initialize(&self) -> Vec<u8> {
        self.request(
            "POST",
            "Accept: application/json, text/event-stream\r\n",
            INITIALIZE,
        )
    }
}

/// What the held streams received, since the last `stats`.
#[derive(Default)]
struct Received {
    events: u64,
    latency_us: Vec<f64>,
    /// Streams that ended while held, by why.
    ended: BTreeMap<String, u64>,
}

/// `CLIENT_CMD PORT CA|- TOKEN_FILE|-`: streams to 127.0.0.1:PORT, over TLS trusting CA.
pub fn run(args: &[String]) -> Result {
    let [port, ca, token] = args else {
        return Err(format!("usage: {CLIENT_CMD} PORT CA|- TOKEN_FILE|-"));
    };
    control::raise_nofile();
    let target = Arc::new(Target {
        port: port.parse().map_err(|_| format!("not a port: {port}"))?,
        tls: (ca != "-")
            .then(|| tls_connector(Path::new(ca)))
            .transpose()?,
        token: (token != "-")
            .then(|| std::fs::read_to_string(token).map(|t| t.trim().to_string()))
            .transpose()
            .map_err(|e| format!("{token}: {e}"))?,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let received = Arc::new(Mutex::new(Received::default()));
        let mut held = JoinSet::new();
        let mut next = 0usize;
        let mut commands = control::commands();
        while let Some((line, answer)) = commands.recv().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let v = match words[..] {
                ["open", n] => match n.parse() {
                    Ok(n) => open(&target, n, &mut next, &mut held, &received).await,
                    Err(_) => json!({"error": format!("bad count {n}")}),
                },
                ["stats"] => stats(&received, held.len()),
                ["close"] => {
                    let (n, t) = (held.len(), Instant::now());
                    held.abort_all();
                    while held.join_next().await.is_some() {}
                    json!({"closed": n, "ms": t.elapsed().as_millis() as u64})
                }
                ["probe", n] => match n.parse() {
                    Ok(n) => probe::run(&target, n).await,
                    Err(_) => json!({"error": format!("bad count {n}")}),
                },
                _ => json!({"error": format!("unknown command: {line}")}),
            };
            let _ = answer.send(v);
        }
    });
    Ok(())
}

/// The source address of the `i`-th stream.
fn source(i: usize) -> Ipv4Addr {
    let s = i / PER_SOURCE + 1;
    Ipv4Addr::new(127, 1, (s / 256) as u8, (s % 256) as u8)
}

async fn open(
    target: &Arc<Target>,
    n: usize,
    next: &mut usize,
    held: &mut JoinSet<()>,
    received: &Arc<Mutex<Received>>,
) -> Value {
    let started = Instant::now();
    let mut opening = JoinSet::new();
    let (mut opened, mut failed) = (0u64, BTreeMap::<String, u64>::new());
    let mut done = |r: Option<std::result::Result<Result<Conn>, tokio::task::JoinError>>| match r {
        Some(Ok(Ok(conn))) => {
            opened += 1;
            held.spawn(read_events(conn, received.clone()));
        }
        Some(Ok(Err(why))) => *failed.entry(why).or_default() += 1,
        Some(Err(e)) => *failed.entry(e.to_string()).or_default() += 1,
        None => {}
    };
    for _ in 0..n {
        while opening.len() >= OPENING {
            done(opening.join_next().await);
        }
        let (target, src) = (target.clone(), source(*next));
        *next += 1;
        opening.spawn(async move {
            match tokio::time::timeout(OPEN_TIMEOUT, open_one(&target, src)).await {
                Ok(r) => r,
                Err(_) => Err("timed out".into()),
            }
        });
    }
    while let Some(r) = opening.join_next().await {
        done(Some(r));
    }
    json!({
        "opened": opened,
        "failed": failed,
        "held": held.len(),
        "ms": started.elapsed().as_millis() as u64,
    })
}

/// One session and its event stream, from `src`; the connection once the stream's head came.
async fn open_one(target: &Target, src: Ipv4Addr) -> Result<Conn> {
    let step = |s: &'static str| move |e: io::Error| format!("{s}: {}", brief(&e));
    let mut c = target.connect(src).await.map_err(step("connect"))?;
    c.send(&target.initialize())
        .await
        .map_err(step("initialize"))?;
    let head = c.head().await.map_err(step("initialize"))?;
    c.body(&head).await.map_err(step("initialize"))?;
    let session = match (head.status, head.get("mcp-session-id")) {
        (200, Some(s)) => format!("Mcp-Session-Id: {s}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n"),
        (200, None) => return Err("initialize: no session id".into()),
        (s, _) => return Err(format!("initialize: status {s}")),
    };
    let accept = "Accept: application/json, text/event-stream\r\n";
    c.send(&target.request("POST", &format!("{session}{accept}"), INITIALIZED))
        .await
        .map_err(step("initialized"))?;
    let head = c.head().await.map_err(step("initialized"))?;
    c.body(&head).await.map_err(step("initialized"))?;
    if head.status != 202 {
        return Err(format!("initialized: status {}", head.status));
    }
    let accept = "Accept: text/event-stream\r\n";
    c.send(&target.request("GET", &format!("{session}{accept}"), ""))
        .await
        .map_err(step("stream"))?;
    let head = c.head().await.map_err(step("stream"))?;
    if head.status != 200 {
        return Err(format!("stream: status {}", head.status));
    }
    if head.get("content-type") != Some("text/event-stream") {
        return Err("stream: not an event stream".into());
    }
    c.shrink();
    Ok(c)
}

/// Reads a held stream's events until it ends (or the task is aborted by `close`).
async fn read_events(mut conn: Conn, received: Arc<Mutex<Received>>) {
    let mut pending = Vec::new();
    let why = loop {
        match conn.chunk().await {
            Ok(Some(chunk)) => {
                let now = event::now_ns();
                pending.extend_from_slice(&chunk);
                let mut r = received.lock().expect("received");
                while let Some(end) = event::event_end(&pending) {
                    for sent in event::sent_times(&pending[..end]) {
                        r.events += 1;
                        r.latency_us.push(now.saturating_sub(sent) as f64 / 1e3);
                    }
                    pending.drain(..end);
                }
                drop(r);
                pending.shrink_to_fit();
                conn.shrink();
            }
            Ok(None) => break "ended by the server".to_string(),
            Err(e) => break brief(&e),
        }
    };
    *received
        .lock()
        .expect("received")
        .ended
        .entry(why)
        .or_default() += 1;
}

fn stats(received: &Mutex<Received>, held: usize) -> Value {
    let r = std::mem::take(&mut *received.lock().expect("received"));
    let ms = |p| round2(percentile(&r.latency_us, p) / 1e3);
    json!({
        "held": held,
        "events": r.events,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
        "ended": r.ended,
    })
}

/// An I/O error in a few words (its kind, or the message of an other error).
pub fn brief(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::Other | io::ErrorKind::InvalidData => e.to_string(),
        k => format!("{k:?}"),
    }
}

/// TLS 1.2/1.3 trusting only `ca`, HTTP/1.1 by ALPN.
fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
