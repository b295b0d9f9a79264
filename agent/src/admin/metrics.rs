//! The agent's metrics: what the proxy counts as it works (requests, TLS handshakes, tokens,
//! policy decisions, rate limits) and what is read when they are scraped (audit records,
//! kernel counters), in the Prometheus text format.
//!
//! Every series of a protected server is created when the agent starts, so the proxy only
//! increments counters it already holds: no lookup, lock or allocation per request (the
//! latency histogram takes prometheus-client's own short lock).
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, LazyLock},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, prometheus_text},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

use super::state::AgentState;
use crate::{
    audit::{Finished, Observer},
    auth::{AuthError, Invalid},
    config::{BehaviourMode, Config, PolicyMode, RateLimits},
    vocab::{ContentAction, ContentKind, Direction, Finding, Findings, Signal, Signals, Verdict},
};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the request duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The `method` label of a request without a JSON-RPC method (a GET stream, a DELETE, a
/// response, or a body that was refused before it was decoded).
pub const NO_METHOD: &str = "none";
/// The `method` label of any notification.
pub const NOTIFICATION: &str = "notification";

/// The `method` labels: the two above, then the actions of the methods policies name (`other`
/// for any method not among them), so that clients cannot make new series.
static METHOD_LABELS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    [NO_METHOD, NOTIFICATION]
        .into_iter()
        .chain(crate::vocab::actions().filter(|a| *a != crate::vocab::NOTIFICATION))
        .collect()
});

fn method_labels() -> impl Iterator<Item = &'static str> {
    METHOD_LABELS.iter().copied()
}

/// The index of a method's label in [`method_labels`].
fn method_index(method: Option<&str>) -> usize {
    let Some(m) = method else { return 0 };
    let action = crate::vocab::Method::of(m).action();
    METHOD_LABELS.iter().position(|l| *l == action).unwrap_or(0)
}

/// How a token check ended, for `moat_token_validations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Validated now (signature, or introspection).
    Valid,
    /// A token validated earlier, from the cache.
    Cached,
    Missing,
    /// In the URL, or in more than one header.
    BadRequest,
    /// Malformed, refused algorithm, unknown key, bad signature, missing claim, not active.
    Invalid,
    /// Expired, or not valid yet.
    Expired,
    WrongIssuer,
    WrongAudience,
    InsufficientScope,
    /// The issuer's keys or its introspection endpoint could not be used.
    Unavailable,
}

impl TokenOutcome {
    const ALL: [Self; 10] = [
        Self::Valid,
        Self::Cached,
        Self::Missing,
        Self::BadRequest,
        Self::Invalid,
        Self::Expired,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::InsufficientScope,
        Self::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Cached => "cached",
            Self::Missing => "missing",
            Self::BadRequest => "bad_request",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InsufficientScope => "insufficient_scope",
            Self::Unavailable => "unavailable",
        }
    }

    /// The outcome of a refused token.
    pub fn of_error(e: &AuthError) -> Self {
        match e {
            AuthError::Missing => Self::Missing,
            AuthError::BadRequest(_) => Self::BadRequest,
            AuthError::InsufficientScope { .. } => Self::InsufficientScope,
            AuthError::Unavailable(_) => Self::Unavailable,
            AuthError::Invalid(Invalid::Expired | Invalid::NotYetValid) => Self::Expired,
            AuthError::Invalid(Invalid::Issuer) => Self::WrongIssuer,
            AuthError::Invalid(Invalid::Audience) => Self::WrongAudience,
            AuthError::Invalid(
                Invalid::Malformed
                | Invalid::Algorithm(_)
                | Invalid::UnknownKey
                | Invalid::Signature
                | Invalid::MissingClaim(_)
                | Invalid::Inactive
                | Invalid::Revoked,
            ) => Self::Invalid,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Arc<str>,
    method: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    server: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    server: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    server: Arc<str>,
    effect: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    server: Arc<str>,
    signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContentLabels {
    server: Arc<str>,
    kind: &'static str,
    direction: &'static str,
    action: &'static str,
}

const DIRECTIONS: [Direction; 2] = [Direction::Request, Direction::Response];
const ACTIONS: [ContentAction; 3] = [
    ContentAction::Flag,
    ContentAction::Redact,
    ContentAction::Block,
];

/// The index of a finding's series among a server's content counters.
fn content_index(f: &Finding) -> usize {
    let kind = ContentKind::ALL.iter().position(|k| *k == f.kind);
    let direction = usize::from(f.direction == Direction::Response);
    let action = ACTIONS.iter().position(|a| *a == f.action);
    (kind.unwrap_or(0) * DIRECTIONS.len() + direction) * ACTIONS.len() + action.unwrap_or(0)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Connections to protected ports: open now, and refused for a connection limit. Cheap to
/// clone; the default counts nowhere.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    /// `total`, `per_source`.
    refused: [Counter; 2],
}

impl ConnectionMetrics {
    pub fn opened(&self) {
        self.open.inc();
    }

    pub fn closed(&self) {
        self.open.dec();
    }

    pub fn refused(&self, per_source: bool) {
        self.refused[usize::from(per_source)].inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: u16,
    server: Arc<str>,
}

/// One protected server's counters, held by its site; cheap to clone. The default counts
/// nowhere (for `moat check` and tests).
#[derive(Clone, Default)]
pub struct ServerMetrics(Option<Arc<Counted>>);

struct Counted {
    /// By method label, then allow / deny.
    requests: Vec<[Counter; 2]>,
    duration: Histogram,
    /// ok / error.
    tls: [Counter; 2],
    /// By [`TokenOutcome::ALL`].
    tokens: Vec<Counter>,
    /// By mode (enforce / shadow), then effect (allow / deny).
    policy: [[Counter; 2]; 2],
    rate_limited: Counter,
    /// By [`Signal::ALL`].
    signals: Vec<Counter>,
    /// By [`content_index`].
    content: Vec<Counter>,
    /// By [`VERDICTS`].
    approvals: Vec<Counter>,
}

const VERDICTS: [Verdict; 5] = [
    Verdict::Approved,
    Verdict::Reused,
    Verdict::Denied,
    Verdict::TimedOut,
    Verdict::Abandoned,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    server: Arc<str>,
    verdict: &'static str,
}

impl Counted {
    fn request(&self, method: Option<&str>, refused: bool, seconds: f64) {
        self.requests[method_index(method)][usize::from(refused)].inc();
        self.duration.observe(seconds);
    }
}

/// Requests are counted as their audit records are written.
impl Observer for Counted {
    fn finished(&self, r: &Finished<'_>) {
        self.request(r.method, r.refused, r.duration.as_secs_f64());
    }
}

impl ServerMetrics {
    /// A finished request: its JSON-RPC method, whether Moat refused it, how long it took.
    #[cfg(test)]
    pub fn request(&self, method: Option<&str>, refused: bool, seconds: f64) {
        if let Some(c) = &self.0 {
            c.request(method, refused, seconds);
        }
    }

    /// What counts this server's requests, told by their audit records (none for the default,
    /// which counts nowhere).
    pub fn observer(&self) -> Option<Arc<dyn Observer>> {
        self.0.clone().map(|c| c as Arc<dyn Observer>)
    }

    pub fn tls_handshake(&self, ok: bool) {
        if let Some(c) = &self.0 {
            c.tls[usize::from(!ok)].inc();
        }
    }

    pub fn token(&self, outcome: TokenOutcome) {
        if let Some(c) = &self.0 {
            c.tokens[outcome as usize].inc();
        }
    }

    pub fn policy_decision(&self, allowed: bool, mode: PolicyMode) {
        if let Some(c) = &self.0 {
            let mode = usize::from(mode == PolicyMode::Shadow);
            c.policy[mode][usize::from(!allowed)].inc();
        }
    }

    pub fn rate_limited(&self) {
        if let Some(c) = &self.0 {
            c.rate_limited.inc();
        }
    }

    /// What content inspection found (each named finding; the ones past the record's bound
    /// are counted in the record only).
    pub fn content_findings(&self, found: &Findings) {
        if let Some(c) = &self.0 {
            for f in &found.findings {
                c.content[content_index(f)].inc();
            }
        }
    }

    /// What became of a request held for approval.
    pub fn approval(&self, verdict: Verdict) {
        if let Some(c) = &self.0
            && let Some(i) = VERDICTS.iter().position(|v| *v == verdict)
        {
            c.approvals[i].inc();
        }
    }

    /// The signals a request raised against its subject's baseline.
    pub fn behaviour_signals(&self, signals: Signals) {
        if let Some(c) = &self.0 {
            for s in signals.iter() {
                c.signals[s as usize].inc();
            }
        }
    }
}

/// The registry of every metric, and each server's counters.
pub struct Metrics {
    registry: Registry,
    servers: HashMap<String, ServerMetrics>,
    connections: ConnectionMetrics,
}

impl Metrics {
    /// Creates every series of the servers in `config`; the audit and kernel counters are
    /// read from `state` when scraped.
    pub fn new(config: &Config, state: Arc<AgentState>) -> Self {
        let mut registry = Registry::with_prefix("moat");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<ServerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        let tls = Family::<TlsLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let policy = Family::<PolicyLabels, Counter>::default();
        let rate_limited = Family::<ServerLabels, Counter>::default();
        let signals = Family::<SignalLabels, Counter>::default();
        let content = Family::<ContentLabels, Counter>::default();
        let approvals = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests to protected servers, by JSON-RPC method and whether Moat let them through",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to the end of its response",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on protected ports",
            tls.clone(),
        );
        registry.register(
            "token_validations",
            "Access token checks, by outcome",
            tokens.clone(),
        );
        registry.register(
            "policy_decisions",
            "Policy decisions on JSON-RPC requests (list filtering not included)",
            policy.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused for going over a rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "behaviour_signals",
            "Signals raised by requests against their subject's baseline, by signal",
            signals.clone(),
        );
        registry.register(
            "content_findings",
            "What content inspection found, by kind, direction (request: arguments; response: results) and action",
            content.clone(),
        );
        registry.register(
            "approvals",
            "Requests an @approval policy held, by what became of them",
            approvals.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        let connections = ConnectionMetrics {
            open: Gauge::default(),
            refused: ["total", "per_source"]
                .map(|reason| refused.get_or_create_owned(&ReasonLabels { reason })),
        };
        registry.register(
            "connections_open",
            "Connections to protected ports open now",
            connections.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections to protected ports closed at once for a connection limit",
            refused,
        );
        let ports = config
            .servers
            .iter()
            .map(|s| (s.port, Arc::<str>::from(s.name.as_str())))
            .collect();
        let sealed = config
            .sealed_ports()
            .into_iter()
            .map(|(port, i)| (port, Arc::<str>::from(config.servers[i].name.as_str())))
            .collect();
        registry.register_collector(Box::new(Scraped {
            state,
            ports: Arc::new(ports),
            sealed: Arc::new(sealed),
        }));

        let servers = config
            .servers
            .iter()
            .map(|s| {
                let server: Arc<str> = s.name.as_str().into();
                // Only what the server can count has series; the rest count nowhere.
                let series = |present: bool, make: &dyn Fn() -> Counter| {
                    if present { make() } else { Counter::default() }
                };
                let mode = s.policy.as_ref().map(|p| p.mode);
                let counted = Counted {
                    requests: method_labels()
                        .map(|method| {
                            ["allow", "deny"].map(|decision| {
                                requests.get_or_create_owned(&RequestLabels {
                                    server: server.clone(),
                                    method,
                                    decision,
                                })
                            })
                        })
                        .collect(),
                    duration: duration.get_or_create_owned(&ServerLabels {
                        server: server.clone(),
                    }),
                    tls: ["ok", "error"].map(|result| {
                        series(!s.plaintext, &|| {
                            tls.get_or_create_owned(&TlsLabels {
                                server: server.clone(),
                                result,
                            })
                        })
                    }),
                    tokens: TokenOutcome::ALL
                        .iter()
                        .map(|o| {
                            series(s.auth.is_some(), &|| {
                                tokens.get_or_create_owned(&TokenLabels {
                                    server: server.clone(),
                                    outcome: o.label(),
                                })
                            })
                        })
                        .collect(),
                    policy: [PolicyMode::Enforce, PolicyMode::Shadow].map(|m| {
                        ["allow", "deny"].map(|effect| {
                            series(mode == Some(m), &|| {
                                policy.get_or_create_owned(&PolicyLabels {
                                    server: server.clone(),
                                    effect,
                                    mode: match m {
                                        PolicyMode::Enforce => "enforce",
                                        PolicyMode::Shadow => "shadow",
                                    },
                                })
                            })
                        })
                    }),
                    rate_limited: series(s.rate_limits != RateLimits::default(), &|| {
                        rate_limited.get_or_create_owned(&ServerLabels {
                            server: server.clone(),
                        })
                    }),
                    signals: Signal::ALL
                        .iter()
                        .map(|sig| {
                            series(s.behaviour.mode != BehaviourMode::Off, &|| {
                                signals.get_or_create_owned(&SignalLabels {
                                    server: server.clone(),
                                    signal: sig.name(),
                                })
                            })
                        })
                        .collect(),
                    content: ContentKind::ALL
                        .iter()
                        .flat_map(|k| DIRECTIONS.iter().map(move |d| (k, d)))
                        .flat_map(|(k, d)| ACTIONS.iter().map(move |a| (k, d, a)))
                        .map(|(k, d, a)| {
                            series(s.inspect.is_some(), &|| {
                                content.get_or_create_owned(&ContentLabels {
                                    server: server.clone(),
                                    kind: k.name(),
                                    direction: match d {
                                        Direction::Request => "request",
                                        Direction::Response => "response",
                                    },
                                    action: a.name(),
                                })
                            })
                        })
                        .collect(),
                    approvals: VERDICTS
                        .iter()
                        .map(|v| {
                            series(s.policy.is_some(), &|| {
                                approvals.get_or_create_owned(&VerdictLabels {
                                    server: server.clone(),
                                    verdict: v.name(),
                                })
                            })
                        })
                        .collect(),
                };
                (s.name.clone(), ServerMetrics(Some(Arc::new(counted))))
            })
            .collect();
        Self {
            registry,
            servers,
            connections,
        }
    }

    /// The connection counters.
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
    }

    /// The counters of server `name` (counting nowhere for an unknown name).
    pub fn server(&self, name: &str) -> ServerMetrics {
        self.servers.get(name).cloned().unwrap_or_default()
    }

    /// Every metric, in the Prometheus text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The counters read when scraped: audit records, and the kernel's per-CPU counters.
struct Scraped {
    state: Arc<AgentState>,
    /// Protected ports and their servers' names.
    ports: Arc<Vec<(u16, Arc<str>)>>,
    /// Sealed upstream ports and the names of the servers whose upstreams they are.
    sealed: Arc<Vec<(u16, Arc<str>)>>,
}

impl fmt::Debug for Scraped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scraped")
            .field("ports", &self.ports)
            .field("sealed", &self.sealed)
            .finish()
    }
}

/// One of a port's kernel counters.
type PortCounter = fn(&agent_common::Counters) -> u64;

/// Writes one counter without labels.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntegrityLabels {
    server: Arc<str>,
    state: &'static str,
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let guards = self.state.guards();
        if !guards.is_empty() {
            let mut m = e.encode_descriptor(
                "integrity_entries",
                "Entries (tools, prompts, resources, templates, instructions) of servers with \
                 integrity on, pinned or listed since the agent started, by how they stand \
                 against their pins (flagged: carrying markers of poisoning or shadowing)",
                None,
                MetricType::Gauge,
            )?;
            for g in guards {
                for (state, n) in g.counts() {
                    let labels = IntegrityLabels {
                        server: g.server().clone(),
                        state,
                    };
                    ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        if let Some(stats) = self.state.audit_stats() {
            counter(
                &mut e,
                "audit_records_written",
                "Audit records written to the audit log.",
                stats.written,
            )?;
            counter(
                &mut e,
                "audit_records_dropped",
                "Audit records lost because the audit log could not be written.",
                stats.dropped,
            )?;
        }
        let (Some(kernel), Some(sealed)) = (
            self.state.kernel_counters(&self.ports),
            self.state.kernel_counters(&self.sealed),
        ) else {
            return Ok(());
        };
        // (name, help, value, on protected ports, on sealed ports)
        let per_port: [(&str, &str, PortCounter, bool, bool); 4] = [
            (
                "kernel_connections_steered",
                "Connections to protected ports handed to the agent by the kernel.",
                |c| c.steered,
                true,
                false,
            ),
            (
                "kernel_connections_dropped",
                "Connections to protected ports dropped while no agent served them (fail closed).",
                |c| c.dropped,
                true,
                false,
            ),
            (
                "kernel_connections_passed",
                "The agent's own upstream connections let through to the real server.",
                |c| c.passed,
                true,
                true,
            ),
            (
                "kernel_connections_blocked",
                "Connections to sealed upstream ports from anyone but the agent, dropped.",
                |c| c.blocked,
                false,
                true,
            ),
        ];
        for (name, help, value, on_protected, on_sealed) in per_port {
            let protected = kernel.ports.iter().filter(|_| on_protected);
            let series: Vec<_> = protected
                .chain(sealed.ports.iter().filter(|_| on_sealed))
                .collect();
            if series.is_empty() {
                continue;
            }
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (port, server, c) in series {
                let labels = PortLabels {
                    port: *port,
                    server: Arc::clone(server),
                };
                ConstCounter::new(value(c)).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "kernel_binds_denied",
            "Binds of the agent's upstream identity refused to other processes.",
            kernel.host.bind_denied,
        )?;
        counter(
            &mut e,
            "kernel_events_lost",
            "Kernel events that did not fit in the ring buffer.",
            kernel.host.events_lost,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        let labels: Vec<_> = method_labels().collect();
        let label = |m: Option<&str>| labels[method_index(m)];
        assert_eq!(label(None), "none");
        assert_eq!(label(Some("tools/call")), "tools/call");
        assert_eq!(label(Some("subscriptions/listen")), "subscriptions/listen");
        assert_eq!(label(Some("notifications/initialized")), "notification");
        assert_eq!(label(Some("x/made-up-by-a-client")), "other");
        assert_eq!(label(Some("")), "other");
    }

    #[test]
    fn every_token_error_has_an_outcome() {
        let o = |e| TokenOutcome::of_error(&e).label();
        assert_eq!(o(AuthError::Missing), "missing");
        assert_eq!(o(AuthError::Invalid(Invalid::Expired)), "expired");
        assert_eq!(o(AuthError::Invalid(Invalid::Audience)), "wrong_audience");
        assert_eq!(o(AuthError::Invalid(Invalid::Signature)), "invalid");
        assert_eq!(o(AuthError::Unavailable("down".into())), "unavailable");
        assert_eq!(
            o(AuthError::InsufficientScope {
                granted: vec![],
                missing: vec!["mcp:tools".into()]
            }),
            "insufficient_scope"
        );
        for (i, outcome) in TokenOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn series_exist_from_the_start_and_count_what_they_are_told() {
        let config = Config::parse(
            "t.yaml",
            "servers:\n  - {name: files, port: 8000, public_url: https://f.example/mcp, \
             tls: {cert: /c.pem, key: /k.pem}, auth: {issuer: local}, \
             policy: {file: /p.cedar, mode: shadow}, rate_limits: {per_tool: 5}}\n  \
             - {name: open, port: 8001, dangerous: {plaintext: true, unauthenticated: true}}\n\
             authorization_server: {issuer: 'http://127.0.0.1:9443', dangerous: {plaintext: true}}\n",
        )
        .unwrap();
        let m = Metrics::new(&config, Arc::new(AgentState::default()));
        let s = m.server("files");
        s.request(Some("tools/call"), false, 0.002);
        s.request(Some("tools/call"), true, 0.0001);
        s.request(Some("tools/call"), true, 0.0001);
        // As a request's audit record tells it.
        let observer = s.observer().expect("a configured server counts");
        observer.finished(&Finished {
            server: "files",
            method: None,
            refused: false,
            duration: std::time::Duration::from_secs(3),
        });
        s.tls_handshake(false);
        s.token(TokenOutcome::Cached);
        s.policy_decision(false, PolicyMode::Shadow);
        s.rate_limited();
        m.server("nobody").rate_limited();
        assert!(m.server("nobody").observer().is_none());
        let c = m.connections();
        c.opened();
        c.opened();
        c.closed();
        c.refused(true);
        let text = m.encode().unwrap();
        for line in [
            "moat_connections_open 1",
            r#"moat_connections_refused_total{reason="per_source"} 1"#,
            r#"moat_connections_refused_total{reason="total"} 0"#,
            r#"moat_requests_total{server="files",method="tools/call",decision="allow"} 1"#,
            r#"moat_requests_total{server="files",method="tools/call",decision="deny"} 2"#,
            r#"moat_requests_total{server="files",method="none",decision="allow"} 1"#,
            r#"moat_requests_total{server="files",method="ping",decision="allow"} 0"#,
            r#"moat_request_duration_seconds_count{server="files"} 4"#,
            r#"moat_request_duration_seconds_bucket{server="files",le="0.0005"} 2"#,
            r#"moat_request_duration_seconds_bucket{server="files",le="0.0025"} 3"#,
            r#"moat_tls_handshakes_total{server="files",result="error"} 1"#,
            r#"moat_tls_handshakes_total{server="files",result="ok"} 0"#,
            r#"moat_token_validations_total{server="files",outcome="cached"} 1"#,
            r#"moat_policy_decisions_total{server="files",effect="deny",mode="shadow"} 1"#,
            r#"moat_rate_limited_requests_total{server="files"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(
            !text.contains("nobody") && !text.contains("moat_kernel"),
            "nothing for unknown servers, nor for a kernel not attached yet"
        );
        assert!(
            !text.contains(r#"mode="enforce""#),
            "only the configured mode"
        );
        let open = m.server("open");
        open.tls_handshake(true);
        open.token(TokenOutcome::Missing);
        open.rate_limited();
        open.policy_decision(true, PolicyMode::Enforce);
        open.request(Some("ping"), false, 0.001);
        let text = m.encode().unwrap();
        let open_series: Vec<_> = text
            .lines()
            .filter(|l| l.contains(r#"server="open""#))
            .filter(|l| !l.starts_with("moat_request"))
            .collect();
        assert!(
            open_series.is_empty(),
            "plain HTTP, no auth, no policy, no limits: only requests are counted: {open_series:?}"
        );
        assert!(text.contains(
            "moat_requests_total{server=\"open\",method=\"ping\",decision=\"allow\"} 1\n"
        ));
    }
}
