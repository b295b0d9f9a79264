//! What the processes of `bench proxy` spend: CPU time, context switches and memory from /proc
//! and getrusage, and the records and bytes of the agent's audit log.
use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use nix::{
    fcntl::{FallocateFlags, fallocate},
    sys::resource::{UsageWho, getrusage},
    unistd::{SysconfVar, sysconf},
};

/// What a process (the agent, HAProxy) spent, from /proc: CPU time (µs) in user and system
/// mode, and the context switches of all its threads.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    user_us: f64,
    sys_us: f64,
    switches: u64,
}

impl Usage {
    /// What process `pid` spends now, totalled since it started.
    pub fn of(pid: u32) -> Option<Self> {
        let (user_us, sys_us) = proc_cpu_split_us(format!("/proc/{pid}/stat"))?;
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for l in status.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        Some(Self {
            user_us,
            sys_us,
            switches,
        })
    }

    /// What was spent from `before` to `self`, divided by `requests` (at least 1).
    pub fn per_request(self, before: Self, requests: u64) -> PerRequest {
        let per = |x: f64| x / requests.max(1) as f64;
        PerRequest {
            cpu_us: per(self.user_us + self.sys_us - before.user_us - before.sys_us),
            user_us: per(self.user_us - before.user_us),
            sys_us: per(self.sys_us - before.sys_us),
            switches: per(self.switches.saturating_sub(before.switches) as f64),
        }
    }
}

/// What a process spent per request: CPU time (user + system, and each), context switches.
#[derive(Clone, Copy)]
pub struct PerRequest {
    pub cpu_us: f64,
    pub user_us: f64,
    pub sys_us: f64,
    pub switches: f64,
}

impl PerRequest {
    pub const UNKNOWN: Self = Self {
        cpu_us: f64::NAN,
        user_us: f64::NAN,
        sys_us: f64::NAN,
        switches: f64::NAN,
    };
}

/// utime + stime of a process or thread, in µs, from its /proc stat file.
pub fn proc_cpu_us(stat: impl AsRef<Path>) -> Option<f64> {
    proc_cpu_split_us(stat).map(|(u, s)| u + s)
}

/// utime and stime of a process or thread, in µs, from its /proc stat file.
fn proc_cpu_split_us(stat: impl AsRef<Path>) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let us = |i: usize| Some(f.get(i)?.parse::<f64>().ok()? * 1e6 / hz);
    Some((us(11)?, us(12)?))
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU time of the waited-for children (here: wrk), in µs.
pub fn children_cpu_us() -> f64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(f64::NAN, |u| {
        let (a, b) = (u.user_time(), u.system_time());
        (a.tv_sec() + b.tv_sec()) as f64 * 1e6 + (a.tv_usec() + b.tv_usec()) as f64
    })
}

/// The audit log's records and bytes, counted after each proxied round. What was counted is
/// freed (a hole punched in the file: the agent appends with O_APPEND, after it), so the file
/// takes no disk space however long the bench runs, and no record written meanwhile is lost
/// to the count.
#[derive(Default)]
pub struct Audit {
    /// The bytes of the file counted so far.
    offset: AtomicU64,
    records: AtomicU64,
    requests: AtomicU64,
}

pub struct AuditTotal {
    pub records: u64,
    /// Records of `kind: request` (one per HTTP request).
    pub requests: u64,
    pub bytes: u64,
}

impl Audit {
    pub fn collect(&self, path: &Path) {
        // Let the writer catch up with the round's last records.
        std::thread::sleep(Duration::from_millis(50));
        let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        else {
            return;
        };
        let from = self.offset.load(Ordering::Relaxed);
        let mut data = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut data).is_err() {
            return;
        }
        // Whole records only: one being written is counted next time.
        let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let (mut records, mut requests) = (0, 0);
        for line in data[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            records += 1;
            // `kind` follows `ts` and `seq`.
            let head = &line[..line.len().min(96)];
            if head.windows(REQUEST.len()).any(|w| w == REQUEST) {
                requests += 1;
            }
        }
        self.records.fetch_add(records, Ordering::Relaxed);
        self.requests.fetch_add(requests, Ordering::Relaxed);
        let offset = from + end as u64;
        self.offset.store(offset, Ordering::Relaxed);
        let _ = fallocate(
            &f,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            offset as i64,
        );
    }

    /// Records of `kind: request` counted so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn finish(&self, path: &Path) -> AuditTotal {
        self.collect(path);
        let _ = std::fs::remove_file(path);
        AuditTotal {
            records: self.records.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.offset.load(Ordering::Relaxed),
        }
    }
}

const REQUEST: &[u8] = br#""kind":"request""#;
