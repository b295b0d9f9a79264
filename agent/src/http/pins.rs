//! The pins phase: a call to a tool or a prompt whose definition the server's pins do not
//! vouch for (no pin, or last listed other than pinned, or flagged under `hide_flagged`) is
//! refused in `enforce` mode as the unknown tool it is to the client; in `warn` mode it
//! passes. Either way the audit record says how the target stood against its pin.
use super::{Site, decode::Asked, error::ProxyError, filter::pin_reason};
use crate::{
    audit::RequestRecord,
    vocab::{Decision, Effect, Target},
};

/// Checks the target of each call in `asked`; the first one the pins hide refuses the request.
pub fn check(site: &Site, asked: &Asked, record: &mut RequestRecord) -> Result<(), ProxyError> {
    let (Some(guard), Asked::Messages(decoded)) = (&site.integrity, asked) else {
        return Ok(());
    };
    for m in &decoded.messages {
        let Some(spec) = m.call().map(|c| c.spec()) else {
            continue;
        };
        // Resources are read by URI, also from templates no listing names one by one: their
        // reads are left to the policies.
        let Some((target @ (Target::Tool | Target::Prompt), name)) = spec.target().zip(m.target())
        else {
            continue;
        };
        let check = guard.call(target, name);
        let hidden = check.hidden;
        let reason = hidden.then(|| pin_reason(&check));
        record.pin_checked(check);
        if let Some(reason) = reason {
            return Err(ProxyError::Denied {
                denial: spec.denial(),
                method: m.method.clone().unwrap_or_default(),
                target: Some(name.to_string()),
                decision: Decision::of(Effect::Deny, reason),
            });
        }
    }
    Ok(())
}
