//! What content inspection costs (criterion): every built-in rule, default actions, run over a
//! `tools/call` result as it passes. Throughput on 64 KiB of realistic results (prose, JSON as a
//! tool returns it in a text block, the same JSON as `structuredContent`, source code), and the
//! time for a typical 4 KiB result. `cargo xtask bench inspect` (and the end of `cargo xtask
//! bench proxy`) report MB/s per core and the time per result.
use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use moat::bench::Inspecting;
use serde_json::{Value, json};

const SIZE: usize = 64 * 1024;

/// The first `n` bytes of `s`, cut at a character boundary.
fn cut(s: &str, n: usize) -> String {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn prose() -> String {
    cut(include_str!("../../README.md"), SIZE)
}

fn code() -> String {
    let files = [
        include_str!("../src/http/respond.rs"),
        include_str!("../src/http/filter.rs"),
        include_str!("../src/policy/cache.rs"),
        include_str!("../src/audit/chain.rs"),
        include_str!("../src/behaviour/judge.rs"),
    ];
    cut(&files.concat(), SIZE)
}

/// Records as a database or an API tool returns them.
fn records(bytes: usize) -> Value {
    let mut rows = Vec::new();
    let mut size = 0;
    for i in 0.. {
        let status = ["open", "shipped", "cancelled"][i % 3];
        let row = json!({
            "id": 100_000 + i,
            "name": format!("Order {i} for account {}", i * 7 % 1000),
            "status": status,
            "created": format!("2026-11-{:02}T{:02}:{:02}:00Z", i % 28 + 1, i % 24, i % 60),
            "total": (i * 1337 % 100_000) as f64 / 100.0,
            "items": [{"sku": format!("SKU-{:05}", i * 31 % 99_999), "qty": i % 5 + 1}],
            "note": "deliver to the back door, ring twice",
        });
        size += row.to_string().len() + 1;
        if size > bytes {
            break;
        }
        rows.push(row);
    }
    Value::Array(rows)
}

fn text_result(text: String) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": text}]}})
}

fn bench(c: &mut Criterion) {
    let inspecting = Inspecting::default();
    let rows = records(SIZE);
    let cases = [
        ("text", text_result(prose())),
        ("json", text_result(rows.to_string())),
        (
            "json structured",
            json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [], "structuredContent": {"rows": rows}}}),
        ),
        ("code", text_result(code())),
    ];
    let mut g = c.benchmark_group("inspect throughput");
    g.measurement_time(Duration::from_secs(4));
    for (name, message) in &cases {
        g.throughput(Throughput::Bytes(message.to_string().len() as u64));
        g.bench_function(*name, |b| {
            b.iter_batched(
                || message.clone(),
                |mut m| black_box(inspecting.result(&mut m)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("inspect result");
    g.measurement_time(Duration::from_secs(4));
    let typical = text_result(records(4 * 1024).to_string());
    g.bench_function("4 KiB", |b| {
        b.iter_batched(
            || typical.clone(),
            |mut m| black_box(inspecting.result(&mut m)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
