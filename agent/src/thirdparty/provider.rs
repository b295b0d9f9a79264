//! One third party's OAuth endpoints, as Moat (a confidential client) uses them: the
//! authorization URL (PKCE S256, `state`), the code exchange, refreshing, revocation. Client
//! authentication is HTTP Basic with the secret read from its file; no redirects are followed.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::Deserialize;

use crate::{config::OAuth2, vault::Secret};

/// What a token endpoint answers.
#[derive(Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

pub struct Provider {
    config: OAuth2,
    secret: String,
    client: reqwest::Client,
    redirect_uri: String,
    origin: String,
}

/// A PKCE pair: the verifier kept, the S256 challenge sent.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Result<Self, String> {
        let mut b = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .map_err(|_| "no randomness".to_string())?;
        let verifier = B64.encode(b);
        let challenge = challenge(&verifier);
        Ok(Self {
            verifier,
            challenge,
        })
    }
}

/// The S256 challenge of `verifier` (RFC 7636).
pub fn challenge(verifier: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

impl Provider {
    pub fn new(config: &OAuth2, redirect_uri: &str) -> Result<Self, String> {
        let secret = std::fs::read_to_string(&config.client_secret_file)
            .map_err(|e| format!("{}: {e}", config.client_secret_file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if secret.is_empty() {
            return Err(format!("{}: empty", config.client_secret_file.display()));
        }
        let origin = url::Url::parse(&config.token_endpoint)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|e| format!("token_endpoint: {e}"))?;
        Ok(Self {
            config: config.clone(),
            secret,
            client: crate::auth::fetch::client(config.ca_file.as_deref())?,
            redirect_uri: redirect_uri.to_string(),
            origin,
        })
    }

    /// The provider, as `moat grants list` names it.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Where the user's browser goes to consent.
    pub fn authorize_url(&self, state: &str, challenge: &str) -> String {
        let mut u = url::Url::parse(&self.config.authorization_endpoint)
            .unwrap_or_else(|e| unreachable!("checked when the config was read: {e}"));
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("state", state)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            if !self.config.scopes.is_empty() {
                q.append_pair("scope", &self.config.scopes.join(" "));
            }
            if let Some(r) = &self.config.resource {
                q.append_pair("resource", r);
            }
        }
        u.into()
    }

    /// The tokens for an authorization `code` (and the PKCE verifier it was asked with).
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<Tokens, String> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ];
        if let Some(r) = &self.config.resource {
            form.push(("resource", r));
        }
        self.token(&form).await
    }

    /// New tokens for a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, String> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(r) = &self.config.resource {
            form.push(("resource", r));
        }
        self.token(&form).await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Tokens, String> {
        let resp = self
            .client
            .post(&self.config.token_endpoint)
            .basic_auth(&self.config.client_id, Some(&self.secret))
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        if !status.is_success() {
            // The provider's error code only: its description may echo what was sent.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(format!("token endpoint answered {status} {code}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("token endpoint's answer: {e}"))
    }

    /// Revokes `secret`'s tokens at the provider (RFC 7009), when it has a revocation
    /// endpoint: the refresh token first (which ends the grant), then the access token.
    pub async fn revoke(&self, secret: Secret) {
        let Some(endpoint) = &self.config.revocation_endpoint else {
            return;
        };
        let tokens = [
            secret.refresh_token.map(|t| (t, "refresh_token")),
            Some((secret.access_token, "access_token")),
        ];
        for (token, hint) in tokens.into_iter().flatten() {
            let r = self
                .client
                .post(endpoint)
                .basic_auth(&self.config.client_id, Some(&self.secret))
                .form(&[("token", token.as_str()), ("token_type_hint", hint)])
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(%endpoint, status = %r.status(), "revoking an upstream token: refused")
                }
                Err(e) => tracing::warn!(%endpoint, "revoking an upstream token: {e}"),
            }
        }
    }
}

/// `config` with its endpoints read from the provider's metadata, when it names one: the
/// document at the configured URL (fetched by Moat, never from a URL a client gave), whose
/// `issuer` must be the configured one (RFC 8414, section 3.3), and whose endpoints must be
/// URLs Moat fetches (https, or http to a loopback address).
pub async fn discover(config: &OAuth2) -> Result<OAuth2, String> {
    let Some((issuer, metadata_url)) = &config.discovery else {
        return Ok(config.clone());
    };
    let client = crate::auth::fetch::client(config.ca_file.as_deref())?;
    let resp = client
        .get(metadata_url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("{metadata_url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{metadata_url}: answered {}", resp.status()));
    }
    let m: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("{metadata_url}: {e}"))?;
    if m["issuer"].as_str() != Some(issuer.as_str()) {
        return Err(format!(
            "{metadata_url}: its issuer is {}, not {issuer}",
            m["issuer"]
        ));
    }
    let endpoint = |key: &str| -> Result<Option<String>, String> {
        let Some(u) = m[key].as_str() else {
            return Ok(None);
        };
        let parsed = url::Url::parse(u).map_err(|e| format!("{metadata_url}: {key}: {e}"))?;
        let loopback = parsed.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match parsed.scheme() {
            "https" => Ok(Some(u.to_string())),
            "http" if loopback => Ok(Some(u.to_string())),
            _ => Err(format!("{metadata_url}: {key} {u:?} is not https")),
        }
    };
    let need = |key: &str| endpoint(key)?.ok_or_else(|| format!("{metadata_url}: no {key}"));
    Ok(OAuth2 {
        authorization_endpoint: need("authorization_endpoint")?,
        token_endpoint: need("token_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
        ..config.clone()
    })
}
