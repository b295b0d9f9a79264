//! The `servers:` list: one protected MCP server per port, with its TLS, origins, paths and limits.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::{
    HostAddrs,
    auth::{Auth, UpstreamAuth, read_auth, read_upstream_auth},
    behaviour::{Behaviour, read_behaviour},
    inspect::{Inspect, read_inspect},
    integrity::{Integrity, read_integrity},
    policy::{Policy, read_policy},
    values::{absolute_path, string_list, url_path},
    yaml::{Node, Report},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// Every inbound TCP connection to this port, on any local address, goes through Moat.
    pub port: u16,
    /// Where the real server listens (`http://IP:PORT`).
    pub upstream: SocketAddr,
    /// The URL clients use, e.g. `https://files.example.com:8000/mcp`.
    pub public_url: Option<String>,
    /// The Streamable HTTP endpoint path (default: the path of `public_url`, else `/mcp`).
    pub endpoint: String,
    /// GET path of the legacy (2024-11-05) HTTP+SSE transport, when the server speaks it.
    pub legacy_sse: Option<String>,
    /// Certificates; empty only with `dangerous.plaintext`.
    pub tls: Tls,
    /// Origins allowed in an `Origin` header (exact match); any other origin gets 403.
    pub allowed_origins: Vec<String>,
    /// Host header values accepted besides `public_url`'s host, IP literals and `localhost`.
    pub allowed_hosts: Vec<String>,
    pub limits: Limits,
    /// Plain HTTP on the protected port (`dangerous: { plaintext: true }`).
    pub plaintext: bool,
    /// The OAuth resource server; None only with `dangerous: { unauthenticated: true }`.
    pub auth: Option<Auth>,
    pub upstream_auth: UpstreamAuth,
    /// Cedar policies deciding each request; None: every authenticated caller may do anything.
    pub policy: Option<Policy>,
    pub rate_limits: RateLimits,
    /// What the server offers, checked against pins.
    pub integrity: Integrity,
    /// Each subject's requests, compared with its baseline.
    pub behaviour: Behaviour,
    /// Content inspection of arguments and results; None: off.
    pub inspect: Option<Inspect>,
}

/// Requests per minute; None: no limit. Counted for JSON-RPC requests (not notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// By one principal, to anything on this server.
    pub per_principal: Option<u64>,
    /// By one principal, to one tool (or one method for other requests).
    pub per_tool: Option<u64>,
    /// By everyone together.
    pub per_server: Option<u64>,
}

/// Options that weaken protection, each named in a loud warning at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Dangerous {
    plaintext: bool,
    unauthenticated: bool,
}

/// One or more certificates; with several, the client's SNI name picks one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub certs: Vec<TlsCert>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (bytes); larger ones get 413 and are never forwarded.
    pub max_body: usize,
    /// Time to receive a request's headers (slowloris) and to finish a TLS handshake.
    pub header_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
    /// Time for the upstream to answer with response headers.
    pub upstream_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// A client that stops acknowledging (what Moat sent stays unacknowledged, or keepalive
    /// probes go unanswered) for this long is cut off, its upstream stream with it.
    pub unresponsive_client: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            unresponsive_client: Duration::from_secs(120),
        }
    }
}

/// Reads the list; with `host`, every upstream must be one of its addresses.
pub(super) fn read_servers(n: &Node<'_>, host: Option<&HostAddrs>, r: &mut Report) -> Vec<Server> {
    let items = n.sequence(r);
    if items.is_empty() && r.problems.is_empty() {
        r.add(n, "list at least one server to protect");
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut ports: HashMap<u16, String> = HashMap::new();
    let mut servers = Vec::new();
    let mut read = Vec::new();
    for item in &items {
        let Some(s) = read_server(item, host, r) else {
            continue;
        };
        read.push(item);
        if let Some(other) = names.insert(s.name.clone(), item.path.clone()) {
            r.add(
                item,
                format!("server name `{}` is already used by {other}", s.name),
            );
        }
        if let Some(other) = ports.insert(s.port, s.name.clone()) {
            r.add(
                item,
                format!("port {} is already protected by server `{other}`", s.port),
            );
        }
        servers.push(s);
    }
    if host.is_some_and(HostAddrs::plain_listeners) {
        for (s, item) in servers.iter().zip(read) {
            own_listener_upstream(s, item, &ports, r);
        }
    }
    servers
}

/// With plain listeners (`moat run --unprotected`) the agent itself listens on 127.0.0.1 at
/// every protected port: a loopback upstream on one would be the agent (or a server it keeps
/// from its port), never the real server.
fn own_listener_upstream(
    s: &Server,
    item: &Node<'_>,
    ports: &HashMap<u16, String>,
    r: &mut Report,
) {
    let up = s.upstream;
    let Some(other) = ports.get(&up.port()) else {
        return;
    };
    if !up.ip().to_canonical().is_loopback() {
        return;
    }
    let message = format!(
        "with --unprotected the agent itself listens on 127.0.0.1:{} (server `{other}`): the \
         upstream must listen on another port",
        up.port()
    );
    let m = item.mapping(SERVER_KEYS, &mut Report::default());
    match m.as_ref().and_then(|m| m.get("upstream")) {
        Some(v) => r.add(v, message),
        None => r.add(
            item,
            format!("{message} (the default upstream is 127.0.0.1:{})", s.port),
        ),
    }
}

const SERVER_KEYS: &[&str] = &[
    "name",
    "port",
    "upstream",
    "public_url",
    "endpoint",
    "legacy_sse",
    "tls",
    "allowed_origins",
    "allowed_hosts",
    "limits",
    "auth",
    "upstream_auth",
    "policy",
    "rate_limits",
    "integrity",
    "behaviour",
    "inspect",
    "dangerous",
];

fn read_server(n: &Node<'_>, host: Option<&HostAddrs>, r: &mut Report) -> Option<Server> {
    let m = n.mapping(SERVER_KEYS, r)?;
    let name = m.require("name", r).and_then(|v| {
        let s = v.string(r)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            r.add(v, "a server name is 1 to 64 letters, digits, `-` or `_`");
            return None;
        }
        Some(s)
    });
    let port = m.require("port", r).and_then(|v| port(v, r));
    let upstream = match (m.get("upstream"), port) {
        (Some(v), Some(p)) => upstream(v, p, host, r),
        (None, Some(p)) => Some(SocketAddr::from(([127, 0, 0, 1], p))),
        _ => None,
    };
    let public_url = m.get("public_url").and_then(|v| {
        let s = v.string(r)?;
        match url_path(&s) {
            Some(_) if s.starts_with("https://") || s.starts_with("http://") => Some(s),
            _ => {
                r.add(
                    v,
                    format!("expected an absolute URL like `https://host:port/mcp`, found {s:?}"),
                );
                None
            }
        }
    });
    let endpoint = match m.get("endpoint") {
        Some(v) => path(v, r),
        None => Some(
            public_url
                .as_deref()
                .and_then(url_path)
                .filter(|p| *p != "/")
                .unwrap_or("/mcp")
                .to_string(),
        ),
    };
    let legacy_sse = m.get("legacy_sse").map(|v| path(v, r));
    let dangerous = match m.get("dangerous") {
        Some(v) => dangerous(v, r),
        None => Some(Dangerous::default()),
    };
    let plaintext = dangerous.map(|d| d.plaintext);
    let tls = match m.get("tls") {
        Some(v) => read_tls(v, r),
        None => Some(Tls::default()),
    };
    if let (Some(t), Some(false)) = (&tls, plaintext)
        && t.certs.is_empty()
    {
        r.add(
            &m.at,
            "missing `tls` (a certificate and key), or `dangerous: { plaintext: true }`",
        );
    }
    let allowed_origins = string_list(m.get("allowed_origins"), r);
    let allowed_hosts = string_list(m.get("allowed_hosts"), r);
    let limits = match m.get("limits") {
        Some(v) => limits(v, r),
        None => Some(Limits::default()),
    };
    let auth = match (m.get("auth"), dangerous) {
        (Some(v), Some(d)) => {
            if d.unauthenticated {
                r.add(
                    v,
                    "`auth` and `dangerous: { unauthenticated: true }` exclude each other",
                );
            }
            if public_url.is_none() {
                r.add(
                    v,
                    "`auth` needs the server's `public_url` (the resource clients ask tokens for)",
                );
            }
            read_auth(v, public_url.as_deref(), r).map(Some)
        }
        (None, Some(d)) if !d.unauthenticated => {
            r.add(
                &m.at,
                "missing `auth` (who may call this server), or `dangerous: { unauthenticated: true }`",
            );
            None
        }
        (None, _) => Some(None),
        (Some(_), None) => None,
    };
    let upstream_auth = match m.get("upstream_auth") {
        Some(v) => read_upstream_auth(v, upstream, r),
        None => Some(UpstreamAuth::None),
    };
    if let (Some(UpstreamAuth::Jwt { .. }), Some(d)) = (&upstream_auth, dangerous)
        && d.unauthenticated
    {
        r.add(
            &m.at,
            "`upstream_auth: { jwt }` names the caller, which needs `auth`",
        );
    }
    if let Some(UpstreamAuth::OAuth2(_)) = &upstream_auth {
        let local =
            matches!(&auth, Some(Some(a)) if matches!(a.issuer, super::auth::Issuer::Local(_)));
        if !local {
            r.add(
                m.get("upstream_auth").unwrap_or(&m.at),
                "`upstream_auth: { oauth2 }` keeps tokens for the users of Moat's own \
                 authorization server: it needs `auth: { issuer: local }`",
            );
        }
    }
    let policy = match m.get("policy") {
        Some(v) => {
            if auth.as_ref().is_some_and(Option::is_none) {
                r.add(v, "`policy` decides on who calls, which needs `auth`");
            }
            read_policy(v, r).map(Some)
        }
        None => Some(None),
    };
    let rate_limits = match m.get("rate_limits") {
        Some(v) => rate_limits(v, r),
        None => Some(RateLimits::default()),
    };
    let integrity = match m.get("integrity") {
        Some(v) => read_integrity(v, r),
        None => Some(Integrity::default()),
    };
    let behaviour = match m.get("behaviour") {
        Some(v) => {
            if auth.as_ref().is_some_and(Option::is_none) {
                r.add(v, "`behaviour` is learned per subject, which needs `auth`");
            }
            read_behaviour(v, r)
        }
        None => Some(Behaviour::default()),
    };
    let inspect = match m.get("inspect") {
        Some(v) => read_inspect(v, r).map(Some),
        None => Some(None),
    };
    Some(Server {
        name: name?,
        port: port?,
        upstream: upstream?,
        public_url,
        endpoint: endpoint?,
        legacy_sse: match legacy_sse {
            Some(p) => Some(p?),
            None => None,
        },
        tls: tls?,
        allowed_origins: allowed_origins?,
        allowed_hosts: allowed_hosts?,
        limits: limits?,
        plaintext: plaintext?,
        auth: auth?,
        upstream_auth: upstream_auth?,
        policy: policy?,
        rate_limits: rate_limits?,
        integrity: integrity?,
        behaviour: behaviour?,
        inspect: inspect?,
    })
}

fn path(v: &Node<'_>, r: &mut Report) -> Option<String> {
    let s = v.string(r)?;
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        r.add(
            v,
            format!("expected a URL path starting with `/`, found {s:?}"),
        );
        return None;
    }
    Some(s)
}

fn dangerous(v: &Node<'_>, r: &mut Report) -> Option<Dangerous> {
    let m = v.mapping(&["plaintext", "unauthenticated"], r)?;
    let flag = |key: &str, r: &mut Report| match m.get(key) {
        Some(p) => p.boolean(r),
        None => Some(false),
    };
    let plaintext = flag("plaintext", r);
    let unauthenticated = flag("unauthenticated", r);
    Some(Dangerous {
        plaintext: plaintext?,
        unauthenticated: unauthenticated?,
    })
}

pub(super) fn read_tls(v: &Node<'_>, r: &mut Report) -> Option<Tls> {
    let items = if v.is_sequence() {
        v.sequence(r)
    } else {
        vec![Node {
            raw: v.raw,
            path: v.path.clone(),
        }]
    };
    let mut certs = Vec::new();
    let mut ok = true;
    for item in &items {
        let Some(m) = item.mapping(&["cert", "key"], r) else {
            ok = false;
            continue;
        };
        let cert = m.require("cert", r).and_then(|c| absolute_path(c, r));
        let key = m.require("key", r).and_then(|k| absolute_path(k, r));
        match (cert, key) {
            (Some(cert), Some(key)) => certs.push(TlsCert { cert, key }),
            _ => ok = false,
        }
    }
    if items.is_empty() {
        r.add(v, "list at least one certificate");
        return None;
    }
    ok.then_some(Tls { certs })
}

fn limits(v: &Node<'_>, r: &mut Report) -> Option<Limits> {
    let m = v.mapping(
        &[
            "max_body",
            "header_timeout_ms",
            "body_timeout_ms",
            "upstream_timeout_ms",
            "idle_timeout_ms",
            "unresponsive_client_ms",
        ],
        r,
    )?;
    let mut l = Limits::default();
    let mut ok = true;
    let mut num = |key: &str, min: i64, max: i64| -> Option<u64> {
        let n = m.get(key)?;
        let i = n.integer(r);
        match i {
            Some(i) if (min..=max).contains(&i) => Some(i as u64),
            Some(i) => {
                r.add(
                    n,
                    format!("expected a number from {min} to {max}, found {i}"),
                );
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        }
    };
    if let Some(b) = num("max_body", 1024, 1 << 30) {
        l.max_body = b as usize;
    }
    for (key, field) in [
        ("header_timeout_ms", &mut l.header_timeout),
        ("body_timeout_ms", &mut l.body_timeout),
        ("upstream_timeout_ms", &mut l.upstream_timeout),
        ("idle_timeout_ms", &mut l.idle_timeout),
    ] {
        if let Some(ms) = num(key, 10, 86_400_000) {
            *field = Duration::from_millis(ms);
        }
    }
    // Keepalive counts whole seconds: at least 2 (a first probe after half of it).
    if let Some(ms) = num("unresponsive_client_ms", 2_000, 86_400_000) {
        l.unresponsive_client = Duration::from_millis(ms);
    }
    ok.then_some(l)
}

fn rate_limits(v: &Node<'_>, r: &mut Report) -> Option<RateLimits> {
    let m = v.mapping(&["per_principal", "per_tool", "per_server"], r)?;
    let mut ok = true;
    let mut per = |key: &str| -> Option<u64> {
        let n = m.get(key)?;
        match n.integer(r) {
            Some(i) if (1..=100_000_000).contains(&i) => Some(i as u64),
            Some(i) => {
                r.add(
                    n,
                    format!("expected requests per minute from 1 to 100000000, found {i}"),
                );
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        }
    };
    let l = RateLimits {
        per_principal: per("per_principal"),
        per_tool: per("per_tool"),
        per_server: per("per_server"),
    };
    ok.then_some(l)
}

fn port(v: &Node<'_>, r: &mut Report) -> Option<u16> {
    let i = v.integer(r)?;
    match u16::try_from(i) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            r.add(v, format!("expected a port from 1 to 65535, found {i}"));
            None
        }
    }
}

/// `http://IP:PORT` (the port defaults to the protected port), an address of this host: Moat
/// cannot protect a server on another machine. With `host` None the address is not checked.
fn upstream(
    v: &Node<'_>,
    protected_port: u16,
    host: Option<&HostAddrs>,
    r: &mut Report,
) -> Option<SocketAddr> {
    let s = v.string(r)?;
    let Some(rest) = s.strip_prefix("http://") else {
        r.add(v, format!("expected `http://IP:PORT`, found {s:?}"));
        return None;
    };
    let rest = rest.trim_end_matches('/');
    let addr = rest
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            rest.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, protected_port))
        })
        .or_else(|| {
            rest.strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .and_then(|x| x.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, protected_port))
        });
    let Some(a) = addr.filter(|a| a.port() != 0) else {
        r.add(
            v,
            format!("expected `http://IP:PORT` with an IP address and a port, found {s:?}"),
        );
        return None;
    };
    let ip = a.ip().to_canonical();
    if ip.is_unspecified() {
        r.add(
            v,
            format!(
                "{ip} is no address to connect to: give the address the server listens on, \
                 e.g. http://127.0.0.1:{}",
                a.port()
            ),
        );
        return None;
    }
    if let Some(host) = host
        && !host.is_local(ip)
    {
        r.add(
            v,
            format!(
                "{ip} is not an address of this host: Moat protects servers on its own host only \
                 (a loopback address, or an address of one of its interfaces)"
            ),
        );
        return None;
    }
    Some(a)
}
