//! The OAuth 2.1 resource server: who is calling, from the bearer token of each request, or why
//! the request is refused.
mod cache;
mod clock;
mod error;
pub(crate) mod fetch;
mod introspect;
mod jwks;
mod jwt;
mod metadata;
mod ring_crypto;
pub mod sessions;
pub mod signing;
pub mod upstream;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Uri, header};

use self::{cache::TokenCache, clock::now, introspect::Introspector};
pub use self::{
    error::{AuthError, Invalid},
    jwks::{Jwks, Key, KeyEvent, KeySet, KeySource},
    metadata::Metadata,
    ring_crypto::install as install_crypto,
    signing::SigningKey,
};
use crate::config::{Auth, Issuer};
pub use crate::vocab::Principal;

/// Whether a token of (sub, client_id) issued at `iat` (seconds) was revoked since.
pub type RevocationCheck = Arc<dyn Fn(&str, Option<&str>, u64) -> bool + Send + Sync>;

/// A future that ends when what it watches was revoked (an open stream is then closed).
pub type Revoked = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>;

/// One protected server's resource server.
pub struct Authenticator {
    config: Auth,
    revoked: Option<(RevocationCheck, tokio::sync::watch::Receiver<u64>)>,
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
            revoked: None,
            keys,
            introspector,
            cache: TokenCache::default(),
        })
    }

    /// Tokens are also checked against `check` on every request (cached ones included), and
    /// again, for open streams, whenever `changed` changes.
    pub fn with_revocations(
        mut self,
        check: RevocationCheck,
        changed: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        self.revoked = Some((check, changed));
        self
    }

    /// Ends when `principal`'s token is revoked (None: nothing here revokes tokens).
    pub fn revoked(&self, principal: &Arc<Principal>) -> Option<Revoked> {
        let (check, changed) = self.revoked.clone()?;
        let (p, iat) = (principal.clone(), iat(principal));
        let mut changed = changed;
        Some(Box::pin(async move {
            loop {
                if check(&p.sub, p.client_id.as_deref(), iat) {
                    return;
                }
                if changed.changed().await.is_err() {
                    // Nothing will be revoked any more.
                    std::future::pending::<()>().await;
                }
            }
        }))
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
        if let Some((revoked, _)) = &self.revoked
            && revoked(
                &principal.sub,
                principal.client_id.as_deref(),
                iat(&principal),
            )
        {
            return Err(AuthError::Invalid(Invalid::Revoked));
        }
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

/// When the principal's token was issued (0 if it does not say: then any revocation covers it).
fn iat(p: &Principal) -> u64 {
    p.claims
        .get("iat")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The bearer token of a request: exactly one `Authorization: Bearer` header, and none in the
/// URL (RFC 6750 section 2.3 is forbidden by the MCP authorization spec).
pub(crate) fn bearer_token<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<&'a str, AuthError> {
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

/// The keys of Moat's own authorization server, shared with the resource servers it issues
/// for; replaced when it rotates them.
pub type SharedKeys = Arc<std::sync::RwLock<Arc<KeySet>>>;

/// Where a server's verifying keys come from: Moat's authorization server's `local` keys
/// (none for `moat check`, which verifies nothing), or a JWKS fetcher that the caller must run.
pub fn key_source(
    config: &Auth,
    local: Option<&SharedKeys>,
) -> Result<(KeySource, Option<Arc<Jwks>>), String> {
    ring_crypto::install();
    Ok(match &config.issuer {
        Issuer::Local(_) => match local {
            Some(keys) => (KeySource::Shared(keys.clone()), None),
            None => (KeySource::Static(Arc::default()), None),
        },
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
