//! The policy phase: each JSON-RPC request of a message, counted against the server's rate
//! limits and decided by its Cedar policies for the authenticated caller, before anything is
//! forwarded.
use std::time::SystemTime;

use super::{Conn, Site, error::ProxyError};
use crate::{
    audit::RequestRecord,
    auth::Principal,
    config::{PolicyMode, RateLimits},
    mcp::{Decoded, Kind},
    policy::{Decision, Input},
};

/// Counts and decides every request in `decoded`; the first one over a limit or denied
/// refuses the whole message (a denial in shadow mode is only recorded). The record gets the
/// deciding decision.
pub fn authorize(
    site: &Site,
    conn: &Conn,
    principal: &Principal,
    session: Option<&str>,
    decoded: &Decoded,
    record: &mut RequestRecord,
) -> Result<(), ProxyError> {
    let limits = site.server.rate_limits;
    let engine = site.policy.as_ref().map(|live| live.current());
    if engine.is_none() && limits == RateLimits::default() {
        return Ok(());
    }
    let now = SystemTime::now();
    let shadow = engine
        .as_ref()
        .is_some_and(|e| e.mode == PolicyMode::Shadow);
    let mut allowed: Option<Decision> = None;
    for m in decoded.messages.iter().filter(|m| m.kind == Kind::Request) {
        let method = m.method.as_deref().unwrap_or_default();
        let target = m
            .tool
            .as_deref()
            .or(m.resource.as_deref())
            .or(m.prompt.as_deref());
        let sub = principal.sub.as_str();
        let rate = site.rates.hit(sub, target.unwrap_or(method), now);
        if let Some(why) = over_limit(site, sub, rate, now) {
            site.metrics.rate_limited();
            record.deny(format!("rate limit: {why}"));
            return Err(ProxyError::RateLimited(why));
        }
        let Some(engine) = &engine else { continue };
        let d = engine.decide(&Input {
            server: &site.server.name,
            method,
            target,
            arguments: m.arguments.as_ref(),
            principal,
            source_ip: conn.peer.ip(),
            tls: conn.tls.as_deref(),
            session,
            process: conn.process.as_deref(),
            rate,
            now,
            listing: false,
        });
        site.metrics.policy_decision(d.allowed(), engine.mode);
        if d.allowed() {
            allowed.get_or_insert(d);
            continue;
        }
        let reason = d.reason.clone();
        record.decide(d, shadow);
        if shadow {
            return Ok(());
        }
        return Err(ProxyError::Denied {
            method: method.to_string(),
            target: target.map(str::to_string),
            reason,
        });
    }
    if let Some(d) = allowed {
        record.decide(d, shadow);
    }
    Ok(())
}

/// Which limit this request goes over, counting it for the principal and the server (its
/// count for the tool is `tool_rate`).
fn over_limit(site: &Site, sub: &str, tool_rate: u64, now: SystemTime) -> Option<String> {
    let l = site.server.rate_limits;
    // Only the counts a limit needs are kept.
    let principal_rate = l
        .per_principal
        .map_or(0, |_| site.rates.hit(sub, "\0all", now));
    let server_rate = l
        .per_server
        .map_or(0, |_| site.rates.hit("\0all", "\0all", now));
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
