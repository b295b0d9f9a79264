//! The audit log: one JSON object per line, numbered and hash-chained, written by one task fed
//! through a bounded channel.
use std::{
    io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::config::OnFailure;

pub mod chain;
mod file;
mod head;
pub mod redact;
mod request;
mod sink;
mod stream;
mod syslog;
pub mod verify;
mod writer;
pub use request::{Finished, Http, Mcp, Observer, RequestId, RequestRecord};
pub use writer::Stats;
use writer::{Msg, QUEUE};

#[derive(Debug, thiserror::Error)]
#[error("audit log ({sink}): {source}")]
pub struct AuditError {
    pub sink: String,
    pub source: io::Error,
}

/// Where the chain head is kept, under the agent's state directory.
pub fn head_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit-head")
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
    /// Opens the configured sink and starts its writer. Numbering continues from the last
    /// record in the file, or else from the head saved in `state_dir`.
    pub fn open(
        config: &crate::config::Audit,
        state_dir: &Path,
        redactor: redact::Redactor,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), AuditError> {
        let (sink, in_sink) = sink::Sink::open(&config.sink).map_err(|source| AuditError {
            sink: config.sink.to_string(),
            source,
        })?;
        let head_path = head_path(state_dir);
        let (head, saved) = head::Head::open(&head_path).map_err(|source| AuditError {
            sink: format!("chain head {}", head_path.display()),
            source,
        })?;
        let (chain, mismatch) =
            head::resume(in_sink, saved, |h| sink.passes_through(h).unwrap_or(false));
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Some(m) = mismatch {
            tracing::error!(
                sink = %config.sink,
                log_seq = m.log.seq,
                head_seq = m.head.seq,
                "the audit log does not continue the chain head saved in {}: its end was removed or rewritten while the agent was stopped; recorded, and `moat audit verify` fails there",
                head_path.display()
            );
            let (log, head) = (m.log, m.head);
            let notice = json!({
                "event": chain::HEAD_MISMATCH,
                "log": {"seq": log.seq, "hash": chain::hex(&log.prev)},
                "head": {"seq": head.seq, "hash": chain::hex(&head.prev)},
            });
            // The queue is empty: this is its first record.
            let _ = tx.try_send(Msg::Record {
                ts: SystemTime::now(),
                kind: "audit",
                fields: fields_of(notice),
            });
        }
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(Stats::default());
        let w = writer::Writer::new(
            sink,
            config.sink.to_string(),
            Some(head),
            chain,
            config.on_failure,
            healthy.clone(),
            stats.clone(),
        );
        let writer = tokio::task::spawn_blocking(move || w.run(rx));
        Ok((
            Self {
                tx,
                healthy,
                on_failure: config.on_failure,
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

    /// [`Self::record`] from synchronous code (see [`Self::record_serialized`]).
    pub fn record_sync(&self, kind: &'static str, fields: Value) {
        let object = Value::Object(fields_of(fields)).to_string().into_bytes();
        self.record_serialized(kind, object);
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
    use super::{writer::write_line, *};

    fn file_config(path: &Path, max_bytes: Option<u64>) -> crate::config::Audit {
        crate::config::Audit {
            sink: crate::config::AuditSink::File(crate::config::FileSink {
                path: path.to_owned(),
                max_bytes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_are_numbered_and_numbering_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("moat-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/audit.jsonl");
        let config = file_config(&path, None);
        for _ in 0..2 {
            let (log, writer) =
                AuditLog::open(&config, &dir, redact::Redactor::new(&[], &[]).unwrap()).unwrap();
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

    async fn write_records(config: &crate::config::Audit, state: &Path, n: usize) {
        let (log, writer) =
            AuditLog::open(config, state, redact::Redactor::new(&[], &[]).unwrap()).unwrap();
        for i in 0..n {
            log.record("request", json!({"server": "files", "i": i}))
                .await;
        }
        log.flush().await;
        drop(log);
        writer.await.unwrap();
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn the_chain_goes_on_through_rotated_files_and_restarts() {
        let dir = std::env::temp_dir().join(format!("moat-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let live = dir.join("audit.jsonl");
        let config = file_config(&live, Some(4096));
        write_records(&config, &dir, 150).await;
        write_records(&config, &dir, 150).await;

        let files = files_in(&dir);
        assert!(files.len() >= 5, "{files:?}");
        assert_eq!(
            files.last(),
            Some(&live),
            "rotated names sort before the live file"
        );
        let total = chain::verify(&files).unwrap();
        let rotations = files.len() as u64 - 1;
        assert_eq!(
            total,
            300 + rotations,
            "every record, and one notice per rotation"
        );
        // Each file after the first starts by naming the one before it.
        for pair in files.windows(2) {
            let first = std::fs::read_to_string(&pair[1]).unwrap();
            let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
            assert_eq!(first["kind"], "audit");
            assert_eq!(first["event"], "rotated");
            assert_eq!(
                first["previous"],
                pair[0].file_name().unwrap().to_str().unwrap()
            );
        }
        for f in &files[..files.len() - 1] {
            let len = std::fs::metadata(f).unwrap().len();
            assert!((4096..4096 + 512).contains(&len), "{f:?} is {len} bytes");
        }
        // Given in any order, the files are put back in chain order.
        let mut shuffled = files.clone();
        shuffled.reverse();
        assert_eq!(chain::in_chain_order(&shuffled), files);
        // A rotated file removed from the middle is a break.
        let mut gap = files.clone();
        gap.remove(1);
        let e = chain::verify(&gap).unwrap_err();
        assert_eq!(e.file, files[2]);
        assert!(e.why.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_chain_that_cannot_be_read_back_continues_from_the_saved_head() {
        let dir = std::env::temp_dir().join(format!("moat-head-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("log.sock");
        let rx = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        let config = crate::config::Audit {
            sink: crate::config::AuditSink::Syslog {
                socket: socket.clone(),
                facility: 16,
            },
            ..Default::default()
        };
        write_records(&config, &dir, 3).await;
        write_records(&config, &dir, 2).await;
        rx.set_nonblocking(true).unwrap();
        let mut records = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = rx.recv(&mut buf) {
            let msg = std::str::from_utf8(&buf[..n]).unwrap();
            let json = &msg[msg.find(" - {").unwrap() + 3..];
            records.push(format!("{json}\n"));
        }
        let file = dir.join("received.jsonl");
        std::fs::write(&file, records.concat()).unwrap();
        assert_eq!(chain::verify(std::slice::from_ref(&file)), Ok(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_log_cut_short_while_the_agent_was_stopped_is_recorded_at_its_start() {
        let dir = std::env::temp_dir().join(format!("moat-cut-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let config = file_config(&path, None);
        write_records(&config, &dir, 6).await;
        let head = head::read(&head_path(&dir)).unwrap();
        assert_eq!(head.seq, 6, "saved once written");
        // A crash before the head was saved: it lags; the log goes on through it. Nothing to
        // report.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let at = |n: usize| -> chain::Chain {
            let v: Value = serde_json::from_str(lines[n - 1]).unwrap();
            chain::Chain {
                seq: n as u64,
                prev: chain::unhex(v["hash"].as_str().unwrap()).unwrap(),
            }
        };
        head::Head::open(&head_path(&dir))
            .unwrap()
            .0
            .store(&at(4))
            .unwrap();
        write_records(&config, &dir, 1).await;
        assert_eq!(chain::verify(std::slice::from_ref(&path)), Ok(7));
        // The last three records removed while it was stopped: the agent records it and goes
        // on from the head, and verifying fails there.
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, kept).unwrap();
        write_records(&config, &dir, 2).await;
        let recs: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs[4]["kind"], "audit");
        assert_eq!(recs[4]["event"], chain::HEAD_MISMATCH);
        assert_eq!(recs[4]["log"]["seq"], 4);
        assert_eq!(recs[4]["head"]["seq"], 7);
        assert_eq!(recs[4]["seq"], 8, "numbers are never used twice");
        let e = chain::verify(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.why
                .contains("ended at record 4 but its chain head named record 7"),
            "{e}"
        );
        // The last record replaced by a forged one (valid hash) while it was stopped: recorded
        // too, though the chain in the file is whole.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let last = lines.pop().unwrap();
        let v: Value = serde_json::from_str(&last).unwrap();
        let mut c = chain::Chain {
            seq: v["seq"].as_u64().unwrap() - 1,
            prev: chain::unhex(v["prev"].as_str().unwrap()).unwrap(),
        };
        let mut forged = Vec::new();
        write_line(
            &mut forged,
            &mut c,
            SystemTime::now(),
            "request",
            br#"{"forged":true}"#,
        )
        .unwrap();
        lines.push(String::from_utf8(forged).unwrap().trim_end().to_string());
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        write_records(&config, &dir, 1).await;
        let recs: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let notice = &recs[recs.len() - 2];
        assert_eq!(notice["event"], chain::HEAD_MISMATCH, "{notice}");
        assert_eq!(
            notice["prev"],
            recs[recs.len() - 3]["hash"],
            "goes on from the log"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_device_is_written_to_but_never_rotated() {
        let dir = std::env::temp_dir().join(format!("moat-devnull-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = file_config(Path::new("/dev/null"), Some(4096));
        write_records(&config, &dir, 100).await;
        use std::os::unix::fs::FileTypeExt as _;
        let null = std::fs::metadata("/dev/null").unwrap();
        assert!(
            null.file_type().is_char_device(),
            "/dev/null is still the device"
        );
        let moved: Vec<_> = std::fs::read_dir("/dev")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("null."))
            .collect();
        assert!(moved.is_empty(), "{moved:?}");
        let head = std::fs::read_to_string(head_path(&dir)).unwrap();
        assert!(head.starts_with("00000000000000000100 "), "{head}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_older_than_max_age_is_rotated_at_its_next_record() {
        let dir = std::env::temp_dir().join(format!("moat-age-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let live = dir.join("audit.jsonl");
        let mut config = file_config(&live, None);
        if let crate::config::AuditSink::File(f) = &mut config.sink {
            f.max_age = Some(std::time::Duration::from_secs(1));
        }
        write_records(&config, &dir, 3).await;
        assert_eq!(
            files_in(&dir),
            std::slice::from_ref(&live),
            "young: not rotated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        write_records(&config, &dir, 2).await;
        let files = files_in(&dir);
        assert_eq!(files.len(), 2, "{files:?}");
        // 3 records; then the rotation notice and 2 records in the new file.
        assert_eq!(chain::verify(&files), Ok(6));
        assert_eq!(files[0], dir.join("audit.000000000003.jsonl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
