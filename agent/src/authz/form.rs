//! Reading what browsers and clients send: bounded request bodies, URL-encoded forms and
//! queries where every parameter appears at most once (RFC 6749 section 3.1), and cookies.
use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use super::error::OAuthError;

/// The largest body the authorization server reads (forms and registrations are small).
pub const MAX_BODY: usize = 64 * 1024;

/// Parameters of a form or query; a parameter given twice is an error.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(text: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(text) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter `{k}` is given more than once"
                )));
            }
        }
        Ok(Self(map))
    }

    /// A parameter; an empty one counts as absent (RFC 6749 section 3.1).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::InvalidRequest(format!("missing parameter `{key}`")))
    }
}

/// The body, at most [`MAX_BODY`] bytes.
pub async fn body(b: Incoming) -> Result<Bytes, OAuthError> {
    Limited::new(b, MAX_BODY)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|_| {
            OAuthError::InvalidRequest(format!("the body is over {MAX_BODY} bytes or unreadable"))
        })
}

/// A URL-encoded form body (its Content-Type must say so).
pub async fn form(headers: &HeaderMap, b: Incoming) -> Result<Params, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return Err(OAuthError::InvalidRequest(
            "expected Content-Type: application/x-www-form-urlencoded".into(),
        ));
    }
    Params::parse(&body(b).await?)
}

/// The value of cookie `name`, if the request carries exactly one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        for pair in v.to_str().ok()?.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        let p = Params::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
    }

    #[test]
    fn a_cookie_given_twice_is_none() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "b"), Some("2"));
        h.append(header::COOKIE, "b=3".parse().unwrap());
        assert_eq!(cookie(&h, "b"), None, "a planted second cookie");
    }
}
