//! The policy phase: each JSON-RPC message with a method (requests and notifications), or the
//! HTTP request itself (GET, DELETE), counted against the server's rate limits and decided by
//! its Cedar policies for the authenticated caller, before anything is forwarded.
use std::time::SystemTime;

use serde_json::Value;

use super::{Site, decode::Asked, error::ProxyError};
use crate::{
    config::{PolicyMode, RateLimits},
    mcp::Decoded,
    policy::{Input, Standing},
    vocab::{Assessment, ContentFacts, Method},
    vocab::{Conn, Decision, Denial, Effect, HttpAction, Principal, Target},
};

/// The decision's reason when the server has no policy.
pub const NO_POLICY: &str = "no policy: every authenticated caller may";
/// The decision's reason when the server has no authentication.
pub const UNAUTHENTICATED: &str =
    "the server is unauthenticated (dangerous.unauthenticated): anyone may";

/// A request the policies let through. Only [`authorize`] makes one, and only a permitted
/// request can be forwarded.
pub struct Permitted<T> {
    inner: T,
}

impl<T> Permitted<T> {
    pub fn get(&self) -> &T {
        &self.inner
    }

    /// A request taken as permitted, for tests of what comes after the decision.
    #[cfg(test)]
    pub fn assume(inner: T) -> Self {
        Self { inner }
    }
}

impl Permitted<&Asked> {
    /// The permission with its own copy of the request: a request held for approval is
    /// forwarded later, from elsewhere.
    pub fn to_owned(&self) -> Permitted<Asked> {
        Permitted {
            inner: self.inner.clone(),
        }
    }
}

impl Permitted<Asked> {
    pub fn as_ref(&self) -> Permitted<&Asked> {
        Permitted { inner: &self.inner }
    }
}

/// One thing decided: a JSON-RPC message with a method, or the HTTP request itself (a GET of
/// the server's stream, a DELETE of a session).
#[derive(Clone)]
pub struct Ask<'a> {
    pub action: &'static str,
    /// How a denial is answered.
    pub denial: Denial,
    /// The JSON-RPC method (the action, for an HTTP action).
    pub method: &'a str,
    /// The tool, resource URI or prompt it is about.
    pub target: Option<(Target, &'a str)>,
    pub arguments: Option<&'a Value>,
}

impl<'a> Ask<'a> {
    /// Every message with a method (requests and notifications), in body order.
    pub fn messages(decoded: &'a Decoded) -> impl Iterator<Item = Ask<'a>> + Clone {
        decoded.messages.iter().filter_map(|m| {
            let (name, spec) = (m.method.as_deref()?, m.call()?.spec());
            Some(Ask {
                action: spec.action,
                denial: spec.denial(),
                method: name,
                target: spec.target().zip(m.target()),
                arguments: m.arguments.as_ref(),
            })
        })
    }

    /// An HTTP action.
    pub fn http(action: HttpAction) -> Self {
        Ask {
            action: action.action(),
            denial: action.denial(),
            method: action.action(),
            target: None,
            arguments: None,
        }
    }
}

/// Who asks, from where, and how it compares with its baseline (`behaviour`: None when off,
/// or in shadow mode).
pub struct Caller<'a> {
    pub conn: &'a Conn,
    /// None: the server has no authentication, and anyone may.
    pub principal: Option<&'a Principal>,
    pub session: Option<&'a str>,
    pub behaviour: Option<&'a Assessment>,
    /// What content inspection found in the request's tool call arguments (None: not
    /// inspected).
    pub content: Option<&'a ContentFacts>,
}

/// Decides what `asked` asks for the caller: the permitted request, and the decision that
/// permitted it.
pub fn authorize<'a>(
    site: &Site,
    caller: &Caller<'_>,
    asked: &'a Asked,
) -> Result<(Permitted<&'a Asked>, Decision), ProxyError> {
    let decision = match (caller.principal, asked) {
        (None, _) => Decision::of(Effect::Allow, UNAUTHENTICATED),
        (Some(p), Asked::Messages(d)) => decide(site, caller, p, Ask::messages(d))?,
        (Some(p), Asked::Http(a)) => decide(site, caller, p, [Ask::http(*a)])?,
    };
    Ok((Permitted { inner: asked }, decision))
}

/// Counts and decides each ask; the first one over a limit or denied refuses the whole request
/// (a denial in shadow mode is only recorded, and decides). Gives the deciding decision.
fn decide<'a>(
    site: &Site,
    caller: &Caller<'_>,
    principal: &Principal,
    asks: impl IntoIterator<Item = Ask<'a>>,
) -> Result<Decision, ProxyError> {
    let conn = caller.conn;
    let limits = site.server.rate_limits;
    let engine = site.policy.as_ref().map(|live| live.current());
    let no_policy = || Decision::of(Effect::Allow, NO_POLICY);
    if engine.is_none() && limits == RateLimits::default() {
        return Ok(no_policy());
    }
    let now = SystemTime::now();
    let shadow = engine
        .as_ref()
        .is_some_and(|e| e.mode == PolicyMode::Shadow);
    let mut allowed: Option<Decision> = None;
    for ask in asks {
        let sub = principal.sub.as_str();
        let rate = site
            .rates
            .hit(sub, ask.target.map_or(ask.method, |(_, t)| t), now);
        if let Some(why) = over_limit(site, sub, rate, now) {
            site.metrics.rate_limited();
            return Err(ProxyError::RateLimited(why));
        }
        let Some(engine) = &engine else { continue };
        // How the tool or prompt stands against its pin (the pins phase refused it already
        // if they hide it).
        let pin = site.integrity.as_ref().and_then(|g| match ask.target {
            Some((t @ (Target::Tool | Target::Prompt), name)) => Some(g.call(t, name)),
            _ => None,
        });
        let d = engine.decide(&Input {
            server: &site.server.name,
            action: ask.action,
            target: ask.target,
            arguments: ask.arguments,
            principal,
            source_ip: conn.peer.ip(),
            tls: conn.tls.as_deref(),
            session: caller.session,
            process: conn.process.as_deref(),
            rate,
            now,
            listing: false,
            integrity: pin.as_ref().map(|p| Standing {
                state: p.state.as_str(),
                markers: &p.markers,
            }),
            behaviour: caller.behaviour,
            content: caller
                .content
                .filter(|_| ask.action == Method::ToolsCall.action()),
        });
        site.metrics.policy_decision(d.allowed(), engine.mode);
        if d.allowed() {
            allowed.get_or_insert(d);
            continue;
        }
        if shadow {
            return Ok(Decision { shadow: true, ..d });
        }
        return Err(ProxyError::Denied {
            denial: ask.denial,
            method: ask.method.to_string(),
            target: ask.target.map(|(_, t)| t.to_string()),
            decision: d,
        });
    }
    Ok(allowed.unwrap_or_else(|| match engine {
        None => no_policy(),
        // A body of responses only (to the server's own requests) asks nothing.
        Some(_) => Decision::of(
            Effect::Allow,
            "nothing to decide: responses to the server's requests",
        ),
    }))
}

/// Which limit this request goes over, counting it for the principal and the server (its
/// count for the tool is `tool_rate`).
fn over_limit(site: &Site, sub: &str, tool_rate: u64, now: SystemTime) -> Option<String> {
    let l = site.server.rate_limits;
    // Only the counts a limit needs are kept.
    let principal_rate = l
        .per_principal
        .map_or(0, |_| site.rates.hit_principal(sub, now));
    let server_rate = l.per_server.map_or(0, |_| site.rates.hit_server(now));
    let checks = [
        (l.per_tool, tool_rate, "per principal and tool"),
        (l.per_principal, principal_rate, "per principal"),
        (l.per_server, server_rate, "for the server"),
    ];
    checks.into_iter().find_map(|(limit, n, what)| {
        limit
            .filter(|&max| n > max)
            .map(|max| format!("more than {max} requests a minute {what}"))
    })
}
