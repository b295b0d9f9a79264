//! Requests held for a person's approval (an `@approval` policy permitted them). Each approval
//! is bound to the principal, the session, the server, the method and target, and the SHA-256
//! of the arguments in RFC 8785 form; it answers one held request once (a second answer to the
//! same id finds nothing), and waits at most the configured timeout (then the request is
//! denied). An approval under `@approval("MINUTES")` also covers the same call, bound alike,
//! for that long. Answers come from the MCP client (elicitation), `moat approvals`, or the
//! admin listener.
mod webhook;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{
    config,
    vocab::{Verdict, Via, sha256_hex},
};

/// What one approval is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub sub: String,
    pub client_id: Option<String>,
    pub session: Option<String>,
    pub server: String,
    pub method: String,
    /// The tool, resource URI or prompt.
    pub target: Option<String>,
    pub arguments_sha256: String,
}

impl Binding {
    /// The SHA-256 of `arguments` in RFC 8785 form (of `null` when there are none).
    pub fn arguments_hash(arguments: Option<&Value>) -> String {
        let canonical = crate::integrity::definition::canonical(arguments.unwrap_or(&Value::Null));
        sha256_hex(canonical.as_bytes())
    }

    /// One string for all of it: its parts as a JSON array (so none can run into another).
    fn key(&self) -> String {
        json!([
            self.sub,
            self.client_id,
            self.session,
            self.server,
            self.method,
            self.target,
            self.arguments_sha256
        ])
        .to_string()
    }
}

/// An answer to an approval.
#[derive(Clone, Debug)]
pub struct Answer {
    pub approve: bool,
    pub via: Via,
    pub by: String,
    pub at: SystemTime,
}

struct Pending {
    binding: Binding,
    policy: String,
    /// What the approver is shown of the arguments (as the audit record keeps them).
    arguments: Option<Value>,
    asked: SystemTime,
    expires: SystemTime,
    reuse: Duration,
    tx: oneshot::Sender<Answer>,
}

/// What asking for an approval gives.
pub enum Asked {
    /// An approval of the same call within its policy's minutes covers it.
    Reused,
    /// Held: wait for the answer.
    Held(Held),
}

/// A request held for approval.
pub struct Held {
    pub id: String,
    rx: oneshot::Receiver<Answer>,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApprovalError {
    #[error("no pending approval {0} (answered already, timed out, or never asked)")]
    NotPending(String),
    #[error("approval {0} belongs to another caller")]
    Foreign(String),
}

/// Every approval asked for and not answered, and the approvals that cover later calls.
pub struct Approvals {
    config: config::Approvals,
    pending: Mutex<HashMap<String, Pending>>,
    /// By binding key: until when an approval covers the same call.
    granted: Mutex<HashMap<String, Instant>>,
    webhook: Option<webhook::Webhook>,
    /// SHA-256 of the admin endpoints' bearer token.
    token_sha256: Option<String>,
}

/// The most approvals waiting at once; beyond, a new one is denied at once.
const MAX_PENDING: usize = 1024;

impl Approvals {
    /// The approvals of `config`; the admin token read from its file.
    pub fn new(config: &config::Approvals) -> Result<Self, String> {
        let token_sha256 = match &config.token_file {
            None => None,
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| format!("approvals.token_file {}: {e}", path.display()))?;
                let token = token.trim();
                if token.len() < 16 {
                    return Err(format!(
                        "approvals.token_file {}: the token must be at least 16 characters",
                        path.display()
                    ));
                }
                Some(sha256_hex(token.as_bytes()))
            }
        };
        Ok(Self {
            config: config.clone(),
            pending: Mutex::default(),
            granted: Mutex::default(),
            webhook: config
                .webhook
                .as_deref()
                .map(webhook::Webhook::new)
                .transpose()
                .map_err(|e| format!("approvals.webhook: {e}"))?,
            token_sha256,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Asks for an approval of the call `binding` (its policy `policy`; covering the same
    /// call for `reuse` after it is given), showing `arguments` to the approver.
    pub fn ask(
        &self,
        binding: Binding,
        policy: &str,
        reuse: Duration,
        arguments: Option<Value>,
    ) -> Option<Asked> {
        let key = binding.key();
        {
            let mut granted = self.granted.lock().ok()?;
            let now = Instant::now();
            granted.retain(|_, until| *until > now);
            if granted.contains_key(&key) {
                return Some(Asked::Reused);
            }
        }
        let mut pending = self.pending.lock().ok()?;
        if pending.len() >= MAX_PENDING {
            return None;
        }
        let id = new_id()?;
        let (tx, rx) = oneshot::channel();
        let asked = SystemTime::now();
        let p = Pending {
            binding,
            policy: policy.to_string(),
            arguments,
            asked,
            expires: asked + self.config.timeout,
            reuse,
            tx,
        };
        if let Some(w) = &self.webhook {
            w.tell(shown(&id, &p));
        }
        pending.insert(id.clone(), p);
        Some(Asked::Held(Held { id, rx }))
    }

    /// Waits for the answer to `held`, at most the timeout, or until `gone` (the client went
    /// away); the verdict, and the answer that gave it.
    pub async fn wait(
        &self,
        held: Held,
        gone: impl Future<Output = ()>,
    ) -> (Verdict, Option<Answer>) {
        let Held { id, rx } = held;
        // However the wait ends (even by being dropped: the client went away), an approval
        // not answered is no longer pending.
        let _pending = Forget {
            approvals: self,
            id: &id,
        };
        let outcome = tokio::select! {
            answer = rx => answer.ok(),
            () = tokio::time::sleep(self.config.timeout) => None,
            () = gone => return (Verdict::Abandoned, None),
        };
        match outcome {
            Some(a) if a.approve => (Verdict::Approved, Some(a)),
            Some(a) => (Verdict::Denied, Some(a)),
            None => (Verdict::TimedOut, None),
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(id);
        }
    }

    /// Answers approval `id`, once. `caller`: the principal and session an answer from the MCP
    /// client must come from (None: an operator's answer).
    pub fn answer(
        &self,
        id: &str,
        answer: Answer,
        caller: Option<(&str, Option<&str>)>,
    ) -> Result<(), ApprovalError> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| ApprovalError::NotPending(id.into()))?;
        let p = pending
            .get(id)
            .ok_or_else(|| ApprovalError::NotPending(id.into()))?;
        if let Some((sub, session)) = caller
            && (p.binding.sub != sub || p.binding.session.as_deref() != session)
        {
            return Err(ApprovalError::Foreign(id.into()));
        }
        let p = pending
            .remove(id)
            .ok_or_else(|| ApprovalError::NotPending(id.into()))?;
        drop(pending);
        if answer.approve
            && !p.reuse.is_zero()
            && let Ok(mut granted) = self.granted.lock()
        {
            granted.insert(p.binding.key(), Instant::now() + p.reuse);
        }
        // The waiter may have gone (timed out a moment ago): then nothing was approved.
        p.tx.send(answer)
            .map_err(|_| ApprovalError::NotPending(id.into()))
    }

    /// The approvals waiting for an answer, oldest first.
    pub fn list(&self) -> Vec<Value> {
        let Ok(pending) = self.pending.lock() else {
            return Vec::new();
        };
        let mut all: Vec<(&String, &Pending)> = pending.iter().collect();
        all.sort_by_key(|(_, p)| p.asked);
        all.into_iter().map(|(id, p)| shown(id, p)).collect()
    }

    /// Whether `bearer` is the admin endpoints' token (false when they are off).
    pub fn admits(&self, bearer: Option<&str>) -> bool {
        match (&self.token_sha256, bearer) {
            (Some(want), Some(got)) => *want == sha256_hex(got.trim().as_bytes()),
            _ => false,
        }
    }

    /// Whether the admin endpoints are on.
    pub fn admin_on(&self) -> bool {
        self.token_sha256.is_some()
    }
}

/// Forgets an approval when its wait ends.
struct Forget<'a> {
    approvals: &'a Approvals,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.approvals.forget(self.id);
    }
}

/// A new approval id: 64 random bits, hex (typed by operators; useless without the control
/// socket or the admin token).
fn new_id() -> Option<String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// An approval as `moat approvals list`, the admin endpoint and the webhook show it.
fn shown(id: &str, p: &Pending) -> Value {
    let b = &p.binding;
    json!({
        "id": id,
        "server": b.server,
        "method": b.method,
        "target": b.target,
        "sub": b.sub,
        "client_id": b.client_id,
        "session": b.session,
        "policy": p.policy,
        "arguments": p.arguments,
        "arguments_sha256": b.arguments_sha256,
        "asked": humantime::format_rfc3339_seconds(p.asked).to_string(),
        "expires": humantime::format_rfc3339_seconds(p.expires).to_string(),
        "reuse_minutes": p.reuse.as_secs() / 60,
    })
}

#[cfg(test)]
mod tests;
