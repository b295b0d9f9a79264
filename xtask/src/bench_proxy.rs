//! `cargo xtask bench proxy`: what the proxy costs per request, measured in a private network
//! namespace.
//!
//! A fast upstream MCP server (hyper, HTTP/1.1, one thread, TCP_NODELAY) answers every POST with
//! a small JSON-RPC result on 127.0.0.1:8000 (protected: Moat serves it as plain HTTP on port 8000
//! and as HTTPS on port 8443) and on 127.0.0.1:9000 (not protected: the direct baseline). Clients
//! send the same `tools/call` to the three targets over keep-alive connections:
//!
//! 1. Throughput: wrk (Debian package, installed on first use) with 16 connections, the targets
//!    in rotating order within each round. For the Moat targets the agent's CPU time
//!    (/proc/<pid>/stat utime + stime) and context switches are divided by the requests
//!    answered, and its VmRSS is sampled.
//! 2. Latency on one keep-alive connection per target: a client of our own sends one request at
//!    a time, alternating between the targets, so that all three see the same state of the
//!    machine (on a small VM whether two processes share a CPU changes a round trip severalfold,
//!    and that changes from second to second).
//!
//! The upstream server and the latency client are this program built with the release profile
//! (hidden subcommands; `cargo xtask` itself is a debug build). Generator, agent and upstream
//! share the machine's CPUs, unpinned: the direct baseline keeps two processes busy, the
//! proxied targets three.
//!
//! A report, not a test: it prints numbers and whether the stated targets were met, and never
//! fails on them.
use std::{
    convert::Infallible,
    io::{self, BufRead as _, BufReader, Read, Write},
    net::{Ipv4Addr, TcpListener as StdListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, Response,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use nix::{
    sys::resource::{UsageWho, getrusage},
    unistd::{SysconfVar, sysconf},
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};

use crate::{
    Result,
    bench::{median, percentile, round1, round3},
    host::{self, Lab},
    sh,
};

const LAB: &str = "moat-bench-proxy";
/// Not protected: the upstream reached directly.
const DIRECT: u16 = 9000;
/// Protected, served by Moat as plain HTTP; also where the upstream listens for Moat.
const PLAIN: u16 = 8000;
/// Protected, served by Moat as HTTPS, forwarded to 127.0.0.1:PLAIN.
const TLS: u16 = 8443;

/// Throughput: rounds (each target once), their length (wrk takes whole seconds), connections.
const ROUNDS: usize = 5;
const ROUND_S: u32 = 2;
const CONNS: u32 = 16;
/// Warm-up per target, discarded (connections, the agent's upstream pool, caches).
const WARMUP_S: u32 = 1;
/// Latency: rounds, requests per target per round (after LAT_WARMUP), and a bound on a round.
const LAT_ROUNDS: usize = 5;
const LAT_SAMPLES: usize = 4000;
const LAT_WARMUP: usize = 200;
const LAT_MAX: Duration = Duration::from_secs(4);
/// Bounds every read and write of the latency client.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The targets (from the issue): throughput at least half of direct, at most 50 CPU-µs per
/// request in the agent, under 0.1 ms added per request on one keep-alive connection.
const TARGET_RATIO: f64 = 0.5;
const TARGET_CPU_US: f64 = 50.0;
const TARGET_ADDED_MS: f64 = 0.1;

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const RESPONSE: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;

/// wrk: a static POST (built once, no Lua per request) and one JSON line with the summary.
const WRK_LUA: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.body = '__BODY__'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// The hidden subcommands run by the release build.
pub const UPSTREAM_CMD: &str = "bench-proxy-upstream";
pub const LATENCY_CMD: &str = "bench-proxy-latency";

struct Target {
    label: String,
    /// For wrk.
    url: String,
    /// For the latency client: `http:PORT` or `https:PORT`.
    spec: String,
    /// Through Moat (the agent's CPU time is attributed to it).
    moat: bool,
}

impl Target {
    fn new(label: &str, tls: bool, port: u16, moat: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self {
            label: format!("{label:<11} :{port}"),
            url: format!("{scheme}://127.0.0.1:{port}/mcp"),
            spec: format!("{scheme}:{port}"),
            moat,
        }
    }
}

/// What the agent spent, from /proc: CPU time (µs) and context switches of all its threads.
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu_us: f64,
    switches: u64,
}

fn agent_usage(pid: u32) -> Option<Usage> {
    let cpu_us = proc_cpu_us(format!("/proc/{pid}/stat"))?;
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
    Some(Usage { cpu_us, switches })
}

/// What the agent spent per request.
struct PerRequest {
    cpu_us: f64,
    switches: f64,
}

/// One wrk run.
#[derive(Clone, Default)]
struct Run {
    /// Responses with a 2xx/3xx status, and their rate.
    ok: u64,
    rps: f64,
    /// Responses with another status, and connect/read/write/timeout errors.
    bad_status: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// Per answered request: the agent's CPU time and context switches (Moat targets only),
    /// the CPU time of wrk and of the upstream.
    agent_us: Option<f64>,
    agent_cs: Option<f64>,
    gen_us: f64,
    upstream_us: f64,
    /// The agent's VmRSS after the run, KiB.
    rss_kib: Option<u64>,
}

/// One round of the latency client: per target.
#[derive(Clone, Default)]
struct LatRound {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    samples: u64,
    /// Requests sent, warm-up included, and failed ones.
    calls: u64,
    errors: u64,
}

pub fn run() -> Result {
    let wrk = ensure_wrk()?;
    let moat = host::build_moat()?;
    sh(Command::new(env!("CARGO")).args(["build", "--quiet", "--release", "-p", "xtask"]))?;
    let xtask = host::workspace().join("target/release/xtask");
    let dir = host::workspace().join("target").join(LAB);
    let certs = dir.join("certs");
    sh(Command::new(&moat)
        .args(["cert", "self-signed", "localhost", "--out"])
        .arg(&certs)
        .stdout(Stdio::null()))?;
    let servers = format!(
        "servers:\n  - name: plain\n    port: {PLAIN}\n    upstream: http://127.0.0.1:{PLAIN}\n    dangerous: {{plaintext: true}}\n  - name: tls\n    port: {TLS}\n    upstream: http://127.0.0.1:{PLAIN}\n    tls: {{cert: {}, key: {}}}\n",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display()
    );
    let mut lab = Lab::new(LAB, moat, &servers)?;
    let script = lab.dir.join("bench-proxy.lua");
    std::fs::write(&script, WRK_LUA.replace("__BODY__", REQUEST)).map_err(|e| e.to_string())?;

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim().to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let wrk_version = wrk_version(&wrk);
    println!(
        "moat bench proxy: Linux {kernel}, {cpus} CPUs, namespace {}, {wrk_version}",
        lab.name
    );

    // Declared after `lab`: stops before the namespace goes.
    let mut upstream = Upstream::start(&lab, &xtask, [DIRECT, PLAIN])?;
    lab.start_agent()?;
    let agent = lab
        .status()
        .and_then(|s| s["agent_pid"].as_u64())
        .ok_or("moat status --json gave no agent_pid")? as u32;
    let rss_idle = proc_status_kib(agent, "VmRSS");
    let threads = std::fs::read_dir(format!("/proc/{agent}/task")).map_or(0, |d| d.count());

    let targets = [
        Target::new("direct", false, DIRECT, false),
        Target::new("moat http", false, PLAIN, true),
        Target::new("moat https", true, TLS, true),
    ];
    let bench = Bench {
        lab: &lab,
        script: &script,
        xtask: &xtask,
        ca: certs.join("localhost-ca.crt"),
        agent,
        upstream: upstream.pid,
        audit: Audit::default(),
    };
    let started = Instant::now();
    let served0 = upstream.served()?;

    // 1. Throughput. Warm-up, discarded; a target that answers nothing stops the bench here.
    for t in &targets {
        let r = bench.wrk(t, CONNS, WARMUP_S)?;
        if r.ok == 0 {
            return Err(format!(
                "{}: no successful response in the warm-up ({} bad status, {} errors); see {}",
                t.url,
                r.bad_status,
                r.errors,
                lab.dir.join("agent.log").display()
            ));
        }
    }
    let mut many = vec![Vec::new(); targets.len()];
    for round in 0..ROUNDS {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            many[i].push(bench.wrk(&targets[i], CONNS, ROUND_S)?);
        }
    }

    // 2. Latency on one connection per target, requests alternating between the targets.
    let mut one = vec![Vec::new(); targets.len()];
    let mut one_agent = Vec::new();
    for _ in 0..LAT_ROUNDS {
        let (round, usage) = bench.latency(&targets)?;
        for (v, r) in one.iter_mut().zip(round) {
            v.push(r);
        }
        one_agent.push(usage);
    }

    let elapsed = started.elapsed();
    let served = upstream.served()?;
    let served = [served[0] - served0[0], served[1] - served0[1]];
    let rss_hwm = proc_status_kib(agent, "VmHWM");
    let Bench { audit, .. } = bench;
    lab.kill_agent();
    let audit = audit.finish(&lab.audit);

    // Medians over rounds; ratios and added latency within each round.
    let many_s: Vec<Summary> = many.iter().map(|rs| Summary::new(rs, &many[0])).collect();
    let lat: Vec<LatSummary> = one.iter().map(|rs| LatSummary::new(rs, &one[0])).collect();
    let one_us = median(&one_agent.iter().map(|u| u.cpu_us).collect::<Vec<_>>());
    let one_cs = median(&one_agent.iter().map(|u| u.switches).collect::<Vec<_>>());

    println!();
    println!(
        "throughput: {CONNS} keep-alive connections, wrk 1 thread, {ROUNDS} rounds x {ROUND_S} s per target, rotating order"
    );
    println!(
        "  {:<18} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>7} {:>9} {:>8}",
        "target",
        "req/s",
        "x dir",
        "p50 ms",
        "p99 ms",
        "agent µs",
        "agent cs",
        "wrk µs",
        "upstr µs",
        "RSS MiB"
    );
    for (t, s) in targets.iter().zip(&many_s) {
        let opt = |v: Option<f64>, prec: usize| {
            v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
        };
        println!(
            "  {:<18} {:>8.0} {:>7.3} {:>7.3} {:>7.3} {:>9} {:>9} {:>7.1} {:>9.1} {:>8}",
            t.label,
            s.rps,
            s.ratio,
            s.p50_ms,
            s.p99_ms,
            opt(s.agent_us, 1),
            opt(s.agent_cs, 2),
            s.gen_us,
            s.upstream_us,
            opt(s.rss_kib.map(|k| k as f64 / 1024.0), 1),
        );
    }
    println!(
        "  (x dir: median of the per-round ratios to direct; µs: CPU time per answered request, user + system; cs: context switches per request; RSS: the agent's largest VmRSS after a round)"
    );
    println!();
    println!(
        "latency: 1 keep-alive connection per target, one request at a time alternating between them, {LAT_ROUNDS} rounds x {LAT_SAMPLES} per target"
    );
    println!(
        "  {:<18} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "target", "p50 ms", "p90 ms", "p99 ms", "+p50 ms", "failed"
    );
    for (t, s) in targets.iter().zip(&lat) {
        println!(
            "  {:<18} {:>7.3} {:>7.3} {:>7.3} {:>8} {:>8}",
            t.label,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            if t.moat {
                format!("{:.3}", s.added_ms)
            } else {
                String::new()
            },
            s.errors
        );
    }
    println!(
        "  (+p50: median of the per-round differences to direct) agent per request at one connection (http and https together): {one_us:.1} CPU-µs, {one_cs:.2} context switches"
    );

    println!();
    println!("targets (medians over rounds):");
    let mut met_all = true;
    let mut verdict = |name: &str, values: [f64; 2], ok: &dyn Fn(f64) -> bool| {
        let parts: Vec<String> = ["http", "https"]
            .iter()
            .zip(values)
            .map(|(t, v)| {
                let m = ok(v);
                met_all &= m;
                format!("{t} {v:.3} {}", if m { "MET" } else { "NOT MET" })
            })
            .collect();
        println!("  {name:<46} {}", parts.join(", "));
    };
    let ratio_met = [many_s[1].ratio, many_s[2].ratio].map(|v| v >= TARGET_RATIO);
    let cpu = [1, 2].map(|i| many_s[i].agent_us.unwrap_or(f64::NAN));
    let added = [lat[1].added_ms, lat[2].added_ms];
    verdict(
        &format!("throughput >= {TARGET_RATIO}x direct ({CONNS} conns)"),
        [many_s[1].ratio, many_s[2].ratio],
        &|v| v >= TARGET_RATIO,
    );
    verdict(
        &format!("agent CPU <= {TARGET_CPU_US} µs/request ({CONNS} conns)"),
        cpu,
        &|v| v <= TARGET_CPU_US,
    );
    verdict(
        &format!("added p50 < {TARGET_ADDED_MS} ms (1 conn), ms"),
        added,
        &|v| v < TARGET_ADDED_MS,
    );
    println!(
        "  for scale (issue): a leading Rust MCP gateway reaches ~0.1x direct, ~250 CPU-µs/request, ~0.35 ms added"
    );

    let rss_mib = |k: Option<u64>| k.map(|k| round1(k as f64 / 1024.0));
    println!();
    println!(
        "agent: pid {agent}, {threads} threads; VmRSS idle {} MiB, peak (VmHWM) {} MiB",
        rss_mib(rss_idle).map_or("?".into(), |v| v.to_string()),
        rss_mib(rss_hwm).map_or("?".into(), |v| v.to_string()),
    );
    println!(
        "audit: {} records, {:.1} MB ({:.0} bytes/record), truncated after each round and deleted at the end",
        audit.records,
        audit.bytes as f64 / 1e6,
        audit.bytes as f64 / audit.records.max(1) as f64
    );
    let answered = |i: usize| -> u64 {
        many[i].iter().map(|r| r.ok).sum::<u64>() + one[i].iter().map(|r| r.calls).sum::<u64>()
    };
    let (bad, wrk_errors) = many
        .iter()
        .flatten()
        .fold((0, 0), |(b, e), r| (b + r.bad_status, e + r.errors));
    let lat_errors: u64 = lat.iter().map(|s| s.errors).sum();
    println!(
        "check: the upstream served {} on :{DIRECT} and {} from Moat on :{PLAIN}; clients counted {} direct and {} through Moat (measured rounds; the upstream also counts warm-up and cut-off requests); wrk non-2xx {bad}, wrk errors {wrk_errors}, latency client failures {lat_errors}",
        served[0],
        served[1],
        answered(0),
        answered(1) + answered(2),
    );
    println!(
        "note: {cpus} CPUs shared, unpinned, by the generator (1 thread), the upstream (1 thread) and the agent ({threads} threads): direct keeps two processes busy, the proxied targets three; {:.0} s measured",
        elapsed.as_secs_f64()
    );

    let throughput_json = |t: &Target, s: &Summary| {
        json!({
            "target": t.label.split_whitespace().collect::<Vec<_>>().join(" "),
            "rps": s.rps.round(),
            "ratio": round3(s.ratio),
            "p50_ms": round3(s.p50_ms),
            "p99_ms": round3(s.p99_ms),
            "agent_cpu_us_per_req": s.agent_us.map(round1),
            "agent_cs_per_req": s.agent_cs.map(|v| (v * 100.0).round() / 100.0),
            "wrk_cpu_us_per_req": round1(s.gen_us),
            "upstream_cpu_us_per_req": round1(s.upstream_us),
            "agent_rss_mib": rss_mib(s.rss_kib),
            "rps_rounds": s.rps_rounds.iter().map(|x| x.round()).collect::<Vec<_>>(),
        })
    };
    let latency_json = |t: &Target, s: &LatSummary| {
        json!({
            "target": t.label.split_whitespace().collect::<Vec<_>>().join(" "),
            "p50_ms": round3(s.p50_ms),
            "p90_ms": round3(s.p90_ms),
            "p99_ms": round3(s.p99_ms),
            "added_p50_ms": t.moat.then(|| round3(s.added_ms)),
            "samples": s.samples,
            "failed": s.errors,
        })
    };
    let report = json!({
        "bench": "proxy",
        "kernel": kernel,
        "cpus": cpus,
        "generator": wrk_version,
        "throughput": {
            "connections": CONNS,
            "rounds": ROUNDS,
            "round_s": ROUND_S,
            "targets": targets.iter().zip(&many_s).map(|(t, s)| throughput_json(t, s)).collect::<Vec<_>>(),
        },
        "latency": {
            "connections_per_target": 1,
            "rounds": LAT_ROUNDS,
            "samples_per_round": LAT_SAMPLES,
            "targets": targets.iter().zip(&lat).map(|(t, s)| latency_json(t, s)).collect::<Vec<_>>(),
            "agent_cpu_us_per_req": round1(one_us),
            "agent_cs_per_req": (one_cs * 100.0).round() / 100.0,
        },
        "targets": {
            "ratio_min": TARGET_RATIO,
            "cpu_us_max": TARGET_CPU_US,
            "added_ms_max": TARGET_ADDED_MS,
            "ratio_met": ratio_met.iter().all(|&m| m),
            "cpu_met": cpu.iter().all(|&v| v <= TARGET_CPU_US),
            "added_met": added.iter().all(|&v| v < TARGET_ADDED_MS),
            "all_met": met_all,
        },
        "agent": {
            "threads": threads,
            "rss_idle_mib": rss_mib(rss_idle),
            "rss_peak_mib": rss_mib(rss_hwm),
        },
        "audit": { "records": audit.records, "bytes": audit.bytes },
        "upstream_served": { "direct": served[0], "via_moat": served[1] },
        "wrk_non_2xx": bad,
        "wrk_errors": wrk_errors,
        "latency_failed": lat_errors,
        "measured_s": round1(elapsed.as_secs_f64()),
    });
    println!();
    println!("{report}");
    drop(upstream);
    Ok(())
}

/// Throughput of one target: medians over rounds, and its per-round comparison with direct.
struct Summary {
    rps: f64,
    rps_rounds: Vec<f64>,
    /// Median of (this target / direct) within each round.
    ratio: f64,
    p50_ms: f64,
    p99_ms: f64,
    agent_us: Option<f64>,
    agent_cs: Option<f64>,
    gen_us: f64,
    upstream_us: f64,
    rss_kib: Option<u64>,
}

impl Summary {
    fn new(runs: &[Run], direct: &[Run]) -> Self {
        let med = |f: &dyn Fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let opt = |f: &dyn Fn(&Run) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(&v))
        };
        let ratios: Vec<f64> = runs
            .iter()
            .zip(direct)
            .map(|(r, d)| r.rps / d.rps)
            .collect();
        Self {
            rps: med(&|r| r.rps),
            rps_rounds: runs.iter().map(|r| r.rps).collect(),
            ratio: median(&ratios),
            p50_ms: med(&|r| r.p50_ms),
            p99_ms: med(&|r| r.p99_ms),
            agent_us: opt(&|r| r.agent_us),
            agent_cs: opt(&|r| r.agent_cs),
            gen_us: med(&|r| r.gen_us),
            upstream_us: med(&|r| r.upstream_us),
            rss_kib: runs.iter().filter_map(|r| r.rss_kib).max(),
        }
    }
}

/// Latency of one target: medians over rounds of the rounds' percentiles.
struct LatSummary {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// Median of (this p50 - direct p50) within each round.
    added_ms: f64,
    samples: u64,
    errors: u64,
}

impl LatSummary {
    fn new(rounds: &[LatRound], direct: &[LatRound]) -> Self {
        let med = |f: &dyn Fn(&LatRound) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        let added: Vec<f64> = rounds
            .iter()
            .zip(direct)
            .map(|(r, d)| r.p50_ms - d.p50_ms)
            .collect();
        Self {
            p50_ms: med(&|r| r.p50_ms),
            p90_ms: med(&|r| r.p90_ms),
            p99_ms: med(&|r| r.p99_ms),
            added_ms: median(&added),
            samples: rounds.iter().map(|r| r.samples).sum(),
            errors: rounds.iter().map(|r| r.errors).sum(),
        }
    }
}

struct Bench<'a> {
    lab: &'a Lab,
    script: &'a Path,
    /// The release build of this program (the latency client).
    xtask: &'a Path,
    /// The CA of Moat's certificate, for the latency client.
    ca: PathBuf,
    agent: u32,
    /// The upstream server's pid.
    upstream: u32,
    audit: Audit,
}

impl Bench<'_> {
    /// One wrk run against `t`, with the CPU time the agent, wrk and the upstream spent on it.
    fn wrk(&self, t: &Target, conns: u32, secs: u32) -> Result<Run> {
        let agent0 = agent_usage(self.agent);
        let upstream_stat = format!("/proc/{}/stat", self.upstream);
        let up0 = proc_cpu_us(&upstream_stat).unwrap_or(f64::NAN);
        let gen0 = children_cpu_us();
        let out = self
            .lab
            .command("wrk")
            .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s")])
            .args(["--timeout", "2s", "-s"])
            .arg(self.script)
            .arg(&t.url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("wrk: {e}"))?;
        let gen_us = children_cpu_us() - gen0;
        let upstream_us = proc_cpu_us(&upstream_stat).unwrap_or(f64::NAN) - up0;
        let agent1 = agent_usage(self.agent);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                format!(
                    "wrk {} gave no summary ({}): {} {}",
                    t.url,
                    out.status,
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        let (requests, bad_status) = (n("requests"), n("status_errors"));
        let ok = requests.saturating_sub(bad_status);
        let per = |x: f64| x / ok.max(1) as f64;
        let agent = agent0.zip(agent1).filter(|_| t.moat);
        let rss_kib = t
            .moat
            .then(|| proc_status_kib(self.agent, "VmRSS"))
            .flatten();
        if t.moat {
            self.audit.collect(&self.lab.audit);
        }
        Ok(Run {
            ok,
            rps: ok as f64 / (n("duration_us").max(1) as f64 / 1e6),
            bad_status,
            errors: n("errors"),
            p50_ms: n("p50_us") as f64 / 1e3,
            p99_ms: n("p99_us") as f64 / 1e3,
            agent_us: agent.map(|(a, b)| per(b.cpu_us - a.cpu_us)),
            agent_cs: agent.map(|(a, b)| per(b.switches.saturating_sub(a.switches) as f64)),
            gen_us: per(gen_us),
            upstream_us: per(upstream_us),
            rss_kib,
        })
    }

    /// One round of the latency client against all targets, and what the agent spent per
    /// request through it.
    fn latency(&self, targets: &[Target]) -> Result<(Vec<LatRound>, PerRequest)> {
        let agent0 = agent_usage(self.agent);
        let out = self
            .lab
            .command(self.xtask)
            .arg(LATENCY_CMD)
            .arg(&self.ca)
            .arg(LAT_SAMPLES.to_string())
            .args(targets.iter().map(|t| &t.spec))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("latency client: {e}"))?;
        let agent1 = agent_usage(self.agent);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                format!(
                    "the latency client failed ({}): {} {}",
                    out.status,
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        let rounds: Vec<LatRound> = report["targets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| LatRound {
                        p50_ms: t["p50_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                        p90_ms: t["p90_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                        p99_ms: t["p99_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                        samples: t["samples"].as_u64().unwrap_or(0),
                        calls: t["calls"].as_u64().unwrap_or(0),
                        errors: t["errors"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if rounds.len() != targets.len() {
            return Err(format!("the latency client reported {report}"));
        }
        let through_moat: u64 = targets
            .iter()
            .zip(&rounds)
            .filter(|(t, _)| t.moat)
            .map(|(_, r)| r.calls - r.errors)
            .sum();
        let per = |x: f64| x / through_moat.max(1) as f64;
        let usage = agent0
            .zip(agent1)
            .map(|(a, b)| PerRequest {
                cpu_us: per(b.cpu_us - a.cpu_us),
                switches: per(b.switches.saturating_sub(a.switches) as f64),
            })
            .unwrap_or(PerRequest {
                cpu_us: f64::NAN,
                switches: f64::NAN,
            });
        self.audit.collect(&self.lab.audit);
        Ok((rounds, usage))
    }
}

/// The audit log's records and bytes, collected and truncated after each proxied round so that
/// the file stays small (the agent appends with O_APPEND, so truncating under it is safe).
#[derive(Default)]
struct Audit {
    records: AtomicU64,
    bytes: AtomicU64,
}

struct AuditTotal {
    records: u64,
    bytes: u64,
}

impl Audit {
    fn collect(&self, path: &Path) {
        // Let the writer catch up with the round's last records.
        std::thread::sleep(Duration::from_millis(50));
        let Ok(data) = std::fs::read(path) else {
            return;
        };
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        self.records.fetch_add(lines, Ordering::Relaxed);
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = f.set_len(0);
        }
    }

    fn finish(&self, path: &Path) -> AuditTotal {
        self.collect(path);
        let _ = std::fs::remove_file(path);
        AuditTotal {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The upstream MCP server, run in the lab as its own process (`serve_upstream`). It prints
/// `ready` once listening, answers each line on stdin with the requests served per port, and
/// exits when stdin closes.
struct Upstream {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Upstream {
    fn start(lab: &Lab, xtask: &Path, ports: [u16; 2]) -> Result<Self> {
        let mut child = lab
            .command(xtask)
            .arg(UPSTREAM_CMD)
            .args(ports.map(|p| p.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", xtask.display()))?;
        // `lab.command` execs: the child is the server itself.
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("upstream stdout")?);
        let mut up = Self {
            child,
            stdin,
            stdout,
            pid,
        };
        let mut line = String::new();
        let _ = up.stdout.read_line(&mut line);
        if line.trim() != "ready" {
            return Err(format!(
                "the upstream server did not start: {}",
                line.trim()
            ));
        }
        Ok(up)
    }

    /// Requests answered so far on each port.
    fn served(&mut self) -> Result<[u64; 2]> {
        let stdin = self.stdin.as_mut().ok_or("upstream stdin")?;
        writeln!(stdin, "served").map_err(|e| format!("upstream: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("upstream: {e}"))?;
        let n: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match n[..] {
            [a, b] => Ok([a, b]),
            _ => Err(format!("upstream answered {line:?}")),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Closing stdin stops it; a bounded wait, then kill.
        drop(self.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `UPSTREAM_CMD PORT...`: hyper HTTP/1.1 on one tokio thread, on 127.0.0.1:PORT in the calling
/// network namespace, answering every request with a JSON-RPC result after reading its body.
pub fn serve_upstream(args: &[String]) -> Result {
    let ports: Vec<u16> = args
        .iter()
        .map(|a| a.parse().map_err(|_| format!("not a port: {a}")))
        .collect::<Result<_>>()?;
    let listeners = ports
        .iter()
        .map(|&p| {
            let l = StdListener::bind((Ipv4Addr::LOCALHOST, p))
                .map_err(|e| format!("127.0.0.1:{p}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(l)
        })
        .collect::<Result<Vec<_>>>()?;
    let served: Vec<Arc<AtomicU64>> = ports.iter().map(|_| Arc::default()).collect();
    let (stop, stopped) = oneshot::channel::<()>();
    // Control on stdin, off the serving thread.
    std::thread::spawn({
        let served = served.clone();
        move || {
            let mut out = io::stdout();
            for line in io::stdin().lines() {
                if line.is_err() {
                    break;
                }
                let n: Vec<String> = served
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed).to_string())
                    .collect();
                if writeln!(out, "{}", n.join(" ")).is_err() {
                    break;
                }
                let _ = out.flush();
            }
            let _ = stop.send(());
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        for (l, n) in listeners.into_iter().zip(served) {
            let l = TcpListener::from_std(l).expect("tokio listener");
            tokio::spawn(accept_loop(l, n));
        }
        println!("ready");
        let _ = stopped.await;
    });
    Ok(())
}

async fn accept_loop(listener: TcpListener, served: Arc<AtomicU64>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors and the like: back off.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    served.fetch_add(1, Ordering::Relaxed);
                    let mut resp = Response::new(Full::new(Bytes::from_static(RESPONSE)));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `LATENCY_CMD CA SAMPLES TARGET...` (TARGET: `http:PORT` or `https:PORT` on 127.0.0.1): one
/// keep-alive connection per target, one request at a time, the targets taking turns (in
/// rotating order); prints one JSON line with each target's latency percentiles. Bounded by
/// SAMPLES per target and LAT_MAX.
pub fn latency_client(args: &[String]) -> Result {
    let [ca, samples, targets @ ..] = args else {
        return Err(format!("usage: {LATENCY_CMD} CA SAMPLES TARGET..."));
    };
    let samples: usize = samples.parse().map_err(|_| "SAMPLES: not a number")?;
    let tls = Arc::new(tls_client_config(Path::new(ca))?);
    let mut clients = targets
        .iter()
        .map(|t| Client::open(t, &tls).map_err(|e| format!("{t}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let n = clients.len();
    let mut calls = vec![0u64; n];
    let mut errors = vec![0u64; n];
    let mut us: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); n];
    let deadline = Instant::now() + LAT_MAX;
    for i in 0..LAT_WARMUP + samples {
        if Instant::now() > deadline {
            break;
        }
        for k in 0..n {
            let j = (i + k) % n;
            calls[j] += 1;
            let t = Instant::now();
            match clients[j].call() {
                Ok(()) if i >= LAT_WARMUP => us[j].push(t.elapsed().as_secs_f64() * 1e6),
                Ok(()) => {}
                Err(e) => {
                    errors[j] += 1;
                    if errors[j] == 1 {
                        eprintln!("{}: {e}", targets[j]);
                    }
                    // A fresh connection; give up on the target when that fails too.
                    clients[j] = Client::open(&targets[j], &tls)
                        .map_err(|e| format!("{}: {e}", targets[j]))?;
                }
            }
        }
    }
    let report: Vec<Value> = (0..n)
        .map(|j| {
            json!({
                "target": targets[j],
                "samples": us[j].len(),
                "calls": calls[j],
                "errors": errors[j],
                "p50_us": round1(percentile(&us[j], 0.5)),
                "p90_us": round1(percentile(&us[j], 0.9)),
                "p99_us": round1(percentile(&us[j], 0.99)),
            })
        })
        .collect();
    println!("{}", json!({ "targets": report }));
    Ok(())
}

/// TLS 1.2/1.3 trusting only `ca`, HTTP/1.1 by ALPN.
fn tls_client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A blocking HTTP/1.1 keep-alive client that POSTs REQUEST to /mcp and reads the whole response.
struct Client {
    io: BufReader<Box<dyn Stream>>,
    request: Vec<u8>,
    line: String,
}

impl Client {
    fn open(target: &str, tls: &Arc<rustls::ClientConfig>) -> io::Result<Self> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected http:PORT or https:PORT",
            )
        };
        let (scheme, port) = target.split_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let io: Box<dyn Stream> = match scheme {
            "http" => Box::new(tcp),
            "https" => {
                let name = ServerName::try_from("localhost").expect("a DNS name");
                let conn =
                    rustls::ClientConnection::new(tls.clone(), name).map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            _ => return Err(bad()),
        };
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{REQUEST}",
            REQUEST.len()
        );
        Ok(Self {
            io: BufReader::with_capacity(16 * 1024, io),
            request: request.into_bytes(),
            line: String::new(),
        })
    }

    /// One request and its whole response, which must be a 200.
    fn call(&mut self) -> io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(&self.request)?;
        w.flush()?;
        let status = self.read_line()?;
        let status = status.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut length, mut chunked) = (None, false);
        loop {
            let l = self.read_line()?;
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<u64>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        if chunked {
            loop {
                let size = self.read_line()?;
                let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(io::Error::other)?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {} // trailers
                    break;
                }
                self.skip(size + 2)?;
            }
        } else {
            let length = length.ok_or_else(|| io::Error::other("response without a length"))?;
            self.skip(length)?;
        }
        if status == "200" {
            Ok(())
        } else {
            Err(io::Error::other(format!("status {status}")))
        }
    }

    /// The next line, without its line end; an error at the end of the stream.
    fn read_line(&mut self) -> io::Result<String> {
        self.line.clear();
        if self.io.read_line(&mut self.line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        if io::copy(&mut (&mut self.io).take(n), &mut io::sink())? == n {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
}

/// utime + stime of a process or thread, in µs, from its /proc stat file.
fn proc_cpu_us(stat: impl AsRef<Path>) -> Option<f64> {
    let s = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Some(ticks * 1e6 / hz)
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU time of the waited-for children (here: wrk), in µs.
fn children_cpu_us() -> f64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(f64::NAN, |u| {
        let (a, b) = (u.user_time(), u.system_time());
        (a.tv_sec() + b.tv_sec()) as f64 * 1e6 + (a.tv_usec() + b.tv_usec()) as f64
    })
}

/// The wrk binary, installed from Debian on first use (not by `cargo xtask setup`: only this
/// benchmark needs it).
fn ensure_wrk() -> Result<PathBuf> {
    let found = || {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("wrk"))
                .find(|f| f.is_file())
        })
    };
    if let Some(w) = found() {
        return Ok(w);
    }
    eprintln!("xtask bench proxy: installing wrk (apt)");
    let install = || {
        sh(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
        install()?;
    }
    found().ok_or_else(|| "wrk is not on PATH after installing it".into())
}

fn wrk_version(wrk: &Path) -> String {
    // `wrk -v` prints its version and usage, and exits 1.
    Command::new(wrk)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.split(" [").next().unwrap_or(l).trim().to_owned())
        })
        .unwrap_or_else(|| "wrk".into())
}
