//! The authorization server's own listener (`authorization_server.listen`, TLS unless
//! `dangerous.plaintext`) and its routes, under the issuer URL's path.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderValue, Method, Request, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{
    AuthServer,
    error::OAuthError,
    form,
    reply::{self, Reply},
};
use crate::{audit::AuditLog, tls::ServerTls};

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// The TLS handshake and a request's headers must arrive within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("authorization_server.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("authorization_server.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Binds the listener (an error at start, not later) and loads the certificates.
pub async fn bind(
    server: &AuthServer,
) -> Result<(TcpListener, Option<Arc<ServerTls>>), ListenError> {
    let addr = server.config.listen;
    let tls = if server.config.plaintext {
        None
    } else {
        Some(Arc::new(ServerTls::load(&server.config.tls.certs)?))
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })?;
    Ok((listener, tls))
}

/// Serves the authorization server on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Option<Arc<ServerTls>>, server: Arc<AuthServer>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("authorization server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (server, tls) = (server.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.route(req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let result = match tls {
                Some(tls) => {
                    let acceptor = TlsAcceptor::from(tls.config.clone());
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), service).await,
                        _ => Ok(()),
                    }
                }
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("authorization server connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// Listens and serves `server` (and rotates its keys) from tasks of their own; the handle ends
/// both when aborted.
pub async fn start(
    server: Arc<AuthServer>,
    audit: AuditLog,
) -> Result<tokio::task::JoinHandle<()>, crate::error::AppError> {
    server.set_audit(audit);
    let (listener, tls) = bind(&server)
        .await
        .map_err(|e| crate::error::AppError::Authz(e.to_string()))?;
    if server.config.plaintext {
        tracing::warn!(issuer = %server.issuer(), "DANGEROUS: the authorization server speaks plain HTTP (loopback only)");
    }
    tracing::info!(issuer = %server.issuer(), listen = %server.config.listen, "authorization server");
    Ok(tokio::spawn(async move {
        let rotate = {
            let server = server.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    match server.signer.rotate_if_due() {
                        Ok(true) => server.event("key_rotated", serde_json::json!({})).await,
                        Ok(false) => {}
                        Err(e) => tracing::error!("authorization server: rotating keys: {e}"),
                    }
                }
            }
        };
        tokio::join!(serve(listener, tls, server), rotate);
    }))
}

impl AuthServer {
    /// The issuer URL's path, without a trailing `/` (`""` for a bare host).
    fn base_path(&self) -> String {
        url::Url::parse(self.issuer())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    async fn route(&self, req: Request<Incoming>) -> Reply {
        let (parts, body) = req.into_parts();
        let base = self.base_path();
        let path = parts.uri.path();
        let query = parts.uri.query();
        let discovery = [
            format!("/.well-known/oauth-authorization-server{base}"),
            format!("/.well-known/openid-configuration{base}"),
            format!("{base}/.well-known/openid-configuration"),
        ];
        if discovery.iter().any(|d| d == path) {
            return match parts.method {
                Method::GET | Method::HEAD => reply::document(&self.metadata()),
                Method::OPTIONS => preflight(),
                _ => not_allowed("GET"),
            };
        }
        let Some(endpoint) = path
            .strip_prefix(base.as_str())
            .and_then(|p| p.strip_prefix('/'))
        else {
            return not_found();
        };
        if endpoint == "register" && self.config.registration.dynamic == crate::config::Dynamic::Off
        {
            // Not offered: not there.
            return not_found();
        }
        let h = &parts.headers;
        let r = match (endpoint, &parts.method) {
            ("jwks.json", &Method::GET | &Method::HEAD) => reply::document(&self.jwks()),
            ("authorize", &Method::GET) => self.authorize(query, h).await,
            ("login", &Method::GET) => self.login_page(query, h),
            ("login", &Method::POST) => match form::form(h, body).await {
                Ok(f) => self.login_post(h, f).await,
                Err(e) => reply::error_page(&e),
            },
            ("callback", &Method::GET) => self.callback(query, h).await,
            ("upstream/connect", &Method::GET) => self.upstream_connect(query, h),
            ("upstream/callback", &Method::GET) => self.upstream_callback(query, h).await,
            ("consent", &Method::GET) => self.consent_page(query, h).await,
            ("consent", &Method::POST) => match form::form(h, body).await {
                Ok(f) => self.consent_post(h, f).await,
                Err(e) => reply::error_page(&e),
            },
            ("token", &Method::POST) => match form::form(h, body).await {
                Ok(f) => self.token(h, f).await,
                Err(e) => reply::error_json(&e),
            },
            ("revoke", &Method::POST) => match form::form(h, body).await {
                Ok(f) => self.revoke(h, f).await,
                Err(e) => reply::error_json(&e),
            },
            ("register", &Method::POST) => match form::body(body).await {
                Ok(b) => self.register(&b).await,
                Err(e) => reply::error_json(&e),
            },
            ("token" | "revoke" | "register" | "jwks.json", &Method::OPTIONS) => preflight(),
            ("token" | "revoke" | "register", _) => not_allowed("POST"),
            (
                "authorize" | "jwks.json" | "callback" | "upstream/connect" | "upstream/callback",
                _,
            ) => not_allowed("GET"),
            ("login" | "consent", _) => not_allowed("GET, POST"),
            _ => not_found(),
        };
        cors(endpoint, r)
    }
}

/// The JSON endpoints may be called from a browser-based client of any origin (they take no
/// cookies); the pages may not.
fn cors(endpoint: &str, mut r: Reply) -> Reply {
    if matches!(endpoint, "token" | "revoke" | "register" | "jwks.json") {
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    r
}

fn preflight() -> Reply {
    let mut r = reply::json(StatusCode::NO_CONTENT, &serde_json::json!({}));
    *r.body_mut() = http_body_util::Full::default();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, mcp-protocol-version"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

fn not_found() -> Reply {
    let mut r = reply::error_json(&OAuthError::InvalidRequest("no such endpoint".into()));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

fn not_allowed(allow: &'static str) -> Reply {
    let mut r = reply::error_json(&OAuthError::InvalidRequest("method not allowed".into()));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
