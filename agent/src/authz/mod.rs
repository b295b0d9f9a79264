//! The OAuth 2.1 authorization server Moat runs for MCP clients (`authorization_server:`): the
//! issuer of the servers with `issuer: local`. Clients find it in their protected resource
//! metadata, register (dynamically, by a client ID metadata document, or in the config), send
//! the user here to sign in and consent, and get audience-bound access tokens that the
//! resource servers verify with this server's keys.
//!
//! | module | job |
//! | --- | --- |
//! | [`listener`] | its own TLS listener and the routes |
//! | [`metadata`] | RFC 8414 / OpenID discovery documents, JWKS |
//! | [`authorize`] | the authorization request, checked before anyone signs in |
//! | [`login`] | who the user is: local users, browser sessions |
//! | [`federated`], [`federation`] | sign-in at the organisation's OpenID provider (Moat as relying party) |
//! | [`consent`] | the consent page, remembered consents, authorization codes |
//! | [`token`] | the token endpoint: codes and refresh tokens for access tokens |
//! | [`register`] | dynamic client registration, and revocation (RFC 7009) |
//! | [`clients`] | who a client id is |
//! | [`revocation`], [`admin`] | revocation at once; what operators do (`moat users`, `clients`, `grants`) |
//! | [`signer`] | the signing keys and their rotation |
//! | [`cimd`] | client ID metadata documents behind an SSRF guard |
//! | [`limits`] | password guesses per name, registrations per window |
//! | [`form`], [`ttl`], [`pages`], [`reply`], [`error`] | bodies and cookies, short-lived state, HTML, answers, errors |
mod admin;
mod authorize;
pub mod cimd;
mod clients;
mod consent;
mod error;
mod federated;
pub mod federation;
mod form;
mod limits;
pub mod listener;
mod login;
mod metadata;
mod pages;
mod register;
mod reply;
pub mod revocation;
pub mod signer;
mod token;
mod ttl;
mod upstream;

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

pub use self::error::OAuthError;
pub use self::signer::Signer;
use self::{clients::ClientInfo, ttl::TtlMap};
use crate::{
    audit::AuditLog,
    config::{AuthorizationServer, Config, Issuer},
    store::Store,
};

/// How long a user has to sign in and answer the consent page.
const REQUEST_TTL: Duration = Duration::from_secs(600);
/// Authorization requests, sessions and codes held at once (each).
const MAX_PENDING: usize = 10_000;

/// A protected server this authorization server issues tokens for.
#[derive(Clone, Debug)]
pub struct Resource {
    pub name: String,
    /// Its `resource` identifier: the tokens' `aud`.
    pub audience: String,
    pub scopes_supported: Vec<String>,
}

/// Someone who signed in.
#[derive(Clone, Debug)]
pub struct Identity {
    pub sub: String,
    pub groups: Vec<String>,
    /// Further claims for the tokens (from the organisation's provider).
    pub claims: serde_json::Map<String, Value>,
}

/// An authorization request, checked, waiting for sign-in and consent.
#[derive(Clone, Debug)]
struct Pending {
    client: ClientInfo,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    resource: Resource,
    scopes: Vec<String>,
    /// The browser that started it (its `browser` cookie): only it may answer.
    browser: String,
    /// Put in the consent form; the answer must carry it.
    csrf: String,
}

/// An authorization code's grant: single use, bound to its client, redirect, PKCE challenge
/// and resource.
#[derive(Clone, Debug)]
struct Code {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    resource: Resource,
    scopes: Vec<String>,
    identity: Identity,
}

/// A sign-in under way at the provider: its pending state, and Moat's own request it is for
/// (taken once, by the first callback with its `state`).
type Underway = Arc<std::sync::Mutex<Option<(federation::Pending, String)>>>;

/// The authorization server.
pub struct AuthServer {
    config: AuthorizationServer,
    store: Arc<Store>,
    signer: Arc<Signer>,
    resources: Vec<Resource>,
    cimd: Option<cimd::Fetcher>,
    requests: TtlMap<Pending>,
    /// Browser sessions: cookie value -> who signed in.
    sessions: TtlMap<Identity>,
    codes: TtlMap<Code>,
    /// Codes redeemed, until they would have expired: a second use is an attack.
    used_codes: TtlMap<Option<String>>,
    audit: std::sync::OnceLock<AuditLog>,
    revocations: Arc<revocation::Revocations>,
    /// The organisation's provider, once discovered (`login: {oidc: ...}`).
    federation: tokio::sync::Mutex<Option<Arc<federation::Federation>>>,
    /// Sign-ins under way at the provider, by their `state`.
    underway: TtlMap<Underway>,
    /// Failed local sign-ins per user name (password guessing is slowed down).
    failures: limits::Failures,
    /// Dynamic registrations lately (each is a record in the store).
    registrations: limits::Budget,
    /// Password checks running at once (argon2id: memory and CPU bound).
    hashing: tokio::sync::Semaphore,
    /// The third parties users connect here (`upstream_auth: { oauth2 }`), once set.
    upstream: std::sync::OnceLock<crate::thirdparty::Upstream>,
    /// Connections to a third party under way, by their `state`.
    connecting: TtlMap<crate::thirdparty::Connecting>,
    /// Sign-ins waiting for such a connection before their code is issued, by its `state`.
    resuming: TtlMap<Resume>,
}

/// A sign-in whose code is issued when the browser is back from the third party.
#[derive(Clone)]
struct Resume {
    pending: Pending,
    identity: Identity,
    how: String,
}

impl AuthServer {
    /// The server of `config.authorization_server`, with its state in `store`.
    pub fn new(config: &Config, store: Arc<Store>) -> Result<Option<Self>, String> {
        let Some(a) = config.authorization_server.clone() else {
            return Ok(None);
        };
        let resources = config
            .servers
            .iter()
            .filter_map(|s| {
                let auth = s.auth.as_ref()?;
                matches!(auth.issuer, Issuer::Local(_)).then(|| Resource {
                    name: s.name.clone(),
                    audience: auth.audience.clone(),
                    scopes_supported: auth.scopes_supported.clone(),
                })
            })
            .collect();
        if let crate::config::Login::Oidc(c) = &a.login {
            // The secret file must be readable now, not at the first sign-in.
            federation::OidcLogin::from_config(c)?;
        }
        let overlap = a.access_token_ttl + Duration::from_secs(300);
        let signer =
            Signer::open(store.clone(), a.key_rotation, overlap).map_err(|e| e.to_string())?;
        clients::sync_configured(&store, &a.clients).map_err(|e| e.to_string())?;
        let cimd = if a.registration.metadata_documents {
            Some(
                cimd::Fetcher::new(
                    a.registration.allow_private_networks.clone(),
                    roots(a.registration.ca_file.as_deref())?,
                    cimd::Limits::default(),
                )
                .map_err(|e| format!("client ID metadata documents: {e}"))?,
            )
        } else {
            None
        };
        let revocations =
            Arc::new(revocation::Revocations::load(&store).map_err(|e| e.to_string())?);
        Ok(Some(Self {
            requests: TtlMap::new(REQUEST_TTL, MAX_PENDING),
            sessions: TtlMap::new(a.session_ttl, MAX_PENDING),
            codes: TtlMap::new(a.code_ttl, MAX_PENDING),
            used_codes: TtlMap::new(a.code_ttl, MAX_PENDING),
            config: a,
            store,
            signer: Arc::new(signer),
            resources,
            cimd,
            audit: std::sync::OnceLock::new(),
            revocations,
            federation: tokio::sync::Mutex::new(None),
            underway: TtlMap::new(REQUEST_TTL, MAX_PENDING),
            failures: limits::Failures::default(),
            registrations: limits::Budget::default(),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            upstream: std::sync::OnceLock::new(),
            connecting: TtlMap::new(REQUEST_TTL, MAX_PENDING),
            resuming: TtlMap::new(REQUEST_TTL, MAX_PENDING),
        }))
    }

    /// From now on, authorization events go to `audit`.
    pub fn set_audit(&self, audit: AuditLog) {
        let _ = self.audit.set(audit);
    }

    /// What the resource servers check every token against.
    pub fn revocations(&self) -> &Arc<revocation::Revocations> {
        &self.revocations
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// `{issuer}/{path}`.
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.issuer)
    }

    /// Cookie names: `__Host-` (Secure, the issuer's host only, path /) over TLS.
    fn cookie_name(&self, name: &str) -> String {
        if self.config.plaintext {
            format!("moat-{name}")
        } else {
            format!("__Host-moat-{name}")
        }
    }

    fn set_cookie(&self, name: &str, value: &str, max_age: Duration) -> String {
        let secure = if self.config.plaintext {
            ""
        } else {
            "; Secure"
        };
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            self.cookie_name(name),
            max_age.as_secs()
        )
    }

    fn resource(&self, audience: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.audience == audience)
    }

    /// Writes an authorization event to the audit log (never a secret).
    async fn event(&self, event: &str, mut fields: Value) {
        fields["event"] = json!(event);
        fields["issuer"] = json!(self.config.issuer);
        tracing::info!(target: "moat::authz", %event, "{fields}");
        if let Some(a) = self.audit.get() {
            a.record("auth", fields).await;
        }
    }
}

/// Opens the authorization server of `config`, if it has one, on `store`.
pub fn open(
    config: &Config,
    store: Arc<Store>,
) -> Result<Option<Arc<AuthServer>>, crate::error::AppError> {
    if config.authorization_server.is_none() {
        return Ok(None);
    }
    let server = AuthServer::new(config, store).map_err(crate::error::AppError::Authz)?;
    Ok(server.map(Arc::new))
}

/// `moat check`: the authorization server's certificates and its relying party's secret load.
pub fn check(config: &Config) -> Result<(), crate::error::AppError> {
    if let Some(a) = &config.authorization_server
        && let crate::config::Login::Oidc(c) = &a.login
    {
        federation::OidcLogin::from_config(c).map_err(crate::error::AppError::Auth)?;
    }
    if let Some(a) = &config.authorization_server
        && !a.plaintext
    {
        crate::tls::ServerTls::load(&a.tls.certs)
            .map_err(|e| crate::error::AppError::Tls(format!("authorization_server: {e}")))?;
    }
    Ok(())
}

/// The system's roots, and those of `ca_file`.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = cimd::native_roots();
    if let Some(path) = ca_file {
        let bad =
            |e: &dyn std::fmt::Display| format!("registration.ca_file {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate"));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    Ok(roots)
}

/// A new random secret (256 bits, base64url).
fn random() -> Result<String, OAuthError> {
    crate::store::record::random_token().map_err(OAuthError::from)
}
