//! `cargo xtask bench integrity`: what tool integrity adds to a list request. Runs the
//! criterion bench `agent/benches/integrity.rs` (a 500-tool `tools/list` result read as Moat
//! reads it, without and with pins, in the same run) and reports the medians, the added time
//! per list request and per tool, and the ratio.
use super::{Machine, median_us, run_criterion};
use crate::Result;

const GROUP: &str = "tools_list of 500 tools";
const TOOLS: f64 = 500.0;

pub fn run() -> Result {
    run_criterion("integrity")?;
    let median = |id: &str| median_us(GROUP, id);
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
