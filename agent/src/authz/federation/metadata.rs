//! The provider's metadata (OpenID Connect Discovery), fetched from the pinned issuer: it must
//! name that issuer exactly, and every endpoint Moat will use must be a URL it talks to.
use serde::Deserialize;
use url::Url;

use super::{
    error::FederationError,
    fetch::{Http, checked},
};

/// The parts of the metadata Moat uses.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    pub userinfo_endpoint: Option<Url>,
    /// RFC 9207: the provider names itself in every authorization response.
    pub iss_parameter_supported: bool,
    /// Whether client_secret_basic can be used (else client_secret_post is).
    pub secret_basic: bool,
}

#[derive(Deserialize)]
struct Raw {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    response_types_supported: Vec<String>,
    code_challenge_methods_supported: Option<Vec<String>>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// The pinned issuer as a URL: https, or http to a loopback address; no query, no fragment.
pub fn issuer_url(issuer: &str) -> Result<Url, FederationError> {
    let url = checked("the issuer", issuer, true)?;
    if url.query().is_some() {
        return Err(FederationError::Url {
            what: "the issuer",
            url: issuer.into(),
            reason: "a query in the issuer",
        });
    }
    Ok(url)
}

/// Whether the (checked) issuer is plain http to loopback: then its endpoints may be too.
pub fn plain_http(issuer: &Url) -> bool {
    issuer.scheme() == "http"
}

/// Where the issuer's metadata is: `/.well-known/openid-configuration` appended to its path.
pub fn discovery_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url
}

impl Metadata {
    /// Fetches and checks the metadata of `issuer` (exactly as configured).
    pub async fn discover(http: &Http, issuer: &str) -> Result<Self, FederationError> {
        let issuer_url = issuer_url(issuer)?;
        let url = discovery_url(&issuer_url);
        let raw: Raw = http.get_json("the provider's metadata", &url).await?;
        Self::check(raw, issuer, plain_http(&issuer_url))
    }

    fn check(raw: Raw, issuer: &str, loopback_http: bool) -> Result<Self, FederationError> {
        if raw.issuer != issuer {
            return Err(FederationError::IssuerMismatch {
                expected: issuer.into(),
                found: raw.issuer,
            });
        }
        let missing = |name| FederationError::Metadata(format!("no {name}"));
        let endpoint = |what, raw: &str| checked(what, raw, loopback_http);
        if !raw.response_types_supported.iter().any(|t| t == "code") {
            return Err(FederationError::Metadata(
                "response type `code` is not supported".into(),
            ));
        }
        if let Some(methods) = &raw.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(FederationError::Metadata(
                "PKCE with S256 is not supported".into(),
            ));
        }
        // RFC 8414: client_secret_basic when the provider names no method.
        let methods = raw.token_endpoint_auth_methods_supported;
        let secret_basic = methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"));
        if !secret_basic
            && !methods
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m == "client_secret_post"))
        {
            return Err(FederationError::Metadata(
                "the token endpoint takes neither client_secret_basic nor client_secret_post"
                    .into(),
            ));
        }
        Ok(Self {
            authorization_endpoint: endpoint(
                "the authorization endpoint",
                &raw.authorization_endpoint,
            )?,
            token_endpoint: endpoint(
                "the token endpoint",
                raw.token_endpoint
                    .as_deref()
                    .ok_or(missing("token_endpoint"))?,
            )?,
            jwks_uri: endpoint(
                "the provider's keys",
                raw.jwks_uri.as_deref().ok_or(missing("jwks_uri"))?,
            )?,
            userinfo_endpoint: raw
                .userinfo_endpoint
                .as_deref()
                .map(|u| endpoint("the userinfo endpoint", u))
                .transpose()?,
            iss_parameter_supported: raw.authorization_response_iss_parameter_supported,
            secret_basic,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn metadata(issuer: &str) -> Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "userinfo_endpoint": format!("{issuer}/me"),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        })
    }

    fn check(doc: Value, issuer: &str) -> Result<Metadata, FederationError> {
        let plain = plain_http(&issuer_url(issuer)?);
        Metadata::check(serde_json::from_value(doc).unwrap(), issuer, plain)
    }

    #[test]
    fn the_issuer_must_be_the_pinned_one_exactly() {
        let pinned = "https://idp.example.com/realms/a";
        assert!(check(metadata(pinned), pinned).is_ok());
        for other in [
            "https://idp.example.com/realms/a/",
            "https://idp.example.com/realms/b",
            "https://IDP.example.com/realms/a",
            "https://evil.example/realms/a",
        ] {
            let mut doc = metadata(pinned);
            doc["issuer"] = other.into();
            assert_eq!(
                check(doc, pinned).unwrap_err(),
                FederationError::IssuerMismatch {
                    expected: pinned.into(),
                    found: other.into()
                }
            );
        }
    }

    #[test]
    fn endpoints_must_be_https_unless_on_loopback_with_a_loopback_issuer() {
        let https = "https://idp.example.com";
        for key in [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
        ] {
            for bad in [
                "http://idp.example.com/x",
                "http://127.0.0.1:8080/x",
                "ftp://idp.example.com/x",
                "javascript:alert(1)",
                "https://user:pw@idp.example.com/x",
                "https://idp.example.com/x#frag",
                "/relative",
            ] {
                let mut doc = metadata(https);
                doc[key] = bad.into();
                let got = check(doc, https);
                assert!(
                    matches!(got, Err(FederationError::Url { .. })),
                    "{key} = {bad}: {got:?}"
                );
            }
            // An https issuer on loopback has no plain http endpoint either.
            let mut doc = metadata("https://127.0.0.1:4444");
            doc[key] = "http://127.0.0.1:4444/x".into();
            let got = check(doc, "https://127.0.0.1:4444");
            assert!(matches!(got, Err(FederationError::Url { .. })), "{got:?}");
            // A loopback issuer may have loopback http endpoints, never others in plain http.
            let local = "http://127.0.0.1:4444";
            let mut doc = metadata(local);
            doc[key] = "http://[::1]:4444/x".into();
            assert!(check(doc, local).is_ok());
            for bad in ["http://idp.example.com/x", "http://localhost:4444/x"] {
                let mut doc = metadata(local);
                doc[key] = bad.into();
                let got = check(doc, local);
                assert!(
                    matches!(got, Err(FederationError::Url { .. })),
                    "{key} = {bad}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn an_issuer_in_plain_http_must_be_a_loopback_address() {
        for bad in [
            "http://idp.example.com",
            "http://localhost:8080",
            "http://10.0.0.1",
            "https://idp.example.com?x=1",
            "https://idp.example.com#x",
            "idp.example.com",
        ] {
            assert!(
                matches!(issuer_url(bad), Err(FederationError::Url { .. })),
                "{bad}"
            );
        }
        assert!(issuer_url("http://127.0.0.1:80").is_ok());
    }

    #[test]
    fn the_metadata_must_allow_the_code_flow_with_pkce() {
        let issuer = "https://idp.example.com";
        let mut doc = metadata(issuer);
        doc["code_challenge_methods_supported"] = json!(["plain"]);
        assert!(matches!(
            check(doc, issuer),
            Err(FederationError::Metadata(_))
        ));
        let mut doc = metadata(issuer);
        doc["response_types_supported"] = json!(["id_token"]);
        assert!(matches!(
            check(doc, issuer),
            Err(FederationError::Metadata(_))
        ));
        let mut doc = metadata(issuer);
        doc.as_object_mut().unwrap().remove("jwks_uri");
        assert_eq!(
            check(doc, issuer).unwrap_err(),
            FederationError::Metadata("no jwks_uri".into())
        );
    }

    #[test]
    fn discovery_appends_to_the_issuer_path() {
        let at = |i: &str| discovery_url(&issuer_url(i).unwrap()).to_string();
        assert_eq!(
            at("https://idp.example.com"),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            at("https://idp.example.com/realms/a/"),
            "https://idp.example.com/realms/a/.well-known/openid-configuration"
        );
    }
}
