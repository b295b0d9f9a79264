//! One protected server as the proxy serves it: its config and everything its requests share.
use std::sync::Arc;

use super::legacy;
use crate::{
    admin::ServerMetrics,
    approval::Approvals,
    auth::{
        Authenticator,
        sessions::Sessions,
        upstream::{Credential, UpstreamKeys},
    },
    behaviour::Monitor,
    config::Server,
    inspect::Inspector,
    integrity::Guard,
    lockdown::Lockdowns,
    mcp,
    policy::{Live, Rates},
    thirdparty::Connector,
    tls::ServerTls,
};

/// One protected server, as the proxy serves it.
pub struct Site {
    pub server: Server,
    /// Its TLS (None only with `dangerous.plaintext`).
    pub tls: Option<ServerTls>,
    /// The server's name, shared by every audit record.
    pub name: Arc<str>,
    pub legacy: Arc<legacy::Sessions>,
    pub limits: mcp::Limits,
    /// The resource server; None only with `dangerous: { unauthenticated: true }`.
    pub auth: Option<Authenticator>,
    /// Streamable HTTP sessions and the principals they belong to.
    pub sessions: Sessions,
    /// What the upstream gets instead of the client's token.
    pub credential: Credential,
    /// Published at JWKS_PATH when the upstream gets JWTs minted by Moat.
    pub upstream_keys: Option<Arc<UpstreamKeys>>,
    /// The Cedar policies deciding each request; None: every authenticated caller may.
    pub policy: Option<Live>,
    pub rates: Rates,
    /// What this server's requests are counted in.
    pub metrics: ServerMetrics,
    /// The pins what it offers is checked against; None: `integrity` is off.
    pub integrity: Option<Arc<Guard>>,
    /// Each subject's requests compared with its baseline; None: `behaviour` is off.
    pub behaviour: Option<Arc<Monitor>>,
    /// The rules arguments and results are inspected with; None: `inspect` is off.
    pub inspect: Option<Arc<Inspector>>,
    /// Where requests an `@approval` policy permitted wait for an answer (None: in tests of
    /// the proxy alone, where such a request is refused).
    pub approvals: Option<Arc<Approvals>>,
    /// Each user's token at the third party the server acts at (`upstream_auth: { oauth2 }`).
    pub connector: Option<Arc<Connector>>,
    /// The operator's lockdowns (None: in tests of the proxy alone).
    pub lockdowns: Option<Arc<Lockdowns>>,
}

impl Site {
    pub fn new(
        server: Server,
        tls: Option<ServerTls>,
        auth: Option<Authenticator>,
        credential: Credential,
        upstream_keys: Option<Arc<UpstreamKeys>>,
        policy: Option<Live>,
        metrics: ServerMetrics,
    ) -> Self {
        let limits = mcp::Limits {
            max_body: server.limits.max_body,
            ..mcp::Limits::default()
        };
        Self {
            name: server.name.as_str().into(),
            server,
            tls,
            legacy: Arc::default(),
            limits,
            auth,
            sessions: Sessions::default(),
            credential,
            upstream_keys,
            policy,
            rates: Rates::default(),
            metrics,
            integrity: None,
            behaviour: None,
            inspect: None,
            approvals: None,
            connector: None,
            lockdowns: None,
        }
    }

    /// The site, its requests stopped by `lockdowns`.
    pub fn with_lockdowns(self, lockdowns: Option<Arc<Lockdowns>>) -> Self {
        Self { lockdowns, ..self }
    }

    /// The site, its held requests waiting in `approvals`.
    pub fn with_approvals(self, approvals: Option<Arc<Approvals>>) -> Self {
        Self { approvals, ..self }
    }

    /// The site, its upstream given each user's token by `connector`.
    pub fn with_connector(self, connector: Option<Arc<Connector>>) -> Self {
        Self { connector, ..self }
    }

    /// The site, its requests judged by `monitor`.
    pub fn with_behaviour(self, monitor: Option<Arc<Monitor>>) -> Self {
        Self {
            behaviour: monitor,
            ..self
        }
    }

    /// The site, what passes inspected by `inspector`.
    pub fn with_inspect(self, inspector: Option<Arc<Inspector>>) -> Self {
        Self {
            inspect: inspector,
            ..self
        }
    }

    /// The site, its listings and calls checked by `guard`.
    pub fn with_integrity(self, guard: Option<Arc<Guard>>) -> Self {
        Self {
            integrity: guard,
            ..self
        }
    }
}
