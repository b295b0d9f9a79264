//! What counting a call costs (`Rates::hit`, on every request with rate limits or policies):
//! a caller's next call to a tool it already called, with 1 and 10,000 principals tracked, and
//! a call to a name never seen before by a caller whose table is full (the made-up-names
//! flood).
use std::{
    hint::black_box,
    time::{Duration, SystemTime},
};

use criterion::{Criterion, criterion_group, criterion_main};
use moat::bench::Rates;

fn bench(c: &mut Criterion) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut g = c.benchmark_group("rate_hit");
    let one = Rates::default();
    one.hit("alice", "read_file", now);
    g.bench_function("known/1_principal", |b| {
        b.iter(|| black_box(one.hit(black_box("alice"), black_box("read_file"), now)))
    });
    let many = Rates::default();
    for i in 0..10_000 {
        many.hit(&format!("user-{i}"), "read_file", now);
    }
    g.bench_function("known/10000_principals", |b| {
        b.iter(|| black_box(many.hit(black_box("user-5000"), black_box("read_file"), now)))
    });
    let full = Rates::default();
    for i in 0..2_000 {
        full.hit("mallory", &format!("made-up-{i}"), now);
    }
    let names: Vec<String> = (0..4096).map(|i| format!("new-{i}")).collect();
    let mut i = 0;
    g.bench_function("new_name/full_table", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            black_box(full.hit(black_box("mallory"), &names[i], now))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
