//! `moat policy test`: one described request, decided by a server's policies, so that users can
//! test their policies (in CI too) without a running agent.
use std::{net::IpAddr, time::SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Engine, Input};
use crate::{
    vocab::{Assessment, ContentFacts, ContentKind, Signal, Signals},
    vocab::{Decision, HttpAction, Method, Principal, Process},
};

/// A request as `moat policy test --request FILE` reads it (JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    /// The server's `name`; optional when the config has one server with a policy.
    pub server: Option<String>,
    pub principal: DescribedPrincipal,
    /// An MCP method, or `GET` (opening the server's stream) or `DELETE` (ending a session).
    pub method: String,
    /// The tool (tools/call), resource URI (resources/*) or prompt (prompts/get).
    pub name: Option<String>,
    pub arguments: Option<Value>,
    #[serde(default = "loopback")]
    pub source_ip: IpAddr,
    pub tls: Option<String>,
    pub session: Option<String>,
    /// RFC 3339; default now.
    pub time: Option<String>,
    #[serde(default = "one")]
    pub rate: u64,
    pub process: Option<Process>,
    /// How the tool or prompt stands against its pin (`context.integrity`).
    pub integrity: Option<DescribedIntegrity>,
    /// How the request compares with the subject's baseline (`context.behaviour`).
    pub behaviour: Option<DescribedBehaviour>,
    /// What content inspection found in the arguments (`context.content`).
    pub content: Option<DescribedContent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedContent {
    /// Rule ids; each built-in rule's kind is its own, another rule is a `secret` unless
    /// `kinds` says otherwise.
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl DescribedContent {
    fn facts(&self) -> Result<ContentFacts, String> {
        let mut kinds: Vec<ContentKind> = self
            .kinds
            .iter()
            .map(|k| ContentKind::by_name(k).ok_or_else(|| format!("no kind {k:?}")))
            .collect::<Result<_, _>>()?;
        for r in &self.rules {
            if let Some(b) = crate::vocab::RULES.iter().find(|b| b.id == r) {
                kinds.push(b.kind);
            } else if self.kinds.is_empty() {
                kinds.push(ContentKind::Secret);
            }
        }
        let mut rules: Vec<std::sync::Arc<str>> =
            self.rules.iter().map(|r| r.as_str().into()).collect();
        rules.sort();
        rules.dedup();
        kinds.sort();
        kinds.dedup();
        Ok(ContentFacts { rules, kinds })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedBehaviour {
    /// Signal names (see the README); the score is theirs unless given.
    #[serde(default)]
    pub signals: Vec<String>,
    pub score: Option<u32>,
    #[serde(default)]
    pub learning: bool,
}

impl DescribedBehaviour {
    fn assessment(&self) -> Result<Assessment, String> {
        let signals: Signals = self
            .signals
            .iter()
            .map(|n| Signal::by_name(n).ok_or_else(|| format!("no signal {n:?}")))
            .collect::<Result<_, _>>()?;
        let mut a = Assessment::new(signals, self.learning, false);
        if let Some(score) = self.score {
            a.score = score.min(100);
        }
        Ok(a)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedIntegrity {
    pub state: String,
    #[serde(default)]
    pub markers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedPrincipal {
    pub sub: String,
    pub client_id: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: Map<String, Value>,
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn one() -> u64 {
    1
}

/// Decides `d` with `engine` for server `server`.
pub fn decide(engine: &Engine, server: &str, d: &Described) -> Result<Decision, String> {
    let now = match &d.time {
        Some(t) => humantime::parse_rfc3339(t).map_err(|e| format!("time {t:?}: {e}"))?,
        None => SystemTime::now(),
    };
    let principal = Principal {
        sub: d.principal.sub.clone(),
        client_id: d.principal.client_id.clone(),
        iss: String::new(),
        scopes: d.principal.scopes.clone(),
        claims: d.principal.claims.clone(),
    };
    let markers: Vec<&str> = d
        .integrity
        .iter()
        .flat_map(|i| i.markers.iter().map(String::as_str))
        .collect();
    let behaviour = d
        .behaviour
        .as_ref()
        .map(DescribedBehaviour::assessment)
        .transpose()?;
    let content = d
        .content
        .as_ref()
        .map(DescribedContent::facts)
        .transpose()?;
    Ok(engine.decide(&Input {
        server,
        action: match d.method.as_str() {
            "GET" => HttpAction::StreamOpen.action(),
            "DELETE" => HttpAction::SessionEnd.action(),
            m => Method::of(m).action(),
        },
        // A method that names something is decided on it (on "" when the request names
        // nothing, as a request without it would be refused).
        target: Method::of(&d.method)
            .target()
            .map(|kind| (kind, d.name.as_deref().unwrap_or(""))),
        arguments: d.arguments.as_ref(),
        principal: &principal,
        source_ip: d.source_ip,
        tls: d.tls.as_deref(),
        session: d.session.as_deref(),
        process: d.process.as_ref(),
        rate: d.rate,
        now,
        listing: false,
        integrity: d.integrity.as_ref().map(|i| super::Standing {
            state: &i.state,
            markers: &markers,
        }),
        behaviour: behaviour.as_ref(),
        content: content.as_ref(),
    }))
}
