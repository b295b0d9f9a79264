//! Admission: is this request for this server at all? Host (DNS rebinding), the documents
//! Moat serves itself, Origin, the route, and the header fields Moat reads.
use std::net::IpAddr;

use http::{HeaderMap, Method, Uri, header};

use super::{
    Site,
    error::ProxyError,
    fields::Fields,
    flow::{Flow, Stop},
    legacy, local,
};
use crate::config::{Server, server_url_authority};

/// A request for this server: where it goes and its checked header fields.
pub struct Admitted {
    pub route: Route,
    /// The path (and query) the upstream request goes to: what was routed.
    pub target: String,
    pub fields: Fields,
}

/// Admits a request's head, or stops it: refused, or answered with a document Moat serves.
pub fn admit(site: &Site, parts: &http::request::Parts) -> Flow<Admitted> {
    let server = &site.server;
    check_host(server, &parts.uri, &parts.headers)?;
    if let Some(resp) = local::answer(site, parts) {
        return Err(Stop::Serve(Box::new(resp)));
    }
    check_origin(server, &parts.headers)?;
    let route = route(server, &parts.method, &parts.uri, |t| {
        site.legacy.is_live(t)
    })?;
    let target = match route {
        Route::Streamable => server.endpoint.clone(),
        Route::LegacyStream | Route::LegacyMessage => parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
    };
    let mut fields = Fields::read(&parts.headers)?;
    if route == Route::LegacyMessage {
        // The session of a legacy message is the one its URL names.
        fields.session = legacy::session_of(&target).map(str::to_string);
    }
    Ok(Admitted {
        route,
        target,
        fields,
    })
}

/// What a request is, by path and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The Streamable HTTP endpoint (POST, GET, DELETE).
    Streamable,
    /// GET of the legacy HTTP+SSE stream.
    LegacyStream,
    /// POST to a message URL that a live legacy stream announced.
    LegacyMessage,
}

/// The `host` part of a `host[:port]` authority (IPv6 literals keep no brackets).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority, |(h, _)| h)
}

/// The Host (HTTP/1.1) or :authority (HTTP/2) must name this server: an IP literal, localhost,
/// the host of `public_url`, or one of `allowed_hosts`. A browser tricked by DNS rebinding
/// sends the attacker's host name, and is refused.
pub fn check_host(server: &Server, uri: &Uri, headers: &HeaderMap) -> Result<(), ProxyError> {
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .ok_or_else(|| ProxyError::BadHost(String::new()))?;
    let host = host_of(&authority).to_ascii_lowercase();
    let ok = host.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || server
            .public_url
            .as_deref()
            .and_then(server_url_authority)
            .is_some_and(|a| host_of(a).eq_ignore_ascii_case(&host))
        || server
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host));
    if ok {
        Ok(())
    } else {
        Err(ProxyError::BadHost(authority))
    }
}

/// An `Origin` header, when present, must be allowed: listed in `allowed_origins` or the origin
/// of `public_url`. Requests without one (non-browser clients) pass.
pub fn check_origin(server: &Server, headers: &HeaderMap) -> Result<(), ProxyError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| ProxyError::BadOrigin("(not text)".into()))?;
    let own = server.public_url.as_deref().and_then(|u| {
        let scheme_end = u.find("://")? + 3;
        Some(format!("{}{}", &u[..scheme_end], server_url_authority(u)?))
    });
    if server.allowed_origins.iter().any(|o| o == origin) || own.as_deref() == Some(origin) {
        Ok(())
    } else {
        Err(ProxyError::BadOrigin(origin.into()))
    }
}

/// Which endpoint the request is for; anything else is 404 and never reaches the server.
pub fn route(
    server: &Server,
    method: &Method,
    uri: &Uri,
    legacy_known: impl Fn(&str) -> bool,
) -> Result<Route, ProxyError> {
    let path = uri.path();
    if path == server.endpoint {
        return match *method {
            Method::POST | Method::GET | Method::DELETE => Ok(Route::Streamable),
            _ => Err(ProxyError::MethodNotAllowed(method.to_string())),
        };
    }
    if server.legacy_sse.as_deref() == Some(path) {
        return if method == Method::GET {
            Ok(Route::LegacyStream)
        } else {
            Err(ProxyError::MethodNotAllowed(method.to_string()))
        };
    }
    if server.legacy_sse.is_some() && method == Method::POST {
        let target = uri.path_and_query().map_or(path, |pq| pq.as_str());
        if legacy_known(target) {
            return Ok(Route::LegacyMessage);
        }
        return Err(ProxyError::UnknownSession);
    }
    Err(ProxyError::NotFound(path.into()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::config::Config;

    fn server(extra: &str) -> Server {
        let text = format!(
            "servers:\n  - name: a\n    port: 8000\n    dangerous: {{plaintext: true, unauthenticated: true}}\n{extra}"
        );
        Config::parse("t.yaml", &text).unwrap().servers.remove(0)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_must_name_this_server() {
        let s = server(
            "    public_url: https://files.example.com:8000/mcp\n    allowed_hosts: [files.internal]\n",
        );
        let uri: Uri = "/mcp".parse().unwrap();
        for ok in [
            "127.0.0.1:8000",
            "[::1]:8000",
            "localhost",
            "files.example.com:8000",
            "FILES.example.com",
            "files.internal:8000",
        ] {
            let h = HeaderMap::from_iter([(header::HOST, HeaderValue::from_str(ok).unwrap())]);
            assert!(check_host(&s, &uri, &h).is_ok(), "{ok}");
        }
        for bad in [
            "attacker.example",
            "files.example.com.attacker.example:8000",
            "localhost.attacker:80",
            "",
        ] {
            let h = HeaderMap::from_iter([(header::HOST, HeaderValue::from_str(bad).unwrap())]);
            assert!(
                matches!(check_host(&s, &uri, &h), Err(ProxyError::BadHost(_))),
                "{bad}"
            );
        }
        assert!(
            check_host(&s, &uri, &HeaderMap::new()).is_err(),
            "no host at all"
        );
        let h2: Uri = "https://attacker.example/mcp".parse().unwrap();
        let h = headers(&[("host", "127.0.0.1")]);
        assert!(
            check_host(&s, &h2, &h).is_err(),
            "the HTTP/2 authority wins over a Host header"
        );
    }

    #[test]
    fn origin_must_be_allowed_when_present() {
        let s = server(
            "    public_url: https://files.example.com:8000/mcp\n    allowed_origins: [https://claude.ai]\n",
        );
        assert!(check_origin(&s, &HeaderMap::new()).is_ok());
        assert!(check_origin(&s, &headers(&[("origin", "https://claude.ai")])).is_ok());
        assert!(
            check_origin(
                &s,
                &headers(&[("origin", "https://files.example.com:8000")])
            )
            .is_ok()
        );
        for bad in [
            "https://claude.ai.evil.example",
            "http://claude.ai",
            "null",
            "https://files.example.com",
        ] {
            let h = HeaderMap::from_iter([(header::ORIGIN, HeaderValue::from_static(bad))]);
            assert!(
                matches!(check_origin(&s, &h), Err(ProxyError::BadOrigin(_))),
                "{bad}"
            );
        }
        let none = server("");
        assert!(
            check_origin(&none, &headers(&[("origin", "http://localhost:8000")])).is_err(),
            "deny by default"
        );
    }

    #[test]
    fn only_the_mcp_endpoints_are_routed() {
        let s = server("    legacy_sse: /sse\n");
        let r = |m: Method, u: &str| {
            route(&s, &m, &u.parse().unwrap(), |t| {
                t == "/messages/?session_id=abc"
            })
        };
        assert_eq!(r(Method::POST, "/mcp").unwrap(), Route::Streamable);
        assert_eq!(r(Method::GET, "/mcp?x=1").unwrap(), Route::Streamable);
        assert_eq!(r(Method::DELETE, "/mcp").unwrap(), Route::Streamable);
        assert!(matches!(
            r(Method::PUT, "/mcp"),
            Err(ProxyError::MethodNotAllowed(_))
        ));
        assert_eq!(r(Method::GET, "/sse").unwrap(), Route::LegacyStream);
        assert_eq!(
            r(Method::POST, "/messages/?session_id=abc").unwrap(),
            Route::LegacyMessage
        );
        assert!(matches!(
            r(Method::POST, "/messages/?session_id=other"),
            Err(ProxyError::UnknownSession)
        ));
        assert!(matches!(
            r(Method::GET, "/admin"),
            Err(ProxyError::NotFound(_))
        ));
        assert!(matches!(
            r(Method::GET, "/mcp/../admin"),
            Err(ProxyError::NotFound(_))
        ));
        assert!(matches!(
            route(
                &server(""),
                &Method::POST,
                &"/messages/?session_id=abc".parse().unwrap(),
                |_| true
            ),
            Err(ProxyError::NotFound(_))
        ));
    }
}
