//! TLS termination: one rustls config per protected server, certificates picked by SNI and
//! reloaded when their files change (no restart, open connections keep their keys).
pub mod selfsigned;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::config::TlsCert;

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A certificate chain and key, loaded, with the file times they were loaded at.
struct Loaded {
    source: TlsCert,
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

/// Picks the certificate whose names match the client's SNI, else the first one.
#[derive(Debug)]
pub struct Resolver {
    loaded: RwLock<Vec<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source.cert.display())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.loaded.read().expect("cert lock");
        let by_name = hello.server_name().and_then(|sni| {
            let name = ServerName::try_from(sni).ok()?;
            keys.iter().find(|k| valid_for(k, &name)).cloned()
        });
        by_name.or_else(|| keys.first().cloned())
    }
}

fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.end_entity_cert()
        .ok()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
}

/// The TLS side of one protected server.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
    files: RwLock<Vec<Loaded>>,
}

impl ServerTls {
    /// Loads every certificate now; any error is reported (and the agent does not start).
    pub fn load(certs: &[TlsCert]) -> Result<Self, TlsError> {
        let files = certs.iter().map(load_pair).collect::<Result<Vec<_>, _>>()?;
        let resolver = Arc::new(Resolver {
            loaded: RwLock::new(files.iter().map(|l| l.key.clone()).collect()),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            resolver,
            files: RwLock::new(files),
        })
    }

    /// Reloads the certificates whose files changed. A pair that fails to load keeps its old
    /// certificate; the error is returned so it can be logged and audited.
    pub fn reload_changed(&self) -> Vec<(PathBuf, Result<(), TlsError>)> {
        let mut results = Vec::new();
        let mut files = self.files.write().expect("cert lock");
        for loaded in files.iter_mut() {
            if stamp(&loaded.source) == loaded.stamp {
                continue;
            }
            let path = loaded.source.cert.clone();
            match load_pair(&loaded.source) {
                Ok(new) => {
                    *loaded = new;
                    results.push((path, Ok(())));
                }
                Err(e) => {
                    // Do not try again until the files change once more.
                    loaded.stamp = stamp(&loaded.source);
                    results.push((path, Err(e)));
                }
            }
        }
        if results.iter().any(|(_, r)| r.is_ok()) {
            *self.resolver.loaded.write().expect("cert lock") =
                files.iter().map(|l| l.key.clone()).collect();
        }
        results
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn stamp(c: &TlsCert) -> (Option<SystemTime>, Option<SystemTime>) {
    (mtime(&c.cert), mtime(&c.key))
}

fn load_pair(c: &TlsCert) -> Result<Loaded, TlsError> {
    let stamp = stamp(c);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .map_err(|e| file_err(&c.cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&c.cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(&c.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&c.key)
        .map_err(|e| file_err(&c.key, format!("cannot read the private key: {e}")))?;
    let signing = ring::sign::any_supported_type(&key)
        .map_err(|e| file_err(&c.key, format!("unsupported key: {e}")))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|e| {
        file_err(
            &c.key,
            format!("the key does not match {}: {e}", c.cert.display()),
        )
    })?;
    Ok(Loaded {
        source: c.clone(),
        key: Arc::new(key),
        stamp,
    })
}

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
