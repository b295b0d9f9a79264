//! Talking to the provider: which URLs Moat may use (https, or http to a loopback address when
//! the issuer itself is one), and bounded requests to them (the resource server's HTTP client:
//! the system's roots plus the CA file, no redirects, no proxy), within a time and a size limit.
use std::{net::IpAddr, path::Path, time::Duration};

use serde::de::DeserializeOwned;
use url::{Host, Url};

use super::error::FederationError;

/// What one request to the provider may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connecting, sending and reading the whole answer (the HTTP client's own limit).
    pub timeout: Duration,
    /// The largest answer (metadata, keys, tokens, userinfo), enforced while reading.
    pub max_bytes: usize,
    /// An unknown key id makes Moat fetch the provider's keys again at most this often.
    pub min_refetch: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            min_refetch: Duration::from_secs(10),
        }
    }
}

/// Checks a URL Moat is about to use: https, or http to a loopback address when
/// `loopback_http` (the issuer is such a URL); never with credentials or a fragment.
pub fn checked(what: &'static str, raw: &str, loopback_http: bool) -> Result<Url, FederationError> {
    let bad = |reason| FederationError::Url {
        what,
        url: raw.to_string(),
        reason,
    };
    let url = Url::parse(raw).map_err(|_| bad("not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if !is_loopback(&url) => {
            return Err(bad("plain http is only allowed to a loopback address"));
        }
        "http" if !loopback_http => {
            return Err(bad("plain http, while the issuer uses https"));
        }
        "http" => {}
        _ => return Err(bad("neither https nor http")),
    }
    if url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL"));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment in the URL"));
    }
    Ok(url)
}

/// An address literal of the loopback range (names are not trusted to resolve to one).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// The HTTP client for one provider.
pub struct Http {
    client: reqwest::Client,
    limits: Limits,
}

/// An answer read within the limits.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Http {
    pub fn new(ca_file: Option<&Path>, limits: Limits) -> Result<Self, FederationError> {
        let client = crate::auth::fetch::client(ca_file).map_err(FederationError::Config)?;
        Ok(Self { client, limits })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        self.client
            .get(url.clone())
            .timeout(self.limits.timeout)
            .header(http::header::ACCEPT, "application/json")
    }

    pub fn post(&self, url: &Url) -> reqwest::RequestBuilder {
        self.client
            .post(url.clone())
            .timeout(self.limits.timeout)
            .header(http::header::ACCEPT, "application/json")
    }

    /// Sends `request` and reads the answer, whatever its status (a redirect is an answer too:
    /// Moat follows none).
    pub async fn send(
        &self,
        what: &'static str,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, FederationError> {
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                FederationError::Timeout {
                    what,
                    url: url.to_string(),
                    limit: self.limits.timeout,
                }
            } else {
                FederationError::Fetch {
                    what,
                    url: url.to_string(),
                    reason: chain(&e.without_url()),
                }
            }
        };
        let too_large = || FederationError::TooLarge {
            what,
            url: url.to_string(),
            limit: self.limits.max_bytes,
        };
        let mut response = request.send().await.map_err(failed)?;
        if response
            .content_length()
            .is_some_and(|n| n > self.limits.max_bytes as u64)
        {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > self.limits.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    /// GETs a JSON document (metadata, keys); anything but 200 is an error.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: &Url,
    ) -> Result<T, FederationError> {
        let answer = self.send(what, url, self.get(url)).await?;
        if answer.status != 200 {
            return Err(FederationError::Status {
                what,
                url: url.to_string(),
                status: answer.status,
            });
        }
        answer.json(what, url)
    }
}

impl Answer {
    pub fn json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: &Url,
    ) -> Result<T, FederationError> {
        // Where and what kind of error only: serde's message may quote the body (a token).
        serde_json::from_slice(&self.body).map_err(|e| FederationError::Body {
            what,
            url: url.to_string(),
            reason: format!(
                "JSON {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }
}

/// An error and its causes, on one line.
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
