//! `cargo xtask fuzz [TARGET] [--time S] [--jobs N]`: runs the fuzz targets (fuzz/, libFuzzer
//! through cargo-fuzz on the nightly toolchain), N at a time (default 1), each for S seconds
//! (default 60), from its seeds and the corpus grown by earlier runs, and reports executions
//! and coverage. A crash fails the run and names the input that caused it.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Result, sh};

const TARGETS: [&str; 8] = [
    "mcp_decode",
    "headers",
    "sse",
    "list_filter",
    "jwt",
    "jwks",
    "config",
    "cedar",
];

pub fn run(args: &[String]) -> Result {
    let mut time = 60u64;
    let mut jobs = 1usize;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                time = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--time needs a number of seconds")?;
            }
            "--jobs" => {
                jobs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--jobs needs a number of targets at a time")?;
            }
            t if TARGETS.contains(&t) => only = Some(t),
            other => {
                return Err(format!(
                    "unknown fuzz target or option {other:?}; targets: {}",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    tools()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fuzz = root.join("fuzz");
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_none_or(|o| o == *t))
        .collect();
    let queue = std::sync::Mutex::new(targets.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(t) = queue.lock().unwrap().next() {
                    let r = one(&root, &fuzz, t, time);
                    if let Ok(stats) = &r {
                        println!("{t}: {stats}");
                    }
                    results.lock().unwrap().push((t, r));
                }
            });
        }
    });
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for (t, r) in results.into_inner().unwrap() {
        match r {
            Ok(stats) => report.push((t, stats)),
            Err(e) => failed.push(e),
        }
    }
    report.sort_by_key(|(t, _)| TARGETS.iter().position(|x| x == t));
    println!("\ntarget        executions  per second  coverage  features  corpus");
    for (t, s) in &report {
        println!(
            "{t:<12} {:>11} {:>11} {:>9} {:>9} {:>7}",
            s.executions, s.per_second, s.coverage, s.features, s.corpus
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n\n"))
    }
}

/// Runs one target for `time` seconds.
fn one(root: &Path, fuzz: &Path, target: &str, time: u64) -> Result<Stats> {
    let corpus = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let artifacts = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts).map_err(|e| format!("{}: {e}", artifacts.display()))?;
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["+nightly", "fuzz", "run", "-O", target])
        .arg(&corpus)
        .arg(fuzz.join("seeds").join(target))
        .arg("--")
        .arg(format!("-max_total_time={time}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-print_final_stats=1", "-max_len=65536", "-timeout=10"])
        .output()
        .map_err(|e| format!("running cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {target} failed:\n{}\nthe input is in {}: add it to fuzz/regressions/{target}/ with the fix",
            tail.join("\n"),
            artifacts.display()
        ));
    }
    Ok(Stats::read(&log, corpus))
}

/// Installs the nightly toolchain and cargo-fuzz when they are missing.
fn tools() -> Result {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuzz {
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// What libFuzzer said at the end of a run.
struct Stats {
    executions: u64,
    per_second: u64,
    coverage: u64,
    features: u64,
    corpus: usize,
}

impl Stats {
    fn read(log: &str, corpus: PathBuf) -> Self {
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        // The last status line: `#N DONE cov: C ft: F corp: ...`.
        let last = log
            .lines()
            .rev()
            .find(|l| l.contains(" cov: "))
            .unwrap_or("");
        let after = |key: &str| {
            last.split_whitespace()
                .skip_while(|w| *w != key)
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self {
            executions: stat("number_of_executed_units"),
            per_second: stat("average_exec_per_sec"),
            coverage: after("cov:"),
            features: after("ft:"),
            corpus: std::fs::read_dir(corpus).map_or(0, |d| d.count()),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} executions ({}/s), coverage {} edges, {} features, corpus {}",
            self.executions, self.per_second, self.coverage, self.features, self.corpus
        )
    }
}
