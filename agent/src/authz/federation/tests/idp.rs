//! A small OpenID provider made in the test, for what the real one will not do: ID tokens made
//! by the test (with the pending login's nonce, or forged), keys that change, userinfo about
//! someone else, answers too large, too slow or redirected. Plain HTTP on loopback, or HTTPS
//! with its own CA in a file.
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::jwt::{TestKey, claims};
use crate::authz::federation::{CallbackParams, Federation, Limits, OidcLogin, Pending};

pub const CLIENT: &str = "moat-client";
pub const SECRET: &str = "s3cr:t/+&=";
pub const ACCESS_TOKEN: &str = "at-0123456789";

/// One request the provider received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// An answer of the test's own for a path: status, headers, body.
pub type Raw = (u16, Vec<(&'static str, String)>, Vec<u8>);

#[derive(Default)]
pub struct State {
    pub metadata: Value,
    pub jwks: Value,
    /// The next token answer's ID token.
    pub id_token: String,
    /// Replaces the token answer.
    pub token: Option<(u16, Value)>,
    pub userinfo: Value,
    pub raw: HashMap<String, Raw>,
    pub delay: Duration,
    pub seen: Vec<Seen>,
}

pub struct Idp {
    pub issuer: String,
    pub addr: SocketAddr,
    pub key: TestKey,
    pub ca_file: Option<PathBuf>,
    state: Arc<Mutex<State>>,
}

impl Idp {
    /// A provider at `http://127.0.0.1:P`, or `https://127.0.0.1:P` with `tls`.
    pub async fn start(tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("{}://{addr}", if tls { "https" } else { "http" });
        let key = TestKey::es256("key-1");
        let state = Arc::new(Mutex::new(State {
            metadata: metadata(&issuer),
            jwks: json!({"keys": [key.jwk()]}),
            userinfo: json!({"sub": "alice"}),
            ..State::default()
        }));
        let (acceptor, ca_file) = if tls {
            let (acceptor, ca) = tls_acceptor(addr.port());
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (state, acceptor) = (shared.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Self {
            issuer,
            addr,
            key,
            ca_file,
            state,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn config(&self) -> OidcLogin {
        OidcLogin {
            client_secret: Some(SECRET.into()),
            ca_file: self.ca_file.clone(),
            ..OidcLogin::new(&self.issuer, CLIENT)
        }
    }

    pub async fn discover(&self, config: OidcLogin) -> Federation {
        let limits = Limits {
            min_refetch: Duration::from_millis(300),
            ..Limits::default()
        };
        Federation::discover_with(config, limits).await.unwrap()
    }

    /// How many requests reached `path`.
    pub fn count(&self, path: &str) -> usize {
        self.state().seen.iter().filter(|s| s.path == path).count()
    }

    /// The claims of a good ID token for `pending`.
    pub fn claims(&self, pending: &Pending) -> Value {
        claims(&self.issuer, CLIENT, &pending.nonce)
    }

    /// The callback the provider would send for `pending`.
    pub fn callback(&self, pending: &Pending) -> CallbackParams {
        CallbackParams {
            state: Some(pending.state.clone()),
            code: Some("code-1".into()),
            iss: Some(self.issuer.clone()),
            ..CallbackParams::default()
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(dir) = self.ca_file.as_ref().and_then(|ca| ca.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn metadata(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/me"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "authorization_response_iss_parameter_supported": true,
    })
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let (delay, (status, headers, body)) = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            path: path.clone(),
            authorization,
            body,
        });
        let json = |status, v: &Value| -> Raw {
            let head = vec![("content-type", "application/json".to_string())];
            (status, head, v.to_string().into_bytes())
        };
        let raw = match (s.raw.get(&path), path.as_str()) {
            (Some(raw), _) => raw.clone(),
            (None, "/.well-known/openid-configuration") => json(200, &s.metadata),
            (None, "/jwks") => json(200, &s.jwks),
            (None, "/me") => json(200, &s.userinfo),
            (None, "/token") => match &s.token {
                Some((status, v)) => json(*status, v),
                None => json(
                    200,
                    &json!({
                        "access_token": ACCESS_TOKEN, "token_type": "Bearer",
                        "expires_in": 300, "id_token": s.id_token,
                    }),
                ),
            },
            _ => json(404, &json!({"error": "not_found"})),
        };
        (s.delay, raw)
    };
    tokio::time::sleep(delay).await;
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    Ok(response.body(Full::new(Bytes::from(body))).unwrap())
}

/// A TLS acceptor for 127.0.0.1, and its certificate in a file (the CA file to trust).
fn tls_acceptor(port: u16) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("moat-federation-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    let cert: CertificateDer<'static> = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca)
}
