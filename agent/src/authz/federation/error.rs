//! Why a login at the organisation's OpenID provider failed, one variant per reason. No variant
//! carries an authorization code, a token or the client secret.
use std::time::Duration;

use super::id_token::IdTokenError;

/// Why the provider could not be used, or a login through it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The configuration cannot work (a bad issuer URL, scope, CA file, ...).
    #[error("OpenID login configuration: {0}")]
    Config(String),
    /// A URL Moat would have to use is not one it talks to.
    #[error("{what} {url:?}: {reason}")]
    Url {
        what: &'static str,
        url: String,
        reason: &'static str,
    },
    /// Discovery found another provider than the pinned one.
    #[error("the provider's metadata names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the provider's metadata: {0}")]
    Metadata(String),
    #[error("fetching {what} from {url}: {reason}")]
    Fetch {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("fetching {what} from {url} took longer than {limit:?}")]
    Timeout {
        what: &'static str,
        url: String,
        limit: Duration,
    },
    #[error("{what} at {url} answered with status {status}")]
    Status {
        what: &'static str,
        url: String,
        status: u16,
    },
    #[error("{what} at {url} is larger than {limit} bytes")]
    TooLarge {
        what: &'static str,
        url: String,
        limit: usize,
    },
    #[error("{what} from {url} is not what was expected: {reason}")]
    Body {
        what: &'static str,
        url: String,
        reason: String,
    },
    /// No usable verifying key (at discovery, or the provider's keys aged out).
    #[error("the provider's keys at {url}: {reason}")]
    Keys { url: String, reason: String },

    /// The callback does not belong to the pending login (forged, replayed or mixed up).
    #[error("the callback's state is not the pending login's")]
    State,
    /// The pending login is too old to be finished.
    #[error("the login was started more than {0:?} ago")]
    Expired(Duration),
    /// RFC 9207: the callback says another provider answered it (a mix-up), or says nothing
    /// although this provider always says.
    #[error("the callback comes from issuer {}, not {expected:?}",
        found.as_deref().map(|f| format!("{f:?}")).unwrap_or_else(|| "(none named)".into()))]
    CallbackIssuer {
        expected: String,
        found: Option<String>,
    },
    /// A parameter of the callback appears more than once.
    #[error("the callback has more than one {0:?} parameter")]
    Duplicate(String),
    /// The provider answered the login with an error (`access_denied`, ...).
    #[error("the provider refused the login: {error}{}",
        description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the callback carries no authorization code")]
    NoCode,
    /// The token endpoint refused the code (or the client's credentials).
    #[error("the token endpoint answered {status}: {error}{}",
        description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Token {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("the ID token: {0}")]
    IdToken(#[from] IdTokenError),
    /// The userinfo answer is about someone else than the ID token.
    #[error("userinfo names subject {found:?}, the ID token {expected:?}")]
    UserinfoSubject { expected: String, found: String },
    /// A claim Moat reads has an unusable value.
    #[error("claim {claim:?}: {reason}")]
    Claim { claim: String, reason: &'static str },
}
