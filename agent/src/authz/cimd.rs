//! Client ID metadata documents: an MCP client's `client_id` is an https URL, and the document
//! at that URL describes the client. The URL is the client's choice, so fetching it is guarded
//! against reaching Moat's own network (see [`guard`]); documents are cached for a while.
mod cache;
mod client_id;
mod document;
mod error;
mod fetch;
mod guard;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Instant};

use self::{client_id::ClientIdUrl, document::Document, error::CimdError};
pub use self::{fetch::Limits, guard::Guard};

/// How many clients' documents (or failures) are kept.
pub const CACHE_ENTRIES: usize = 1024;

type Fetched = Result<Arc<Document>, CimdError>;

/// Fetches and checks client ID metadata documents, and keeps them for a while.
pub struct Fetcher {
    guard: Guard,
    tls: Arc<rustls::ClientConfig>,
    limits: Limits,
    cache: cache::Cache<Fetched>,
}

impl Fetcher {
    /// `allow_private`: the networks the operator allows documents from although they are not
    /// public (internal clients). `roots`: whom the document servers' certificates are trusted
    /// from (the system's roots, in production).
    pub fn new(
        allow_private: Vec<ipnet::IpNet>,
        roots: rustls::RootCertStore,
        limits: Limits,
    ) -> Result<Self, rustls::Error> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            guard: Guard::new(allow_private),
            tls: Arc::new(tls),
            limits,
            cache: cache::Cache::new(CACHE_ENTRIES),
        })
    }

    /// The document for `client_id`, from the cache or fetched and checked now.
    pub async fn get(&self, client_id: &str) -> Fetched {
        let url = ClientIdUrl::parse(client_id)?;
        if let Some(cached) = self.cache.get(url.as_str(), Instant::now()) {
            return cached;
        }
        let (fetched, ttl) = match fetch::fetch(&url, &self.guard, &self.tls, &self.limits).await {
            Ok((document, ttl)) => (Ok(Arc::new(document)), ttl),
            Err(error) => (Err(error), cache::MIN_TTL),
        };
        self.cache
            .insert(url.as_str().into(), fetched.clone(), ttl, Instant::now());
        fetched
    }
}

/// The system's trusted roots, for [`Fetcher::new`].
pub fn native_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}
