//! A server's `auth:` (the OAuth resource server: issuer, keys, audience, scopes) and
//! `upstream_auth:` (the credential Moat presents to the upstream instead of the client's token).
use std::{path::PathBuf, time::Duration};

use jsonwebtoken::Algorithm;

use super::{
    values::{absolute_path, fetch_url, scopes, string_list},
    yaml::{Node, Report},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub issuer: Issuer,
    /// The `aud` a token must carry (RFC 8707 resource); default: the server's `public_url`.
    pub audience: String,
    /// Listed in the protected resource metadata; default: the issuer (none for `local`).
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    /// Every request needs all of these; a token without them gets 403 insufficient_scope.
    pub required_scopes: Vec<String>,
    /// Signature algorithms accepted (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How often the JWKS is fetched again.
    pub jwks_refresh: Duration,
    /// How long past its refresh the last JWKS fetched is still used while the issuer cannot
    /// be reached; after that, requests are refused (503) until a fetch succeeds.
    pub jwks_max_stale: Duration,
    /// Extra trusted roots (PEM) for the issuer's HTTPS endpoints, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// RFC 7662 introspection, for tokens that are not JWTs.
    pub introspection: Option<Introspection>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// Moat's own authorization server (`issuer: local`), whose issuer identifier this is:
    /// tokens it issues, and those of `moat token mint`.
    Local(String),
    /// An OAuth authorization server: its issuer identifier and the pinned JWKS URL.
    Remote {
        issuer: String,
        jwks_uri: Option<String>,
    },
}

impl Issuer {
    pub fn id(&self) -> &str {
        match self {
            Self::Local(issuer) => issuer,
            Self::Remote { issuer, .. } => issuer,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    pub url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
}

/// What Moat presents to the upstream; the client's own token never goes there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UpstreamAuth {
    #[default]
    None,
    /// A fixed header whose value is read from a file (trailing newline removed).
    Header {
        name: http::HeaderName,
        secret_file: PathBuf,
    },
    /// A short-lived JWT minted by Moat for each caller (aud, sub, client_id), sent as
    /// `Authorization: Bearer`; its keys are published as a JWKS.
    Jwt { audience: String, ttl: Duration },
    /// Each user's own token at a third party, obtained and kept by Moat.
    OAuth2(Box<super::oauth2::OAuth2>),
}

const AUTH_KEYS: &[&str] = &[
    "issuer",
    "jwks_uri",
    "audience",
    "authorization_servers",
    "scopes_supported",
    "required_scopes",
    "algorithms",
    "leeway_s",
    "jwks_refresh_s",
    "jwks_max_stale_s",
    "ca_file",
    "introspection",
];

const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Reads `auth:`; `public_url` is the default audience.
pub(super) fn read_auth(n: &Node<'_>, public_url: Option<&str>, r: &mut Report) -> Option<Auth> {
    let m = n.mapping(AUTH_KEYS, r)?;
    let issuer_node = m.require("issuer", r)?;
    let issuer_text = issuer_node.string(r)?;
    let jwks_uri = m.get("jwks_uri").and_then(|v| fetch_url(v, r));
    let introspection = m.get("introspection").and_then(|v| introspection(v, r));
    let issuer = if issuer_text == "local" {
        if let Some(v) = m.get("jwks_uri") {
            r.add(v, "`issuer: local` has its own key; remove `jwks_uri`");
        }
        // Named by `authorization_server.issuer` once the whole file is read.
        Issuer::Local(String::new())
    } else {
        let _ = fetch_url(issuer_node, r)?;
        if m.get("jwks_uri").is_none() && m.get("introspection").is_none() {
            r.add(
                &m.at,
                "missing `jwks_uri` (the issuer's JWKS URL, pinned here) or `introspection`",
            );
        }
        Issuer::Remote {
            issuer: issuer_text.clone(),
            jwks_uri: jwks_uri.clone(),
        }
    };
    let audience = match (m.get("audience"), public_url) {
        (Some(v), _) => v.string(r),
        (None, Some(u)) => Some(u.to_string()),
        (None, None) => {
            r.add(
                &m.at,
                "missing `audience`, or `public_url` on the server (the default audience)",
            );
            None
        }
    };
    let authorization_servers = match m.get("authorization_servers") {
        Some(v) => string_list(Some(v), r),
        None => Some(match &issuer {
            Issuer::Local(_) => Vec::new(),
            Issuer::Remote { issuer, .. } => vec![issuer.clone()],
        }),
    };
    let scopes_supported = scopes(m.get("scopes_supported"), r);
    let required_scopes = scopes(m.get("required_scopes"), r);
    let algorithms = match m.get("algorithms") {
        Some(v) => algorithms(v, r),
        None => Some(DEFAULT_ALGORITHMS.to_vec()),
    };
    let secs = |key: &str, default: u64, max: u64, r: &mut Report| -> Option<Duration> {
        let Some(v) = m.get(key) else {
            return Some(Duration::from_secs(default));
        };
        match v.integer(r)? {
            i if (0..=max as i64).contains(&i) => Some(Duration::from_secs(i as u64)),
            i => {
                r.add(v, format!("expected a number from 0 to {max}, found {i}"));
                None
            }
        }
    };
    let leeway = secs("leeway_s", 30, 300, r);
    let jwks_refresh = secs("jwks_refresh_s", 300, 86_400, r);
    let jwks_max_stale = secs("jwks_max_stale_s", 3_600, 7 * 86_400, r);
    let ca_file = match m.get("ca_file") {
        Some(v) => Some(absolute_path(v, r)?),
        None => None,
    };
    if m.get("jwks_uri").is_some() && jwks_uri.is_none()
        || m.get("introspection").is_some() && introspection.is_none()
    {
        return None;
    }
    Some(Auth {
        issuer,
        audience: audience?,
        authorization_servers: authorization_servers?,
        scopes_supported: scopes_supported?,
        required_scopes: required_scopes?,
        algorithms: algorithms?,
        leeway: leeway?,
        jwks_refresh: jwks_refresh?.max(Duration::from_secs(1)),
        jwks_max_stale: jwks_max_stale?,
        ca_file,
        introspection,
    })
}

/// `upstream_auth:` `{ header: NAME, secret_file: PATH }` or `{ jwt: { audience, ttl_s } }`.
pub(super) fn read_upstream_auth(
    n: &Node<'_>,
    upstream: Option<std::net::SocketAddr>,
    r: &mut Report,
) -> Option<UpstreamAuth> {
    let m = n.mapping(&["header", "secret_file", "jwt", "oauth2"], r)?;
    if let Some(o) = m.get("oauth2") {
        if m.get("header").is_some() || m.get("jwt").is_some() {
            r.add(&m.at, "use one of `header`, `jwt` or `oauth2`");
            return None;
        }
        return super::oauth2::read_oauth2(o, r).map(|o| UpstreamAuth::OAuth2(Box::new(o)));
    }
    match (m.get("header"), m.get("jwt")) {
        (Some(h), None) => {
            let name = h.string(r)?;
            let name = match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    r.add(h, format!("{name:?} is not a valid header name"));
                    return None;
                }
            };
            let secret_file = absolute_path(m.require("secret_file", r)?, r)?;
            Some(UpstreamAuth::Header { name, secret_file })
        }
        (None, Some(j)) => {
            if let Some(v) = m.get("secret_file") {
                r.add(v, "`secret_file` goes with `header`, not with `jwt`");
            }
            let jm = j.mapping(&["audience", "ttl_s"], r)?;
            let audience = match jm.get("audience") {
                Some(v) => v.string(r)?,
                None => format!("http://{}", upstream?),
            };
            let ttl = match jm.get("ttl_s") {
                Some(v) => match v.integer(r)? {
                    i if (5..=3600).contains(&i) => Duration::from_secs(i as u64),
                    i => {
                        r.add(v, format!("expected a number from 5 to 3600, found {i}"));
                        return None;
                    }
                },
                None => Duration::from_secs(60),
            };
            Some(UpstreamAuth::Jwt { audience, ttl })
        }
        (Some(_), Some(_)) => {
            r.add(&m.at, "use either `header` or `jwt`, not both");
            None
        }
        (None, None) => {
            r.add(
                &m.at,
                "expected `header` with `secret_file`, or `jwt` (leave `upstream_auth` out for none)",
            );
            None
        }
    }
}

fn introspection(v: &Node<'_>, r: &mut Report) -> Option<Introspection> {
    let m = v.mapping(&["url", "client_id", "client_secret_file"], r)?;
    let url = m.require("url", r).and_then(|u| fetch_url(u, r));
    let client_id = m.require("client_id", r).and_then(|c| c.string(r));
    let secret = m
        .require("client_secret_file", r)
        .and_then(|f| absolute_path(f, r));
    Some(Introspection {
        url: url?,
        client_id: client_id?,
        client_secret_file: secret?,
    })
}

fn algorithms(v: &Node<'_>, r: &mut Report) -> Option<Vec<Algorithm>> {
    let mut out = Vec::new();
    let mut ok = true;
    for item in v.sequence(r) {
        let Some(name) = item.string(r) else {
            ok = false;
            continue;
        };
        match name.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                r.add(
                    &item,
                    format!("{name} is a shared-secret algorithm; only public-key algorithms are accepted"),
                );
                ok = false;
            }
            Ok(a) => out.push(a),
            Err(_) => {
                r.add(
                    &item,
                    format!("unknown algorithm {name:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"),
                );
                ok = false;
            }
        }
    }
    if ok && out.is_empty() {
        r.add(v, "list at least one algorithm");
        ok = false;
    }
    ok.then_some(out)
}
