//! One fetch of a client ID metadata document: resolve the host here, check every address,
//! connect to exactly the checked one over TLS, follow no redirect, read a bounded body within
//! a time limit.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use url::Host;

use super::{cache, client_id::ClientIdUrl, document::Document, error::CimdError, guard::Guard};

/// What one fetch may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest document, in bytes, enforced while reading.
    pub max_bytes: usize,
    /// Resolving, connecting, and reading the whole document.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Fetches `url` and checks the document; also how long it may be kept.
pub async fn fetch(
    url: &ClientIdUrl,
    guard: &Guard,
    tls: &rustls::ClientConfig,
    limits: &Limits,
) -> Result<(Document, Duration), CimdError> {
    tokio::time::timeout(limits.timeout, fetch_unbounded(url, guard, tls, limits))
        .await
        .map_err(|_| CimdError::Timeout(limits.timeout))?
}

async fn fetch_unbounded(
    url: &ClientIdUrl,
    guard: &Guard,
    tls: &rustls::ClientConfig,
    limits: &Limits,
) -> Result<(Document, Duration), CimdError> {
    let addr = checked_address(url, guard).await?;
    let mut client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .no_proxy()
        .https_only(true)
        .pool_max_idle_per_host(0)
        .timeout(limits.timeout)
        .user_agent(concat!("moat/", env!("CARGO_PKG_VERSION")))
        // A name without an override below fails instead of reaching the system's resolver.
        .dns_resolver(Arc::new(NoDns));
    if let Host::Domain(domain) = url.host() {
        client = client.resolve(domain, addr);
    }
    let client = client.build().map_err(|e| CimdError::Connect(chain(&e)))?;
    let mut response = client
        .get(url.url().clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| failed(&e, limits, CimdError::Connect))?;

    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
        return Err(CimdError::Redirect {
            status: status.as_u16(),
            location,
        });
    }
    if status != StatusCode::OK {
        return Err(CimdError::Status(status.as_u16()));
    }
    check_content_type(response.headers())?;
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes as u64)
    {
        return Err(CimdError::TooLarge(limits.max_bytes));
    }
    let ttl = cache::ttl(response.headers());
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(&e, limits, CimdError::Body))?
    {
        if body.len() + chunk.len() > limits.max_bytes {
            return Err(CimdError::TooLarge(limits.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    let document = Document::parse(url, &body)?;
    Ok((document, ttl))
}

/// The address to connect to: the host's, if every address it resolves to may be fetched from.
async fn checked_address(url: &ClientIdUrl, guard: &Guard) -> Result<SocketAddr, CimdError> {
    let port = url.port();
    let (host, ips): (String, Vec<IpAddr>) = match url.host() {
        Host::Ipv4(ip) => (ip.to_string(), vec![ip.into()]),
        Host::Ipv6(ip) => (ip.to_string(), vec![ip.into()]),
        Host::Domain(domain) => {
            let addrs =
                tokio::net::lookup_host((domain, port))
                    .await
                    .map_err(|e| CimdError::Resolve {
                        host: domain.into(),
                        reason: e.to_string(),
                    })?;
            (domain.into(), addrs.map(|a| a.ip()).collect())
        }
    };
    let Some(first) = ips.first().copied() else {
        return Err(CimdError::NoAddress(host));
    };
    for &addr in &ips {
        guard.check(addr).map_err(|class| CimdError::Forbidden {
            host: host.clone(),
            addr,
            class,
        })?;
    }
    Ok(SocketAddr::new(first, port))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), CimdError> {
    let value = headers.get(CONTENT_TYPE).map(|v| v.to_str());
    let media = match value {
        Some(Ok(v)) => v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
        Some(Err(_)) => return Err(CimdError::ContentType(Some("(not text)".into()))),
        None => return Err(CimdError::ContentType(None)),
    };
    let json = media == "application/json"
        || media
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && !sub.contains('/'));
    if json {
        Ok(())
    } else {
        Err(CimdError::ContentType(Some(media)))
    }
}

/// reqwest's own time limit (the same as ours) is our time limit too.
fn failed(error: &reqwest::Error, limits: &Limits, other: fn(String) -> CimdError) -> CimdError {
    if error.is_timeout() {
        CimdError::Timeout(limits.timeout)
    } else {
        other(chain(error))
    }
}

/// An error and its causes, on one line (reqwest's own message names only the outermost).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The resolver for every name the fetch did not resolve and check itself: none.
struct NoDns;

impl reqwest::dns::Resolve for NoDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            Err(format!("{name} was not resolved and checked before connecting").into())
        })
    }
}
