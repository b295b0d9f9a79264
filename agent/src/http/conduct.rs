//! The behaviour phase: on a server with `behaviour` on, the request is judged against its
//! subject's baseline before the policies decide (they read the signals), and settled after
//! (learned if permitted, counted as a denial if not). A denial by a policy annotated
//! `@lockdown` locks the caller down.
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Site, authorize::Ask, decode::Asked, error::ProxyError};
use crate::{
    behaviour::{Assessment, Event},
    lockdown::Scope,
    policy::LocksDown,
    vocab::{Conn, Principal},
};

/// The request's time, as the monitor counts it.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the monitor sees of `asked`: one event per message with a method, or the HTTP action.
fn events<'a>(
    asked: &'a Asked,
    conn: &'a Conn,
    at: u64,
) -> impl Iterator<Item = Event<'a>> + Clone {
    let (messages, http) = match asked {
        Asked::Messages(d) => (Some(Ask::messages(d)), None),
        Asked::Http(a) => (None, Some(Ask::http(*a))),
    };
    messages
        .into_iter()
        .flatten()
        .chain(http)
        .map(move |a| Event {
            at,
            action: a.action,
            target: a.target,
            arguments: a.arguments,
            address: conn.peer.ip(),
            process: conn.process.as_deref(),
        })
}

/// The signals `asked` raises against `principal`'s baseline (None: `behaviour` is off, or
/// the server has no authentication).
pub fn judge(
    site: &Site,
    principal: Option<&Principal>,
    asked: &Asked,
    conn: &Conn,
    at: u64,
) -> Option<Assessment> {
    let (m, p) = site.behaviour.as_ref().zip(principal)?;
    let a = m.judge(&p.sub, events(asked, conn, at));
    site.metrics.behaviour_signals(a.signals);
    Some(a)
}

/// Settles a judged request: learned if `permitted`, a denial if not.
pub fn settle(
    site: &Site,
    principal: &Principal,
    asked: &Asked,
    conn: &Conn,
    at: u64,
    assessment: &Assessment,
    permitted: bool,
) {
    if let Some(m) = &site.behaviour {
        m.settle(principal, events(asked, conn, at), assessment, permitted);
    }
}

/// When `e` is a denial by a policy annotated `@lockdown`, locks down the caller (its subject,
/// or its OAuth client) at once, on every server, until an operator's `moat unlock`.
pub fn lock_down(site: &Site, principal: Option<&Principal>, e: &ProxyError) {
    let (ProxyError::Denied { decision, .. }, Some(p), Some(locks), Some(live)) =
        (e, principal, &site.lockdowns, &site.policy)
    else {
        return;
    };
    let engine = live.current();
    let Some((id, who)) = engine.locks_down(decision) else {
        return;
    };
    let scope = match (who, &p.client_id) {
        (LocksDown::Client, Some(c)) => Scope::Client(c.clone()),
        _ => Scope::Sub(p.sub.clone()),
    };
    let reason = format!("server {}: {}", site.name, decision.reason);
    if let Err(err) = locks.lock(&scope, &reason, &format!("policy {id}")) {
        tracing::error!(scope = %scope.key(), "a @lockdown policy denied, but the lockdown failed: {err}");
    }
}
