//! What the configuration says about logging in at the organisation's provider.
use std::{fmt, path::PathBuf};

use super::error::FederationError;

/// How Moat logs users in at the organisation's provider (`authorization_server.login.oidc`).
#[derive(Clone, PartialEq, Eq)]
pub struct OidcLogin {
    /// https (http only to a loopback address); pinned: the metadata must name exactly this.
    pub issuer: String,
    pub client_id: String,
    /// None: a public client (PKCE only).
    pub client_secret: Option<String>,
    /// `openid` is always asked for, whether listed or not.
    pub scopes: Vec<String>,
    /// The claim holding the user's groups (a list of strings, or one string), e.g. `groups`.
    pub groups_claim: Option<String>,
    /// Further claims carried into Moat's tokens.
    pub claims: Vec<String>,
    /// Extra trusted roots for the provider's HTTPS.
    pub ca_file: Option<PathBuf>,
}

impl OidcLogin {
    /// From `login.oidc`, its secret read from its file.
    pub fn from_config(c: &crate::config::OidcLoginConfig) -> Result<Self, String> {
        let client_secret = match &c.client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("login.oidc.client_secret_file {}: {e}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        Ok(Self {
            issuer: c.issuer.clone(),
            client_id: c.client_id.clone(),
            client_secret,
            scopes: c.scopes.clone(),
            groups_claim: c.groups_claim.clone(),
            claims: c.claims.clone(),
            ca_file: c.ca_file.clone(),
        })
    }

    /// A public client asking for the default scopes (`openid profile email`).
    #[cfg(test)]
    pub fn new(issuer: &str, client_id: &str) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: ["openid", "profile", "email"].map(String::from).into(),
            groups_claim: None,
            claims: Vec::new(),
            ca_file: None,
        }
    }

    /// The `scope` parameter: `openid` first, then the others, each once.
    pub(super) fn scope(&self) -> Result<String, FederationError> {
        let mut scopes = vec!["openid"];
        for s in &self.scopes {
            // RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            let valid = !s.is_empty()
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !valid {
                return Err(FederationError::Config(format!(
                    "scope {s:?} is not a scope token"
                )));
            }
            if !scopes.contains(&s.as_str()) {
                scopes.push(s);
            }
        }
        Ok(scopes.join(" "))
    }
}

impl fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcLogin")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "(redacted)"),
            )
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("claims", &self.claims)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::federation::Federation;

    #[test]
    fn openid_is_always_asked_for_first_and_once() {
        let mut c = OidcLogin::new("https://idp.example.com", "moat");
        assert_eq!(c.scope().unwrap(), "openid profile email");
        c.scopes = vec!["groups".into(), "openid".into(), "groups".into()];
        assert_eq!(c.scope().unwrap(), "openid groups");
        c.scopes = vec![];
        assert_eq!(c.scope().unwrap(), "openid");
    }

    #[tokio::test]
    async fn a_configuration_that_cannot_work_is_refused_before_any_fetch() {
        let base = OidcLogin::new("https://idp.example.invalid", "moat");
        for scope in ["a b", "", "a\"b", "a\\b", "é"] {
            let c = OidcLogin {
                scopes: vec![scope.into()],
                ..base.clone()
            };
            let got = Federation::discover(c).await.err();
            assert!(
                matches!(got, Some(FederationError::Config(_))),
                "{scope:?}: {got:?}"
            );
        }
        for c in [
            OidcLogin {
                client_id: String::new(),
                ..base.clone()
            },
            OidcLogin {
                groups_claim: Some(String::new()),
                ..base.clone()
            },
            OidcLogin {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..base.clone()
            },
        ] {
            let got = Federation::discover(c.clone()).await.err();
            assert!(
                matches!(got, Some(FederationError::Config(_))),
                "{c:?}: {got:?}"
            );
        }
    }
}
