//! The audit record of one HTTP request: filled in as the request goes through the phases, and
//! written exactly once when it is dropped, however the request ended. It is serialized on the
//! request's own thread; the writer only appends the bytes. Whoever counts requests (the
//! metrics) is told of each as its record is written, through an [`Observer`] the record is
//! given: the audit log names nothing that watches it.
use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Value, value::RawValue};

use super::AuditLog;
use crate::vocab::{
    ApprovalNote, Assessment, Conn, Decision, Effect, Findings, Hidden, Listing, PinCheck,
    Principal, ThirdParty,
};

/// How the exchange ended, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still in progress; if dropped like this the client went away.
    #[serde(rename = "client_disconnected")]
    Open,
    Completed,
    Failed,
}

/// A request's id, in its audit record (`request_id`) and on every log line written while it
/// is served: 16 hex digits, a random half per agent run and a count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn next() -> Self {
        static RUN: OnceLock<u32> = OnceLock::new();
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let run = *RUN.get_or_init(|| {
            let mut b = [0u8; 4];
            // Without randomness, ids are still unique within this run.
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
            u32::from_ne_bytes(b)
        });
        Self(u64::from(run) << 32 | u64::from(COUNT.fetch_add(1, Ordering::Relaxed)))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for RequestId {
    /// As its 16 hex digits, written straight into the record.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Serialize, Default)]
pub struct Http {
    pub method: String,
    pub path: String,
    pub version: &'static str,
}

/// What the request was, in MCP terms.
#[derive(Serialize, Default)]
pub struct Mcp {
    pub method: Option<String>,
    pub id: Option<Value>,
    pub tool: Option<String>,
    pub resource: Option<String>,
    pub prompt: Option<String>,
    /// A tools/call's arguments, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    pub session: Option<String>,
    pub protocol_version: Option<String>,
    /// Every message of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<Value>>,
    /// `sse` on a legacy stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Upstream {
    Answered { status: u16, ms: f64 },
    Failed { error: String },
}

#[derive(Serialize)]
struct Fields {
    request_id: RequestId,
    server: Arc<str>,
    /// The connection (`Conn`), serialized once for all its requests.
    conn: Arc<RawValue>,
    http: Http,
    /// Who called, once the token is validated.
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<Arc<Principal>>,
    mcp: Mcp,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools_listed: Option<Vec<String>>,
    /// Entries of a list result the caller did not get, and the decisions that hid them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hidden: Vec<Hidden>,
    /// What the pins said: of a call's target, and of each listed entry they do not vouch for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pins: Vec<PinCheck>,
    /// How the request compared with its subject's baseline (`behaviour` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    behaviour: Option<Assessment>,
    /// The caller's own third-party token the upstream got (`upstream_auth: { oauth2 }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    third_party: Option<ThirdParty>,
    /// A person's approval, when an `@approval` policy asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalNote>,
    /// What content inspection found in the arguments and the result (never the text).
    #[serde(skip_serializing_if = "Findings::is_empty")]
    content: Findings,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    ms: f64,
}

/// A request as its record is written, for whoever counts requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finished<'a> {
    pub server: &'a str,
    /// Its JSON-RPC method, if it had one.
    pub method: Option<&'a str>,
    /// Moat answered with an error and asked nothing of the upstream.
    pub refused: bool,
    /// From its arrival to the end of its response.
    pub duration: Duration,
}

/// Told of each request whose record it is given to, as the record is written (before the
/// record is queued; on the request's thread, so it must be quick).
pub trait Observer: Send + Sync {
    fn finished(&self, request: &Finished<'_>);
}

pub struct RequestRecord {
    audit: AuditLog,
    start: Instant,
    fields: Fields,
    /// Who is told when the request ends.
    observer: Option<Arc<dyn Observer>>,
}

impl RequestRecord {
    pub fn new(audit: &AuditLog, server: Arc<str>, conn: &Conn, http: Http) -> Self {
        Self {
            audit: audit.clone(),
            start: Instant::now(),
            fields: Fields {
                request_id: RequestId::next(),
                server,
                conn: conn.to_json(),
                http,
                principal: None,
                mcp: Mcp::default(),
                decision: None,
                status: None,
                upstream: None,
                tools_listed: None,
                hidden: Vec::new(),
                pins: Vec::new(),
                behaviour: None,
                third_party: None,
                approval: None,
                content: Findings::default(),
                outcome: Outcome::Open,
                error: None,
                ms: 0.0,
            },
            observer: None,
        }
    }

    pub fn id(&self) -> RequestId {
        self.fields.request_id
    }

    /// Tells `observer` (if any) of the request when it ends: its method, whether Moat refused
    /// it, and how long it took.
    pub fn observed_by(&mut self, observer: Option<Arc<dyn Observer>>) {
        self.observer = observer;
    }

    /// The MCP fields, as far as they are known.
    pub fn mcp(&mut self) -> &mut Mcp {
        &mut self.fields.mcp
    }

    pub fn principal(&mut self, p: Arc<Principal>) {
        self.fields.principal = Some(p);
    }

    /// Who sent the request, once authenticated.
    pub fn principal_of(&self) -> Option<&Arc<Principal>> {
        self.fields.principal.as_ref()
    }

    /// The request was refused: why, in the record's terms (not necessarily the client's).
    pub fn deny(&mut self, reason: String) {
        self.fields.decision = Some(Decision::of(Effect::Deny, reason));
    }

    /// What was decided (a denial in shadow mode was recorded, not enforced).
    pub fn decide(&mut self, d: Decision) {
        self.fields.decision = Some(d);
    }

    /// Notes the signals the request raised against its subject's baseline.
    pub fn assessed(&mut self, a: Assessment) {
        self.fields.behaviour = Some(a);
    }

    /// Notes that the upstream got the caller's own token at a third party.
    pub fn third_party(&mut self, t: ThirdParty) {
        self.fields.third_party = Some(t);
    }

    /// Notes what became of the request's approval.
    pub fn approval(&mut self, note: ApprovalNote) {
        self.fields.approval = Some(note);
    }

    /// The first message's arguments as the record keeps them (redacted).
    pub fn arguments_kept(&self) -> Option<&Value> {
        self.fields.mcp.arguments.as_ref()
    }

    /// Notes what content inspection found.
    pub fn inspected(&mut self, found: Findings) {
        self.fields.content.merge(found);
    }

    /// Notes what the pins said of a call's target.
    pub fn pin_checked(&mut self, check: PinCheck) {
        self.fields.pins.push(check);
    }

    /// Notes a tools/call's arguments, redacted.
    pub fn arguments(&mut self, args: &Value) {
        self.fields.mcp.arguments = Some(self.audit.redactor.apply(args));
    }

    pub fn mcp_id(&self) -> Option<&Value> {
        self.fields.mcp.id.as_ref()
    }

    pub fn elapsed_ms(&self) -> f64 {
        millis(self.start.elapsed())
    }

    /// The upstream answered with `status`; the client gets it too.
    pub fn answered(&mut self, status: u16) {
        self.fields.status = Some(status);
        self.fields.upstream = Some(Upstream::Answered {
            status,
            ms: self.elapsed_ms(),
        });
    }

    /// Moat answered the request itself (a document it serves) with `status`.
    pub fn answered_locally(&mut self, status: u16) {
        self.fields.status = Some(status);
        self.fields.outcome = Outcome::Completed;
    }

    /// The request failed in Moat (refused, or the upstream failed) with `status`.
    pub fn fail(&mut self, status: u16, error: &str) {
        self.fields.status = Some(status);
        self.fields.error = Some(error.into());
        self.fields.outcome = Outcome::Failed;
    }

    /// The upstream could not be reached or did not answer in time.
    pub fn upstream_failed(&mut self, error: &str) {
        self.fields.upstream = Some(Upstream::Failed {
            error: error.into(),
        });
    }

    /// The response stream broke after its headers were sent.
    pub fn broken(&mut self, error: &str) {
        self.fields.error = Some(error.into());
        self.fields.outcome = Outcome::Failed;
    }

    /// What a list result showed (on a stream, each message of it in turn).
    pub fn listed(&mut self, listing: Listing) {
        if let Some(names) = listing.tools {
            self.fields.tools_listed = Some(names);
        }
        self.fields.hidden.extend(listing.hidden);
        self.fields.pins.extend(listing.pins);
    }

    /// The response was sent to the end.
    pub fn complete(&mut self) {
        if self.fields.outcome == Outcome::Open {
            self.fields.outcome = Outcome::Completed;
        }
    }
}

/// Milliseconds, to the microsecond.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        // Refused by Moat: it answered with an error and nothing was asked of the upstream.
        let refused = self.fields.outcome == Outcome::Failed && self.fields.upstream.is_none();
        if let Some(observer) = &self.observer {
            observer.finished(&Finished {
                server: &self.fields.server,
                method: self.fields.mcp.method.as_deref(),
                refused,
                duration: elapsed,
            });
        }
        self.fields.ms = millis(elapsed);
        // Room for a typical record at once, rather than growing through every size below it.
        let mut object = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut object, &self.fields) {
            Ok(()) => self.audit.record_serialized("request", object),
            // Only a serializer bug gets here; say so rather than lose the record silently.
            Err(e) => tracing::error!("audit record could not be serialized: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::audit::redact::Redactor;

    /// A [`Finished`] kept.
    #[derive(Clone, Debug)]
    struct Told {
        server: String,
        method: Option<String>,
        refused: bool,
        duration: Duration,
    }

    /// Keeps what it is told.
    #[derive(Default)]
    struct Seen(Mutex<Vec<Told>>);

    impl Observer for Seen {
        fn finished(&self, r: &Finished<'_>) {
            self.0.lock().unwrap().push(Told {
                server: r.server.into(),
                method: r.method.map(str::to_string),
                refused: r.refused,
                duration: r.duration,
            });
        }
    }

    #[tokio::test]
    async fn the_observer_is_told_what_the_record_says() {
        let dir = std::env::temp_dir().join(format!("moat-observed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let config = crate::config::Audit {
            sink: crate::config::AuditSink::File(crate::config::FileSink {
                path: path.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (log, writer) =
            AuditLog::open(&config, &dir, Redactor::new(&[], &[]).unwrap()).unwrap();
        let seen = Arc::new(Seen::default());
        let addr = "127.0.0.1:8000".parse().unwrap();
        let conn = Conn {
            peer: addr,
            dst: addr,
            tls: None,
            process: None,
            serialized: Default::default(),
        };
        let record = |server: &str| RequestRecord::new(&log, server.into(), &conn, Http::default());
        // Refused by Moat: failed, nothing asked of the upstream.
        let mut refused = record("files");
        refused.observed_by(Some(seen.clone()));
        refused.mcp().method = Some("tools/call".into());
        refused.fail(403, "denied");
        drop(refused);
        // Answered by the upstream, then broken: failed, but not refused.
        let mut answered = record("files");
        answered.observed_by(Some(seen.clone()));
        answered.answered(200);
        answered.broken("reset");
        drop(answered);
        // Nobody watching: written all the same.
        drop(record("other"));
        log.flush().await;
        drop(log);
        writer.await.unwrap();

        let seen = seen.0.lock().unwrap().clone();
        let records: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &Value| r["kind"] == "request")
            .collect();
        assert_eq!(records.len(), 3);
        assert_eq!(seen.len(), 2, "{seen:?}");
        let told = |t: &Told| (t.server.clone(), t.method.clone(), t.refused);
        assert_eq!(
            told(&seen[0]),
            ("files".into(), Some("tools/call".into()), true)
        );
        assert_eq!(told(&seen[1]), ("files".into(), None, false));
        for (t, r) in seen.iter().zip(&records) {
            // The same time as the record's.
            assert_eq!(json!(millis(t.duration)), r["ms"], "{r}");
            assert_eq!(r["server"], "files");
        }
        assert_eq!(records[0]["mcp"]["method"], "tools/call");
        assert_eq!(records[2]["server"], "other");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
