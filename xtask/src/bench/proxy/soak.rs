//! `cargo xtask soak [--minutes N]`: the release agent's `moat full` server (TLS, a token on
//! every request, the Cedar policies of `full.cedar`, the audit log) under mixed traffic for N
//! minutes (60 by default) at about half the rate it sustains, its policy file and its
//! certificate replaced every minute. Each minute it prints the agent's RSS, open files and
//! threads, the requests answered and failed, and the audit log's request records against the
//! requests; at the end, the growth over the run. A report: it fails only when the agent dies
//! or answers nothing.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use super::{
    CONNS, FULL, LAB, load,
    site::{self, Site},
    target::{self, Target},
    usage::proc_status_kib,
};
use crate::{Result, host, sh};

/// The mixed traffic, in turn on each connection: a permitted call, a call the policy refuses
/// (200 with a JSON-RPC error), a ping. `__DELAY__` (ms) paces each connection: the rate is
/// about the connections times 1000 / (delay + latency).
const MIXED_LUA: &str = r#"
local bodies = {
  '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}',
  '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repository","arguments":{"text":"hi"}}}',
  '{"jsonrpc":"2.0","id":3,"method":"ping"}',
}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
delay = function() return __DELAY__ end
"#;

/// Each paced connection waits this long before each request (wrk's delay is in ms).
const PACED_DELAY_MS: u64 = 10;

struct Sample {
    minute: u32,
    answered: u64,
    failed: u64,
    rps: f64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
    records: u64,
}

pub fn run(args: &[String]) -> Result {
    let minutes: u32 = match args {
        [] => 60,
        [flag, n] if flag == "--minutes" => n.parse().map_err(|_| "--minutes takes a number")?,
        _ => return Err("usage: cargo xtask soak [--minutes N]".into()),
    };
    load::ensure_apt("wrk", "wrk")?;
    let moat = host::build_moat()?;
    sh(Command::new(env!("CARGO")).args(["build", "--quiet", "--release", "-p", "xtask"]))?;
    let xtask = host::workspace().join("target/release/xtask");
    let name = format!("{LAB}-soak");
    let dir = host::workspace().join("target").join(&name);
    let certs = dir.join("certs");
    let issue_cert = |moat: &Path| {
        sh(Command::new(moat)
            .args(["cert", "self-signed", "localhost", "--out"])
            .arg(&certs)
            .stdout(Stdio::null()))
    };
    issue_cert(&moat)?;
    let ca = certs.join("localhost-ca.crt");
    let policy = dir.join("full.cedar");
    std::fs::write(&policy, include_str!("full.cedar")).map_err(|e| e.to_string())?;
    let site = Site::start(
        &name,
        moat.clone(),
        &super::servers(&certs, &policy),
        &xtask,
        &ca,
        None,
    )?;
    if let Some(c) = site.checks.iter().find(|c| !c.ok) {
        return Err(format!("{}: {}", c.what, c.detail));
    }
    let full = &site.targets[target::at(&site.targets, "full")];
    // The bench's tokens last an hour: the soak's lasts the whole run (and a margin).
    let ttl = (u64::from(minutes) + 15) * 60;
    let token = site::mint(
        &site.lab,
        &[
            "--server",
            "full",
            "--sub",
            "soak",
            "--claim",
            r#"groups=["engineering","staff","oncall"]"#,
            "--claim",
            "department=platform",
            "--ttl",
            &ttl.to_string(),
        ],
    )?;
    let token_script =
        std::fs::read_to_string(load::write_token_script(&site.lab, "soak", &token)?)
            .map_err(|e| e.to_string())?;
    let script = |delay_ms: u64| -> Result<Target> {
        let path = site.lab.dir.join(format!("soak-{delay_ms}.lua"));
        let lua = token_script.clone() + &MIXED_LUA.replace("__DELAY__", &delay_ms.to_string());
        std::fs::write(&path, lua).map_err(|e| e.to_string())?;
        Ok(Target {
            script: Some(path),
            ..Target::new("full", "moat full", true, FULL, super::target::Proxy::Moat)
        })
    };
    let bench = site.bench(&xtask, &ca);

    // The rate the agent sustains with this traffic, then half of it, paced per connection.
    let max = bench.wrk(&script(0)?, CONNS, 10)?;
    if max.ok == 0 {
        return Err(format!("no answer from {}", full.url));
    }
    let half = max.rps / 2.0;
    let conns = ((half * PACED_DELAY_MS as f64 / 1000.0).round() as u32).max(1);
    let paced = script(PACED_DELAY_MS)?;
    // What the audit log holds from the measurement and the checks: not the soak's.
    let before = bench.audit.requests();
    println!(
        "moat soak: {minutes} min of mixed traffic (permitted call, refused call, ping) on `moat full`; \
         maximum {:.0} req/s (16 connections), paced for about {half:.0} req/s ({conns} connections, \
         each request {PACED_DELAY_MS} ms after the last answer); policy and certificate replaced every minute",
        max.rps
    );
    println!(
        "minute  answered  failed   req/s  rss MiB  open fds  threads  request records  records - requests"
    );
    let agent = site.agent;
    let started = Instant::now();
    let (mut answered, mut failed) = (0u64, 0u64);
    let mut samples = Vec::new();
    for minute in 1..=minutes {
        let r = bench.wrk(&paced, conns, 60)?;
        answered += r.ok + r.bad_status;
        failed += r.bad_status + r.errors;
        // The reloads: the same policies (a comment changed) and a new certificate.
        let text = format!("{}\n// soak minute {minute}\n", include_str!("full.cedar"));
        std::fs::write(&policy, text).map_err(|e| e.to_string())?;
        issue_cert(&moat)?;
        let records = bench.audit.requests() - before;
        let s = Sample {
            minute,
            answered,
            failed,
            rps: r.rps,
            rss_kib: proc_status_kib(agent, "VmRSS").ok_or("the agent is gone")?,
            fds: std::fs::read_dir(format!("/proc/{agent}/fd")).map_or(0, |d| d.count()),
            threads: std::fs::read_dir(format!("/proc/{agent}/task")).map_or(0, |d| d.count()),
            records,
        };
        println!(
            "{:>6} {:>9} {:>7} {:>7.0} {:>8.1} {:>9} {:>8} {:>16} {:>19}",
            s.minute,
            s.answered,
            s.failed,
            s.rps,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.threads,
            s.records,
            s.records as i64 - s.answered as i64
        );
        samples.push(s);
    }
    let records = bench.audit.finish(&site.lab.audit).requests - before;
    let growth = |f: &dyn Fn(&Sample) -> f64| {
        let n = samples.len();
        let tenth = (n / 10).max(1);
        let mean = |s: &[Sample]| s.iter().map(f).sum::<f64>() / s.len().max(1) as f64;
        // After the first tenth (warm-up: pools and caches filling), against the last tenth.
        let early = &samples[tenth.min(n - 1)..(2 * tenth).min(n)];
        (mean(early), mean(&samples[n - tenth..]))
    };
    let (rss0, rss1) = growth(&|s| s.rss_kib as f64 / 1024.0);
    let (fd0, fd1) = growth(&|s| s.fds as f64);
    println!(
        "\nafter {:.0} min: {answered} requests answered, {failed} failed; {} request records ({} more than requests); \
         RSS {rss0:.1} -> {rss1:.1} MiB, open files {fd0:.0} -> {fd1:.0} (early tenth -> last tenth)",
        started.elapsed().as_secs_f64() / 60.0,
        records,
        records as i64 - answered as i64,
    );
    Ok(())
}
