//! `cargo xtask bench proxy`: what the proxy costs per request, measured in a private network
//! namespace.
//!
//! A fast upstream MCP server (hyper, HTTP/1.1, one thread, TCP_NODELAY) answers every POST with
//! a small JSON-RPC result on 127.0.0.1:8000 (protected: Moat serves it as plain HTTP on port 8000
//! and as HTTPS on port 8443) and on 127.0.0.1:9000 (not protected: the direct baseline). Clients
//! send the same `tools/call` to the three targets over keep-alive connections, and to Moat
//! with authentication on port 8001 (the same upstream): with one token (validated once, then
//! cached), a new token with each request (every signature checked, every request a principal
//! of its own), and USERS principals' tokens in turn (each principal with upstream connections
//! of its own):
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
//! With `--baseline <ref>` the `moat` of that git ref (e.g. the landed release) is built too
//! (release profile, its own worktree and target directory under target/) and run in a second
//! namespace with the same servers and an upstream of its own; each of its Moat targets runs
//! right after (or before: in turn) the current build's in every throughput round, and the
//! report gives their ratio. `--rounds <n>` changes the number of throughput rounds.
//!
//! A report, not a test: it prints numbers and whether the stated targets were met, and never
//! fails on them.
//!
//! Here: the run, start to end. Its parts: `upstream` (the server), `client` (the latency
//! client), `load` (driving wrk and the client), `usage` (what the processes spend),
//! `baseline` (building the other `moat`) and `report` (the tables and the JSON line).
pub mod audit;
mod baseline;
mod client;
mod load;
mod report;
mod upstream;
mod usage;

use std::{
    path::Path,
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
/// Principals of the many-principals target (each with upstream connections of its own): as
/// many as wrk connections, their tokens sent in turn (wrk's script cannot tie a token to a
/// connection).
const USERS: usize = CONNS as usize;
/// The target for authentication (issue): under 10% throughput lost with a cached token.
const TARGET_AUTH_LOSS: f64 = 0.10;
/// Against `--baseline`: at most 5% throughput lost (plaintext and TLS).
const TARGET_BASELINE_LOSS: f64 = 0.05;
/// The second namespace, for the baseline build.
const BASE_LAB: &str = "moat-bench-proxy-base";

/// Throughput: rounds (each target once; `--rounds`), their length (wrk takes whole seconds),
/// connections.
const ROUNDS: usize = 5;
const ROUND_S: u32 = 2;
const CONNS: u32 = 16;
/// Warm-up per target, discarded (connections, the agent's upstream pool, caches).
const WARMUP_S: u32 = 1;
/// Latency: rounds, and requests per target per round (after the client's warm-up).
const LAT_ROUNDS: usize = 5;
/// Latency is measured for the first targets: direct, http, https.
const LAT_TARGETS: usize = 3;
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

/// The tokens of the auth targets.
struct Tokens {
    /// From `moat token mint`, sent with every request.
    one: String,
    /// USERS principals, in turn.
    users: Vec<String>,
    /// FRESH_TOKENS principals, in turn.
    fresh: Vec<String>,
}

/// A token from `moat token mint` for the auth target, and USERS and FRESH_TOKENS distinct
/// ones signed here with the same local issuer key (ES256, no kid: the issuer has one key).
fn tokens(lab: &Lab) -> Result<Tokens> {
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
    let one = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pem_path = lab.dir.join("state/issuer/local.pem");
    let pem = std::fs::read(&pem_path).map_err(|e| format!("{}: {e}", pem_path.display()))?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let sign = |sub: String| {
        let claims = serde_json::json!({
            "iss": "moat:local", "aud": format!("http://127.0.0.1:{AUTH}/mcp"),
            "sub": sub, "scope": "mcp:tools", "iat": now, "exp": now + 3600,
        });
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
    };
    Ok(Tokens {
        one,
        users: (0..USERS)
            .map(|i| sign(format!("user-{i}")))
            .collect::<Result<_>>()?,
        fresh: (0..FRESH_TOKENS)
            .map(|i| sign(format!("bench-{i}")))
            .collect::<Result<_>>()?,
    })
}

/// The targets, in the order the report expects: direct, http, https, auth cached, auth
/// fresh, auth users.
fn targets(lab: &Lab) -> Result<Vec<Target>> {
    let tokens = tokens(lab)?;
    Ok(vec![
        Target::new("direct", false, DIRECT, false),
        Target::new("moat http", false, PLAIN, true),
        Target::new("moat https", true, TLS, true),
        Target {
            script: Some(load::write_token_script(lab, &tokens.one)?),
            ..Target::new("auth cached", false, AUTH, true)
        },
        Target {
            script: Some(load::write_tokens_script(lab, "fresh", &tokens.fresh)?),
            ..Target::new("auth fresh", false, AUTH, true)
        },
        Target {
            script: Some(load::write_tokens_script(lab, "users", &tokens.users)?),
            ..Target::new("auth users", false, AUTH, true)
        },
    ])
}

/// `[--baseline <ref>] [--rounds <n>]`.
struct Options {
    baseline: Option<String>,
    rounds: usize,
}

fn options(args: &[String]) -> Result<Options> {
    const USAGE: &str = "usage: cargo xtask bench proxy [--baseline <git ref>] [--rounds <n>]";
    let mut o = Options {
        baseline: None,
        rounds: ROUNDS,
    };
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--baseline", Some(r)) => o.baseline = Some(r.clone()),
            ("--rounds", Some(n)) => {
                o.rounds = n.parse().ok().filter(|&n| n > 0).ok_or(USAGE)?;
            }
            _ => return Err(USAGE.into()),
        }
    }
    Ok(o)
}

/// A namespace with the agent and the upstream running, ready for load.
struct Site {
    /// Declared before `lab`: stops before the namespace goes.
    upstream: Upstream,
    lab: Lab,
    agent: u32,
    targets: Vec<Target>,
    script: std::path::PathBuf,
}

impl Site {
    fn start(name: &str, moat: std::path::PathBuf, servers: &str, xtask: &Path) -> Result<Self> {
        let mut lab = Lab::new(name, moat, servers)?;
        // The log is truncated under the agent after each round (usage::Audit): no rotation
        // by size, which counts what was written.
        lab.write_config(&format!(
            "  path: {}\n  rotate: {{max_age_s: 86400}}\n",
            lab.audit.display()
        ))?;
        let script = load::write_script(&lab)?;
        let upstream = Upstream::start(&lab, xtask, [DIRECT, PLAIN])?;
        lab.start_agent()?;
        let agent = lab
            .status()
            .and_then(|s| s["agent_pid"].as_u64())
            .ok_or("moat status --json gave no agent_pid")? as u32;
        let targets = targets(&lab)?;
        Ok(Self {
            upstream,
            lab,
            agent,
            targets,
            script,
        })
    }

    fn bench<'a>(&'a self, xtask: &'a Path, ca: &Path) -> Bench<'a> {
        Bench {
            lab: &self.lab,
            script: &self.script,
            xtask,
            ca: ca.to_owned(),
            agent: self.agent,
            upstream: self.upstream.pid,
            audit: Audit::default(),
        }
    }
}

pub fn run(args: &[String]) -> Result {
    let opts = options(args)?;
    let wrk = load::ensure_wrk()?;
    let moat = host::build_moat()?;
    let baseline = opts.baseline.as_deref().map(baseline::build).transpose()?;
    sh(Command::new(env!("CARGO")).args(["build", "--quiet", "--release", "-p", "xtask"]))?;
    let xtask = host::workspace().join("target/release/xtask");
    let dir = host::workspace().join("target").join(LAB);
    let certs = dir.join("certs");
    sh(Command::new(&moat)
        .args(["cert", "self-signed", "localhost", "--out"])
        .arg(&certs)
        .stdout(Stdio::null()))?;
    let ca = certs.join("localhost-ca.crt");
    let servers = format!(
        "servers:\n  - name: plain\n    port: {PLAIN}\n    upstream: http://127.0.0.1:{PLAIN}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n  - name: tls\n    port: {TLS}\n    upstream: http://127.0.0.1:{PLAIN}\n    tls: {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n  - name: auth\n    port: {AUTH}\n    upstream: http://127.0.0.1:{PLAIN}\n    public_url: http://127.0.0.1:{AUTH}/mcp\n    dangerous: {{plaintext: true}}\n    auth: {{issuer: local, required_scopes: [mcp:tools]}}\n",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display()
    );
    let mut site = Site::start(LAB, moat, &servers, &xtask)?;
    let base = baseline
        .as_ref()
        .map(|b| Site::start(BASE_LAB, b.moat.clone(), &servers, &xtask))
        .transpose()?;

    let machine = Machine::new();
    let wrk_version = load::wrk_version(&wrk);
    println!(
        "moat bench proxy: {machine}, namespace {}, {wrk_version}",
        site.lab.name
    );
    if let (Some(b), Some(s)) = (&baseline, &base) {
        println!(
            "baseline: {} ({}), namespace {}, its Moat targets in the same rounds",
            b.reference, b.commit, s.lab.name
        );
    }
    let rss_idle = proc_status_kib(site.agent, "VmRSS");
    let threads = std::fs::read_dir(format!("/proc/{}/task", site.agent)).map_or(0, |d| d.count());
    let served0 = site.upstream.served()?;
    let targets = &site.targets;
    let bench = site.bench(&xtask, &ca);
    // The baseline's bench, and its targets (the same list).
    let other = base.as_ref().map(|s| (s.bench(&xtask, &ca), &s.targets));
    let started = Instant::now();

    // 1. Throughput. Warm-up, discarded; a target that answers nothing stops the bench here.
    for t in targets {
        warm_up(&bench, t)?;
    }
    if let Some((b, ts)) = &other {
        for t in ts.iter().filter(|t| t.moat) {
            warm_up(b, t)?;
        }
    }
    let mut many = vec![Vec::new(); targets.len()];
    let mut base_many = vec![Vec::new(); targets.len()];
    for round in 0..opts.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let other = other.as_ref().filter(|_| targets[i].moat);
            // The current build and the baseline back to back, each first in turn.
            if let Some((b, ts)) = other.filter(|_| round % 2 == 1) {
                base_many[i].push(b.wrk(&ts[i], CONNS, ROUND_S)?);
            }
            many[i].push(bench.wrk(&targets[i], CONNS, ROUND_S)?);
            if let Some((b, ts)) = other.filter(|_| round % 2 == 0) {
                base_many[i].push(b.wrk(&ts[i], CONNS, ROUND_S)?);
            }
        }
    }

    // 2. Latency on one connection per target, requests alternating between the targets.
    let mut one = vec![Vec::new(); LAT_TARGETS];
    let mut one_agent = Vec::new();
    for _ in 0..LAT_ROUNDS {
        let (round, usage) = bench.latency(&targets[..LAT_TARGETS])?;
        for (v, r) in one.iter_mut().zip(round) {
            v.push(r);
        }
        one_agent.push(usage);
    }

    let elapsed = started.elapsed();
    let rss_hwm = proc_status_kib(site.agent, "VmHWM");
    let Bench { audit, .. } = bench;
    let audit = audit.finish(&site.lab.audit);
    drop(other);
    let served = site.upstream.served()?;
    let served = [served[0] - served0[0], served[1] - served0[1]];
    site.lab.kill_agent();

    report::print(&Measured {
        machine,
        wrk_version,
        targets: &site.targets,
        rounds: opts.rounds,
        many,
        one,
        one_agent,
        agent: site.agent,
        threads,
        rss_idle,
        rss_hwm,
        audit,
        served,
        elapsed,
        baseline: baseline.map(|b| report::AgainstBaseline {
            reference: b.reference,
            commit: b.commit,
            many: base_many,
        }),
    });
    drop(base);
    drop(site);
    Ok(())
}

/// A short run of `t`, discarded; an error if it answered nothing.
fn warm_up(b: &Bench, t: &Target) -> Result {
    let r = b.wrk(t, CONNS, WARMUP_S)?;
    if r.ok == 0 {
        return Err(format!(
            "{}: no successful response in the warm-up ({} bad status, {} errors); see {}",
            t.url,
            r.bad_status,
            r.errors,
            b.lab.dir.join("agent.log").display()
        ));
    }
    Ok(())
}
