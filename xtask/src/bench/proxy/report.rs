//! The report of `bench proxy`: the throughput and latency tables, the verdicts on the targets,
//! the checks, and everything once more as one JSON line.
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    CONNS, DIRECT, HAPROXY_UP, LAT_ROUNDS, LAT_SAMPLES, PLAIN, ROUND_S, TARGET_ADDED_MS,
    TARGET_AUTH_LOSS, TARGET_BASELINE_LOSS, TARGET_CS, TARGET_FULL_CPU, TARGET_FULL_RPS,
    TARGET_HTTP_CPU, TARGET_HTTP_RPS, TARGET_RSS_IDLE_MIB, TARGET_RSS_LOAD_MIB, USERS,
    check::Check,
    load::{LatRound, Run},
    profile::{self, Profile},
    target::{Proxy, Target, at},
    usage::{AuditTotal, PerRequest},
};
use crate::bench::{
    Machine,
    stats::{median, median_by, round1, round2, round3},
};

/// What `bench proxy` measured.
pub struct Measured<'a> {
    pub machine: Machine,
    pub wrk_version: String,
    pub targets: &'a [Target],
    /// Throughput rounds.
    pub rounds: usize,
    /// Per target: the wrk runs, and the latency client's rounds.
    pub many: Vec<Vec<Run>>,
    pub one: Vec<Vec<LatRound>>,
    /// What the agent spent per request in each latency round.
    pub one_agent: Vec<PerRequest>,
    /// The agent: pid, threads, and VmRSS (KiB) once started and at its peak.
    pub agent: u32,
    pub threads: usize,
    pub rss_idle: Option<u64>,
    /// The peak after the warm-ups of the LOADED targets, before any other target ran.
    pub rss_load: Option<u64>,
    pub rss_hwm: Option<u64>,
    pub audit: AuditTotal,
    /// Requests the upstream served on DIRECT, on PLAIN (from Moat) and on HAPROXY_UP while
    /// measuring.
    pub served: [u64; 3],
    pub elapsed: Duration,
    /// With `--baseline`: the other build's runs, in the same rounds.
    pub baseline: Option<AgainstBaseline>,
    /// The correctness checks, of both sites.
    pub checks: &'a [Check],
    /// With `--profile`: each profiled target's name, and what its recording shows.
    pub profile: Vec<(String, Profile)>,
}

/// The baseline build's wrk runs, per target (none for direct).
pub struct AgainstBaseline {
    pub reference: String,
    pub commit: String,
    pub many: Vec<Vec<Run>>,
}

/// Throughput of one target: its runs combined, and its per-round comparison with direct.
struct Summary {
    /// Medians over rounds, counts summed (`Run::combined`).
    all: Run,
    rps_rounds: Vec<f64>,
    /// Median of (this target / direct) within each round.
    ratio: f64,
}

impl Summary {
    fn new(runs: &[Run], direct: &[Run]) -> Self {
        Self {
            all: Run::combined(runs),
            rps_rounds: runs.iter().map(|r| r.rps).collect(),
            ratio: against(runs, direct, |r, d| r.rps / d.rps),
        }
    }
}

/// Latency of one target: its rounds combined, and its per-round comparison with direct.
struct LatSummary {
    /// Medians over rounds of the rounds' percentiles, counts summed (`LatRound::combined`).
    all: LatRound,
    /// Median of (this p50 - direct p50) within each round.
    added_ms: f64,
}

impl LatSummary {
    fn new(rounds: &[LatRound], direct: &[LatRound]) -> Self {
        Self {
            all: LatRound::combined(rounds),
            added_ms: against(rounds, direct, |r, d| r.p50_ms - d.p50_ms),
        }
    }
}

/// The median over rounds of `f(the target's round, direct's round)`.
fn against<T>(rounds: &[T], direct: &[T], f: impl Fn(&T, &T) -> f64) -> f64 {
    median(
        &rounds
            .iter()
            .zip(direct)
            .map(|(r, d)| f(r, d))
            .collect::<Vec<_>>(),
    )
}

/// Prints the report: tables, verdicts and checks, then the JSON line.
pub fn print(m: &Measured) {
    // Medians over rounds; ratios and added latency within each round.
    let many: Vec<Summary> = m
        .many
        .iter()
        .map(|rs| Summary::new(rs, &m.many[0]))
        .collect();
    let lat: Vec<LatSummary> = m
        .one
        .iter()
        .map(|rs| LatSummary::new(rs, &m.one[0]))
        .collect();
    let one_us = median_by(&m.one_agent, |u| u.cpu_us);
    let one_cs = median_by(&m.one_agent, |u| u.switches);

    throughput_table(m.targets, m.rounds, &many);
    let vs_haproxy = against_haproxy(m);
    latency_table(m.targets, &lat, one_us, one_cs);
    let mut targets = verdicts(m, &many);
    targets["auth"] = auth_verdict(m, &many);
    if let Some(b) = &m.baseline {
        targets["baseline"] = baseline(m, b);
    }

    println!();
    println!(
        "agent: pid {}, {} threads; VmRSS idle {} MiB, peak (VmHWM) {} MiB under the http, https and full load, {} MiB over all the targets",
        m.agent,
        m.threads,
        rss_mib(m.rss_idle).map_or("?".into(), |v| v.to_string()),
        rss_mib(m.rss_load).map_or("?".into(), |v| v.to_string()),
        rss_mib(m.rss_hwm).map_or("?".into(), |v| v.to_string()),
    );
    println!(
        "audit: {} records, {:.1} MB ({:.0} bytes/record), counted and freed after each round, deleted at the end",
        m.audit.records,
        m.audit.bytes as f64 / 1e6,
        m.audit.bytes as f64 / m.audit.records.max(1) as f64
    );
    let bad: u64 = many.iter().map(|s| s.all.bad_status).sum();
    let wrk_errors: u64 = many.iter().map(|s| s.all.errors).sum();
    let lat_errors: u64 = lat.iter().map(|s| s.all.errors).sum();
    println!(
        "audit: {} request records; the upstream served {} on :{DIRECT}, {} from Moat on :{PLAIN} and {} from HAProxy on :{HAPROXY_UP} (warm-up included)",
        m.audit.requests, m.served[0], m.served[1], m.served[2],
    );
    println!("checks:");
    for c in m.checks {
        println!(
            "  {:<4} {:<44} {} ({})",
            if c.ok { "ok" } else { "FAIL" },
            c.what,
            c.detail,
            c.site
        );
    }
    println!(
        "note: {} CPUs shared, unpinned, by the generator (1 thread), the upstream (1 thread) and the agent ({} threads): direct keeps two processes busy, the proxied targets three; {:.0} s measured",
        m.machine.cpus,
        m.threads,
        m.elapsed.as_secs_f64()
    );

    for (label, p) in &m.profile {
        profile::print(label, p);
    }
    let report = json!({
        "bench": "proxy",
        "kernel": m.machine.kernel,
        "cpus": m.machine.cpus,
        "generator": m.wrk_version,
        "throughput": {
            "connections": CONNS,
            "rounds": m.rounds,
            "round_s": ROUND_S,
            "targets": m.targets.iter().zip(&many).map(|(t, s)| throughput_json(t, s, &vs_haproxy)).collect::<Vec<_>>(),
        },
        "latency": {
            "connections_per_target": 1,
            "rounds": LAT_ROUNDS,
            "samples_per_round": LAT_SAMPLES,
            "targets": m.targets.iter().zip(&lat).map(|(t, s)| latency_json(t, s)).collect::<Vec<_>>(),
            "agent_cpu_us_per_req": round1(one_us),
            "agent_cs_per_req": round2(one_cs),
        },
        "targets": targets,
        "agent": {
            "threads": m.threads,
            "rss_idle_mib": rss_mib(m.rss_idle),
            "rss_load_mib": rss_mib(m.rss_load),
            "rss_peak_mib": rss_mib(m.rss_hwm),
        },
        "audit": { "records": m.audit.records, "request_records": m.audit.requests, "bytes": m.audit.bytes },
        "checks": m.checks.iter().map(Check::json).collect::<Vec<_>>(),
        "checks_passed": m.checks.iter().all(|c| c.ok),
        "upstream_served": { "direct": m.served[0], "via_moat": m.served[1], "via_haproxy": m.served[2] },
        "wrk_non_2xx": bad,
        "wrk_errors": wrk_errors,
        "latency_failed": lat_errors,
        "measured_s": round1(m.elapsed.as_secs_f64()),
        "profile": m.profile.iter().map(|(t, p)| json!({"target": t, "agent": p.json()})).collect::<Vec<_>>(),
    });
    println!();
    println!("{report}");
}

fn throughput_table(targets: &[Target], rounds: usize, many: &[Summary]) {
    println!();
    println!(
        "throughput: {CONNS} keep-alive connections, wrk 1 thread, {rounds} rounds x {ROUND_S} s per target, rotating order"
    );
    println!(
        "  {:<20} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>6} {:>7} {:>8} {:>8}",
        "target",
        "req/s",
        "x dir",
        "p50 ms",
        "p99 ms",
        "proxy µs",
        "user µs",
        "sys µs",
        "cs",
        "wrk µs",
        "upstr µs",
        "RSS MiB"
    );
    for (t, s) in targets.iter().zip(many) {
        let r = &s.all;
        println!(
            "  {:<20} {:>8.0} {:>7.3} {:>7.3} {:>7.3} {:>8} {:>7} {:>7} {:>6} {:>7.1} {:>8.1} {:>8}",
            t.label,
            r.rps,
            s.ratio,
            r.p50_ms,
            r.p99_ms,
            opt(r.proxy_us, 1),
            opt(r.proxy_user_us, 1),
            opt(r.proxy_sys_us, 1),
            opt(r.proxy_cs, 2),
            r.gen_us,
            r.upstream_us,
            opt(r.rss_kib.map(|k| k as f64 / 1024.0), 1),
        );
    }
    println!(
        "  (x dir: median of the per-round ratios to direct; proxy: Moat's agent or HAProxy; µs: its CPU time per answered request, user + system, then each; cs: its context switches per request, voluntary + involuntary; wrk, upstr: their CPU time per request; RSS: the proxy's largest VmRSS after a round)"
    );
}

/// `v` with `prec` decimals, or `-`.
fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
}

/// Each Moat target against HAProxy's plain and TLS targets, round by round: throughput and
/// CPU per request (median of the rounds' ratios). Printed; returned by target id for the JSON
/// line.
fn against_haproxy(m: &Measured) -> Vec<(&'static str, Value)> {
    let (plain, tls) = (
        at(m.targets, "haproxy-http"),
        at(m.targets, "haproxy-https"),
    );
    let nan = f64::NAN;
    let cpu = |r: &Run| r.proxy_us.unwrap_or(nan);
    println!();
    println!("against HAProxy (same rounds; median of the per-round ratios, Moat / HAProxy):");
    println!(
        "  {:<20} {:>12} {:>13} {:>12} {:>13}",
        "target", "req/s x http", "req/s x https", "CPU x http", "CPU x https"
    );
    let mut out = Vec::new();
    for (i, t) in m.targets.iter().enumerate().filter(|(_, t)| t.moat()) {
        let rps = |h: usize| against(&m.many[i], &m.many[h], |r, d| r.rps / d.rps);
        let us = |h: usize| against(&m.many[i], &m.many[h], |r, d| cpu(r) / cpu(d));
        let v = [rps(plain), rps(tls), us(plain), us(tls)];
        println!(
            "  {:<20} {:>12.3} {:>13.3} {:>12.2} {:>13.2}",
            t.label, v[0], v[1], v[2], v[3]
        );
        out.push((
            t.id,
            json!({
                "http": {"rps_ratio": round3(v[0]), "cpu_ratio": round2(v[2])},
                "https": {"rps_ratio": round3(v[1]), "cpu_ratio": round2(v[3])},
            }),
        ));
    }
    println!(
        "  (HAProxy: a plain reverse proxy, no authentication, policy or audit; http against Moat's plaintext targets, https against its TLS ones is the like-for-like pair)"
    );
    out
}

fn latency_table(targets: &[Target], lat: &[LatSummary], one_us: f64, one_cs: f64) {
    println!();
    println!(
        "latency: 1 keep-alive connection per target, one request at a time alternating between them, {LAT_ROUNDS} rounds x {LAT_SAMPLES} per target"
    );
    println!(
        "  {:<20} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "target", "p50 ms", "p90 ms", "p99 ms", "+p50 ms", "failed"
    );
    for (t, s) in targets.iter().zip(lat) {
        println!(
            "  {:<20} {:>7.3} {:>7.3} {:>7.3} {:>8} {:>8}",
            t.label,
            s.all.p50_ms,
            s.all.p90_ms,
            s.all.p99_ms,
            if t.proxy != Proxy::None {
                format!("{:.3}", s.added_ms)
            } else {
                String::new()
            },
            s.all.errors
        );
    }
    println!(
        "  (+p50: median of the per-round differences to direct) agent per request at one connection (moat http and https together): {one_us:.1} CPU-µs, {one_cs:.2} context switches"
    );
}

/// Prints whether Moat met its targets against HAProxy in the same rounds (plain Moat against
/// plain HAProxy; `moat full` against HAProxy with TLS), its context switches and memory, and
/// returns that for the JSON line.
fn verdicts(m: &Measured, many: &[Summary]) -> Value {
    let i = |id: &str| at(m.targets, id);
    let (http, https, full) = (i("http"), i("https"), i("full"));
    let (h_http, h_https) = (i("haproxy-http"), i("haproxy-https"));
    let cpu = |r: &Run| r.proxy_us.unwrap_or(f64::NAN);
    let vs = |t: usize, h: usize| {
        (
            against(&m.many[t], &m.many[h], |r, d| r.rps / d.rps),
            against(&m.many[t], &m.many[h], |r, d| cpu(r) / cpu(d)),
        )
    };
    let (http_rps, http_cpu) = vs(http, h_http);
    let (full_rps, full_cpu) = vs(full, h_https);
    let cs = |t: usize| many[t].all.proxy_cs.unwrap_or(f64::NAN);
    let added = |t: usize, h: usize| against(&m.one[t], &m.one[h], |r, d| r.p50_ms - d.p50_ms);
    let (idle, load) = (rss_mib(m.rss_idle), rss_mib(m.rss_load));
    println!();
    println!("targets (medians over rounds of the per-round ratios to HAProxy):");
    let mut met_all = true;
    let mut verdict = |name: String, value: String, met: bool| {
        met_all &= met;
        println!(
            "  {name:<50} {value:<16} {}",
            if met { "MET" } else { "NOT MET" }
        );
        json!({"target": name, "value": value, "met": met})
    };
    let checks = vec![
        verdict(
            format!("moat http req/s >= {TARGET_HTTP_RPS}x haproxy http"),
            format!("{http_rps:.3}"),
            http_rps >= TARGET_HTTP_RPS,
        ),
        verdict(
            format!("moat http CPU/req <= {TARGET_HTTP_CPU}x haproxy http"),
            format!("{http_cpu:.2}"),
            http_cpu <= TARGET_HTTP_CPU,
        ),
        verdict(
            format!("moat full req/s >= {TARGET_FULL_RPS}x haproxy https"),
            format!("{full_rps:.3}"),
            full_rps >= TARGET_FULL_RPS,
        ),
        verdict(
            format!("moat full CPU/req <= {TARGET_FULL_CPU}x haproxy https"),
            format!("{full_cpu:.2}"),
            full_cpu <= TARGET_FULL_CPU,
        ),
        verdict(
            format!("context switches/req <= {TARGET_CS} (http, full)"),
            format!("{:.2}, {:.2}", cs(http), cs(full)),
            cs(http) <= TARGET_CS && cs(full) <= TARGET_CS,
        ),
        verdict(
            format!("added p50 (1 conn) within {TARGET_ADDED_MS} ms of haproxy's"),
            format!(
                "{:+.3}, {:+.3} ms",
                added(http, h_http),
                added(https, h_https)
            ),
            added(http, h_http) <= TARGET_ADDED_MS && added(https, h_https) <= TARGET_ADDED_MS,
        ),
        verdict(
            format!("RSS idle < {TARGET_RSS_IDLE_MIB} MiB, under load < {TARGET_RSS_LOAD_MIB} MiB"),
            format!(
                "{}, {} MiB",
                idle.map_or("?".into(), |v| v.to_string()),
                load.map_or("?".into(), |v| v.to_string())
            ),
            idle.is_some_and(|v| v < TARGET_RSS_IDLE_MIB)
                && load.is_some_and(|v| v < TARGET_RSS_LOAD_MIB),
        ),
    ];
    println!(
        "  (added p50: moat http and https against haproxy http and https; RSS: after start, and the peak under the http, https and full load)"
    );
    json!({"checks": checks, "all_met": met_all})
}

/// Authentication's cost: the auth targets against plain `moat http` in the same rounds (same
/// upstream, same plaintext), with a cached token (the target), a new token per request, and
/// USERS principals in turn (each with upstream connections of its own).
fn auth_verdict(m: &Measured, many: &[Summary]) -> Value {
    let i = |id: &str| at(m.targets, id);
    let http = i("http");
    let loss = |i: usize| 1.0 - against(&m.many[i], &m.many[http], |r, d| r.rps / d.rps);
    let (cached, fresh, users) = (loss(i("cached")), loss(i("fresh")), loss(i("users")));
    let us = |i: usize| many[i].all.proxy_us.unwrap_or(f64::NAN);
    let met = cached <= TARGET_AUTH_LOSS;
    println!(
        "  {:<46} {cached:.3} {}",
        format!("auth, cached token: loss vs moat http <= {TARGET_AUTH_LOSS}"),
        if met { "MET" } else { "NOT MET" }
    );
    println!(
        "  auth, a new token each request (no target): loss {fresh:.3}; {USERS} principals in turn: loss {users:.3}; agent CPU µs/request: moat http {:.1}, cached {:.1}, new token {:.1}, {USERS} principals {:.1}",
        us(http),
        us(i("cached")),
        us(i("fresh")),
        us(i("users"))
    );
    json!({
        "loss_max": TARGET_AUTH_LOSS,
        "cached_loss": round3(cached),
        "fresh_loss": round3(fresh),
        "users": USERS,
        "users_loss": round3(users),
        "met": met,
    })
}

/// The current build against the baseline's, target by target in the same rounds: the median
/// of the per-round throughput ratios (current / baseline), and the verdict for plaintext and
/// TLS.
fn baseline(m: &Measured, b: &AgainstBaseline) -> Value {
    println!();
    println!(
        "against the baseline {} ({}), run back to back with each target in every round:",
        b.reference,
        &b.commit[..b.commit.len().min(12)]
    );
    println!(
        "  {:<20} {:>8} {:>8} {:>9} {:>10} {:>10} {:>8} {:>8}",
        "target", "req/s", "base", "now/base", "agent µs", "base µs", "RSS MiB", "base"
    );
    let mut rows = Vec::new();
    let (mut ratios, mut cpu) = (Vec::new(), Vec::new());
    for (i, t) in m.targets.iter().enumerate().filter(|(_, t)| t.moat()) {
        let (now, base) = (&m.many[i], &b.many[i]);
        let ratio = against(now, base, |r, d| r.rps / d.rps);
        let (n, o) = (Run::combined(now), Run::combined(base));
        let mib = |k: Option<u64>| opt(k.map(|k| k as f64 / 1024.0), 1);
        println!(
            "  {:<20} {:>8.0} {:>8.0} {:>9.3} {:>10} {:>10} {:>8} {:>8}",
            t.label,
            n.rps,
            o.rps,
            ratio,
            opt(n.proxy_us, 1),
            opt(o.proxy_us, 1),
            mib(n.rss_kib),
            mib(o.rss_kib),
        );
        ratios.push(ratio);
        cpu.push(against(now, base, |r, d| {
            r.proxy_us.unwrap_or(f64::NAN) / d.proxy_us.unwrap_or(f64::NAN)
        }));
        rows.push(json!({
            "target": t.name(),
            "rps": n.rps.round(),
            "base_rps": o.rps.round(),
            "ratio": round3(ratio),
            "ratio_rounds": now.iter().zip(base).map(|(r, d)| round3(r.rps / d.rps)).collect::<Vec<_>>(),
            "agent_cpu_us_per_req": n.proxy_us.map(round1),
            "base_agent_cpu_us_per_req": o.proxy_us.map(round1),
            "wrk_non_2xx": n.bad_status, "wrk_errors": n.errors,
            "base_wrk_non_2xx": o.bad_status, "base_wrk_errors": o.errors,
        }));
    }
    println!(
        "  (now/base: median of the per-round ratios; µs: agent CPU time per answered request; RSS: largest VmRSS after a round)"
    );
    let min = 1.0 - TARGET_BASELINE_LOSS;
    // moat http and https are the first two Moat targets.
    let met = ratios.iter().take(2).all(|&r| r >= min);
    println!(
        "  {:<46} http {:.3}, https {:.3} {}",
        format!("throughput >= {min:.2}x the baseline"),
        ratios[0],
        ratios[1],
        if met { "MET" } else { "NOT MET" }
    );
    // Less sensitive than throughput to what else the machine runs.
    println!(
        "  agent CPU per request, now/base (median of the rounds' ratios): http {:.3}, https {:.3}",
        cpu[0], cpu[1]
    );
    json!({
        "ref": b.reference,
        "commit": b.commit,
        "loss_max": TARGET_BASELINE_LOSS,
        "targets": rows,
        "agent_cpu_ratio": { "http": round3(cpu[0]), "https": round3(cpu[1]) },
        "met": met,
    })
}

fn throughput_json(t: &Target, s: &Summary, vs_haproxy: &[(&str, Value)]) -> Value {
    let r = &s.all;
    let moat = |v: Option<f64>| v.filter(|_| t.moat());
    json!({
        "target": t.name(),
        "proxy": match t.proxy { Proxy::None => None, Proxy::Moat => Some("moat"), Proxy::Haproxy => Some("haproxy") },
        "rps": r.rps.round(),
        "ratio": round3(s.ratio),
        "p50_ms": round3(r.p50_ms),
        "p99_ms": round3(r.p99_ms),
        "agent_cpu_us_per_req": moat(r.proxy_us).map(round1),
        "agent_cs_per_req": moat(r.proxy_cs).map(round2),
        "proxy_cpu_us_per_req": r.proxy_us.map(round1),
        "proxy_user_us_per_req": r.proxy_user_us.map(round1),
        "proxy_sys_us_per_req": r.proxy_sys_us.map(round1),
        "proxy_cs_per_req": r.proxy_cs.map(round2),
        "wrk_cpu_us_per_req": round1(r.gen_us),
        "upstream_cpu_us_per_req": round1(r.upstream_us),
        "agent_rss_mib": rss_mib(r.rss_kib.filter(|_| t.moat())),
        "proxy_rss_mib": rss_mib(r.rss_kib),
        "vs_haproxy": vs_haproxy.iter().find(|(id, _)| *id == t.id).map(|(_, v)| v),
        "rps_rounds": s.rps_rounds.iter().map(|x| x.round()).collect::<Vec<_>>(),
    })
}

fn latency_json(t: &Target, s: &LatSummary) -> Value {
    json!({
        "target": t.name(),
        "p50_ms": round3(s.all.p50_ms),
        "p90_ms": round3(s.all.p90_ms),
        "p99_ms": round3(s.all.p99_ms),
        "added_p50_ms": (t.proxy != Proxy::None).then(|| round3(s.added_ms)),
        "samples": s.all.samples,
        "failed": s.all.errors,
    })
}

fn rss_mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| round1(k as f64 / 1024.0))
}
