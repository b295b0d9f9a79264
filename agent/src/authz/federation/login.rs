//! One login's two halves: the authorization request (fresh state, nonce and PKCE verifier,
//! kept server-side as [`Pending`]), and the checks of the callback before its code is used:
//! the state, the issuer (RFC 9207), an error answer.
use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{error::FederationError, text::printable};

/// How long a started login can be finished.
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// What the caller keeps, server-side, from [`begin`](super::Federation::begin) until the
/// callback; looked up by its state and removed, so that it is used once.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    pub(super) state: String,
    pub(super) nonce: String,
    /// The PKCE code verifier.
    pub(super) verifier: String,
    pub(super) redirect_uri: String,
    /// When the login started, in seconds since the epoch.
    pub(super) started: u64,
}

impl Pending {
    /// The `state` the callback must carry: the key to look the login up by.
    pub fn state(&self) -> &str {
        &self.state
    }

    #[cfg(test)]
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    fn new(redirect_uri: &str) -> Self {
        Self {
            state: random(),
            nonce: random(),
            verifier: random(),
            redirect_uri: redirect_uri.to_string(),
            started: now(),
        }
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("state", &self.state)
            .field("redirect_uri", &self.redirect_uri)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// The parameters of the callback (the query of the redirect URI).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    /// RFC 9207: the issuer that answered.
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackParams")
            .field("state", &self.state)
            .field("code", &self.code.as_ref().map(|_| "(redacted)"))
            .field("iss", &self.iss)
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .finish()
    }
}

impl CallbackParams {
    /// Reads a callback's query string; a parameter Moat reads must not appear twice (two
    /// readers could take different ones). Others are ignored.
    pub fn parse(query: &str) -> Result<Self, FederationError> {
        let mut p = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*key {
                "state" => &mut p.state,
                "code" => &mut p.code,
                "iss" => &mut p.iss,
                "error" => &mut p.error,
                "error_description" => &mut p.error_description,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(FederationError::Duplicate(key.into_owned()));
            }
        }
        Ok(p)
    }
}

/// A new login at `authorization_endpoint`: the URL to send the user to, and what to keep.
pub fn begin(
    authorization_endpoint: &Url,
    client_id: &str,
    scope: &str,
    redirect_uri: &str,
) -> (Url, Pending) {
    let pending = Pending::new(redirect_uri);
    let challenge = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        pending.verifier.as_bytes(),
    ));
    let mut url = authorization_endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    (url, pending)
}

/// The callback's checks before its code is used; the code.
pub fn check_callback<'a>(
    pending: &Pending,
    params: &'a CallbackParams,
    issuer: &str,
    iss_always_sent: bool,
) -> Result<&'a str, FederationError> {
    if params.state.as_deref() != Some(pending.state.as_str()) {
        return Err(FederationError::State);
    }
    if now().saturating_sub(pending.started) > PENDING_TTL.as_secs() {
        return Err(FederationError::Expired(PENDING_TTL));
    }
    match params.iss.as_deref() {
        Some(iss) if iss == issuer => {}
        None if !iss_always_sent => {}
        found => {
            return Err(FederationError::CallbackIssuer {
                expected: issuer.into(),
                found: found.map(printable),
            });
        }
    }
    if let Some(error) = &params.error {
        return Err(FederationError::Denied {
            error: printable(error),
            description: params.error_description.as_deref().map(printable),
        });
    }
    params
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or(FederationError::NoCode)
}

/// 32 random bytes, base64url (43 characters, valid as a PKCE verifier too).
fn random() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random number generator failed");
    B64.encode(bytes)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_read_twice_is_refused() {
        for key in ["state", "code", "iss", "error", "error_description"] {
            let query = format!("state=s&code=c&iss=i&error=e&error_description=d&{key}=again");
            assert_eq!(
                CallbackParams::parse(&query),
                Err(FederationError::Duplicate(key.into()))
            );
        }
        let p = CallbackParams::parse("code=a%2Bb&state=s&session_state=x&iss=https%3A%2F%2Fi")
            .unwrap();
        assert_eq!(
            (p.code.as_deref(), p.state.as_deref(), p.iss.as_deref()),
            (Some("a+b"), Some("s"), Some("https://i"))
        );
        assert!(!format!("{p:?}").contains("a+b"));
    }

    #[test]
    fn each_login_is_new_and_its_secrets_are_not_shown() {
        let endpoint = Url::parse("https://idp.example.com/auth?tenant=a").unwrap();
        let (url, one) = begin(&endpoint, "moat", "openid", "https://moat.example.com/cb");
        let (_, two) = begin(&endpoint, "moat", "openid", "https://moat.example.com/cb");
        assert!(
            url.as_str()
                .starts_with("https://idp.example.com/auth?tenant=a&")
        );
        for (a, b) in [
            (&one.state, &two.state),
            (&one.nonce, &two.nonce),
            (&one.verifier, &two.verifier),
        ] {
            assert_ne!(a, b);
            assert_eq!(a.len(), 43);
        }
        let shown = format!("{one:?}");
        assert!(!shown.contains(&one.nonce) && !shown.contains(&one.verifier));
        assert!(!url.as_str().contains(&one.verifier));
    }
}
