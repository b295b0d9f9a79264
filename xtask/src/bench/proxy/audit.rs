//! `cargo xtask bench audit`: what writing the audit log costs. The same load as `bench proxy`
//! (wrk, 16 keep-alive connections, `tools/call` through Moat as plain HTTP) with the audit
//! log written to a file, forced to disk after each batch (`fsync: batch`, the default) and
//! not (`fsync: off`), against the same run with the log written to /dev/null (records still
//! built, hashed and written, but no disk). The agent restarts for each configuration, and the
//! configurations take turns within each round so that all see the same machine.
//!
//! A report, not a test: it prints throughput ratios and whether the target was met.
use std::process::Command;

use serde_json::json;

use super::{
    CONNS, PLAIN, Proxy, ROUND_S, Target, WARMUP_S,
    load::{self, Bench, Run},
    upstream::Upstream,
    usage::Audit,
};
use crate::{
    Result,
    bench::{
        Machine,
        stats::{median, round1, round3},
    },
    host::{self, Lab},
};

const LAB: &str = "moat-bench-audit";
const ROUNDS: usize = 10;
/// The target (issue): under 5% throughput lost with batched fsync, against /dev/null.
const TARGET_LOSS: f64 = 0.05;

struct Variant {
    label: &'static str,
    /// The `audit:` section; `{path}` is the lab's audit file.
    section: &'static str,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        label: "/dev/null",
        section: "  path: /dev/null\n",
    },
    Variant {
        label: "file, fsync off",
        section: "  path: {path}\n  fsync: off\n",
    },
    Variant {
        label: "file, fsync batch",
        section: "  path: {path}\n  fsync: batch\n",
    },
];

pub fn run() -> Result {
    let wrk = load::ensure_apt("wrk", "wrk")?;
    let moat = host::build_moat()?;
    sh_build_xtask()?;
    let xtask = host::workspace().join("target/release/xtask");
    let servers = format!(
        "servers:\n  - name: plain\n    port: {PLAIN}\n    upstream: http://127.0.0.1:{PLAIN}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
    );
    let mut lab = Lab::new(LAB, moat, &servers)?;
    let script = load::write_script(&lab)?;
    let machine = Machine::new();
    println!(
        "moat bench audit: {machine}, namespace {}, {}, audit file on {}",
        lab.name,
        load::wrk_version(&wrk),
        filesystem_of(&lab.dir)
    );
    let upstream = Upstream::start(&lab, &xtask, &[super::DIRECT, PLAIN])?;
    let target = Target::new("http", "moat http", false, PLAIN, Proxy::Moat);

    let mut runs: Vec<Vec<Run>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    let mut records = 0;
    for round in 0..ROUNDS {
        for k in 0..VARIANTS.len() {
            let i = (k + round) % VARIANTS.len();
            let v = &VARIANTS[i];
            let _ = std::fs::remove_file(&lab.audit);
            lab.write_config(
                &v.section
                    .replace("{path}", &lab.audit.display().to_string()),
            )?;
            lab.start_agent()?;
            let agent = lab
                .status()
                .and_then(|s| s["agent_pid"].as_u64())
                .ok_or("moat status --json gave no agent_pid")? as u32;
            let bench = Bench {
                lab: &lab,
                script: &script,
                xtask: &xtask,
                ca: lab.dir.join("unused-ca.crt"),
                agent,
                haproxy: None,
                upstream: upstream.pid,
                audit: Audit::default(),
            };
            let warm = bench.wrk(&target, CONNS, WARMUP_S)?;
            if warm.ok == 0 {
                return Err(format!(
                    "{}: no successful response with audit to {}; see {}",
                    target.url,
                    v.label,
                    lab.dir.join("agent.log").display()
                ));
            }
            let r = bench.wrk(&target, CONNS, ROUND_S)?;
            if v.section.contains("{path}") {
                records += bench.audit.finish(&lab.audit).records;
            }
            runs[i].push(r);
            lab.kill_agent();
        }
    }
    report(&runs, records);
    Ok(())
}

fn sh_build_xtask() -> Result {
    crate::sh(Command::new(env!("CARGO")).args(["build", "--quiet", "--release", "-p", "xtask"]))
}

/// The filesystem type under `dir` (the disk the file variants write to).
fn filesystem_of(dir: &std::path::Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn report(runs: &[Vec<Run>], records: u64) {
    let base = &runs[0];
    println!(
        "\nthroughput, {ROUNDS} rounds of {ROUND_S} s, {CONNS} connections (median; ratio = median of per-round ratios to /dev/null)"
    );
    println!(
        "{:<18} {:>9} {:>7} {:>10} {:>8}  per-round ratios",
        "audit to", "req/s", "ratio", "agent µs", "errors"
    );
    let mut verdict = json!(null);
    let mut lines = Vec::new();
    for (v, rs) in VARIANTS.iter().zip(runs) {
        let rps: Vec<f64> = rs.iter().map(|r| r.rps).collect();
        let ratios: Vec<f64> = rs.iter().zip(base).map(|(r, b)| r.rps / b.rps).collect();
        let ratio = median(&ratios);
        let cpu: Vec<f64> = rs.iter().filter_map(|r| r.proxy_us).collect();
        let errors: u64 = rs.iter().map(|r| r.errors + r.bad_status).sum();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{:<18} {:>9.0} {:>6.3}x {:>10.1} {:>8}  {}",
            v.label,
            median(&rps),
            ratio,
            median(&cpu),
            errors,
            each.join(" ")
        );
        lines.push(json!({
            "audit": v.label, "rps": round1(median(&rps)), "ratio": round3(ratio),
            "agent_cpu_us": round1(median(&cpu)), "errors": errors,
        }));
        if v.label == "file, fsync batch" {
            let loss = 1.0 - ratio;
            verdict =
                json!({"loss": round3(loss), "target": TARGET_LOSS, "met": loss < TARGET_LOSS});
            println!(
                "\ntarget: under {:.0}% throughput lost with batched fsync: {:.1}% lost -> {}",
                TARGET_LOSS * 100.0,
                loss * 100.0,
                if loss < TARGET_LOSS { "met" } else { "NOT met" }
            );
        }
    }
    println!("records written to the file (warm-up and measured runs): {records}");
    println!(
        "{}",
        json!({"bench": "audit", "variants": lines, "batch_fsync": verdict})
    );
}
