//! The provider's verifying keys (its JWKS, asymmetric keys only), fetched at discovery, again
//! when they are an hour old, and again on an unknown key id (at most once per `min_refetch`, so
//! forged key ids cannot make Moat hammer the provider). When the provider cannot be reached,
//! the keys last fetched serve for a day, then logins fail closed.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, jwk::JwkSet};
use url::Url;

use super::{error::FederationError, fetch::Http, id_token::IdTokenError};
use crate::auth::KeySet;

/// Keys are fetched again when they are this old.
const REFRESH: Duration = Duration::from_secs(3600);
/// While the provider cannot be reached, keys older than this are not used.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Fetched {
    set: Arc<KeySet>,
    /// When `set` was fetched.
    at: Instant,
    /// When a fetch was last tried.
    tried: Instant,
}

pub struct Keys {
    url: Url,
    current: Mutex<Fetched>,
    /// Held while fetching, so that concurrent logins share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl Keys {
    /// The keys at `url`, fetched now; at least one must be usable.
    pub async fn fetch(http: &Http, url: Url) -> Result<Self, FederationError> {
        let set = fetch(http, &url).await?;
        let now = Instant::now();
        Ok(Self {
            url,
            current: Mutex::new(Fetched {
                set: Arc::new(set),
                at: now,
                tried: now,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn snapshot(&self) -> (Arc<KeySet>, Instant, Instant) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.set.clone(), c.at, c.tried)
    }

    /// The key for a token signed with `alg` naming `kid`.
    pub async fn find(
        &self,
        http: &Http,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, FederationError> {
        let (set, at, _) = self.snapshot();
        if at.elapsed() < REFRESH
            && let Some(key) = set.find(kid, alg)
        {
            return Ok(key.clone());
        }
        let set = self.refetch(http).await?;
        set.find(kid, alg)
            .cloned()
            .ok_or(FederationError::IdToken(IdTokenError::UnknownKey))
    }

    /// Fetches the keys again unless that was tried less than `min_refetch` ago; the keys to
    /// use then.
    async fn refetch(&self, http: &Http) -> Result<Arc<KeySet>, FederationError> {
        let _one = self.fetching.lock().await;
        let (set, at, tried) = self.snapshot();
        let result = if tried.elapsed() >= http.limits().min_refetch {
            self.current.lock().unwrap_or_else(|p| p.into_inner()).tried = Instant::now();
            fetch(http, &self.url).await
        } else {
            Err(FederationError::Keys {
                url: self.url.to_string(),
                reason: format!(
                    "the last fetch was less than {:?} ago",
                    http.limits().min_refetch
                ),
            })
        };
        match result {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
                (c.set, c.at) = (fresh.clone(), Instant::now());
                Ok(fresh)
            }
            Err(_) if at.elapsed() < MAX_AGE => Ok(set),
            Err(e) => Err(FederationError::Keys {
                url: self.url.to_string(),
                reason: format!("the keys are older than {MAX_AGE:?}, and no new ones: {e}"),
            }),
        }
    }
}

async fn fetch(http: &Http, url: &Url) -> Result<KeySet, FederationError> {
    let jwks: JwkSet = http.get_json("the provider's keys", url).await?;
    let (set, skipped) = KeySet::from_jwks(&jwks);
    for why in &skipped {
        tracing::debug!(jwks = %url, "{why}");
    }
    if set.keys.is_empty() {
        return Err(FederationError::Keys {
            url: url.to_string(),
            reason: format!("no usable key ({})", skipped.join("; ")),
        });
    }
    Ok(set)
}
