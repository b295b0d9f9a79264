//! OAuth redirect URIs: which ones a client may register (OAuth 2.1 section 2.3.1, RFC 8252 for
//! native apps), and whether a requested one is a registered one (exactly; a loopback `http`
//! URI may differ in its port only, RFC 8252 section 7.3).
use url::{Host, Url};

/// Whether `uri` may be registered: absolute, no fragment, no user information, and `https`,
/// `http` to a loopback address, or a native app's private-use scheme (with a dot, RFC 8252
/// section 7.1). Never `javascript:`, `data:`, `file:` and the like.
pub fn redirect_uri_ok(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 2048 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a redirect URI is at most 2048 characters, without spaces or controls");
    }
    let url = Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err("a redirect URI has no fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a redirect URI has no user information");
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err("http:// only to a loopback address (127.0.0.1, [::1], localhost)"),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ftp" | "ws" | "wss" => {
            Err("not a scheme a browser may be sent to")
        }
        s if s.contains('.') => Ok(()),
        _ => Err("expected https://, http:// to a loopback address, or a reverse-domain scheme"),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether the requested `uri` is the registered `registered`: the same string, or both
/// loopback `http` URIs that differ only in their port.
pub fn redirect_uri_matches(registered: &str, uri: &str) -> bool {
    if registered == uri {
        return true;
    }
    let (Ok(a), Ok(b)) = (Url::parse(registered), Url::parse(uri)) else {
        return false;
    };
    if a.scheme() != "http" || b.scheme() != "http" || !is_loopback(&a) || !is_loopback(&b) {
        return false;
    }
    // Everything but the port, compared as written (the parser lower-cases only the scheme and
    // host, which are loopback literals here).
    let strip = |u: &str| -> Option<String> {
        let rest = u.strip_prefix("http://")?;
        let (authority, tail) = rest
            .find(['/', '?'])
            .map_or((rest, ""), |i| rest.split_at(i));
        let host = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        };
        Some(format!("{host}{tail}"))
    };
    a.host() == b.host() && strip(registered).is_some() && strip(registered) == strip(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_uris() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:33418/cb?x=1",
            "http://[::1]:9000/",
            "http://localhost:8080/cb",
            "com.example.app:/oauth",
        ] {
            assert_eq!(redirect_uri_ok(ok), Ok(()), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "http://evil.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "https://claude.ai/cb#frag",
            "https://user:pw@claude.ai/cb",
            "/relative",
            "myapp:/cb",
            "https://a b/",
            "https://x/\n",
        ] {
            assert!(redirect_uri_ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_match_but_for_loopback_ports() {
        let reg = "http://127.0.0.1/callback";
        assert!(redirect_uri_matches(reg, "http://127.0.0.1:51234/callback"));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:1/callback",
            "http://127.0.0.1:2/callback"
        ));
        assert!(redirect_uri_matches(
            "http://[::1]:1/cb?a=b",
            "http://[::1]:2/cb?a=b"
        ));
        // Anything else must be the same string.
        for other in [
            "http://127.0.0.1:51234/callback/",
            "http://127.0.0.1:51234/Callback",
            "http://127.0.0.1:51234/callback?x=1",
            "http://localhost:51234/callback",
            "http://127.0.0.2:51234/callback",
            "https://127.0.0.1:51234/callback",
            "http://127.0.0.1:51234/callback#x",
            "http://127.0.0.1@evil.example/callback",
        ] {
            assert!(!redirect_uri_matches(reg, other), "{other}");
        }
        let https = "https://claude.ai/api/mcp/auth_callback";
        assert!(redirect_uri_matches(https, https));
        for other in [
            "https://claude.ai:443/api/mcp/auth_callback",
            "https://CLAUDE.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback/../auth_callback",
            "https://claude.ai/api/mcp/auth_callback?next=https://evil.example",
            "https://claude.ai.evil.example/api/mcp/auth_callback",
        ] {
            assert!(!redirect_uri_matches(https, other), "{other}");
        }
    }
}
