//! `authorization_server:`: the OAuth 2.1 authorization server Moat runs for MCP clients (its
//! issuer URL and listener, how users log in, which clients may register, token lifetimes).
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    server::{Tls, read_tls},
    values::scope_token,
    values::{absolute_path, string_list, url_authority},
    yaml::{Mapping, Node, Report},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationServer {
    /// The issuer identifier (RFC 8414): an https URL without query or fragment, where clients
    /// reach the server; the `iss` of every token it issues.
    pub issuer: String,
    /// Where it listens (default: every IPv4 address, the issuer's port).
    pub listen: SocketAddr,
    /// Certificates; empty only with `dangerous.plaintext`.
    pub tls: Tls,
    /// Plain HTTP (`dangerous: { plaintext: true }`), only for an `http://` loopback issuer.
    pub plaintext: bool,
    pub login: Login,
    pub registration: Registration,
    /// Clients named here (pre-registered).
    pub clients: Vec<ConfiguredClient>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long an authorization code may be redeemed.
    pub code_ttl: Duration,
    /// How long a browser stays logged in at the server (its session cookie).
    pub session_ttl: Duration,
    /// A new signing key after this; the previous one stays published until its tokens expire.
    pub key_rotation: Duration,
}

/// Who the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Users kept by Moat (`moat users add`), argon2id-hashed passwords.
    Local,
    /// The organisation's OpenID provider, with Moat as a relying party.
    Oidc(OidcLoginConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLoginConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    pub groups_claim: Option<String>,
    pub claims: Vec<String>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub dynamic: Dynamic,
    /// Client ID metadata documents (the client id is an https URL).
    pub metadata_documents: bool,
    /// Networks a metadata document may come from although they are not public.
    pub allow_private_networks: Vec<ipnet::IpNet>,
    /// Extra roots (PEM) trusted for metadata documents' HTTPS, besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// Dynamic client registration (RFC 7591).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dynamic {
    Open,
    Off,
    /// Only clients whose every redirect URI is on one of these hosts (or loopback).
    RedirectHosts(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredClient {
    pub id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
}

const KEYS: &[&str] = &[
    "issuer",
    "listen",
    "tls",
    "login",
    "registration",
    "clients",
    "access_token_ttl_s",
    "refresh_token_ttl_s",
    "code_ttl_s",
    "session_ttl_s",
    "key_rotation_days",
    "dangerous",
];

pub(super) fn read_authorization_server(
    n: &Node<'_>,
    r: &mut Report,
) -> Option<AuthorizationServer> {
    let m = n.mapping(KEYS, r)?;
    let plaintext = match m.get("dangerous") {
        Some(d) => {
            let dm = d.mapping(&["plaintext"], r)?;
            match dm.get("plaintext") {
                Some(p) => p.boolean(r)?,
                None => false,
            }
        }
        None => false,
    };
    let issuer_node = m.require("issuer", r)?;
    let issuer = issuer(issuer_node, plaintext, r);
    let listen = match (m.get("listen"), &issuer) {
        (Some(v), _) => listen(v, r),
        (None, Some((_, port))) => Some(SocketAddr::from(([0, 0, 0, 0], *port))),
        (None, None) => None,
    };
    let tls = match m.get("tls") {
        Some(v) => read_tls(v, r),
        None if plaintext => Some(Tls { certs: Vec::new() }),
        None => {
            r.add(
                &m.at,
                "missing `tls` (a certificate and key for the issuer's host)",
            );
            None
        }
    };
    if plaintext && let Some(t) = m.get("tls") {
        r.add(
            t,
            "`tls` and `dangerous: { plaintext: true }` exclude each other",
        );
    }
    let login = match m.get("login") {
        Some(v) => login(v, r),
        None => Some(Login::Local),
    };
    let registration = match m.get("registration") {
        Some(v) => registration(v, r),
        None => Some(Registration {
            dynamic: Dynamic::Open,
            metadata_documents: true,
            allow_private_networks: Vec::new(),
            ca_file: None,
        }),
    };
    let clients = match m.get("clients") {
        Some(v) => clients(v, r),
        None => Some(Vec::new()),
    };
    let access_token_ttl = secs(&m, "access_token_ttl_s", 300, 30, 3600, r);
    let refresh_token_ttl = secs(&m, "refresh_token_ttl_s", 30 * 86_400, 60, 365 * 86_400, r);
    let code_ttl = secs(&m, "code_ttl_s", 60, 10, 600, r);
    let session_ttl = secs(&m, "session_ttl_s", 3600, 60, 86_400, r);
    let key_rotation = match m.get("key_rotation_days") {
        None => Some(Duration::from_secs(30 * 86_400)),
        Some(v) => match v.integer(r)? {
            d @ 1..=365 => Some(Duration::from_secs(d as u64 * 86_400)),
            d => {
                r.add(
                    v,
                    format!("expected a number of days from 1 to 365, found {d}"),
                );
                None
            }
        },
    };
    Some(AuthorizationServer {
        issuer: issuer?.0,
        listen: listen?,
        tls: tls?,
        plaintext,
        login: login?,
        registration: registration?,
        clients: clients?,
        access_token_ttl: access_token_ttl?,
        refresh_token_ttl: refresh_token_ttl?,
        code_ttl: code_ttl?,
        session_ttl: session_ttl?,
        key_rotation: key_rotation?,
    })
}

/// The issuer URL and its port: https (http only with plaintext, to a loopback address),
/// no query, fragment or trailing slash.
fn issuer(v: &Node<'_>, plaintext: bool, r: &mut Report) -> Option<(String, u16)> {
    let s = v.string(r)?;
    let bad = |r: &mut Report, why: &str| {
        r.add(v, format!("{why}, found {s:?}"));
        None
    };
    let Ok(url) = url::Url::parse(&s) else {
        return bad(r, "expected an https:// URL");
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match (url.scheme(), plaintext) {
        ("https", false) => {}
        ("http", true) if loopback => {}
        ("http", true) => return bad(r, "a plaintext issuer must be a loopback address"),
        ("https", true) => {
            return bad(
                r,
                "`dangerous: { plaintext: true }` needs an http:// issuer",
            );
        }
        _ => return bad(r, "expected an https:// URL"),
    }
    if url.query().is_some() || url.fragment().is_some() || s.ends_with('/') {
        return bad(r, "expected a URL without query, fragment or trailing `/`");
    }
    if url.username() != "" || url.password().is_some() || url_authority(&s).is_none() {
        return bad(r, "expected an https:// URL without user information");
    }
    let port = url.port_or_known_default()?;
    Some((s, port))
}

fn listen(v: &Node<'_>, r: &mut Report) -> Option<SocketAddr> {
    let s = v.text(r)?;
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        _ => {
            r.add(
                v,
                format!("expected an address `IP:PORT` ('[::]:8443' quoted for IPv6), found {s:?}"),
            );
            None
        }
    }
}

fn secs(
    m: &Mapping<'_>,
    key: &str,
    default: u64,
    lo: i64,
    hi: i64,
    r: &mut Report,
) -> Option<Duration> {
    let Some(v) = m.get(key) else {
        return Some(Duration::from_secs(default));
    };
    match v.integer(r)? {
        i if (lo..=hi).contains(&i) => Some(Duration::from_secs(i as u64)),
        i => {
            r.add(v, format!("expected a number from {lo} to {hi}, found {i}"));
            None
        }
    }
}

/// `local`, or `{ oidc: { issuer, client_id, ... } }`.
fn login(v: &Node<'_>, r: &mut Report) -> Option<Login> {
    if let Some(s) = v.text(&mut Report::default()) {
        if s == "local" {
            return Some(Login::Local);
        }
        r.add(
            v,
            format!("expected `local` or `{{oidc: ...}}`, found {s:?}"),
        );
        return None;
    }
    let m = v.mapping(&["oidc"], r)?;
    let o = m.require("oidc", r)?;
    let om = o.mapping(
        &[
            "issuer",
            "client_id",
            "client_secret_file",
            "scopes",
            "groups_claim",
            "claims",
            "ca_file",
        ],
        r,
    )?;
    let issuer = om.require("issuer", r).and_then(|i| {
        let s = i.string(r)?;
        let ok = url::Url::parse(&s).is_ok_and(|u| {
            u.scheme() == "https"
                || u.scheme() == "http"
                    && match u.host() {
                        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                        Some(url::Host::Domain(d)) => d == "localhost",
                        None => false,
                    }
        });
        if !ok {
            r.add(
                i,
                format!(
                    "expected an https:// URL (http:// only to a loopback address), found {s:?}"
                ),
            );
            return None;
        }
        Some(s)
    });
    let client_id = om.require("client_id", r).and_then(|c| c.string(r));
    let client_secret_file = match om.get("client_secret_file") {
        Some(f) => Some(absolute_path(f, r)?),
        None => None,
    };
    let mut scopes = string_list(om.get("scopes"), r)?;
    if om.get("scopes").is_none() {
        scopes = vec!["openid".into(), "profile".into(), "email".into()];
    }
    if let Some(bad) = scopes.iter().find(|s| !scope_token(s)) {
        r.add(
            om.get("scopes").unwrap_or(o),
            format!("{bad:?} is not a valid scope"),
        );
        return None;
    }
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let groups_claim = match om.get("groups_claim") {
        Some(g) => Some(g.string(r)?),
        None => None,
    };
    let claims = string_list(om.get("claims"), r)?;
    let ca_file = match om.get("ca_file") {
        Some(f) => Some(absolute_path(f, r)?),
        None => None,
    };
    Some(Login::Oidc(OidcLoginConfig {
        issuer: issuer?,
        client_id: client_id?,
        client_secret_file,
        scopes,
        groups_claim,
        claims,
        ca_file,
    }))
}

fn registration(v: &Node<'_>, r: &mut Report) -> Option<Registration> {
    let m = v.mapping(
        &[
            "dynamic",
            "metadata_documents",
            "allow_private_networks",
            "ca_file",
        ],
        r,
    )?;
    let dynamic = match m.get("dynamic") {
        None => Some(Dynamic::Open),
        Some(d) => match d.text(&mut Report::default()).as_deref() {
            Some("open") => Some(Dynamic::Open),
            Some("off") => Some(Dynamic::Off),
            Some(other) => {
                r.add(
                    d,
                    format!(
                        "expected `open`, `off` or `{{redirect_hosts: [...]}}`, found {other:?}"
                    ),
                );
                None
            }
            None => {
                let dm = d.mapping(&["redirect_hosts"], r)?;
                let hosts = string_list(Some(dm.require("redirect_hosts", r)?), r)?;
                if hosts.is_empty() {
                    r.add(
                        d,
                        "list at least one host in `redirect_hosts` (or use `off`)",
                    );
                    return None;
                }
                Some(Dynamic::RedirectHosts(
                    hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
                ))
            }
        },
    };
    let metadata_documents = match m.get("metadata_documents") {
        Some(b) => b.boolean(r),
        None => Some(true),
    };
    let mut allow_private_networks = Vec::new();
    let mut ok = true;
    if let Some(list) = m.get("allow_private_networks") {
        for item in list.sequence(r) {
            let Some(s) = item.string(r) else {
                ok = false;
                continue;
            };
            match s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(n) => allow_private_networks.push(n),
                Err(_) => {
                    r.add(
                        &item,
                        format!("expected a network like 10.0.0.0/8, found {s:?}"),
                    );
                    ok = false;
                }
            }
        }
    }
    let ca_file = match m.get("ca_file") {
        Some(f) => Some(absolute_path(f, r)?),
        None => None,
    };
    Some(Registration {
        ca_file,
        dynamic: dynamic?,
        metadata_documents: metadata_documents?,
        allow_private_networks: ok.then_some(allow_private_networks)?,
    })
}

fn clients(v: &Node<'_>, r: &mut Report) -> Option<Vec<ConfiguredClient>> {
    let mut out: Vec<ConfiguredClient> = Vec::new();
    let mut ok = true;
    for item in v.sequence(r) {
        let Some(m) = item.mapping(&["client_id", "name", "redirect_uris"], r) else {
            ok = false;
            continue;
        };
        let id = m.require("client_id", r).and_then(|c| c.string(r));
        let name = match m.get("name") {
            Some(n) => n.string(r),
            None => id.clone(),
        };
        let uris_node = m.require("redirect_uris", r);
        let uris = uris_node.and_then(|u| string_list(Some(u), r));
        let (Some(id), Some(name), Some(uris), Some(uris_node)) = (id, name, uris, uris_node)
        else {
            ok = false;
            continue;
        };
        if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
            r.add(
                &item,
                format!("client_id {id:?}: 1 to 255 printable characters"),
            );
            ok = false;
        }
        if out.iter().any(|c| c.id == id) {
            r.add(&item, format!("client_id {id:?} is listed twice"));
            ok = false;
        }
        if uris.is_empty() {
            r.add(uris_node, "list at least one redirect URI");
            ok = false;
        }
        for u in &uris {
            if let Err(why) = crate::vocab::redirect_uri_ok(u) {
                r.add(uris_node, format!("{u:?}: {why}"));
                ok = false;
            }
        }
        out.push(ConfiguredClient {
            id,
            name,
            redirect_uris: uris,
        });
    }
    ok.then_some(out)
}
