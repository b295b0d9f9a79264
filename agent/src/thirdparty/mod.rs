//! Upstream OAuth: servers that act for each user at a third party (`upstream_auth: { oauth2 }`)
//! get that user's own token, which Moat obtained (the authorization code flow with PKCE, run
//! by Moat's authorization server for the signed-in user), keeps sealed ([`crate::vault`]),
//! refreshes before it expires, and revokes with the user's grants. Neither the MCP client nor
//! the model ever sees it; the audit says whose token was used, not the token.
pub mod provider;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderName, HeaderValue};

pub use self::provider::{Provider, Tokens};
use crate::{
    config::OAuth2,
    store::{sealed::Sealed, upstream_tokens::UpstreamToken},
    vault::{Secret, Vault},
};

/// A token is refreshed when it has less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ThirdPartyError {
    /// The user has not connected this server's provider, or its token can no longer be
    /// refreshed: they must visit `url`.
    #[error("connect your account first: open {url}")]
    NotConnected { url: String },
    #[error("the provider: {0}")]
    Provider(String),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
}

/// One server's third-party tokens.
pub struct Connector {
    pub server: String,
    pub provider: Provider,
    vault: Arc<Vault>,
    /// Where a user connects (`/upstream/connect?server=NAME` on the authorization server).
    connect_url: String,
    header: HeaderName,
    /// Each user's token in use: the header value, and until when it is good.
    cache: Mutex<HashMap<String, (HeaderValue, u64)>>,
    /// One refresh at a time per connector (a burst of calls does not refresh many times).
    refreshing: tokio::sync::Mutex<()>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Connector {
    pub fn new(
        server: &str,
        config: &OAuth2,
        vault: Arc<Vault>,
        issuer: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            server: server.to_string(),
            provider: Provider::new(config, &format!("{issuer}/upstream/callback"))?,
            vault,
            connect_url: format!("{issuer}/upstream/connect?server={server}"),
            header: config.header.clone(),
            cache: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn connect_url(&self) -> &str {
        &self.connect_url
    }

    /// The header carrying `sub`'s token (cached, read from the vault, or refreshed first),
    /// and when it was refreshed if that was now.
    pub async fn header(
        &self,
        sub: &str,
    ) -> Result<(HeaderName, HeaderValue, Option<u64>), ThirdPartyError> {
        let now = now();
        if let Some((v, until)) = self.cache.lock().ok().and_then(|c| c.get(sub).cloned())
            && until > now + REFRESH_BEFORE.as_secs()
        {
            return Ok((self.header.clone(), v, None));
        }
        let _one = self.refreshing.lock().await;
        let kept = match self.vault.get(&self.server, sub) {
            Ok(k) => k,
            // A token that does not open (its key gone): the user connects again.
            Err(e) => {
                tracing::error!(server = %self.server, sub, "the user's upstream token: {e}");
                None
            }
        };
        let Some((secret, record)) = kept else {
            return Err(self.not_connected());
        };
        let fresh = record
            .expires
            .is_none_or(|e| e > now + REFRESH_BEFORE.as_secs());
        let (secret, record, refreshed) = if fresh {
            (secret, record, None)
        } else {
            let Some(refresh) = &secret.refresh_token else {
                self.forget(sub);
                return Err(self.not_connected());
            };
            match self.provider.refresh(refresh).await {
                Ok(t) => {
                    let secret = Secret {
                        access_token: t.access_token.clone(),
                        // A provider that does not rotate refresh tokens keeps the old one.
                        refresh_token: t.refresh_token.clone().or(secret.refresh_token),
                    };
                    let mut record = record;
                    record.refreshed = Some(now);
                    record.expires = t.expires_in.map(|s| now + s);
                    if let Some(scope) = t.scope {
                        record.scope = scope;
                    }
                    self.vault.put(&self.server, sub, &secret, record.clone())?;
                    tracing::info!(server = %self.server, sub, "upstream token refreshed");
                    (secret, record, Some(now))
                }
                Err(e) => {
                    tracing::warn!(server = %self.server, sub, "refreshing the upstream token failed: {e}");
                    self.forget(sub);
                    return Err(self.not_connected());
                }
            }
        };
        let value = self.value(&secret.access_token)?;
        let until = record.expires.unwrap_or(u64::MAX);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(sub.to_string(), (value.clone(), until));
        }
        Ok((self.header.clone(), value, refreshed))
    }

    fn value(&self, token: &str) -> Result<HeaderValue, ThirdPartyError> {
        let text = if self.header == http::header::AUTHORIZATION {
            format!("Bearer {token}")
        } else {
            token.to_string()
        };
        let mut v = HeaderValue::from_str(&text)
            .map_err(|_| ThirdPartyError::Provider("a token that is not a header value".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }

    fn not_connected(&self) -> ThirdPartyError {
        ThirdPartyError::NotConnected {
            url: self.connect_url.clone(),
        }
    }

    /// Forgets `sub`'s cached token (revoked, or to be read again).
    pub fn forget(&self, sub: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(sub);
        }
    }

    /// Keeps `tokens` (just obtained with the user's consent) for `sub`.
    pub fn keep(&self, sub: &str, tokens: Tokens) -> Result<(), ThirdPartyError> {
        let now = now();
        let shown = UpstreamToken {
            provider: self.provider.origin().to_string(),
            sealed: Sealed {
                kek: String::new(),
                ciphertext: Vec::new(),
            },
            scope: tokens.scope.clone().unwrap_or_default(),
            obtained: now,
            refreshed: None,
            expires: tokens.expires_in.map(|s| now + s),
            refreshable: tokens.refresh_token.is_some(),
        };
        let secret = Secret {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        };
        self.vault.put(&self.server, sub, &secret, shown)?;
        self.forget(sub);
        Ok(())
    }

    /// Whether `sub` has connected.
    pub fn connected(&self, sub: &str) -> bool {
        self.vault.get(&self.server, sub).is_ok_and(|t| t.is_some())
    }
}

/// A connection under way, by its `state`.
#[derive(Clone)]
pub struct Connecting {
    pub sub: String,
    pub server: String,
    pub verifier: String,
    /// The browser session it was started from.
    pub session: String,
}

/// What connecting needs: the vault and each server's connector.
#[derive(Default)]
pub struct Upstream {
    pub vault: Option<Arc<Vault>>,
    pub connectors: Connectors,
}

/// Every server's connector, by server name.
pub type Connectors = HashMap<String, Arc<Connector>>;

/// Deletes `sub`'s tokens of every server, and revokes them at their providers (a provider
/// that fails is logged). The servers whose tokens went.
pub async fn revoke_sub(vault: &Vault, connectors: &Connectors, sub: &str) -> Vec<String> {
    let gone = match vault.delete_sub(sub) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(sub, "deleting upstream tokens: {e}");
            return Vec::new();
        }
    };
    let mut servers = Vec::new();
    for (server, secret) in gone {
        if let Some(c) = connectors.get(&server) {
            c.forget(sub);
            if let Some(s) = secret {
                c.provider.revoke(s).await;
            }
        }
        servers.push(server);
    }
    servers
}

#[cfg(test)]
mod tests;

/// The vault and a connector for each server with `upstream_auth: { oauth2 }` (none of either
/// when no server has it: no keys file is made); endpoints given by metadata are read first.
pub async fn open(
    config: &crate::config::Config,
    store: &Arc<crate::store::Store>,
) -> Result<(Option<Arc<Vault>>, Connectors), String> {
    let servers: Vec<(&str, &OAuth2)> = oauth2_servers(config).collect();
    if servers.is_empty() {
        return Ok((None, Connectors::new()));
    }
    let issuer = issuer(config)?;
    let vault =
        Arc::new(Vault::open(&config.agent.state_dir, store.clone()).map_err(|e| e.to_string())?);
    let mut connectors = Connectors::new();
    for (name, o) in servers {
        let c = match provider::discover(o).await {
            Ok(o) => Connector::new(name, &o, vault.clone(), &issuer),
            Err(e) => Err(e),
        }
        .map_err(|e| format!("server `{name}`: upstream_auth.oauth2: {e}"))?;
        connectors.insert(name.to_string(), Arc::new(c));
    }
    Ok((Some(vault), connectors))
}

/// Checks what `open` would read (the client secrets), creating nothing (`moat check`).
pub fn check(config: &crate::config::Config) -> Result<(), String> {
    for (name, o) in oauth2_servers(config) {
        let issuer = issuer(config)?;
        let o = OAuth2 {
            // Read from the metadata when the agent starts; checked then.
            token_endpoint: o
                .discovery
                .as_ref()
                .map_or(o.token_endpoint.clone(), |(i, _)| i.clone()),
            ..o.clone()
        };
        Provider::new(&o, &format!("{issuer}/upstream/callback"))
            .map_err(|e| format!("server `{name}`: upstream_auth.oauth2: {e}"))?;
    }
    Ok(())
}

fn oauth2_servers(config: &crate::config::Config) -> impl Iterator<Item = (&str, &OAuth2)> {
    config
        .servers
        .iter()
        .filter_map(|s| match &s.upstream_auth {
            crate::config::UpstreamAuth::OAuth2(o) => Some((s.name.as_str(), &**o)),
            _ => None,
        })
}

/// Moat's authorization server, where users connect (the config requires it with `oauth2`).
fn issuer(config: &crate::config::Config) -> Result<String, String> {
    config
        .authorization_server
        .as_ref()
        .map(|a| a.issuer.trim_end_matches('/').to_string())
        .ok_or_else(|| "`upstream_auth: { oauth2 }` needs `authorization_server`".to_string())
}
