//! `cargo xtask bench inspect` (and the end of `bench proxy`): what content inspection costs.
//! Runs the criterion bench `agent/benches/inspect.rs` and reports its throughput per core on
//! each kind of result, and the time to inspect a typical 4 KiB result; `bench proxy` sets that
//! time against the agent's CPU per request measured in the same run.
use std::path::Path;

use super::{Machine, median_us, run_criterion};
use crate::Result;

/// The kinds of result the bench reads, as criterion names them.
const KINDS: [&str; 4] = ["text", "json", "json structured", "code"];

pub struct Measured {
    /// MB/s per core, by kind.
    throughput: Vec<(&'static str, f64)>,
    /// The time to inspect a 4 KiB result, in µs.
    pub result_us: f64,
}

pub fn run() -> Result {
    let m = measure()?;
    println!("\ncontent inspection, {}", Machine::new());
    for line in m.lines(None) {
        println!("{line}");
    }
    Ok(())
}

/// Runs the bench and reads its medians.
pub fn measure() -> Result<Measured> {
    run_criterion("inspect")?;
    let throughput = KINDS
        .iter()
        .map(|k| {
            let us = median_us("inspect throughput", k)?;
            Ok((*k, bytes(k)? as f64 / us))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Measured {
        throughput,
        result_us: median_us("inspect result", "4 KiB")?,
    })
}

/// The size of the message criterion was told the bench of `kind` reads.
fn bytes(kind: &str) -> Result<u64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion/inspect throughput")
        .join(kind)
        .join("new/benchmark.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    v["throughput"]["Bytes"]
        .as_u64()
        .ok_or_else(|| format!("{}: no throughput", path.display()))
}

impl Measured {
    /// The report's lines; with `agent_us` (the agent's CPU per request under load on `bench
    /// proxy`'s full target), what inspecting every result would add to it.
    pub fn lines(&self, agent_us: Option<f64>) -> Vec<String> {
        let rates: Vec<String> = self
            .throughput
            .iter()
            .map(|(k, mbs)| format!("{k} {mbs:.0}"))
            .collect();
        let mut lines = vec![
            format!(
                "  content inspection (every built-in rule), MB/s per core: {}",
                rates.join(", ")
            ),
            format!(
                "  content inspection of a 4 KiB tool result: {:.1} µs",
                self.result_us
            ),
        ];
        if let Some(agent) = agent_us.filter(|a| a.is_finite() && *a > 0.0) {
            let ratio = self.result_us / agent;
            let verdict = if ratio < 1.0 {
                "not the bottleneck"
            } else {
                "THE BOTTLENECK"
            };
            lines.push(format!(
                "  against the agent's CPU per request on moat full under load in this run \
                 ({agent:.1} µs): {ratio:.2}x \
                 (inspecting every 4 KiB result would lower a CPU-bound request rate by {:.0}%: \
                 {verdict})",
                100.0 * ratio / (1.0 + ratio)
            ));
        }
        lines
    }
}
