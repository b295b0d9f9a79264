//! `cargo xtask bench streams`: what long-lived MCP event streams cost Moat, measured in a
//! private network namespace with the default limits.
//!
//! An upstream MCP server of our own (hyper, one thread: `upstream`) issues sessions and holds
//! their GET event streams, sending each one small `notifications/message` event per period
//! (10 s; `--period-ms`), the streams' events spread over the period. A client of our own
//! (tokio, one thread: `client`) opens N sessions, each on one connection (`initialize`,
//! `notifications/initialized`, then the GET of its stream), and holds the streams. Moat runs
//! with its default `agent:` settings but for the lab's paths (10,000 connections, 256 per
//! source: the client spreads its connections over loopback addresses; the default
//! `upstream_ports`) in front of the upstream as plain HTTP without authentication (port
//! 8000) and as HTTPS with a token from Moat's own issuer (port 8443), the agent started anew
//! for each; `direct` (port 9000, not protected) holds the same streams on the upstream
//! itself, the baseline for latency.
//!
//! For each target and each N of `--streams` (default 1000,5000,10000), in turn (`stage`):
//! the agent's RSS before; the streams opened (and why any were not); held 10 s with events
//! off (the agent's idle CPU), then with events on, a period to warm up and `--measure-s`
//! (20 s) measured: the agent's CPU time per event delivered, the latency of an event from
//! the upstream's send time to the client's receipt (same clock), the agent's RSS while held;
//! at the limit (N = 10,000), BEYOND more connections, which must be refused at once and
//! counted in `moat_connections_refused_total`; then the streams closed, and the RSS 2 s and
//! 10 s after.
//!
//! The upstream and the client are this program built with the release profile (hidden
//! subcommands; `cargo xtask` itself is a debug build), driven by lines on their stdin
//! (`control`). They share the machine's CPUs with the agent. A report, not a test: it prints
//! numbers and whether the targets were met, and never fails on them.
//!
//! Here: options, the lab and the run. Its parts: `upstream`, `client` (with `http1`, its
//! HTTP/1.1, and `probe`, the capacity probe), `event` (the event and the clock), `control`
//! (driving the helpers), `agent` (what the agent holds and spends), `stage` (one N through
//! one target) and `report`.
mod agent;
mod client;
mod control;
mod event;
mod http1;
mod probe;
mod report;
mod stage;
mod upstream;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

pub use self::{
    client::{CLIENT_CMD, run as run_client},
    upstream::{UPSTREAM_CMD, serve as serve_upstream},
};
use self::{control::Helper, stage::Stage};
use super::Machine;
use crate::{
    Result,
    host::{self, Lab},
    sh,
};

const LAB: &str = "moat-bench-streams";
/// Protected, plain HTTP without authentication; also where the upstream listens for Moat.
const PLAIN: u16 = 8000;
/// Protected, HTTPS with a token, forwarded to 127.0.0.1:PLAIN.
const TLS: u16 = 8443;
/// Not protected: the upstream reached directly.
const DIRECT: u16 = 9000;
/// The default `agent.max_connections`.
const LIMIT: usize = 10_000;

const USAGE: &str = "usage: cargo xtask bench streams [--streams 1000,5000,10000] [--targets direct,http,https] [--period-ms 10000] [--measure-s 20]";

struct Options {
    streams: Vec<usize>,
    targets: Vec<String>,
    period_ms: u64,
    measure_s: u64,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        streams: vec![1000, 5000, 10_000],
        targets: vec!["direct".into(), "http".into(), "https".into()],
        period_ms: 10_000,
        measure_s: 20,
    };
    let list = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let v = args.next().ok_or(USAGE)?;
        match a.as_str() {
            "--streams" => {
                o.streams = list(v)
                    .iter()
                    .map(|n| n.parse().ok().filter(|&n| n > 0).ok_or(USAGE))
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--targets" => {
                o.targets = list(v);
                if o.targets
                    .iter()
                    .any(|t| !["direct", "http", "https"].contains(&t.as_str()))
                {
                    return Err(USAGE.into());
                }
            }
            "--period-ms" => o.period_ms = v.parse().ok().filter(|&n| n > 0).ok_or(USAGE)?,
            "--measure-s" => o.measure_s = v.parse().ok().filter(|&n| n > 0).ok_or(USAGE)?,
            _ => return Err(USAGE.into()),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result {
    let opts = options(args)?;
    let moat = host::build_moat()?;
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
        "servers:
  - name: plain
    port: {PLAIN}
    upstream: http://127.0.0.1:{PLAIN}
    dangerous: {{plaintext: true, unauthenticated: true}}
  - name: tls
    port: {TLS}
    upstream: http://127.0.0.1:{PLAIN}
    public_url: https://localhost:{TLS}/mcp
    tls: {{cert: {}, key: {}}}
    auth: {{issuer: local, required_scopes: [mcp:tools]}}
authorization_server: {{issuer: 'http://127.0.0.1:9443', dangerous: {{plaintext: true}}}}
",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display()
    );
    let mut lab = Lab::new(LAB, moat, &servers)?;
    // The agent's defaults but for the lab's paths: the default upstream ports too.
    lab.upstream_ports = None;
    lab.write_config(&format!("  path: {}\n", lab.audit.display()))?;
    let mut upstream = Helper::start(
        "upstream",
        &lab,
        &xtask,
        &[
            UPSTREAM_CMD.into(),
            opts.period_ms.to_string(),
            PLAIN.to_string(),
            DIRECT.to_string(),
        ],
    )?;
    let machine = Machine::new().to_string();
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let load0 = load();
    println!(
        "moat bench streams: {machine}, namespace {}, load {load0}",
        lab.name
    );
    let mut rows = Vec::new();
    for target in &opts.targets {
        let (port, tls) = match target.as_str() {
            "direct" => (DIRECT, false),
            "http" => (PLAIN, false),
            _ => (TLS, true),
        };
        let agent = if target == "direct" {
            lab.kill_agent();
            None
        } else {
            lab.kill_agent();
            lab.start_agent()?;
            Some(
                lab.status()
                    .and_then(|s| s["agent_pid"].as_u64())
                    .ok_or("moat status --json gave no agent_pid")? as u32,
            )
        };
        let token = if tls { Some(mint(&lab)?) } else { None };
        let mut client = Helper::start(
            "client",
            &lab,
            &xtask,
            &[
                CLIENT_CMD.into(),
                port.to_string(),
                if tls {
                    ca.display().to_string()
                } else {
                    "-".into()
                },
                token.map_or("-".into(), |t| t.display().to_string()),
            ],
        )?;
        for &n in &opts.streams {
            eprintln!("{target}: {n} streams");
            let row = Stage {
                lab: &lab,
                agent,
                client: &mut client,
                upstream: &mut upstream,
                measure: Duration::from_secs(opts.measure_s),
                period: Duration::from_millis(opts.period_ms),
                limit: LIMIT,
            }
            .run(target, n)?;
            rows.push(row);
        }
    }
    lab.kill_agent();
    report::print(&report::Report {
        machine,
        load: [load0, load()],
        period_ms: opts.period_ms,
        measure_s: opts.measure_s,
        rows: &rows,
    });
    drop(upstream);
    drop(lab);
    Ok(())
}

/// A token for the TLS server from `moat token mint` (the agent runs), in a file.
fn mint(lab: &Lab) -> Result<std::path::PathBuf> {
    let out = Command::new(&lab.moat)
        .args(["token", "mint", "-c"])
        .arg(&lab.config)
        .args(["--server", "tls", "--sub", "bench", "--scope", "mcp:tools"])
        .output()
        .map_err(|e| format!("moat token mint: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "moat token mint: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = lab.dir.join("token");
    std::fs::write(&path, &out.stdout).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
