//! The audit writer thread: seals records into the chain and appends them to the file, a
//! batch at a time. When the file cannot be written (disk full, permissions), what is not
//! written is kept and tried again; meanwhile, under `fail_closed`, the proxy refuses
//! requests (the log says when writes fail and when they resume). Under `drop`, unwritten
//! records are counted, and a record saying how many were lost is written first when writes
//! resume (the chain shows the gap).
use std::{
    fs::File,
    io::{self, Write as _},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, oneshot};

use super::{Msg, QUEUE, Stats, chain::Chain, write_line};

/// What happens to requests and records when the audit log cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Requests are refused (503) until records can be written again; none is lost.
    #[default]
    FailClosed,
    /// Requests go on; records that cannot be written are counted and dropped.
    Drop,
}

/// While records keep coming, the writer looks for them this often instead of being woken for
/// each one: a wake-up costs more than the record (a context switch per request, on a small
/// machine a good part of what the proxy spends on a request).
const POLL: Duration = Duration::from_millis(1);
/// How often writing is tried again while it fails.
const RETRY: Duration = Duration::from_millis(100);
/// Unwritten records kept under `fail_closed` at most (bytes); beyond, they are dropped and
/// counted rather than exhaust memory.
const MAX_PENDING: usize = 64 * 1024 * 1024;

pub struct Writer {
    pub file: File,
    pub path: PathBuf,
    pub chain: Chain,
    pub on_failure: OnFailure,
    /// False while writes fail.
    pub healthy: Arc<AtomicBool>,
    stats: Arc<Stats>,
    /// Sealed lines not yet written.
    pending: Vec<u8>,
    pending_records: u64,
    /// Records lost (under `drop`, or beyond MAX_PENDING) since the last notice.
    dropped: u64,
    /// The file ends in the middle of a line (a write failed part way).
    mid_line: bool,
    /// ... and the rest of that line was dropped: the next write starts a new line.
    cut_line: bool,
    waiters: Vec<oneshot::Sender<()>>,
    line: Vec<u8>,
}

impl Writer {
    pub fn new(
        file: File,
        path: PathBuf,
        chain: Chain,
        on_failure: OnFailure,
        healthy: Arc<AtomicBool>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            file,
            path,
            chain,
            on_failure,
            healthy,
            stats,
            pending: Vec::new(),
            pending_records: 0,
            dropped: 0,
            mid_line: false,
            cut_line: false,
            waiters: Vec::new(),
            line: Vec::with_capacity(1024),
        }
    }

    /// Writes records as they come. It blocks on the queue while idle; once a record comes it
    /// polls every POLL until a poll finds the queue empty and nothing is left to write.
    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch = Vec::with_capacity(256);
        while rx.blocking_recv_many(&mut batch, 256) > 0 {
            loop {
                self.take(&mut batch);
                self.write();
                std::thread::sleep(if self.pending.is_empty() { POLL } else { RETRY });
                while batch.len() < QUEUE {
                    match rx.try_recv() {
                        Ok(msg) => batch.push(msg),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() && self.pending.is_empty() {
                    break;
                }
            }
        }
        // The agent is stopping: one last try.
        self.write();
        if self.pending_records > 0 {
            tracing::error!(path = %self.path.display(), records = self.pending_records, "audit records could not be written before the agent stopped");
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
                    let object = serde_json::to_vec(&fields).unwrap_or_else(|_| b"{}".to_vec());
                    self.push(ts, kind, &object);
                }
                Msg::Serialized { ts, kind, object } => self.push(ts, kind, &object),
                Msg::Flush(done) => self.waiters.push(done),
            }
        }
    }

    fn push(&mut self, ts: SystemTime, kind: &str, object: &[u8]) {
        if write_line(&mut self.line, &mut self.chain, ts, kind, object).is_ok() {
            self.pending.extend_from_slice(&self.line);
            self.pending_records += 1;
        }
    }

    /// Writes what is pending; on failure applies the policy.
    fn write(&mut self) {
        if self.cut_line && !self.pending.is_empty() {
            // The half line a failure left, whose rest was dropped, ends here; the next record
            // starts clean.
            self.pending.insert(0, b'\n');
            self.cut_line = false;
        }
        let result = loop {
            if self.pending.is_empty() {
                break Ok(());
            }
            match self.file.write(&self.pending) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.mid_line = self.pending[n - 1] != b'\n';
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.stats
                    .written
                    .fetch_add(self.pending_records, Ordering::Relaxed);
                self.pending_records = 0;
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), "audit writes resumed");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    let then = match self.on_failure {
                        OnFailure::FailClosed => "requests are refused until it can be written",
                        OnFailure::Drop => "records are dropped and counted",
                    };
                    tracing::error!(path = %self.path.display(), "cannot write the audit log: {e}; {then}");
                }
                if self.on_failure == OnFailure::Drop || self.pending.len() > MAX_PENDING {
                    self.dropped += self.pending_records;
                    self.stats
                        .dropped
                        .fetch_add(self.pending_records, Ordering::Relaxed);
                    self.pending_records = 0;
                    self.pending.clear();
                    self.cut_line |= self.mid_line;
                }
            }
        }
        // A flush waits for one attempt, not for the disk to recover.
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}
