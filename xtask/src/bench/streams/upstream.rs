//! The upstream MCP server of `bench streams`: the hidden subcommand UPSTREAM_CMD (hyper,
//! HTTP/1.1, one thread, TCP_NODELAY). A POST `initialize` gets a result and a new
//! `Mcp-Session-Id`, any other POST 202; a GET with `Accept: text/event-stream` and a session
//! id gets an event stream that stays open. While events are on, every stream gets one event
//! (event.rs) per period, the streams' events spread evenly over the period.
//!
//! Commands (control.rs): `events on`, `events off`, `period <ms>`, `stats` (streams open now,
//! events sent and dropped for a full stream, sessions issued).
use std::{
    convert::Infallible,
    net::{Ipv4Addr, TcpListener as StdListener},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Body, Frame, Incoming},
    header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{net::TcpListener, sync::mpsc};

use super::{control, event};
use crate::Result;

/// The hidden subcommand run by the release build.
pub const UPSTREAM_CMD: &str = "bench-streams-upstream";

/// How often the sender wakes to send what is due.
const TICK: Duration = Duration::from_millis(10);
/// Events a stream may have waiting (its client reads slowly); more are dropped and counted.
const QUEUE: usize = 4;

const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"logging":{}},"serverInfo":{"name":"bench","version":"1"}}}"#;

#[derive(Default)]
struct Shared {
    streams: Mutex<Vec<mpsc::Sender<Bytes>>>,
    events: AtomicBool,
    period_ms: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    sessions: AtomicU64,
}

/// `UPSTREAM_CMD PERIOD_MS PORT...`: serves on 127.0.0.1:PORT in the calling network
/// namespace, events off, until stdin closes.
pub fn serve(args: &[String]) -> Result {
    let [period, ports @ ..] = args else {
        return Err(format!("usage: {UPSTREAM_CMD} PERIOD_MS PORT..."));
    };
    let period: u64 = period.parse().map_err(|_| "PERIOD_MS: not a number")?;
    control::raise_nofile();
    let listeners = ports
        .iter()
        .map(|p| {
            let port: u16 = p.parse().map_err(|_| format!("not a port: {p}"))?;
            let l = StdListener::bind((Ipv4Addr::LOCALHOST, port))
                .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(l)
        })
        .collect::<Result<Vec<_>>>()?;
    let shared = Arc::new(Shared::default());
    shared.period_ms.store(period.max(1), Ordering::Relaxed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        for l in listeners {
            let l = TcpListener::from_std(l).expect("tokio listener");
            tokio::spawn(accept_loop(l, shared.clone()));
        }
        tokio::spawn(send_events(shared.clone()));
        let mut commands = control::commands();
        while let Some((line, answer)) = commands.recv().await {
            let _ = answer.send(command(&shared, &line));
        }
    });
    Ok(())
}

fn command(shared: &Shared, line: &str) -> serde_json::Value {
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["events", "on"] => shared.events.store(true, Ordering::Relaxed),
        ["events", "off"] => shared.events.store(false, Ordering::Relaxed),
        ["period", ms] => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => shared.period_ms.store(ms, Ordering::Relaxed),
            _ => return json!({"error": format!("bad period: {ms}")}),
        },
        ["stats"] => {}
        _ => return json!({"error": format!("unknown command: {line}")}),
    }
    let streams = {
        let mut s = shared.streams.lock().expect("streams");
        s.retain(|tx| !tx.is_closed());
        s.len()
    };
    json!({
        "streams": streams,
        "sent": shared.sent.load(Ordering::Relaxed),
        "dropped": shared.dropped.load(Ordering::Relaxed),
        "sessions": shared.sessions.load(Ordering::Relaxed),
    })
}

/// Every TICK, the events due: each stream one per period, in turn.
async fn send_events(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut next, mut due, mut seq) = (0usize, 0f64, 0u64);
    loop {
        tick.tick().await;
        if !shared.events.load(Ordering::Relaxed) {
            due = 0.0;
            continue;
        }
        let period = shared.period_ms.load(Ordering::Relaxed) as f64;
        let mut streams = shared.streams.lock().expect("streams");
        due += streams.len() as f64 * TICK.as_millis() as f64 / period;
        while due >= 1.0 && !streams.is_empty() {
            due -= 1.0;
            if next >= streams.len() {
                next = 0;
            }
            seq += 1;
            match streams[next].try_send(event::event(seq)) {
                Ok(()) => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    next += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    next += 1;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    streams.swap_remove(next);
                }
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors and the like: back off.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Answer = Response<Either<Full<Bytes>, Events>>;

async fn respond(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> std::result::Result<Answer, Infallible> {
    let status = |s: StatusCode| {
        let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
        *r.status_mut() = s;
        Ok(r)
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    match *req.method() {
        Method::POST => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let Ok(body) = body else {
                return status(StatusCode::BAD_REQUEST);
            };
            const INITIALIZE: &[u8] = br#""method":"initialize""#;
            if !body.windows(INITIALIZE.len()).any(|w| w == INITIALIZE) {
                return status(StatusCode::ACCEPTED);
            }
            let n = shared.sessions.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(INITIALIZED))));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(
                "mcp-session-id",
                HeaderValue::from_str(&format!("bench-{n:08x}")).expect("a header value"),
            );
            Ok(r)
        }
        Method::GET
            if header("accept").contains("text/event-stream")
                && !header("mcp-session-id").is_empty() =>
        {
            let (tx, rx) = mpsc::channel(QUEUE);
            shared.streams.lock().expect("streams").push(tx);
            let mut r = Response::new(Either::Right(Events(rx)));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(r)
        }
        Method::GET => status(StatusCode::NOT_ACCEPTABLE),
        _ => status(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// A stream's body: its events as they are sent; it ends with the connection.
struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|e| e.map(|b| Ok(Frame::data(b))))
    }
}
