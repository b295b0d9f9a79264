//! The back channel: the code exchanged at the token endpoint (with the PKCE verifier, and the
//! client secret when there is one), and the userinfo endpoint asked with the access token.
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Map, Value};
use url::Url;

use super::{
    error::FederationError, fetch::Http, login::Pending, metadata::Metadata, oidc_login::OidcLogin,
    text::printable,
};

/// What the token endpoint answered, as far as Moat uses it.
pub struct Tokens {
    pub id_token: String,
    /// For userinfo; only a bearer token is used.
    pub access_token: Option<String>,
}

const TOKEN: &str = "the token endpoint's answer";
const USERINFO: &str = "the userinfo answer";

/// Exchanges `code` for tokens.
pub async fn exchange(
    client: &Http,
    metadata: &Metadata,
    config: &OidcLogin,
    code: &str,
    pending: &Pending,
) -> Result<Tokens, FederationError> {
    let url = &metadata.token_endpoint;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &pending.redirect_uri),
        ("code_verifier", &pending.verifier),
    ];
    let mut request = client.post(url);
    match &config.client_secret {
        // RFC 6749 2.3.1: both form-encoded, then Basic.
        Some(secret) if metadata.secret_basic => {
            let pair = format!("{}:{}", form_encode(&config.client_id), form_encode(secret));
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(pair)),
            );
        }
        Some(secret) => form.extend([("client_id", &*config.client_id), ("client_secret", secret)]),
        None => form.push(("client_id", &config.client_id)),
    }
    let answer = client.send(TOKEN, url, request.form(&form)).await?;
    if answer.status != 200 {
        let body: Option<Map<String, Value>> = serde_json::from_slice(&answer.body).ok();
        let field = |name| body.as_ref()?.get(name)?.as_str();
        return Err(match field("error") {
            Some(error) => FederationError::Token {
                status: answer.status,
                error: printable(error),
                description: field("error_description").map(printable),
            },
            None => FederationError::Status {
                what: "the token endpoint",
                url: url.to_string(),
                status: answer.status,
            },
        });
    }
    let body: Map<String, Value> = answer.json(TOKEN, url)?;
    let bad = |reason: &str| FederationError::Body {
        what: TOKEN,
        url: url.to_string(),
        reason: reason.into(),
    };
    let id_token = match body.get("id_token") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(bad("id_token is not a string")),
        None => return Err(bad("no id_token")),
    };
    let bearer = body
        .get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
    let access_token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|_| bearer)
        .map(str::to_string);
    Ok(Tokens {
        id_token,
        access_token,
    })
}

/// The userinfo claims for `access_token`; they must be about `sub`.
pub async fn userinfo(
    client: &Http,
    url: &Url,
    access_token: &str,
    sub: &str,
) -> Result<Map<String, Value>, FederationError> {
    let request = client.get(url).bearer_auth(access_token);
    let answer = client.send(USERINFO, url, request).await?;
    if answer.status != 200 {
        return Err(FederationError::Status {
            what: "the userinfo endpoint",
            url: url.to_string(),
            status: answer.status,
        });
    }
    if answer.content_type.as_deref() == Some("application/jwt") {
        return Err(FederationError::Body {
            what: USERINFO,
            url: url.to_string(),
            reason: "signed or encrypted userinfo is not supported".into(),
        });
    }
    let claims: Map<String, Value> = answer.json(USERINFO, url)?;
    match claims.get("sub") {
        Some(Value::String(s)) if s == sub => Ok(claims),
        found => Err(FederationError::UserinfoSubject {
            expected: sub.into(),
            found: match found {
                None => "(none)".into(),
                Some(Value::String(s)) => printable(s),
                Some(other) => printable(&other.to_string()),
            },
        }),
    }
}

/// application/x-www-form-urlencoded, for the Basic credentials.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
