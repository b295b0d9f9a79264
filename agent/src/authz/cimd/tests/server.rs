//! A local HTTPS server that answers what each test scripts, and counts the connections it
//! accepted.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::super::{Fetcher, Limits};

/// One thing the server does after reading a request.
#[derive(Clone)]
pub enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
}

type Script = Arc<dyn Fn() -> Vec<Step> + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    /// TCP connections accepted: 0 means the fetcher never connected.
    accepted: Arc<AtomicUsize>,
    pub roots: rustls::RootCertStore,
}

impl Server {
    pub async fn start(script: impl Fn() -> Vec<Step> + Send + Sync + 'static) -> Self {
        let key = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .unwrap();
        let cert: CertificateDer<'static> = key.cert.der().clone();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = v4.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let script: Script = Arc::new(script);
        let mut listeners = vec![v4];
        // `localhost` may also resolve to ::1; listen there too where the host has it.
        if let Ok(v6) = TcpListener::bind(("::1", addr.port())).await {
            listeners.push(v6);
        }
        for listener in listeners {
            let (acceptor, accepted, script) = (acceptor.clone(), accepted.clone(), script.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, script) = (acceptor.clone(), script.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        for step in script() {
                            match step {
                                Step::Write(bytes) => {
                                    if tls.write_all(&bytes).await.is_err() {
                                        return;
                                    }
                                    let _ = tls.flush().await;
                                }
                                Step::Sleep(d) => tokio::time::sleep(d).await,
                            }
                        }
                        let _ = tls.shutdown().await;
                    });
                }
            });
        }
        Self {
            addr,
            accepted,
            roots,
        }
    }

    /// A server that answers every request with `head` and `body`.
    pub async fn answering(head: &str, body: &[u8]) -> Self {
        let reply = [head.as_bytes(), b"\r\n\r\n", body].concat();
        Self::start(move || vec![Step::Write(reply.clone())]).await
    }

    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/client.json", self.addr.port())
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn fetcher(&self, allow: &[&str], limits: Limits) -> Fetcher {
        let allow = allow.iter().map(|n| n.parse().unwrap()).collect();
        Fetcher::new(allow, self.roots.clone(), limits).unwrap()
    }

    pub fn allowing_loopback(&self) -> Fetcher {
        self.fetcher(&["127.0.0.1/32"], Limits::default())
    }
}

pub fn doc(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Test client",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
    })
}

pub fn json_head(len: usize) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close"
    )
}

/// A server answering with `content_type` and the document `make` writes for the server's
/// own loopback URL.
pub async fn serving(
    content_type: &'static str,
    make: impl Fn(&str) -> Value + Send + Sync + 'static,
) -> Server {
    let url = Arc::new(std::sync::OnceLock::<String>::new());
    let slot = url.clone();
    let server = Server::start(move || {
        let body = make(slot.get().unwrap()).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\n{content_type}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        vec![Step::Write([head, body].concat().into_bytes())]
    })
    .await;
    url.set(server.url("127.0.0.1")).unwrap();
    server
}

pub const JSON: &str = "content-type: application/json\r\n";

pub async fn serving_its_document() -> Server {
    serving(JSON, doc).await
}
