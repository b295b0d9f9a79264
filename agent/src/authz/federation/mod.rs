//! Logging users in at the organisation's OpenID provider: Moat as a relying party with one
//! client of its own (authorization code flow with PKCE and a nonce, RFC 9207 issuer check).
//!
//! A small implementation on reqwest and jsonwebtoken rather than the `openidconnect` crate: that
//! crate brings a second set of RustCrypto crates in older major versions (rsa 0.9 among them),
//! needs an adapter for the HTTP client Moat uses, and has neither the RFC 9207 check nor key
//! refresh on an unknown key id, which would be written around it anyway. Here the ID token's
//! signature is checked by the same code as the resource server's access tokens (the JWKS key
//! set and ring), and everything fetched goes through one bounded HTTP client.
//!
//! [`Federation::discover`] checks the configuration ([`oidc_login`]), fetches the pinned
//! issuer's metadata ([`metadata`]) and keys ([`keys`]), all through [`fetch`];
//! [`Federation::begin`] starts a login ([`login`]); [`Federation::complete`] checks the
//! callback, exchanges the code ([`token`]), checks the ID token ([`id_token`]) and describes the
//! user ([`user`]).
mod error;
mod fetch;
mod id_token;
mod keys;
mod login;
mod metadata;
mod oidc_login;
#[cfg(test)]
mod tests;
mod text;
mod token;
mod user;

use std::fmt;

pub use self::{
    error::FederationError,
    fetch::Limits,
    login::{CallbackParams, Pending},
    oidc_login::OidcLogin,
    user::FederatedUser,
};
use self::{fetch::Http, keys::Keys, metadata::Metadata};
#[cfg(test)]
pub use self::{id_token::IdTokenError, login::PENDING_TTL};

/// The relying party for one provider, ready for logins.
pub struct Federation {
    config: OidcLogin,
    scope: String,
    metadata: Metadata,
    keys: Keys,
    http: Http,
}

impl fmt::Debug for Federation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Federation")
            .field("config", &self.config)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Fetches the provider's metadata from the pinned issuer (its `issuer` must be the
    /// configured one exactly; only its endpoints are used, and they must be https, or http on
    /// loopback when the issuer is) and its keys.
    pub async fn discover(config: OidcLogin) -> Result<Self, FederationError> {
        Self::discover_with(config, Limits::default()).await
    }

    /// [`discover`](Self::discover) with other limits on the requests to the provider.
    pub async fn discover_with(config: OidcLogin, limits: Limits) -> Result<Self, FederationError> {
        crate::auth::install_crypto();
        if config.client_id.is_empty() {
            return Err(FederationError::Config("no client_id".into()));
        }
        if config.groups_claim.as_deref() == Some("") || config.claims.iter().any(String::is_empty)
        {
            return Err(FederationError::Config("an empty claim name".into()));
        }
        let scope = config.scope()?;
        metadata::issuer_url(&config.issuer)?;
        let http = Http::new(config.ca_file.as_deref(), limits)?;
        let metadata = Metadata::discover(&http, &config.issuer).await?;
        let keys = Keys::fetch(&http, metadata.jwks_uri.clone()).await?;
        Ok(Self {
            config,
            scope,
            metadata,
            keys,
            http,
        })
    }

    /// The pinned issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// A new login: the provider's authorization URL to send the user to, and what the caller
    /// must keep server-side (by [`Pending::state`]) to finish it.
    pub fn begin(&self, redirect_uri: &str) -> (url::Url, Pending) {
        login::begin(
            &self.metadata.authorization_endpoint,
            &self.config.client_id,
            &self.scope,
            redirect_uri,
        )
    }

    /// The callback: checks it belongs to `pending` (looked up by the callback's state and
    /// removed by the caller), exchanges its code, checks the ID token, and asks userinfo for
    /// the configured claims the ID token lacks (when the provider has a userinfo endpoint and
    /// gave a bearer access token; else those claims are absent). Fails closed on any doubt:
    /// a userinfo answer that fails or is about someone else fails the login.
    pub async fn complete(
        &self,
        pending: Pending,
        params: &CallbackParams,
    ) -> Result<FederatedUser, FederationError> {
        let code = login::check_callback(
            &pending,
            params,
            &self.config.issuer,
            self.metadata.iss_parameter_supported,
        )?;
        let tokens =
            token::exchange(&self.http, &self.metadata, &self.config, code, &pending).await?;
        let header = id_token::header(&tokens.id_token)?;
        let key = self
            .keys
            .find(&self.http, header.kid.as_deref(), header.alg)
            .await?;
        let expected = id_token::Expected {
            issuer: &self.config.issuer,
            client_id: &self.config.client_id,
            nonce: &pending.nonce,
            now: login::now(),
        };
        let claims = id_token::verify(&tokens.id_token, &header, &key, &expected)?;
        let userinfo = match (
            user::needs_userinfo(&claims, &self.config),
            &self.metadata.userinfo_endpoint,
            &tokens.access_token,
        ) {
            (true, Some(url), Some(access)) => {
                let sub = claims
                    .get("sub")
                    .and_then(|s| s.as_str())
                    .unwrap_or_default();
                Some(token::userinfo(&self.http, url, access, sub).await?)
            }
            _ => None,
        };
        user::user(
            &self.config.issuer,
            &claims,
            userinfo.as_ref(),
            &self.config,
        )
    }
}
