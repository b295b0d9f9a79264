//! `cargo xtask bench integrity`: what tool integrity adds to a list request. Runs the
//! criterion bench `agent/benches/integrity.rs` (a 500-tool `tools/list` result read as Moat
//! reads it, without and with pins, in the same run) and reports the medians, the added time
//! per list request and per tool, and the ratio.
use std::{path::Path, process::Command};

use super::Machine;
use crate::{Result, sh};

const GROUP: &str = "tools_list of 500 tools";
const TOOLS: f64 = 500.0;

pub fn run() -> Result {
    sh(Command::new(env!("CARGO")).args([
        "bench",
        "-p",
        "moat",
        "--bench",
        "integrity",
        "--",
        "--noplot",
    ]))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion")
        .join(GROUP);
    let median = |id: &str| -> Result<f64> {
        let path = root.join(id).join("new/estimates.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        v["median"]["point_estimate"]
            .as_f64()
            .map(|ns| ns / 1e3)
            .ok_or_else(|| format!("{}: no median", path.display()))
    };
    let (plain, pinned) = (median("without pins")?, median("with pins")?);
    let added = pinned - plain;
    println!("\ntool integrity, {} ({GROUP}, medians)", Machine::new());
    println!("  without pins  {plain:>9.1} µs per list request");
    println!("  with pins     {pinned:>9.1} µs per list request");
    println!(
        "  added         {added:>9.1} µs per list request, {:.2} µs per tool, {:.2}x",
        added / TOOLS,
        pinned / plain
    );
    Ok(())
}
