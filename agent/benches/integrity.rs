//! What tool integrity adds to a list request (criterion): a `tools/list` result of 500 tools
//! (each with a description and an input schema of a few properties, as real servers list
//! them), read as Moat reads a JSON result passing through, without pins and against pins
//! (every entry pinned as it is: canonical form, SHA-256, markers of poisoning and shadowing,
//! the result rebuilt from what was judged). `cargo xtask bench integrity` runs it and reports
//! the added time per list request.
use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use moat::bench::ListReading;
use serde_json::json;

/// A tools/list result of `n` tools.
fn tools_list(n: usize) -> Vec<u8> {
    let tools: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "name": format!("tool_{i}"),
                "title": format!("Tool {i}"),
                "description": format!(
                    "Reads records of kind {i} from the inventory and returns them as JSON. \
                     Use `limit` to bound how many come back, and `cursor` to page through."
                ),
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "description": "The kind of record."},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                        "cursor": {"type": "string"}
                    },
                    "required": ["kind"]
                },
                "annotations": {"readOnlyHint": true}
            })
        })
        .collect();
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})).unwrap()
}

fn bench(c: &mut Criterion) {
    let body = tools_list(500);
    let dir = std::env::temp_dir().join(format!("moat-bench-integrity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plain = ListReading::new(None);
    let pinned = ListReading::new(Some(&dir));
    // The first reading pins every tool (trust on first use); after it, all are pinned.
    assert_eq!(pinned.read(&body).1, 500);
    assert_eq!(plain.read(&body).1, 500);
    let mut g = c.benchmark_group("tools/list of 500 tools");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("without pins", |b| {
        b.iter(|| black_box(plain.read(black_box(&body))))
    });
    g.bench_function("with pins", |b| {
        b.iter(|| black_box(pinned.read(black_box(&body))))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
