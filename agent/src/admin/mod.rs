//! The admin listener (`agent.admin_listen`): Prometheus metrics at /metrics, liveness at
//! /healthz and readiness at /readyz, over plain HTTP/1.1, GET and HEAD only; and, with
//! `approvals.token_file`, the approvals waiting for an answer at /approvals (GET) and their
//! answers (POST /approvals/ID/approve or /deny), for the bearer of that token only.
mod approvals;
pub mod metrics;
pub mod state;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

pub use self::{
    metrics::{ConnectionMetrics, Metrics, ServerMetrics, TokenOutcome},
    state::AgentState,
};

/// At most this many admin connections at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// A connection must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} (agent.admin_listen; `off` disables it): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the endpoints answer from; cheap to clone.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub state: Arc<AgentState>,
    /// The requests held for approval (None: in tests of the other endpoints).
    pub approvals: Option<Arc<crate::approval::Approvals>>,
}

impl Admin {
    /// The metrics of `config`'s servers, and an agent state still to be filled in.
    pub fn new(config: &crate::config::Config) -> Self {
        let state = Arc::new(AgentState::default());
        Self {
            metrics: Arc::new(Metrics::new(config, state.clone())),
            state,
            approvals: None,
        }
    }
}

/// Binds the admin listener; failing is an error at startup, not later.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the admin listener is not on a loopback address: anyone who reaches it reads the metrics");
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Binds `listen` (if not `off`) and serves the endpoints there from a task of its own.
pub async fn start(
    listen: Option<SocketAddr>,
    admin: Admin,
) -> Result<Option<tokio::task::JoinHandle<()>>, AdminError> {
    let Some(addr) = listen else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    tracing::info!(%addr, "admin listener: /metrics, /healthz, /readyz");
    Ok(Some(tokio::spawn(serve(listener, Arc::new(admin)))))
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("admin listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = match approvals::answer(admin.approvals.as_deref(), &req) {
                    Some(r) => r,
                    None => respond(&admin, req.method(), req.uri().path()),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("admin connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// The answer to `method` on `path`.
pub fn respond(admin: &Admin, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return plain(StatusCode::NOT_FOUND, "not found\n".into(), method);
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            method,
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match admin.metrics.encode() {
            Ok(text) => {
                let mut r = plain(StatusCode::OK, text, method);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                r
            }
            Err(e) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the metrics: {e}\n"),
                method,
            ),
        },
        "/healthz" => plain(StatusCode::OK, format!("ok{}\n", note(admin)), method),
        _ => match admin.state.readiness() {
            Ok(()) => plain(StatusCode::OK, format!("ready{}\n", note(admin)), method),
            Err(why) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
                method,
            ),
        },
    }
}

/// What /healthz and /readyz add for an agent that protects nothing.
fn note(admin: &Admin) -> &'static str {
    if admin.state.unprotected() {
        ", UNPROTECTED (moat run --unprotected): no kernel steering, sealing or bind guard"
    } else {
        ""
    }
}

/// A plain-text answer (no body for HEAD, the same headers).
fn plain(status: StatusCode, body: String, method: &Method) -> Response<Full<Bytes>> {
    let len = body.len();
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::config::Config;

    fn admin() -> Admin {
        let config = Config::parse(
            "t.yaml",
            "servers:\n  - {name: files, port: 8000, dangerous: {plaintext: true, unauthenticated: true}}\n",
        )
        .unwrap();
        Admin::new(&config)
    }

    async fn text(r: Response<Full<Bytes>>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn only_the_three_endpoints_and_only_get_and_head() {
        let a = admin();
        for path in ["/", "/metrics/", "/health", "/readyz/x", "/../metrics"] {
            for m in [Method::GET, Method::POST] {
                assert_eq!(respond(&a, &m, path).status(), 404, "{m} {path}");
            }
        }
        for path in ["/metrics", "/healthz", "/readyz"] {
            for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
                let r = respond(&a, &m, path);
                assert_eq!(r.status(), 405, "{m} {path}");
                assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
            }
        }
        let r = respond(&a, &Method::GET, "/healthz");
        assert_eq!(r.status(), 200);
        assert_eq!(text(r).await, "ok\n");
        let head = respond(&a, &Method::HEAD, "/healthz");
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "3");
        assert_eq!(text(head).await, "", "no body for HEAD");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let a = admin();
        a.metrics.server("files").request(Some("ping"), false, 0.01);
        let r = respond(&a, &Method::GET, "/metrics");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = text(r).await;
        assert!(
            body.contains(
                "moat_requests_total{server=\"files\",method=\"ping\",decision=\"allow\"} 1\n"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn readyz_says_why_a_starting_agent_is_not_ready() {
        let a = admin();
        let r = respond(&a, &Method::GET, "/readyz");
        assert_eq!(r.status(), 503);
        assert_eq!(
            text(r).await,
            "not ready: starting: the audit log is not open yet\n"
        );
        a.state.stop();
        let r = respond(&a, &Method::GET, "/readyz");
        assert_eq!(r.status(), 503);
        assert_eq!(text(r).await, "not ready: stopping\n");
        assert_eq!(respond(&a, &Method::GET, "/healthz").status(), 200);
    }

    #[tokio::test]
    async fn health_and_readiness_say_when_the_agent_is_unprotected() {
        let a = admin();
        a.state.set_unprotected();
        let r = respond(&a, &Method::GET, "/healthz");
        assert_eq!(r.status(), 200);
        assert!(text(r).await.starts_with("ok, UNPROTECTED ("));
        let r = respond(&a, &Method::GET, "/readyz");
        assert_eq!(r.status(), 503, "the audit log is not open yet");
        assert_eq!(
            text(r).await,
            "not ready: starting: the audit log is not open yet\n"
        );
    }

    #[tokio::test]
    async fn the_listener_serves_over_http() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let taken = bind(addr).await.unwrap_err();
        assert!(taken.to_string().contains("agent.admin_listen"), "{taken}");
        let task = tokio::spawn(serve(listener, Arc::new(admin())));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"garbage\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "a bad request is refused: {out}"
        );
        task.abort();
    }
}
