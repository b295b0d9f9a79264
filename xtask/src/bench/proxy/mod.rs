//! `cargo xtask bench proxy`: what the proxy costs per request, measured in a private network
//! namespace, against the upstream reached directly and against HAProxy in the same rounds.
//!
//! A fast upstream MCP server (hyper, HTTP/1.1, one thread, TCP_NODELAY) answers every POST with
//! a small JSON-RPC result on 127.0.0.1:8000 (protected: Moat serves it as plain HTTP on port
//! 8000 and as HTTPS on port 8443), on 127.0.0.1:9000 (not protected: the direct baseline) and
//! on 127.0.0.1:9001 (not protected: for HAProxy, which serves it as plain HTTP on 8100 and as
//! HTTPS with Moat's certificate on 8543: the reference, a plain reverse proxy with keep-alive
//! to the upstream, no logging). Clients send the same `tools/call` to these targets over
//! keep-alive connections, to Moat with authentication on port 8001 (plain HTTP, the same
//! upstream): with one token (validated once, then cached), a new token with each request
//! (every signature checked, every request a principal of its own), and USERS principals'
//! tokens in turn (each principal with upstream connections of its own); and to `moat full` on
//! port 8444: TLS, a cached token, the Cedar policies of `full.cedar` (35 policies with
//! conditions on groups, tools, arguments, time, network and rates), audit to a file with the
//! default fsync, as every Moat target has.
//!
//! 1. Throughput: wrk (Debian package, installed on first use) with 16 connections, the targets
//!    in rotating order within each round. For the proxied targets the proxy's (Moat's agent
//!    or HAProxy) CPU time (/proc/<pid>/stat utime and stime) and context switches (voluntary
//!    and involuntary, all its threads) are divided by the requests answered, and its VmRSS is
//!    sampled. Each Moat target is compared with HAProxy's plain and TLS targets round by round
//!    (throughput, CPU per request).
//! 2. Latency on one keep-alive connection per target (direct, moat http and https, haproxy
//!    http and https): a client of our own sends one request at a time, alternating between
//!    the targets, so that all see the same state of the machine (on a small VM whether two
//!    processes share a CPU changes a round trip severalfold, and that changes from second to
//!    second).
//!
//! The upstream server and the latency client are this program built with the release profile
//! (hidden subcommands; `cargo xtask` itself is a debug build). Generator, proxy and upstream
//! share the machine's CPUs, unpinned: the direct baseline keeps two processes busy, the
//! proxied targets three.
//!
//! With `--baseline <ref>` the `moat` of that git ref (e.g. the landed release) is built too
//! (release profile, its own worktree and target directory under target/) and run in a second
//! namespace with the same servers and an upstream of its own; each of its Moat targets runs
//! right after (or before: in turn) the current build's in every throughput round, and the
//! report gives their ratio. `--rounds <n>` changes the number of throughput rounds.
//! `--profile` runs the current `moat` built with frame pointers and records the agent's
//! stacks under the full target's load (`profile`).
//!
//! The auth servers trust Moat's own issuer (`issuer: local`, with the `authorization_server:`
//! section; the many distinct tokens from `moat token mint --count`); a baseline `moat` from
//! before the authorization server gets the config and tokens of its time (`site`). The full
//! server is checked before the load: the bench's call goes through, a denied tool is refused.
//!
//! A report, not a test: it prints numbers and whether the stated targets were met, and never
//! fails on them. It fails when a correctness check does (`check`): a policy decision above,
//! a request not answered 2xx, an answered request the upstream did not serve, fewer request
//! records in the audit log than requests forwarded.
//!
//! Here: the run, start to end. Its parts: `site` (a namespace with a `moat`, its config and
//! tokens), `target` (the targets), `upstream` (the server), `haproxy` (the reference),
//! `client` (the latency client), `load` (driving wrk and the client), `usage` (what the
//! processes spend), `check` (the correctness checks), `baseline` (building the other
//! `moat`), `profile` (perf and the flame graph) and `report` (the tables and the JSON line).
pub mod audit;
mod baseline;
mod check;
mod client;
mod haproxy;
mod load;
mod profile;
mod report;
mod site;
pub mod soak;
mod target;
mod upstream;
mod usage;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use self::{
    check::Counts,
    load::{Bench, Run},
    report::Measured,
    site::Site,
    target::{Proxy, Target},
    usage::proc_status_kib,
};
pub use self::{
    client::{LATENCY_CMD, latency_client},
    upstream::{UPSTREAM_CMD, serve_upstream},
};
use super::Machine;
use crate::{Result, host, sh};

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
/// Protected, served by Moat as HTTPS with authentication and the policies of `full.cedar`,
/// forwarded to 127.0.0.1:PLAIN.
const FULL: u16 = 8444;
/// Moat's authorization server (its issuer URL, plain HTTP on loopback).
const AUTHZ: u16 = 8090;
/// HAProxy, as plain HTTP and as HTTPS (Moat's certificate), forwarding to the upstream on
/// HAPROXY_UP (not protected; its own port, so that the upstream counts what each proxy sent).
const HAPROXY_PLAIN: u16 = 8100;
const HAPROXY_TLS: u16 = 8543;
const HAPROXY_UP: u16 = 9001;
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
/// With `--profile`: the targets recorded (plain Moat, and Moat doing all of its work).
const PROFILED: [&str; 2] = ["http", "full"];
/// The load under which the agent's memory is judged: plain, TLS, and full.
const LOADED: [&str; 3] = ["http", "https", "full"];
/// With `--profile`: the length of each recorded run.
const PROFILE_S: u32 = 5;
/// Warm-up per target, discarded (connections, the agent's upstream pool, caches).
const WARMUP_S: u32 = 1;
/// Latency: rounds, and requests per target per round (after the client's warm-up).
const LAT_ROUNDS: usize = 5;
/// Latency is measured for the first targets: direct, moat http and https, haproxy http and
/// https.
const LAT_TARGETS: usize = 5;
const LAT_SAMPLES: usize = 4000;

/// The targets, against HAProxy in the same rounds: plain Moat (with audit) at least 0.8x plain
/// HAProxy's throughput with at most 1.3x its CPU per request; Moat doing all its work (TLS,
/// token, policy, audit) at least 0.7x HAProxy with TLS, at most 1.5x its CPU; at most 0.7
/// context switches per request; on one connection, at most 0.05 ms more added at p50 than
/// HAProxy adds; under 20 MiB resident after start and 40 MiB under load.
const TARGET_HTTP_RPS: f64 = 0.8;
const TARGET_HTTP_CPU: f64 = 1.3;
const TARGET_FULL_RPS: f64 = 0.7;
const TARGET_FULL_CPU: f64 = 1.5;
const TARGET_CS: f64 = 0.7;
const TARGET_ADDED_MS: f64 = 0.05;
const TARGET_RSS_IDLE_MIB: f64 = 20.0;
const TARGET_RSS_LOAD_MIB: f64 = 40.0;

/// `[--baseline <ref>] [--rounds <n>] [--profile]`.
struct Options {
    baseline: Option<String>,
    rounds: usize,
    profile: bool,
}

fn options(args: &[String]) -> Result<Options> {
    const USAGE: &str =
        "usage: cargo xtask bench proxy [--baseline <git ref>] [--rounds <n>] [--profile]";
    let mut o = Options {
        baseline: None,
        rounds: ROUNDS,
        profile: false,
    };
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--profile" => o.profile = true,
            "--baseline" => o.baseline = Some(args.next().ok_or(USAGE)?.clone()),
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or(USAGE)?;
            }
            _ => return Err(USAGE.into()),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result {
    let opts = options(args)?;
    let wrk = load::ensure_apt("wrk", "wrk")?;
    let moat = if opts.profile {
        profile::build_moat()?
    } else {
        host::build_moat()?
    };
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
    let policy = dir.join("full.cedar");
    std::fs::write(&policy, include_str!("full.cedar"))
        .map_err(|e| format!("{}: {e}", policy.display()))?;
    let servers = servers(&certs, &policy);
    let (cert, key) = (certs.join("localhost.crt"), certs.join("localhost.key"));
    let mut site = Site::start(LAB, moat, &servers, &xtask, &ca, Some((&cert, &key)))?;
    let mut base = baseline
        .as_ref()
        .map(|b| Site::start(BASE_LAB, b.moat.clone(), &servers, &xtask, &ca, None))
        .transpose()?;

    let machine = Machine::new();
    let wrk_version = load::wrk_version(&wrk);
    println!(
        "moat bench proxy: {machine}, namespace {}, {wrk_version}; tokens: {}",
        site.lab.name,
        site.issuer.describe()
    );
    if let Some(h) = &site.haproxy {
        let threads = std::fs::read_dir(format!("/proc/{}/task", h.pid)).map_or(0, |d| d.count());
        println!(
            "reference: {}, {threads} threads, no logging, http-reuse always",
            h.version
        );
    }
    if opts.profile {
        println!("profile: this moat is built with frame pointers (target/bench-profile)");
    }
    if let (Some(b), Some(s)) = (&baseline, &base) {
        println!(
            "baseline: {} ({}), namespace {}, its Moat targets in the same rounds; tokens: {}",
            b.reference,
            b.commit,
            s.lab.name,
            s.issuer.describe()
        );
    }
    let rss_idle = proc_status_kib(site.agent, "VmRSS");
    let threads = std::fs::read_dir(format!("/proc/{}/task", site.agent)).map_or(0, |d| d.count());
    let served0 = site.upstream.served()?;
    let base_served0 = base.as_mut().map(|s| s.upstream.served()).transpose()?;
    let targets = &site.targets;
    let bench = site.bench(&xtask, &ca);
    // The baseline's bench, and its targets (the same list).
    let other = base.as_ref().map(|s| (s.bench(&xtask, &ca), &s.targets));
    let started = Instant::now();

    // 1. Throughput. Warm-up, discarded; a target that answers nothing stops the bench here.
    // The targets of the memory target's load first: the agent's peak RSS under it is read
    // before the auth targets fill its token cache and open connections for 20,000 principals.
    let loaded = |t: &&Target| LOADED.contains(&t.id);
    // The peak so far (the agent's start, the tokens minted for the auth targets) is not the
    // load's: the kernel starts the peak anew from the current RSS.
    std::fs::write(format!("/proc/{}/clear_refs", site.agent), "5")
        .map_err(|e| format!("resetting the agent's peak RSS: {e}"))?;
    for t in targets.iter().filter(loaded) {
        warm_up(&bench, t)?;
    }
    let rss_load = proc_status_kib(site.agent, "VmHWM");
    for t in targets.iter().filter(|t| !loaded(t)) {
        warm_up(&bench, t)?;
    }
    if let Some((b, ts)) = &other {
        for t in ts.iter().filter(|t| t.moat()) {
            warm_up(b, t)?;
        }
    }
    let mut many = vec![Vec::new(); targets.len()];
    let mut base_many = vec![Vec::new(); targets.len()];
    for round in 0..opts.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let other = other.as_ref().filter(|_| targets[i].moat());
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
    // 3. With --profile: the agent's stacks under each profiled target's load, not measured.
    let mut recorded = Vec::new();
    for id in PROFILED.iter().filter(|_| opts.profile) {
        let t = &targets[target::at(targets, id)];
        let data = host::workspace().join(format!("target/bench/perf-{id}.data"));
        let rec = profile::Recording::start(site.agent, &data)?;
        let run = bench.wrk(t, CONNS, PROFILE_S);
        let data = rec.stop()?;
        run?;
        let flame = host::workspace().join(format!("target/bench/flame-{id}.svg"));
        let title = format!("moat agent under bench proxy: {}", t.name());
        recorded.push((t.name(), profile::analyse(&data, &title, &flame)?));
    }
    let Bench { audit, .. } = bench;
    let audit = audit.finish(&site.lab.audit);
    let base_audit = other.map(|(b, _)| b.audit.finish(&b.lab.audit));
    let served: Vec<u64> = (site.upstream.served()?.iter())
        .zip(&served0)
        .map(|(n, n0)| n - n0)
        .collect();
    let base_served = base
        .as_mut()
        .zip(base_served0)
        .map(|(s, s0)| s.upstream.served().map(|n| n[1] - s0[1]))
        .transpose()?;
    site.lab.kill_agent();

    // The correctness checks: the policy's (made at the start), then the load's.
    let mut checks = std::mem::take(&mut site.checks);
    let through_moat = |runs: &[Vec<Run>], f: fn(&Run) -> u64| -> u64 {
        targets
            .iter()
            .zip(runs)
            .filter(|(t, _)| t.moat())
            .flat_map(|(_, rs)| rs.iter().map(f))
            .sum()
    };
    let all = |runs: &[Vec<Run>], f: fn(&Run) -> u64| -> u64 { runs.iter().flatten().map(f).sum() };
    let lat_moat = |f: fn(&load::LatRound) -> u64| -> u64 {
        targets
            .iter()
            .zip(&one)
            .filter(|(t, _)| t.moat())
            .flat_map(|(_, rs)| rs.iter().map(f))
            .sum()
    };
    let lat_all = |f: fn(&load::LatRound) -> u64| -> u64 { one.iter().flatten().map(f).sum() };
    checks.extend(check::after_load(
        &site.lab.name,
        &Counts {
            // The latency client's calls, warm-up included: the upstream counts those too.
            answered: through_moat(&many, |r| r.ok) + lat_moat(|r| r.calls - r.errors),
            bad_status: all(&many, |r| r.bad_status),
            errors: all(&many, |r| r.errors),
            failed: lat_all(|r| r.errors),
            served: served[1],
            audited: audit.requests,
        },
    ));
    if let (Some(b), Some(a), Some(n)) = (base.as_mut(), &base_audit, base_served) {
        checks.append(&mut b.checks);
        checks.extend(check::after_load(
            &b.lab.name,
            &Counts {
                answered: through_moat(&base_many, |r| r.ok),
                bad_status: through_moat(&base_many, |r| r.bad_status),
                errors: through_moat(&base_many, |r| r.errors),
                failed: 0,
                served: n,
                audited: a.requests,
            },
        ));
    }

    // The agent's CPU per request under load on the full target (TLS, auth, policy, audit):
    // what inspecting a result adds to when the agent is the bottleneck.
    let full_cpu: Vec<f64> = many[target::at(targets, "full")]
        .iter()
        .filter_map(|r| r.proxy_us)
        .collect();
    let agent_us = super::stats::median(&full_cpu);
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
        rss_load,
        rss_hwm,
        audit,
        served: [served[0], served[1], served[2]],
        elapsed,
        baseline: baseline.map(|b| report::AgainstBaseline {
            reference: b.reference,
            commit: b.commit,
            many: base_many,
        }),
        checks: &checks,
        profile: recorded,
    });
    drop(base);
    drop(site);
    // What scoring a request against its subject's baseline costs (in process, criterion).
    println!("{}", super::behaviour::line(super::behaviour::scoring()?));
    // What inspecting a result costs, against the agent's CPU per request in this run.
    for line in super::inspect::measure()?.lines(Some(agent_us)) {
        println!("{line}");
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}: {}", c.site, c.what, c.detail))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "correctness checks failed:\n  {}",
            failed.join("\n  ")
        ))
    }
}

/// The config's servers: plain, tls and auth (local issuer) for the load, full (TLS, local
/// issuer, the policies of `policy`) for the policy checks; all to the upstream on PLAIN.
fn servers(certs: &Path, policy: &Path) -> String {
    let tls = format!(
        "tls: {{cert: {}, key: {}}}",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display()
    );
    let up = format!("upstream: http://127.0.0.1:{PLAIN}");
    format!(
        "servers:
  - name: plain
    port: {PLAIN}
    {up}
    dangerous: {{plaintext: true, unauthenticated: true}}
  - name: tls
    port: {TLS}
    {up}
    {tls}
    dangerous: {{unauthenticated: true}}
  - name: auth
    port: {AUTH}
    {up}
    public_url: http://127.0.0.1:{AUTH}/mcp
    dangerous: {{plaintext: true}}
    auth: {{issuer: local, required_scopes: [mcp:tools]}}
  - name: full
    port: {FULL}
    {up}
    public_url: https://127.0.0.1:{FULL}/mcp
    {tls}
    auth: {{issuer: local, required_scopes: [mcp:tools]}}
    policy: {{file: {}, claims: [department]}}
",
        policy.display()
    )
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
