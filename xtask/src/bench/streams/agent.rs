//! What the agent holds and spends, as `bench streams` reads it: its resident memory and CPU
//! time from /proc, and its connection counters from its metrics endpoint (read inside the
//! lab's namespace).
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use nix::unistd::{SysconfVar, sysconf};

use crate::{Result, host::Lab};

/// Where the agent serves its metrics (the default `agent.admin_listen`), in the lab.
const ADMIN: &str = "127.0.0.1:9901";

/// VmRSS of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time of a process: utime + stime (all its threads, also those that ended; in clock
/// ticks) and the run time of its live threads (/proc/PID/task/*/schedstat, in ns).
#[derive(Clone, Copy)]
pub struct Cpu {
    ticks_us: f64,
    run_us: f64,
}

impl Cpu {
    pub fn of(pid: u32) -> Option<Self> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name in parentheses: utime is field 14, stime 15.
        let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let mut run_ns = 0u64;
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            run_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        Some(Self {
            ticks_us: ticks * 1e6 / hz,
            run_us: run_ns as f64 / 1e3,
        })
    }

    /// µs spent since `before`: the threads' run time (precise), unless utime + stime says
    /// more by over two ticks (a thread ended meanwhile, its time gone from the run time).
    pub fn since(self, before: Self) -> f64 {
        let (ticks, run) = (self.ticks_us - before.ticks_us, self.run_us - before.run_us);
        let tick = 1e6 / sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        if ticks > run + 2.0 * tick { ticks } else { run }
    }
}

/// The agent's open-file limit, and how many connections it leaves room for within
/// `max_connections`: two descriptors each, 512 kept for the rest (README, "Connection limits").
pub fn room(pid: u32, max_connections: usize) -> Option<(u64, usize)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let room = (soft.saturating_sub(512) / 2).min(max_connections as u64) as usize;
    Some((soft, room))
}

/// The connection counters of the agent's metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// `moat_connections_open`.
    pub open: f64,
    /// `moat_connections_refused_total{reason="total"}`.
    pub refused_total: f64,
    /// `moat_connections_refused_total{reason="per_source"}`.
    pub refused_per_source: f64,
}

/// Reads the counters from /metrics.
pub fn counters(lab: &Lab) -> Result<Counters> {
    let text = lab.in_ns(metrics)?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Counters {
        open: value("moat_connections_open "),
        refused_total: value("moat_connections_refused_total{reason=\"total\"}"),
        refused_per_source: value("moat_connections_refused_total{reason=\"per_source\"}"),
    })
}

fn metrics() -> Result<String> {
    let fail = |e: std::io::Error| format!("{ADMIN}/metrics: {e}");
    let mut s = TcpStream::connect(ADMIN).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(fail)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(fail)?;
    Ok(text)
}
