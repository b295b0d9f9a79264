//! `cargo xtask bench behaviour` (and the end of `bench proxy`): what behaviour scoring costs a
//! request. Runs the criterion bench `agent/benches/behaviour.rs` (a `tools/call` judged and
//! settled against its subject's baseline, with 10,000 subjects' baselines in the store) and
//! reports the median against the target.
use super::{Machine, median_us, run_criterion};
use crate::Result;

/// The most scoring may add to a request, in µs.
const TARGET_US: f64 = 5.0;

pub fn run() -> Result {
    let us = scoring()?;
    println!("\nbehaviour scoring, {}", Machine::new());
    println!("{}", line(us));
    Ok(())
}

/// Runs the bench; the median time per request, in µs.
pub fn scoring() -> Result<f64> {
    run_criterion("behaviour")?;
    median_us("behaviour scoring", "10000 subjects")
}

/// The report's line for `us`.
pub fn line(us: f64) -> String {
    let verdict = if us < TARGET_US { "met" } else { "NOT MET" };
    format!(
        "  behaviour scoring, 10,000 subjects in the store: {us:.2} µs per request (judged and \
         learned; target < {TARGET_US} µs: {verdict})"
    )
}
