//! A client ID that is a URL: `https`, a host, a path, no fragment, no userinfo, no dot
//! segments, and written exactly as the URL parser writes it (so one document has one ID).
use url::{Host, Url};

/// The longest client ID Moat accepts.
pub const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the client ID is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("the client ID is not a URL: {0}")]
    Invalid(#[from] url::ParseError),
    #[error("the client ID URL's scheme is {0:?}, not https")]
    NotHttps(String),
    #[error("the client ID URL has a fragment")]
    Fragment,
    #[error("the client ID URL has a user name or password")]
    Userinfo,
    #[error("the client ID URL has no host")]
    NoHost,
    #[error("the client ID URL has no path")]
    NoPath,
    #[error("the client ID URL's path has a dot segment (\".\" or \"..\")")]
    DotSegment,
    #[error("the client ID URL is not in its canonical form {canonical:?}")]
    NotCanonical { canonical: String },
}

/// A client ID URL that passed [`ClientIdUrl::parse`]; its text is exactly the client ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdUrl(Url);

impl ClientIdUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text.len() > MAX_LEN {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(text)?;
        if url.scheme() != "https" {
            return Err(UrlError::NotHttps(url.scheme().into()));
        }
        if url.fragment().is_some() || text.contains('#') {
            return Err(UrlError::Fragment);
        }
        if !url.username().is_empty() || url.password().is_some() || authority(text).contains('@') {
            return Err(UrlError::Userinfo);
        }
        match url.host() {
            None => return Err(UrlError::NoHost),
            Some(Host::Domain("")) => return Err(UrlError::NoHost),
            Some(_) => {}
        }
        let path = raw_path(text);
        if path.is_empty() {
            return Err(UrlError::NoPath);
        }
        if path.split(['/', '\\']).any(is_dot_segment) {
            return Err(UrlError::DotSegment);
        }
        if url.as_str() != text {
            return Err(UrlError::NotCanonical {
                canonical: url.as_str().into(),
            });
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host as the URL parser read it (a domain, or an IP address however it was written).
    pub fn host(&self) -> Host<&str> {
        self.0.host().expect("checked in parse")
    }

    pub fn port(&self) -> u16 {
        self.0
            .port_or_known_default()
            .expect("https has a default port")
    }
}

impl std::fmt::Display for ClientIdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What follows `scheme:` and its slashes, up to the path, query or fragment.
fn authority(text: &str) -> &str {
    let rest = after_scheme(text);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// The path as written, before the URL parser resolves dot segments in it.
fn raw_path(text: &str) -> &str {
    let rest = after_scheme(text);
    let rest = &rest[authority(text).len()..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

fn after_scheme(text: &str) -> &str {
    let rest = text.split_once(':').map_or(text, |(_, rest)| rest);
    rest.trim_start_matches(['/', '\\'])
}

/// `.` and `..`, also percent-encoded (the URL parser resolves `%2e` like `.`).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> UrlError {
        ClientIdUrl::parse(text).expect_err(text)
    }

    #[test]
    fn a_plain_https_url_is_a_client_id() {
        for ok in [
            "https://client.example/metadata.json",
            "https://client.example/",
            "https://client.example:8443/a/b?x=1",
            "https://127.0.0.1/client",
            "https://[2001:db8::1]/client",
        ] {
            let id = ClientIdUrl::parse(ok).expect(ok);
            assert_eq!(id.as_str(), ok);
        }
        let id = ClientIdUrl::parse("https://client.example:8443/a").unwrap();
        assert_eq!(id.port(), 8443);
        assert_eq!(
            ClientIdUrl::parse("https://c.example/a").unwrap().port(),
            443
        );
    }

    #[test]
    fn every_refusal_names_its_reason() {
        assert!(matches!(refused("client.example/x"), UrlError::Invalid(_)));
        assert!(matches!(refused("/relative"), UrlError::Invalid(_)));
        assert_eq!(
            refused("http://client.example/x"),
            UrlError::NotHttps("http".into())
        );
        assert_eq!(
            refused("file:///etc/passwd"),
            UrlError::NotHttps("file".into())
        );
        assert_eq!(refused("https://client.example/x#frag"), UrlError::Fragment);
        assert_eq!(refused("https://client.example/x#"), UrlError::Fragment);
        assert_eq!(refused("https://evil@client.example/x"), UrlError::Userinfo);
        assert_eq!(refused("https://a:b@client.example/x"), UrlError::Userinfo);
        assert_eq!(refused("https://:@client.example/x"), UrlError::Userinfo);
        assert_eq!(refused("https://client.example"), UrlError::NoPath);
        assert_eq!(refused("https://client.example?x"), UrlError::NoPath);
        for dots in [
            "https://client.example/a/../b",
            "https://client.example/./b",
            "https://client.example/a/..",
            "https://client.example/a/%2e%2E/b",
            "https://client.example/a/.%2e",
            "https://client.example/%2e/b",
            "https://client.example/a\\..\\b",
        ] {
            assert_eq!(refused(dots), UrlError::DotSegment, "{dots}");
        }
        let long = format!("https://client.example/{}", "a".repeat(MAX_LEN));
        assert_eq!(refused(&long), UrlError::TooLong);
    }

    #[test]
    fn one_document_has_one_client_id() {
        for (text, canonical) in [
            ("HTTPS://client.example/x", "https://client.example/x"),
            ("https://Client.Example/x", "https://client.example/x"),
            ("https://client.example:443/x", "https://client.example/x"),
            ("https://client.example/a b", "https://client.example/a%20b"),
            ("https:client.example/x", "https://client.example/x"),
        ] {
            assert_eq!(
                refused(text),
                UrlError::NotCanonical {
                    canonical: canonical.into()
                },
                "{text}"
            );
        }
    }

    /// Hex, octal, decimal and short IPv4 forms: the URL parser reads them as IPv4 addresses,
    /// so they are refused as not canonical here, and their address is refused by the guard.
    #[test]
    fn obscure_ip_forms_are_not_client_ids() {
        for text in [
            "https://0x7f.1/x",
            "https://0x7f000001/x",
            "https://2130706433/x",
            "https://0177.0.0.1/x",
            "https://127.1/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[0:0:0:0:0:0:0:1]/x",
        ] {
            let err = refused(text);
            let UrlError::NotCanonical { canonical } = &err else {
                panic!("{text}: {err}");
            };
            let url = Url::parse(canonical).unwrap();
            assert!(
                matches!(
                    url.host(),
                    Some(Host::Ipv4(ip)) if ip.is_loopback()
                ) || matches!(url.host(), Some(Host::Ipv6(ip)) if ip.to_canonical().is_loopback()),
                "{text} -> {canonical}"
            );
        }
    }
}
