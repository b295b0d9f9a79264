//! The OAuth 2.1 resource server: who is calling, from the bearer token of each request, or why
//! the request is refused.
mod cache;
mod clock;
mod error;
pub(crate) mod fetch;
mod introspect;
mod jwks;
mod jwt;
pub mod local;
mod metadata;
mod ring_crypto;
pub mod sessions;
mod signing;
pub mod upstream;

use std::{path::Path, sync::Arc};

use http::{HeaderMap, HeaderValue, Uri, header};

use self::{cache::TokenCache, clock::now, introspect::Introspector};
pub use self::{
    error::{AuthError, Invalid},
    jwks::{Jwks, KeyEvent, KeySet, KeySource},
    metadata::Metadata,
    ring_crypto::install as install_crypto,
};
use crate::config::{Auth, Issuer};
pub use crate::vocab::Principal;

/// One protected server's resource server.
pub struct Authenticator {
    config: Auth,
    keys: KeySource,
    introspector: Option<Introspector>,
    cache: TokenCache,
    pub metadata: Metadata,
}

impl Authenticator {
    /// `public_url` and `endpoint` locate the metadata; `keys` verify signatures.
    pub fn new(
        config: &Auth,
        public_url: &str,
        endpoint: &str,
        keys: KeySource,
    ) -> Result<Self, String> {
        let introspector = match &config.introspection {
            Some(i) => Some(Introspector::new(i, config.ca_file.as_deref())?),
            None => None,
        };
        Ok(Self {
            metadata: Metadata::new(config, public_url, endpoint),
            config: config.clone(),
            keys,
            introspector,
            cache: TokenCache::default(),
        })
    }

    /// The principal of a request, from its `Authorization: Bearer` header, and whether its
    /// token was validated earlier (found in the cache).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(Arc<Principal>, bool), AuthError> {
        let token = bearer_token(headers, uri)?;
        let (principal, cached) = match self.cache.get(token) {
            Some(p) => (p, true),
            None => {
                let (p, exp) = self.validate(token).await?;
                let p = Arc::new(p);
                self.cache.insert(token, p.clone(), exp);
                (p, false)
            }
        };
        let missing: Vec<String> = self
            .config
            .required_scopes
            .iter()
            .filter(|s| !principal.scopes.contains(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope {
                granted: principal.scopes.clone(),
                missing,
            });
        }
        Ok((principal, cached))
    }

    /// A token not in the cache: a JWT is verified here; anything else goes to introspection.
    async fn validate(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        if jwt::looks_like_jwt(token) && !matches!(self.keys, KeySource::None) {
            return jwt::validate(token, &self.config, &self.keys).await;
        }
        match &self.introspector {
            Some(i) => i.introspect(token, &self.config).await,
            None => Err(AuthError::Invalid(Invalid::Malformed)),
        }
    }

    /// The `WWW-Authenticate` value for a refusal (none when the keys are unavailable).
    pub fn challenge(&self, e: &AuthError) -> Option<HeaderValue> {
        self.metadata.challenge(e)
    }
}

/// The bearer token of a request: exactly one `Authorization: Bearer` header, and none in the
/// URL (RFC 6750 section 2.3 is forbidden by the MCP authorization spec).
fn bearer_token<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<&'a str, AuthError> {
    let in_query = uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            key.eq_ignore_ascii_case("access_token") || key.eq_ignore_ascii_case("access%5Ftoken")
        })
    });
    if in_query {
        return Err(AuthError::BadRequest("access token in the URL"));
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::BadRequest("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid(Invalid::Malformed))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim_matches(' ');
    // RFC 6750 b64token.
    let b64token = !token.is_empty()
        && token.trim_end_matches('=').bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if !b64token {
        return Err(AuthError::Invalid(Invalid::Malformed));
    }
    Ok(token)
}

/// Where a server's verifying keys come from: the local issuer's key (created on first use,
/// unless `create` is false, as for `moat check`), or a JWKS fetcher that the caller must run.
pub fn key_source(
    config: &Auth,
    state_dir: &Path,
    create: bool,
) -> Result<(KeySource, Option<Arc<Jwks>>), String> {
    ring_crypto::install();
    Ok(match &config.issuer {
        Issuer::Local if !create => (KeySource::Static(Arc::default()), None),
        Issuer::Local => (
            KeySource::Static(Arc::new(local::verifying_keys(state_dir)?)),
            None,
        ),
        Issuer::Remote {
            jwks_uri: Some(uri),
            ..
        } => {
            let j = Arc::new(Jwks::new(
                uri,
                config.ca_file.as_deref(),
                config.jwks_refresh,
                config.jwks_max_stale,
            )?);
            (KeySource::Remote(j.clone()), Some(j))
        }
        Issuer::Remote { jwks_uri: None, .. } => (KeySource::None, None),
    })
}

#[cfg(test)]
mod tests;
