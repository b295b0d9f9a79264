//! The agent's config file: parsed into validated types, with every error reported at once.
mod approvals;
mod audit;
mod auth;
mod authz;
mod behaviour;
mod host;
mod inspect;
mod integrity;
mod oauth2;
mod policy;
mod server;
mod values;
mod yaml;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

pub use approvals::Approvals;
pub use audit::{Audit, FileSink, Fsync, OnFailure, Sink as AuditSink};
pub use auth::{Auth, Introspection, Issuer, UpstreamAuth};
pub use authz::{AuthorizationServer, ConfiguredClient, Dynamic, Login, OidcLoginConfig};
pub use behaviour::{Behaviour, BehaviourMode};
pub use host::HostAddrs;
#[cfg(test)]
pub use inspect::{Custom, ToolInspect};
pub use inspect::{Inspect, PATTERN_SIZE, Setting, Settings};
pub use integrity::{Integrity, IntegrityMode};
pub use oauth2::OAuth2;
pub use policy::{Policy, PolicyMode};
#[cfg(test)]
pub use server::Limits;
pub use server::{RateLimits, Server, TlsCert};
use values::absolute_path;
pub use values::scope_token;
pub use values::url_authority as server_url_authority;
#[cfg(test)]
use yaml::Problem;
pub use yaml::Problems;
use yaml::{Node, Report};

/// The agent's upstream connections to one server address are at most this many at once (each
/// holds one held stream): 11,000, for 10,000 streams and ports in TIME_WAIT.
pub const DEFAULT_UPSTREAM_PORTS: PortRange = PortRange {
    lo: 50000,
    hi: 60999,
};
/// Where /metrics, /healthz and /readyz are served unless `agent.admin_listen` says otherwise.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Problems),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub agent: Agent,
    pub audit: Audit,
    pub servers: Vec<Server>,
    /// Moat's own OAuth authorization server (the issuer of servers with `issuer: local`).
    pub authorization_server: Option<AuthorizationServer>,
    /// How requests held for approval are asked about.
    pub approvals: Approvals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub state_dir: PathBuf,
    /// Directory on a bpffs where this instance pins its programs, links and maps.
    pub bpffs: PathBuf,
    pub cgroup: Cgroup,
    /// Source ports reserved for the agent's upstream connections.
    pub upstream_ports: PortRange,
    /// The admin listener (metrics, health); None: `off`.
    pub admin_listen: Option<SocketAddr>,
    /// Connections to protected ports open at once, in all and from one address.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// The kernel programs' own diagnostics, shown in the agent's log (off: compiled out of
    /// the loaded programs by the verifier).
    pub kernel_log: KernelLog,
}

/// Which of the kernel programs' diagnostics are loaded (`agent.kernel_log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelLog {
    #[default]
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl KernelLog {
    const NAMES: [(&str, KernelLog); 6] = [
        ("off", KernelLog::Off),
        ("error", KernelLog::Error),
        ("warn", KernelLog::Warn),
        ("info", KernelLog::Info),
        ("debug", KernelLog::Debug),
        ("trace", KernelLog::Trace),
    ];

    /// The most verbose level loaded: 0 for none, then aya-log's levels (error = 1 .. trace = 5).
    pub fn level(self) -> u8 {
        self as u8
    }
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 256;
/// The largest `agent.max_connections` (each connection holds a file descriptor and tens of
/// KiB).
const MAX_MAX_CONNECTIONS: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// The cgroup2 root, found in /proc/mounts.
    Auto,
    Path(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    /// How many ports (never zero: a range holds at least 16).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

impl Config {
    /// Reads and validates the file, without asking where its upstreams are: for the commands
    /// that only read the config (status, detach, tokens, policy tests).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, None)
    }

    /// Like [`Config::load`], and every upstream must be an address of `host` (the agent runs
    /// and `moat check` checks with this).
    pub fn load_on(path: &Path, host: &HostAddrs) -> Result<Self, ConfigError> {
        Self::load_with(path, Some(host))
    }

    fn load_with(path: &Path, host: Option<&HostAddrs>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::parse_with(&path.display().to_string(), &text, host)?)
    }

    /// Parses and validates `text`; `file` names it in errors. Upstream addresses are not
    /// checked against the host's (see [`Config::parse_on`]).
    pub fn parse(file: &str, text: &str) -> Result<Self, Problems> {
        Self::parse_with(file, text, None)
    }

    /// Like [`Config::parse`], and every upstream must be an address of `host`.
    pub fn parse_on(file: &str, text: &str, host: &HostAddrs) -> Result<Self, Problems> {
        Self::parse_with(file, text, Some(host))
    }

    fn parse_with(file: &str, text: &str, host: Option<&HostAddrs>) -> Result<Self, Problems> {
        let fail = |problems| Problems {
            file: file.to_string(),
            problems,
        };
        let raw = yaml::parse(text).map_err(|p| fail(vec![p]))?;
        let mut report = Report::default();
        let config = read_config(&Node::root(&raw), host, &mut report);
        match config {
            Some(c) if report.problems.is_empty() => Ok(c),
            _ => Err(fail(report.problems)),
        }
    }

    pub fn server_by_port(&self, port: u16) -> Option<&Server> {
        self.servers.iter().find(|s| s.port == port)
    }

    /// The ports the kernel seals: upstream ports that are not protected ports, each with the
    /// index of the first server whose upstream it is, sorted by port.
    pub fn sealed_ports(&self) -> Vec<(u16, usize)> {
        let mut sealed: Vec<(u16, usize)> = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            let port = s.upstream.port();
            if self.server_by_port(port).is_none() && !sealed.iter().any(|(p, _)| *p == port) {
                sealed.push((port, i));
            }
        }
        sealed.sort_unstable();
        sealed
    }

    /// The first server whose upstream is on `port`.
    pub fn server_by_upstream_port(&self, port: u16) -> Option<&Server> {
        self.servers.iter().find(|s| s.upstream.port() == port)
    }
}

fn read_config(root: &Node<'_>, host: Option<&HostAddrs>, r: &mut Report) -> Option<Config> {
    let m = root.mapping(
        &[
            "agent",
            "audit",
            "servers",
            "authorization_server",
            "approvals",
        ],
        r,
    )?;
    let approvals = match m.get("approvals") {
        Some(n) => approvals::read_approvals(n, r),
        None => Some(Approvals::default()),
    };
    let agent = match m.get("agent") {
        Some(n) => read_agent(n, r),
        None => Some(Agent::default()),
    };
    let audit = match m.get("audit") {
        Some(n) => audit::read_audit(n, r),
        None => Some(Audit::default()),
    };
    let servers = m
        .require("servers", r)
        .map(|n| server::read_servers(n, host, r));
    let authorization_server = m
        .get("authorization_server")
        .map(|n| authz::read_authorization_server(n, r));
    let (agent, audit, mut servers) = (agent?, audit?, servers?);
    let authorization_server = match authorization_server {
        Some(a) => Some(a?),
        None => None,
    };
    local_issuer(&m, authorization_server.as_ref(), &mut servers, r);
    if let Some(a) = &authorization_server {
        let at = m.get("authorization_server").unwrap_or(&m.at);
        let port = a.listen.port();
        if let Some(s) = servers.iter().find(|s| s.port == port) {
            r.add(
                at,
                format!("listen port {port} is the port of server `{}`", s.name),
            );
        }
        if agent.upstream_ports.contains(port)
            || agent.admin_listen.is_some_and(|l| l.port() == port)
        {
            r.add(
                at,
                format!(
                    "listen port {port} is agent.admin_listen's or inside agent.upstream_ports"
                ),
            );
        }
    }

    for s in &servers {
        if agent.upstream_ports.contains(s.port) {
            r.add(
                &m.at,
                format!(
                    "server `{}` port {} is inside agent.upstream_ports {}",
                    s.name, s.port, agent.upstream_ports
                ),
            );
        }
    }
    if let Some(admin) = agent.admin_listen {
        // Reported at the key itself (read again; its problems were reported above).
        let mut again = Report::default();
        let agent_map = m
            .get("agent")
            .and_then(|a| a.mapping(AGENT_KEYS, &mut again));
        let at = agent_map
            .as_ref()
            .and_then(|a| a.get("admin_listen"))
            .unwrap_or(&m.at);
        if let Some(s) = servers.iter().find(|s| s.port == admin.port()) {
            r.add(
                at,
                format!(
                    "{admin} uses the port of server `{}`, whose connections all go to the proxy",
                    s.name
                ),
            );
        }
        if agent.upstream_ports.contains(admin.port()) {
            r.add(
                at,
                format!(
                    "{admin} is inside agent.upstream_ports {}",
                    agent.upstream_ports
                ),
            );
        }
    }
    Some(Config {
        agent,
        audit,
        servers,
        authorization_server,
        approvals: approvals?,
    })
}

/// Servers with `issuer: local` are served by Moat's authorization server, which their
/// metadata names (the MCP authorization spec wants at least one); without one, an error.
fn local_issuer(
    m: &yaml::Mapping<'_>,
    authz: Option<&AuthorizationServer>,
    servers: &mut [Server],
    r: &mut Report,
) {
    for (i, s) in servers.iter_mut().enumerate() {
        let Some(auth) = s
            .auth
            .as_mut()
            .filter(|a| matches!(a.issuer, Issuer::Local(_)))
        else {
            continue;
        };
        match authz {
            Some(a) => {
                auth.issuer = Issuer::Local(a.issuer.clone());
                if auth.authorization_servers.is_empty() {
                    auth.authorization_servers = vec![a.issuer.clone()];
                }
            }
            None => {
                let mut quiet = Report::default();
                let at = m
                    .get("servers")
                    .and_then(|n| n.sequence(&mut quiet).into_iter().nth(i))
                    .and_then(|n| n.lookup("auth")?.lookup("issuer"));
                r.add(
                    at.as_ref().unwrap_or(&m.at),
                    "`issuer: local` is Moat's authorization server: add an \
                     `authorization_server:` section (its issuer URL and TLS)",
                );
            }
        }
    }
}

impl Default for Agent {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/moat".into(),
            bpffs: "/sys/fs/bpf/moat".into(),
            cgroup: Cgroup::Auto,
            upstream_ports: DEFAULT_UPSTREAM_PORTS,
            admin_listen: Some(DEFAULT_ADMIN_LISTEN),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            kernel_log: KernelLog::Off,
        }
    }
}

const AGENT_KEYS: &[&str] = &[
    "state_dir",
    "bpffs",
    "cgroup",
    "upstream_ports",
    "admin_listen",
    "max_connections",
    "max_connections_per_source",
    "kernel_log",
];

fn read_agent(n: &Node<'_>, r: &mut Report) -> Option<Agent> {
    let m = n.mapping(AGENT_KEYS, r)?;
    let mut a = Agent::default();
    if let Some(v) = m.get("state_dir") {
        a.state_dir = absolute_path(v, r)?;
    }
    if let Some(v) = m.get("bpffs") {
        a.bpffs = absolute_path(v, r)?;
    }
    if let Some(v) = m.get("cgroup") {
        let s = v.string(r)?;
        a.cgroup = if s == "auto" {
            Cgroup::Auto
        } else {
            Cgroup::Path(absolute_path(v, r)?)
        };
    }
    if let Some(v) = m.get("upstream_ports") {
        a.upstream_ports = port_range(v, r)?;
    }
    if let Some(v) = m.get("admin_listen") {
        a.admin_listen = admin_listen(v, r)?;
    }
    if let Some(v) = m.get("kernel_log") {
        let s = v.string(r)?;
        match KernelLog::NAMES.iter().find(|(n, _)| *n == s) {
            Some((_, l)) => a.kernel_log = *l,
            None => {
                r.add(
                    v,
                    format!("expected off, error, warn, info, debug or trace, found {s:?}"),
                );
                return None;
            }
        }
    }
    let count = |key: &str, r: &mut Report| -> Option<Option<usize>> {
        let Some(v) = m.get(key) else {
            return Some(None);
        };
        match v.integer(r)? {
            i @ 1..=MAX_MAX_CONNECTIONS => Some(Some(i as usize)),
            i => {
                r.add(
                    v,
                    format!("expected a number from 1 to {MAX_MAX_CONNECTIONS}, found {i}"),
                );
                None
            }
        }
    };
    let (max, per_source) = (
        count("max_connections", r),
        count("max_connections_per_source", r),
    );
    a.max_connections = max?.unwrap_or(a.max_connections);
    // Unless given, the default per source, but never more than in all.
    a.max_connections_per_source =
        per_source?.unwrap_or(a.max_connections_per_source.min(a.max_connections));
    if a.max_connections_per_source > a.max_connections {
        r.add(
            m.get("max_connections_per_source").unwrap_or(&m.at),
            format!(
                "max_connections_per_source ({}) is more than max_connections ({})",
                a.max_connections_per_source, a.max_connections
            ),
        );
        return None;
    }
    Some(a)
}

/// `IP:PORT` (`[v6]:PORT` for IPv6), or `off`.
fn admin_listen(v: &Node<'_>, r: &mut Report) -> Option<Option<SocketAddr>> {
    let expected =
        "expected an address `IP:PORT` (e.g. 127.0.0.1:9901, '[::1]:9901' quoted) or `off`";
    let Some(s) = v.text(&mut Report::default()) else {
        // An unquoted [::1]:9901 reads as a list.
        r.add(v, expected);
        return None;
    };
    if s == "off" {
        return Some(None);
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(Some(a)),
        _ => {
            r.add(v, format!("{expected}, found {s:?}"));
            None
        }
    }
}

pub(crate) fn port_range(v: &Node<'_>, r: &mut Report) -> Option<PortRange> {
    let s = v.text(r)?;
    let parsed = match s.split_once('-') {
        Some((a, b)) => a
            .trim()
            .parse::<u16>()
            .ok()
            .zip(b.trim().parse::<u16>().ok()),
        None => None,
    };
    match parsed {
        Some((lo, hi)) if lo >= 1024 && lo <= hi && hi - lo >= 15 => Some(PortRange { lo, hi }),
        _ => {
            r.add(
                v,
                format!(
                    "expected a port range `LO-HI` of at least 16 ports from 1024 up, found {s:?}"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
