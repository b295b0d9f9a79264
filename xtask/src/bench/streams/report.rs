//! The report of `bench streams`: a table of the stages, what went wrong in them, the
//! capacity probe, whether the targets were met, and one JSON line with everything.
use serde_json::{Value, json};

use super::stage::{BEYOND, Row};
use crate::bench::stats::{round1, round2};

/// Held memory per stream: at most this (KiB) in plain HTTP, and with TLS.
const TARGET_PLAIN_KIB: f64 = 32.0;
const TARGET_TLS_KIB: f64 = 40.0;
/// Memory counts as given back when, 10 s after the close, the agent holds at most this share
/// of what the streams took.
const TARGET_KEPT: f64 = 0.25;

pub struct Report<'a> {
    pub machine: String,
    /// /proc/loadavg at the start and the end.
    pub load: [String; 2],
    pub period_ms: u64,
    pub measure_s: u64,
    pub rows: &'a [Row],
}

fn mib(k: Option<u64>) -> String {
    k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// The share of what the streams took that the agent still held 10 s after the close.
fn kept(r: &Row) -> Option<f64> {
    let (b, h, a) = (r.rss_before?, r.rss_held?, r.rss_after_10s?);
    (h > b).then(|| (a as f64 - b as f64).max(0.0) / (h - b) as f64)
}

pub fn print(r: &Report) {
    println!(
        "moat bench streams: {}, load {} at the start, {} at the end; one event per stream every {} ms, measured over {} s",
        r.machine, r.load[0], r.load[1], r.period_ms, r.measure_s
    );
    println!(
        "{:<7} {:>6} {:>6} {:>6} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7} | {:>6} {:>6} {:>6}",
        "target",
        "asked",
        "held",
        "failed",
        "open s",
        "RSS MiB",
        "held",
        "KiB/str",
        "+2 s",
        "+10 s",
        "kept",
        "idle ms",
        "CPU µs",
        "p50 ms",
        "p99",
        "max"
    );
    println!(
        "{:<7} {:>6} {:>6} {:>6} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7} |",
        "", "", "", "", "", "before", "", "", "after", "after", "", "per s", "/event"
    );
    for row in r.rows {
        let failed: u64 = row
            .failed
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        println!(
            "{:<7} {:>6} {:>6} {:>6} {:>6.1} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7} | {:>6.2} {:>6.2} {:>6.1}",
            row.target,
            row.asked,
            row.held,
            failed,
            row.open_s,
            mib(row.rss_before),
            mib(row.rss_held),
            opt(row.per_stream_kib(), 1),
            mib(row.rss_after_2s),
            mib(row.rss_after_10s),
            kept(row).map_or("-".into(), |k| format!("{:.0}%", k * 100.0)),
            opt(row.idle_cpu_ms_s, 2),
            opt(row.cpu_us_per_event, 1),
            row.p50_ms,
            row.p99_ms,
            row.max_ms,
        );
    }
    for row in r.rows {
        let label = format!("{} x{}", row.target, row.asked);
        if row.failed.as_object().is_some_and(|m| !m.is_empty()) {
            println!("{label}: not opened: {}", row.failed);
            if let Some((files, room)) = row.room.filter(|&(_, room)| room < row.asked) {
                println!(
                    "{label}: the agent's open-file limit ({files}) leaves room for {room} connections (two descriptors each, 512 kept)"
                );
            }
        }
        if row.ended.as_object().is_some_and(|m| !m.is_empty()) {
            println!("{label}: ended while held: {}", row.ended);
        }
        if row.upstream_held != row.held + ended(row) || row.upstream_after > 0 {
            println!(
                "{label}: the upstream had {} streams open while held, {} 2 s after the close",
                row.upstream_held, row.upstream_after
            );
        }
        if let Some(c) = &row.capacity {
            let p = &c.probe;
            println!(
                "{label}, capacity: {BEYOND} more connections: {} refused ({}; p50 {} ms, max {} ms), answered {}, hung {}; moat_connections_refused_total +{} (total) +{} (per source)",
                p["refused"],
                p["refused_how"],
                p["refused_p50_ms"],
                p["refused_max_ms"],
                p["answered"],
                p["hung"],
                c.counted_total,
                c.counted_per_source,
            );
        }
    }
    targets(r.rows);
    println!("{}", json(r));
}

/// Streams that ended while held.
fn ended(row: &Row) -> u64 {
    row.ended
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

fn targets(rows: &[Row]) {
    for row in rows.iter().filter(|r| r.rss_before.is_some()) {
        let label = format!("{} x{}", row.target, row.asked);
        let limit = if row.target == "https" {
            TARGET_TLS_KIB
        } else {
            TARGET_PLAIN_KIB
        };
        let all = row.held == row.asked as u64;
        let per = row.per_stream_kib();
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "target {label}: all held {}; at most {limit} KiB per stream {} ({}); memory given back {} ({} kept 10 s after)",
            met(all),
            met(per.is_some_and(|p| p <= limit)),
            opt(per, 1),
            met(kept(row).is_some_and(|k| k <= TARGET_KEPT)),
            kept(row).map_or("-".into(), |k| format!("{:.0}%", k * 100.0)),
        );
        if let Some(c) = &row.capacity {
            let p = &c.probe;
            let refused = p["refused"].as_u64() == Some(BEYOND as u64);
            let none_hung = p["hung"].as_u64() == Some(0);
            println!(
                "target {label}: beyond the limit refused at once {}; counted {}",
                met(refused && none_hung),
                met(c.counted_total >= BEYOND as f64),
            );
        }
    }
}

fn json(r: &Report) -> Value {
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            json!({
                "target": row.target,
                "asked": row.asked,
                "opened": row.opened,
                "failed": row.failed,
                "open_s": round2(row.open_s),
                "held": row.held,
                "ended": row.ended,
                "upstream_held": row.upstream_held,
                "upstream_after_close": row.upstream_after,
                "rss_kib": {
                    "before": row.rss_before,
                    "held": row.rss_held,
                    "after_2s": row.rss_after_2s,
                    "after_10s": row.rss_after_10s,
                },
                "kib_per_stream": row.per_stream_kib().map(round2),
                "idle_cpu_ms_per_s": row.idle_cpu_ms_s.map(round2),
                "events": row.events,
                "cpu_us_per_event": row.cpu_us_per_event.map(round1),
                "latency_ms": {"p50": row.p50_ms, "p99": row.p99_ms, "max": row.max_ms},
                "connections_open": {"held": row.conns_held, "after_close": row.conns_after},
                "agent_open_files": row.room.map(|r| r.0),
                "agent_room": row.room.map(|r| r.1),
                "capacity": row.capacity.as_ref().map(|c| json!({
                    "probe": c.probe,
                    "refused_total_counted": c.counted_total,
                    "refused_per_source_counted": c.counted_per_source,
                })),
            })
        })
        .collect();
    json!({
        "bench": "streams",
        "machine": r.machine,
        "load": r.load,
        "period_ms": r.period_ms,
        "measure_s": r.measure_s,
        "rows": rows,
    })
}
