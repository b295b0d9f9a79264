//! The audit record of one HTTP request: filled in as the request goes through the phases, and
//! written exactly once when it is dropped, however the request ended.
use std::{net::SocketAddr, time::Instant};

use serde_json::{Map, Value, json};

use super::AuditLog;

/// How the exchange ended, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still in progress; if dropped like this the client went away.
    Open,
    Completed,
    Failed,
}

pub struct RequestRecord {
    audit: AuditLog,
    start: Instant,
    fields: Map<String, Value>,
    outcome: Outcome,
}

impl RequestRecord {
    pub fn new(
        audit: &AuditLog,
        server: &str,
        peer: SocketAddr,
        dst: SocketAddr,
        tls: Option<&str>,
    ) -> Self {
        let mut fields = Map::new();
        fields.insert("server".into(), server.into());
        fields.insert(
            "conn".into(),
            json!({ "peer": peer.to_string(), "dst": dst.to_string(), "tls": tls }),
        );
        Self {
            audit: audit.clone(),
            start: Instant::now(),
            fields,
            outcome: Outcome::Open,
        }
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key.into(), value);
    }

    /// The MCP fields of the request.
    pub fn set_mcp(&mut self, mcp: Value) {
        self.set("mcp", mcp);
    }

    pub fn mcp_id(&self) -> Option<&Value> {
        self.fields
            .get("mcp")
            .and_then(|m| m.get("id"))
            .filter(|v| !v.is_null())
    }

    pub fn elapsed_ms(&self) -> f64 {
        (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3
    }

    /// The request failed in Moat (refused, or the upstream failed) with `status`.
    pub fn fail(&mut self, status: u16, error: &str) {
        self.set("status", status.into());
        self.set("error", error.into());
        self.outcome = Outcome::Failed;
    }

    /// The response stream broke after its headers were sent.
    pub fn broken(&mut self, error: &str) {
        self.set("error", error.into());
        self.outcome = Outcome::Failed;
    }

    /// The response was sent to the end.
    pub fn complete(&mut self) {
        if self.outcome == Outcome::Open {
            self.outcome = Outcome::Completed;
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Outcome::Open => "client_disconnected",
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
        };
        self.fields.insert("outcome".into(), outcome.into());
        self.fields.insert("ms".into(), self.elapsed_ms().into());
        self.audit
            .record_now("request", std::mem::take(&mut self.fields));
    }
}
