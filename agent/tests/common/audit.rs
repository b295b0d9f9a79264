//! The audit records a test reads: whole lines of the audit file, parsed.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::Host;

/// The records of one audit stream (a file, or what a collector kept): its whole lines, each
/// of which must be a JSON record (a last line without its newline is still being written).
/// None yet if the file does not exist.
pub fn records_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path:?}: {e}: {l}")))
        .collect()
}

impl Host {
    /// The audit records of `kind: request`.
    pub fn request_records(&self) -> Vec<Value> {
        self.audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "request")
            .collect()
    }

    /// Audit records, parsed.
    pub fn audit_records(&self) -> Vec<Value> {
        records_in(&self.audit)
    }

    /// Waits until an audit record matches `pred` (records are written asynchronously).
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.audit_records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no audit record {what} in:\n{}",
                std::fs::read_to_string(&self.audit).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
