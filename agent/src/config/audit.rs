//! The `audit:` section: where records go (a rotated file, standard output or syslog), how
//! durable they are, what happens when they cannot be written, and what is redacted.
use std::{path::PathBuf, time::Duration};

use super::{
    values::{absolute_path, string_list},
    yaml::{Node, Report},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub sink: Sink,
    /// When the sink cannot be written: refuse requests (default) or drop records.
    pub on_failure: OnFailure,
    /// Argument keys (case-insensitive substrings) redacted besides the built-in ones.
    pub redact_keys: Vec<String>,
    /// Value patterns (name, regex) redacted besides the built-in detectors.
    pub redact_patterns: Vec<(String, String)>,
}

/// What happens to requests and records when the audit log cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Requests are refused (503) until records can be written again; none is lost.
    #[default]
    FailClosed,
    /// Requests go on; records that cannot be written are counted and dropped.
    Drop,
}

/// Where records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    File(FileSink),
    /// One JSON line per record on standard output (journald, container logs).
    Stdout,
    /// RFC 5424 messages over a unix socket (datagram or stream).
    Syslog {
        socket: PathBuf,
        facility: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    pub path: PathBuf,
    pub fsync: Fsync,
    /// Rotate when the file reaches this size (bytes).
    pub max_bytes: Option<u64>,
    /// Rotate when the file is this old.
    pub max_age: Option<Duration>,
}

/// When written records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Within 50 ms of being written, and as soon as records stop coming (group commit).
    Batch,
    /// Left to the kernel.
    Off,
}

const DEFAULT_PATH: &str = "/var/log/moat/audit.jsonl";
const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
const SYSLOG_SOCKET: &str = "/dev/log";
/// local0
const SYSLOG_FACILITY: u8 = 16;

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(s) => write!(f, "{}", s.path.display()),
            Self::Stdout => f.write_str("standard output"),
            Self::Syslog { socket, .. } => write!(f, "syslog socket {}", socket.display()),
        }
    }
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            sink: Sink::File(FileSink::default()),
            on_failure: OnFailure::FailClosed,
            redact_keys: Vec::new(),
            redact_patterns: Vec::new(),
        }
    }
}

impl Default for FileSink {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.into(),
            fsync: Fsync::Batch,
            max_bytes: Some(DEFAULT_MAX_BYTES),
            max_age: None,
        }
    }
}

const FILE_KEYS: [&str; 3] = ["path", "fsync", "rotate"];

pub(super) fn read_audit(n: &Node<'_>, r: &mut Report) -> Option<Audit> {
    let m = n.mapping(
        &[
            "sink",
            "path",
            "fsync",
            "rotate",
            "syslog",
            "on_failure",
            "redact",
        ],
        r,
    )?;
    let mut a = Audit::default();
    let kind = match m.get("sink") {
        Some(v) => {
            let s = v.string(r)?;
            if !matches!(s.as_str(), "file" | "stdout" | "syslog") {
                r.add(
                    v,
                    format!("expected `file`, `stdout` or `syslog`, found {s:?}"),
                );
                return None;
            }
            s
        }
        None => "file".to_string(),
    };
    // Keys that belong to another sink are mistakes, not silently ignored.
    let mut misplaced = |keys: &[&str], sink: &str| {
        for k in keys {
            if let Some(v) = m.get(k) {
                r.add(v, format!("only for `sink: {sink}` (this sink is {kind})"));
            }
        }
    };
    match kind.as_str() {
        "file" => misplaced(&["syslog"], "syslog"),
        "syslog" => misplaced(&FILE_KEYS, "file"),
        _ => {
            misplaced(&FILE_KEYS, "file");
            misplaced(&["syslog"], "syslog");
        }
    }
    a.sink = match kind.as_str() {
        "file" => Sink::File(read_file_sink(&m, r)?),
        "stdout" => Sink::Stdout,
        _ => read_syslog(m.get("syslog"), r)?,
    };
    if let Some(v) = m.get("redact") {
        let rm = v.mapping(&["keys", "patterns"], r)?;
        a.redact_keys = string_list(rm.get("keys"), r)?;
        for item in rm
            .get("patterns")
            .map(|p| p.sequence(r))
            .unwrap_or_default()
        {
            let pm = item.mapping(&["name", "pattern"], r)?;
            let name = pm.require("name", r).and_then(|n| n.string(r));
            let pattern = pm.require("pattern", r).and_then(|p| {
                let s = p.string(r)?;
                match regex::Regex::new(&s) {
                    Ok(_) => Some(s),
                    Err(e) => {
                        r.add(p, format!("not a valid pattern: {e}"));
                        None
                    }
                }
            });
            a.redact_patterns.push((name?, pattern?));
        }
    }
    if let Some(v) = m.get("on_failure") {
        a.on_failure = match v.string(r)?.as_str() {
            "fail_closed" => OnFailure::FailClosed,
            "drop" => OnFailure::Drop,
            other => {
                r.add(
                    v,
                    format!("expected `fail_closed` or `drop`, found {other:?}"),
                );
                return None;
            }
        };
    }
    Some(a)
}

fn read_file_sink(m: &super::yaml::Mapping<'_>, r: &mut Report) -> Option<FileSink> {
    let mut f = FileSink::default();
    if let Some(v) = m.get("path") {
        f.path = absolute_path(v, r)?;
    }
    let fsync = match m.get("fsync") {
        Some(v) => match v.string(r)?.as_str() {
            "batch" => Some(Fsync::Batch),
            "off" => Some(Fsync::Off),
            other => {
                r.add(v, format!("expected `batch` or `off`, found {other:?}"));
                None
            }
        },
        None => Some(f.fsync),
    };
    if let Some(v) = m.get("rotate") {
        let rm = v.mapping(&["max_bytes", "max_age_s"], r)?;
        // Given, a rotate section says exactly when to rotate: no default size applies.
        f.max_bytes = None;
        let max_bytes = match rm.get("max_bytes") {
            Some(b) => match b.integer(r)? {
                i if i >= 4096 => Some(Some(i as u64)),
                i => {
                    r.add(b, format!("expected at least 4096 (bytes), found {i}"));
                    None
                }
            },
            None => Some(None),
        };
        let max_age = match rm.get("max_age_s") {
            Some(s) => match s.integer(r)? {
                i if i >= 1 => Some(Some(Duration::from_secs(i as u64))),
                i => {
                    r.add(s, format!("expected at least 1 (seconds), found {i}"));
                    None
                }
            },
            None => Some(None),
        };
        (f.max_bytes, f.max_age) = (max_bytes?, max_age?);
    }
    f.fsync = fsync?;
    Some(f)
}

fn read_syslog(v: Option<&Node<'_>>, r: &mut Report) -> Option<Sink> {
    let mut socket = PathBuf::from(SYSLOG_SOCKET);
    let mut facility = SYSLOG_FACILITY;
    if let Some(v) = v {
        let m = v.mapping(&["socket", "facility"], r)?;
        if let Some(s) = m.get("socket") {
            socket = absolute_path(s, r)?;
        }
        if let Some(f) = m.get("facility") {
            let name = f.string(r)?;
            facility = match facility_code(&name) {
                Some(c) => c,
                None => {
                    r.add(
                        f,
                        format!("expected a syslog facility (`local0`..`local7`, `user`, `daemon`, `auth`, `authpriv`), found {name:?}"),
                    );
                    return None;
                }
            };
        }
    }
    Some(Sink::Syslog { socket, facility })
}

fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "authpriv" => 10,
        _ => match name.strip_prefix("local")?.parse::<u8>().ok()? {
            n @ 0..=7 => 16 + n,
            _ => return None,
        },
    })
}
