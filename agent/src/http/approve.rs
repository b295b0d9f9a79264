//! The approval phase: a request that an `@approval` policy permitted is held, not forwarded,
//! until a person answers (or the approvals' timeout passes: denied). Bound to the principal,
//! session, server, method, target and the arguments' SHA-256; an approval given under
//! `@approval("MINUTES")` covers the same call for that long. The person is asked through the
//! MCP client when it declared elicitation (see `held`), else out of band (the webhook,
//! `moat approvals`, the admin listener). The audit record says who answered, how and when.
use std::{sync::Arc, time::SystemTime};

use super::{Site, decode::Asked, error::ProxyError};
use crate::{
    approval::{self, Approvals, Binding, Held},
    audit::RequestRecord,
    vocab::{ApprovalNote, Decision, Principal, Verdict},
};

/// A request held for approval.
pub struct Pending {
    pub held: Held,
    pub note: ApprovalNote,
    pub approvals: Arc<Approvals>,
}

/// Asks for approval when an `@approval` policy is among those that permitted `asked`
/// (`decision`): the held request, or None when none asks (or an approval given earlier for
/// the same call covers it, which the record notes).
pub fn ask(
    site: &Site,
    principal: Option<&Principal>,
    session: Option<&str>,
    asked: &Asked,
    decision: &Decision,
    record: &mut RequestRecord,
) -> Result<Option<Pending>, ProxyError> {
    let Some(live) = &site.policy else {
        return Ok(None);
    };
    let engine = live.current();
    let Some((policy, approval)) = engine.needs_approval(decision) else {
        return Ok(None);
    };
    let (Some(p), Some(approvals)) = (principal, &site.approvals) else {
        return Err(ProxyError::ApprovalUnavailable("no approvals here"));
    };
    let message = match asked {
        Asked::Messages(d) if d.messages.len() == 1 => &d.messages[0],
        Asked::Messages(_) => {
            return Err(ProxyError::ApprovalUnavailable(
                "a batch: send the call that needs approval on its own",
            ));
        }
        Asked::Http(_) => {
            return Err(ProxyError::ApprovalUnavailable(
                "an HTTP action (only JSON-RPC requests are held)",
            ));
        }
    };
    let arguments_sha256 = Binding::arguments_hash(message.arguments.as_ref());
    let binding = Binding {
        sub: p.sub.clone(),
        client_id: p.client_id.clone(),
        session: session.map(str::to_string),
        server: site.server.name.clone(),
        method: message.method.clone().unwrap_or_default(),
        target: message.target().map(str::to_string),
        arguments_sha256: arguments_sha256.clone(),
    };
    let mut note = ApprovalNote {
        id: String::new(),
        policy: policy.to_string(),
        arguments_sha256,
        verdict: Verdict::Abandoned,
        via: None,
        by: None,
        at: None,
    };
    let shown = record.arguments_kept().cloned();
    match approvals.ask(binding, policy, approval.reuse, shown) {
        None => Err(ProxyError::ApprovalUnavailable(
            "too many approvals are waiting",
        )),
        Some(approval::Asked::Reused) => {
            note.verdict = Verdict::Reused;
            site.metrics.approval(Verdict::Reused);
            record.approval(note);
            Ok(None)
        }
        Some(approval::Asked::Held(held)) => {
            note.id.clone_from(&held.id);
            tracing::info!(approval = %held.id, policy, "request held for approval");
            Ok(Some(Pending {
                held,
                note,
                approvals: approvals.clone(),
            }))
        }
    }
}

/// Waits for the answer to `pending` (asked out of band); Ok when approved. Until it comes the
/// record says `abandoned`, which it stays if the client goes away meanwhile.
pub async fn wait(
    site: &Site,
    pending: Pending,
    record: &mut RequestRecord,
) -> Result<(), ProxyError> {
    let Pending {
        held,
        mut note,
        approvals,
    } = pending;
    record.approval(note.clone());
    let (verdict, answer) = approvals.wait(held, std::future::pending()).await;
    site.metrics.approval(verdict);
    settle(&mut note, verdict, answer.as_ref());
    record.approval(note.clone());
    if !verdict.permits() {
        return Err(ProxyError::Unapproved {
            id: note.id,
            verdict,
        });
    }
    record
        .principal_of()
        .map_or(Ok(()), |p| still_allowed(site, p))
}

/// What may have changed while a request was held: a lockdown that now stops its caller, or
/// its grant revoked. Either refuses it, approved or not.
pub fn still_allowed(site: &Site, principal: &Arc<Principal>) -> Result<(), ProxyError> {
    if site
        .lockdowns
        .as_ref()
        .is_some_and(|l| l.stops(&site.name, Some(principal)))
    {
        return Err(ProxyError::LockedDown);
    }
    // The revocation check runs first when the future is polled: ready now means revoked.
    let revoked = site.auth.as_ref().and_then(|a| a.revoked(principal));
    if let Some(mut r) = revoked {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if r.as_mut().poll(&mut cx).is_ready() {
            return Err(ProxyError::ApprovalUnavailable(
                "the caller's grant was revoked while the request was held",
            ));
        }
    }
    Ok(())
}

/// `note` with what became of its approval.
pub fn settle(note: &mut ApprovalNote, verdict: Verdict, answer: Option<&approval::Answer>) {
    note.verdict = verdict;
    if let Some(a) = answer {
        note.via = Some(a.via);
        note.by = Some(a.by.clone());
        note.at = Some(humantime::format_rfc3339_seconds(a.at).to_string());
    } else {
        note.at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    }
}
