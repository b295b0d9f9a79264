//! The audit writer thread: seals records into the chain and hands them to the sink, a batch
//! at a time. When the sink cannot be written (disk full, permissions, collector gone), what is
//! not written is kept and tried again; meanwhile, under `fail_closed`, the proxy refuses
//! requests (the log says when writes fail and when they resume). Under `drop`, unwritten
//! records are counted, and a record saying how many were lost is written first when writes
//! resume (the chain shows the gap). A file due for rotation is rotated between batches, and
//! the new file starts with a record naming the old one.
use std::{
    io::{self, Write as _},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::{chain::Chain, head::Head, sink::Sink};
use crate::config::OnFailure;

/// How many records the queue to the writer holds.
pub const QUEUE: usize = 4096;

/// What the writer is sent.
pub enum Msg {
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

/// Records written and lost so far (for metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// While records keep coming, the writer looks for them this often instead of being woken for
/// each one: a wake-up costs more than the record (a context switch per request, on a small
/// machine a good part of what the proxy spends on a request).
const POLL: Duration = Duration::from_millis(1);
/// How often writing is tried again while it fails.
const RETRY: Duration = Duration::from_millis(100);
/// How often rotating is tried again after it failed.
const ROTATION_RETRY: Duration = Duration::from_secs(10);
/// Unwritten records kept under `fail_closed` at most (bytes); beyond, they are dropped and
/// counted rather than exhaust memory.
const MAX_PENDING: usize = 64 * 1024 * 1024;

pub struct Writer {
    pub sink: Sink,
    /// The sink, for logs.
    pub name: String,
    /// Where the chain's head is kept between runs.
    pub head: Option<Head>,
    pub chain: Chain,
    pub on_failure: OnFailure,
    /// False while writes fail.
    pub healthy: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// Sealed lines not yet written.
    pending: Vec<u8>,
    /// Records lost (under `drop`, or beyond MAX_PENDING) since the last notice.
    dropped: u64,
    waiters: Vec<oneshot::Sender<()>>,
    line: Vec<u8>,
    /// When a rotation last failed (logged once until one succeeds; tried again after
    /// ROTATION_RETRY).
    rotation_failed: Option<Instant>,
}

impl Writer {
    pub fn new(
        sink: Sink,
        name: String,
        head: Option<Head>,
        chain: Chain,
        on_failure: OnFailure,
        healthy: Arc<AtomicBool>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            sink,
            name,
            head,
            chain,
            on_failure,
            healthy,
            stats,
            pending: Vec::new(),
            dropped: 0,
            waiters: Vec::new(),
            line: Vec::with_capacity(1024),
            rotation_failed: None,
        }
    }

    /// Writes records as they come. It blocks on the queue while idle; once a record comes it
    /// polls every POLL until a poll finds the queue empty and nothing is left to write.
    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch = Vec::with_capacity(256);
        while rx.blocking_recv_many(&mut batch, 256) > 0 {
            loop {
                self.take(&mut batch);
                self.write(false);
                std::thread::sleep(if self.pending.is_empty() { POLL } else { RETRY });
                while batch.len() < QUEUE {
                    match rx.try_recv() {
                        Ok(msg) => batch.push(msg),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() && self.pending.is_empty() {
                    // Idle: what was written goes to disk now.
                    self.write(true);
                    break;
                }
            }
        }
        // The agent is stopping: one last try.
        self.write(true);
        let left = records(&self.pending);
        if left > 0 {
            tracing::error!(sink = %self.name, records = left, "audit records could not be written before the agent stopped");
        }
    }

    /// Seals the batch's records into `pending`, first a notice of records lost, if any.
    fn take(&mut self, batch: &mut Vec<Msg>) {
        if self.dropped > 0 && self.pending.is_empty() {
            let notice = serde_json::json!({"event": "records_dropped", "count": self.dropped});
            self.dropped = 0;
            self.push(SystemTime::now(), "audit", notice.to_string().as_bytes());
        }
        for msg in batch.drain(..) {
            match msg {
                Msg::Record { ts, kind, fields } => {
                    self.rotate_if_due();
                    let object = serde_json::to_vec(&fields).unwrap_or_else(|_| b"{}".to_vec());
                    self.push(ts, kind, &object);
                }
                Msg::Serialized { ts, kind, object } => {
                    self.rotate_if_due();
                    self.push(ts, kind, &object)
                }
                Msg::Flush(done) => self.waiters.push(done),
            }
        }
    }

    fn push(&mut self, ts: SystemTime, kind: &str, object: &[u8]) {
        if write_line(&mut self.line, &mut self.chain, ts, kind, object).is_ok() {
            self.pending.extend_from_slice(&self.line);
        }
    }

    /// Writes what is pending (and forces it to disk now, with `sync_now`, or when due) and
    /// answers flushes.
    fn write(&mut self, sync_now: bool) {
        self.write_pending(sync_now);
        // A flush waits for one attempt, not for the sink to recover.
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// Before a record is sealed: if the file is due for rotation, writes what is pending,
    /// rotates, and starts the new file with a record naming the old one. (A record sealed
    /// is in the chain, so this is decided record by record, not after a batch.)
    fn rotate_if_due(&mut self) {
        if !self.sink.rotation_due(self.pending.len() as u64)
            || self
                .rotation_failed
                .is_some_and(|t| t.elapsed() < ROTATION_RETRY)
        {
            return;
        }
        self.write_pending(true);
        if !self.pending.is_empty() {
            return;
        }
        match self.sink.rotate(self.chain.seq) {
            Ok(old) => {
                self.rotation_failed = None;
                let name = old.file_name().unwrap_or_default().to_string_lossy();
                let notice = serde_json::json!({"event": "rotated", "previous": name});
                self.push(SystemTime::now(), "audit", notice.to_string().as_bytes());
            }
            Err(e) => {
                if self.rotation_failed.replace(Instant::now()).is_none() {
                    tracing::error!(sink = %self.name, "cannot rotate the audit log: {e}; writing on to the same file");
                }
            }
        }
    }

    /// Writes what is pending; on failure applies the policy.
    fn write_pending(&mut self, sync_now: bool) {
        let before = records(&self.pending);
        let mut result = self.sink.write(&mut self.pending);
        let lost = self.sink.take_lost();
        let written = before - records(&self.pending) - lost;
        self.stats.written.fetch_add(written, Ordering::Relaxed);
        self.count_dropped(lost);
        if result.is_ok() {
            result = self.sink.sync(sync_now);
        }
        match result {
            Ok(()) => {
                // The head names only what is written and durable: never ahead of the log.
                if let Some(head) = &mut self.head
                    && self.pending.is_empty()
                    && self.sink.durable()
                    && let Err(e) = head.store(&self.chain)
                {
                    tracing::warn!("cannot save the audit chain head: {e}");
                }
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!(sink = %self.name, "audit writes resumed");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    let then = match self.on_failure {
                        OnFailure::FailClosed => "requests are refused until it can be written",
                        OnFailure::Drop => "records are dropped and counted",
                    };
                    tracing::error!(sink = %self.name, "cannot write the audit log: {e}; {then}");
                }
                if self.on_failure == OnFailure::Drop || self.pending.len() > MAX_PENDING {
                    self.count_dropped(records(&self.pending));
                    self.pending.clear();
                    self.sink.discarded();
                }
            }
        }
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// Records in `pending`: each ends with a newline (the first may have been written in part).
fn records(pending: &[u8]) -> u64 {
    pending.iter().filter(|&&b| b == b'\n').count() as u64
}

/// One record as a JSON line: `ts`, `seq` and `kind` first, then the fields of `object` (one
/// serialized JSON object, which must not itself hold `ts`, `seq`, `kind`, `prev` or `hash`),
/// then `prev` and `hash` (the chain). `line` is scratch space.
pub fn write_line(
    line: &mut Vec<u8>,
    chain: &mut Chain,
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
