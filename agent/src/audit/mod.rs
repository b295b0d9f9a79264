//! The audit log: one JSON object per line, numbered and hash-chained, written by one task fed
//! through a bounded channel.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

pub mod chain;
pub mod redact;
mod request;
mod writer;
pub use request::{Http, Mcp, RequestRecord};
pub use writer::OnFailure;

const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    pub source: io::Error,
}

enum Msg {
    Record {
        ts: SystemTime,
        kind: &'static str,
        fields: Map<String, Value>,
    },
    /// Fields already serialized as one JSON object.
    Serialized {
        ts: SystemTime,
        kind: &'static str,
        object: Vec<u8>,
    },
    Flush(oneshot::Sender<()>),
}

/// The fields of a record; `ts`, `seq` and `kind` are the writer's.
fn fields_of(v: Value) -> Map<String, Value> {
    let mut m = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for own in ["ts", "seq", "kind", "prev", "hash"] {
        m.remove(own);
    }
    m
}

/// Records written and lost so far (for metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// A handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    /// False while the file cannot be written.
    healthy: Arc<AtomicBool>,
    on_failure: OnFailure,
    /// Records written and lost.
    pub stats: Arc<Stats>,
    /// How tool-call arguments are shown.
    pub redactor: Arc<redact::Redactor>,
}

impl AuditLog {
    /// Opens (appending) the log at `path` and starts its writer. Numbering continues from the
    /// last record already in the file.
    pub fn open(
        path: &Path,
        on_failure: OnFailure,
        redactor: redact::Redactor,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), AuditError> {
        let err = |source| AuditError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(err)?;
        let chain = chain::Chain::resume(&mut file).map_err(err)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(Stats::default());
        let w = writer::Writer::new(
            file,
            path.to_owned(),
            chain,
            on_failure,
            healthy.clone(),
            stats.clone(),
        );
        let writer = tokio::task::spawn_blocking(move || w.run(rx));
        Ok((
            Self {
                tx,
                healthy,
                on_failure,
                stats,
                redactor: Arc::new(redactor),
            },
            writer,
        ))
    }

    /// Whether requests may go on: under `fail_closed`, not while records cannot be written.
    pub fn accepting(&self) -> bool {
        self.on_failure == OnFailure::Drop || self.healthy.load(Ordering::Relaxed)
    }

    /// Queues a record of `kind` with the object's fields; `ts` (now) and `seq` are added.
    /// Waits when the queue is full rather than lose the record.
    pub async fn record(&self, kind: &'static str, fields: Value) {
        let msg = Msg::Record {
            ts: SystemTime::now(),
            kind,
            fields: fields_of(fields),
        };
        if self.tx.send(msg).await.is_err() {
            tracing::error!("audit writer has stopped; record lost");
        }
    }

    /// Queues a record whose fields are already one serialized JSON object, from synchronous
    /// code (e.g. a destructor): when the queue is full, a task waits for room, so the record is
    /// never dropped.
    pub fn record_serialized(&self, kind: &'static str, object: Vec<u8>) {
        let msg = Msg::Serialized {
            ts: SystemTime::now(),
            kind,
            object,
        };
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(msg).await.is_err() {
                        tracing::error!("audit writer has stopped; record lost");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer has stopped; record lost")
            }
        }
    }

    /// Waits until every record queued so far is written to the file.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// One record as a JSON line: `ts`, `seq` and `kind` first, then the fields of `object` (one
/// serialized JSON object, which must not itself hold `ts`, `seq`, `kind`, `prev` or `hash`),
/// then `prev` and `hash` (the chain). `line` is scratch space.
fn write_line(
    line: &mut Vec<u8>,
    chain: &mut chain::Chain,
    ts: SystemTime,
    kind: &str,
    object: &[u8],
) -> io::Result<()> {
    chain.seq += 1;
    line.clear();
    write!(
        line,
        "{{\"ts\":\"{}\",\"seq\":{},\"kind\":",
        humantime::format_rfc3339_micros(ts),
        chain.seq
    )?;
    serde_json::to_writer(&mut *line, kind)?;
    match object {
        [b'{', rest @ ..] if rest != b"}" => {
            line.push(b',');
            line.extend_from_slice(rest);
        }
        _ => line.push(b'}'),
    }
    chain.seal(line);
    Ok(())
}

/// A record for a started or stopped agent.
pub fn agent_event(event: &str, extra: Value) -> Value {
    let mut v = json!({ "event": event });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_numbered_and_numbering_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("moat-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/audit.jsonl");
        for _ in 0..2 {
            let (log, writer) = AuditLog::open(
                &path,
                OnFailure::FailClosed,
                redact::Redactor::new(&[], &[]).unwrap(),
            )
            .unwrap();
            log.record("kernel", json!({"event": "dropped"})).await;
            log.record("config", json!({"event": "started"})).await;
            log.flush().await;
            assert_eq!(log.stats.written.load(Ordering::Relaxed), 2);
            drop(log);
            writer.await.unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        // One chain across the restart.
        assert_eq!(chain::verify(std::slice::from_ref(&path)), Ok(4));
        assert_eq!(recs[2]["prev"], recs[1]["hash"]);
        assert_eq!(recs[2]["kind"], "kernel");
        assert_eq!(recs[3]["event"], "started");
        assert!(recs[0]["ts"].as_str().unwrap().ends_with('Z'));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
