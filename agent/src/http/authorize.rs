//! The policy phase: each JSON-RPC request of a message, decided by the server's Cedar
//! policies for the authenticated caller, before anything is forwarded.
use std::time::SystemTime;

use super::{Conn, Site, error::ProxyError};
use crate::{
    audit::RequestRecord,
    auth::Principal,
    config::PolicyMode,
    mcp::{Decoded, Kind},
    policy::{Decision, Input},
};

/// Decides every request in `decoded`; the first denial refuses the whole message (in shadow
/// mode it is only recorded). The record gets the deciding decision.
pub fn authorize(
    site: &Site,
    conn: &Conn,
    principal: &Principal,
    session: Option<&str>,
    decoded: &Decoded,
    record: &mut RequestRecord,
) -> Result<(), ProxyError> {
    let Some(live) = &site.policy else {
        return Ok(());
    };
    let engine = live.current();
    let now = SystemTime::now();
    let shadow = engine.mode == PolicyMode::Shadow;
    let mut allowed: Option<Decision> = None;
    for m in decoded.messages.iter().filter(|m| m.kind == Kind::Request) {
        let method = m.method.as_deref().unwrap_or_default();
        let target = m
            .tool
            .as_deref()
            .or(m.resource.as_deref())
            .or(m.prompt.as_deref());
        let rate = site
            .rates
            .hit(&principal.sub, target.unwrap_or(method), now);
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
