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
//!
//! Here: the run, start to end. Its parts: `upstream` (the server), `client` (the latency
//! client), `load` (driving wrk and the client), `usage` (what the processes spend) and
//! `report` (the tables and the JSON line).
pub mod audit;
mod client;
mod load;
mod report;
mod upstream;
mod usage;

use std::{
    process::{Command, Stdio},
    time::Instant,
};

pub use self::{
    client::{LATENCY_CMD, latency_client},
    upstream::{UPSTREAM_CMD, serve_upstream},
};
use self::{
    load::Bench,
    report::Measured,
    upstream::Upstream,
    usage::{Audit, proc_status_kib},
};
use super::Machine;
use crate::{
    Result,
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
/// Protected, served by Moat as plain HTTP with authentication (local issuer), forwarded to
/// 127.0.0.1:PLAIN.
const AUTH: u16 = 8001;
/// Distinct tokens for the uncached-validation target: more than Moat's validated-token cache
/// holds (10,000), sent in turn, so every request's token is validated afresh.
const FRESH_TOKENS: usize = 20_000;
/// The target for authentication (issue): under 10% throughput lost with a cached token.
const TARGET_AUTH_LOSS: f64 = 0.10;

/// Throughput: rounds (each target once), their length (wrk takes whole seconds), connections.
const ROUNDS: usize = 5;
const ROUND_S: u32 = 2;
const CONNS: u32 = 16;
/// Warm-up per target, discarded (connections, the agent's upstream pool, caches).
const WARMUP_S: u32 = 1;
/// Latency: rounds, and requests per target per round (after the client's warm-up).
const LAT_ROUNDS: usize = 5;
const LAT_SAMPLES: usize = 4000;

/// The targets (from the issue): throughput at least half of direct, at most 50 CPU-µs per
/// request in the agent, under 0.1 ms added per request on one keep-alive connection.
const TARGET_RATIO: f64 = 0.5;
const TARGET_CPU_US: f64 = 50.0;
const TARGET_ADDED_MS: f64 = 0.1;

struct Target {
    label: String,
    /// For wrk.
    url: String,
    /// For the latency client: `http:PORT` or `https:PORT`.
    spec: String,
    /// Through Moat (the agent's CPU time is attributed to it).
    moat: bool,
    /// The wrk script, if not the common one.
    script: Option<std::path::PathBuf>,
}

impl Target {
    fn new(label: &str, tls: bool, port: u16, moat: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self {
            label: format!("{label:<11} :{port}"),
            url: format!("{scheme}://127.0.0.1:{port}/mcp"),
            spec: format!("{scheme}:{port}"),
            moat,
            script: None,
        }
    }
}

/// A token from `moat token mint` for the auth target, and FRESH_TOKENS distinct ones signed
/// here with the same local issuer key (ES256, no kid: the issuer has one key).
fn tokens(lab: &Lab) -> Result<(String, Vec<String>)> {
    let out = Command::new(&lab.moat)
        .args(["token", "mint", "-c"])
        .arg(&lab.config)
        .args(["--server", "auth", "--sub", "bench", "--scope", "mcp:tools"])
        .output()
        .map_err(|e| format!("moat token mint: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "moat token mint: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pem_path = lab.dir.join("state/issuer/local.pem");
    let pem = std::fs::read(&pem_path).map_err(|e| format!("{}: {e}", pem_path.display()))?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let fresh = (0..FRESH_TOKENS)
        .map(|i| {
            let claims = serde_json::json!({
                "iss": "moat:local", "aud": format!("http://127.0.0.1:{AUTH}/mcp"),
                "sub": format!("bench-{i}"), "scope": "mcp:tools", "iat": now, "exp": now + 3600,
            });
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((token, fresh))
}

pub fn run() -> Result {
    let wrk = load::ensure_wrk()?;
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
        "servers:\n  - name: plain\n    port: {PLAIN}\n    upstream: http://127.0.0.1:{PLAIN}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n  - name: tls\n    port: {TLS}\n    upstream: http://127.0.0.1:{PLAIN}\n    tls: {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n  - name: auth\n    port: {AUTH}\n    upstream: http://127.0.0.1:{PLAIN}\n    public_url: http://127.0.0.1:{AUTH}/mcp\n    dangerous: {{plaintext: true}}\n    auth: {{issuer: local, required_scopes: [mcp:tools]}}\n",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display()
    );
    let mut lab = Lab::new(LAB, moat, &servers)?;
    // The log is truncated under the agent after each round (usage::Audit): no rotation by
    // size, which counts what was written.
    lab.write_config(&format!(
        "  path: {}\n  rotate: {{max_age_s: 86400}}\n",
        lab.audit.display()
    ))?;
    let script = load::write_script(&lab)?;

    let machine = Machine::new();
    let wrk_version = load::wrk_version(&wrk);
    println!(
        "moat bench proxy: {machine}, namespace {}, {wrk_version}",
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

    let (token, fresh) = tokens(&lab)?;
    let targets = [
        Target::new("direct", false, DIRECT, false),
        Target::new("moat http", false, PLAIN, true),
        Target::new("moat https", true, TLS, true),
        Target {
            script: Some(load::write_token_script(&lab, &token)?),
            ..Target::new("auth cached", false, AUTH, true)
        },
        Target {
            script: Some(load::write_tokens_script(&lab, &fresh)?),
            ..Target::new("auth fresh", false, AUTH, true)
        },
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
        let (round, usage) = bench.latency(&targets[..3])?;
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

    report::print(&Measured {
        machine,
        wrk_version,
        targets: &targets,
        many,
        one,
        one_agent,
        agent,
        threads,
        rss_idle,
        rss_hwm,
        audit,
        served,
        elapsed,
    });
    drop(upstream);
    Ok(())
}
