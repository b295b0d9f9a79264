//! One stage of `bench streams`: N streams through one target, opened, held (idle, then with
//! events), probed at capacity when N reaches the limit, and closed, with what the agent holds
//! and spends at each step.
use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{agent, control::Helper};
use crate::{Result, host::Lab};

/// After opening or closing, before reading memory.
const SETTLE: Duration = Duration::from_secs(2);
/// Memory is read again this long after the streams closed.
const LATER: Duration = Duration::from_secs(10);
/// Held with events off, for the agent's idle CPU.
const IDLE: Duration = Duration::from_secs(10);
/// Connections beyond the limit in the capacity probe.
pub const BEYOND: usize = 100;

/// What a stage runs against.
pub struct Stage<'a> {
    pub lab: &'a Lab,
    /// The agent (None: the streams go to the upstream directly).
    pub agent: Option<u32>,
    pub client: &'a mut Helper,
    pub upstream: &'a mut Helper,
    /// Events flow this long (after a period's warm-up) for CPU per event and latency.
    pub measure: Duration,
    pub period: Duration,
    /// `agent.max_connections`: a stage of that many streams is probed beyond it.
    pub limit: usize,
}

/// What one stage measured. Memory in KiB, CPU in µs, latency in ms.
#[derive(Default)]
pub struct Row {
    pub target: String,
    pub asked: usize,
    pub opened: u64,
    /// Why streams could not be opened, and how many.
    pub failed: Value,
    pub open_s: f64,
    /// Streams the client held at the end, and that ended while held (and why).
    pub held: u64,
    pub ended: Value,
    /// Streams the upstream had open while held, and 2 s after the close.
    pub upstream_held: u64,
    pub upstream_after: u64,
    pub rss_before: Option<u64>,
    pub rss_held: Option<u64>,
    pub rss_after_2s: Option<u64>,
    pub rss_after_10s: Option<u64>,
    /// Agent CPU per second with events off (ms/s).
    pub idle_cpu_ms_s: Option<f64>,
    pub events: u64,
    pub cpu_us_per_event: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// `moat_connections_open` while held and 2 s after the close.
    pub conns_held: Option<f64>,
    pub conns_after: Option<f64>,
    pub capacity: Option<Capacity>,
    /// The agent's open-file limit, and the connections it leaves room for.
    pub room: Option<(u64, usize)>,
}

/// The capacity probe: BEYOND connections with `limit` held.
pub struct Capacity {
    /// The client's answer (refused, how, how fast, answered, hung).
    pub probe: Value,
    /// `moat_connections_refused_total` grew by this much (reason total, and per source).
    pub counted_total: f64,
    pub counted_per_source: f64,
}

impl Row {
    /// Held memory per held stream, in KiB.
    pub fn per_stream_kib(&self) -> Option<f64> {
        let (b, h) = (self.rss_before?, self.rss_held?);
        (self.held > 0).then(|| (h as f64 - b as f64) / self.held as f64)
    }
}

impl Stage<'_> {
    pub fn run(&mut self, target: &str, n: usize) -> Result<Row> {
        let mut row = Row {
            target: target.into(),
            asked: n,
            rss_before: self.rss(),
            room: self.agent.and_then(|pid| agent::room(pid, self.limit)),
            ..Row::default()
        };
        self.upstream.ask("events off")?;
        let opened = self.client.ask(&format!("open {n}"))?;
        row.opened = opened["opened"].as_u64().unwrap_or(0);
        row.failed = opened["failed"].clone();
        row.open_s = opened["ms"].as_f64().unwrap_or(0.0) / 1e3;
        sleep(SETTLE);
        row.upstream_held = self.upstream.ask("stats")?["streams"].as_u64().unwrap_or(0);

        // Held, idle.
        let (c0, t0) = (self.cpu(), Instant::now());
        sleep(IDLE);
        row.idle_cpu_ms_s = self
            .cpu()
            .zip(c0)
            .map(|(c1, c0)| c1.since(c0) / 1e3 / t0.elapsed().as_secs_f64());

        // Held, with events: a period to warm up, then measured.
        self.upstream.ask("events on")?;
        sleep(self.period);
        self.client.ask("stats")?;
        let c0 = self.cpu();
        sleep(self.measure);
        let c1 = self.cpu();
        let got = self.client.ask("stats")?;
        self.upstream.ask("events off")?;
        row.events = got["events"].as_u64().unwrap_or(0);
        row.cpu_us_per_event = c1
            .zip(c0)
            .filter(|_| row.events > 0)
            .map(|(c1, c0)| c1.since(c0) / row.events as f64);
        row.p50_ms = got["p50_ms"].as_f64().unwrap_or(f64::NAN);
        row.p99_ms = got["p99_ms"].as_f64().unwrap_or(f64::NAN);
        row.max_ms = got["max_ms"].as_f64().unwrap_or(f64::NAN);
        row.rss_held = self.rss();
        row.conns_held = self.counters().map(|c| c.open);

        if self.agent.is_some() && n >= self.limit {
            let before = agent::counters(self.lab)?;
            let probe = self.client.ask(&format!("probe {BEYOND}"))?;
            let after = agent::counters(self.lab)?;
            row.capacity = Some(Capacity {
                probe,
                counted_total: after.refused_total - before.refused_total,
                counted_per_source: after.refused_per_source - before.refused_per_source,
            });
        }

        let still = self.client.ask("stats")?;
        row.held = still["held"].as_u64().unwrap_or(0);
        row.ended = still["ended"].clone();
        self.client.ask("close")?;
        let closed = Instant::now();
        sleep(SETTLE);
        row.rss_after_2s = self.rss();
        row.upstream_after = self.upstream.ask("stats")?["streams"].as_u64().unwrap_or(0);
        row.conns_after = self.counters().map(|c| c.open);
        sleep(LATER.saturating_sub(closed.elapsed()));
        row.rss_after_10s = self.rss();
        Ok(row)
    }

    fn rss(&self) -> Option<u64> {
        agent::rss_kib(self.agent?)
    }

    fn cpu(&self) -> Option<agent::Cpu> {
        agent::Cpu::of(self.agent?)
    }

    fn counters(&self) -> Option<agent::Counters> {
        self.agent.and_then(|_| agent::counters(self.lab).ok())
    }
}
