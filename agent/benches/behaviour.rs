//! What behaviour scoring costs a request (criterion): judging a `tools/call` against its
//! subject's baseline and settling it (learning it), on a server whose store holds the learned
//! baselines of 10,000 subjects, each subject in turn. `cargo xtask bench proxy` (and `cargo
//! xtask bench behaviour`) run it and report the time per request against the 5 µs target.
use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use moat::bench::Scoring;

const SUBJECTS: usize = 10_000;

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("moat-bench-behaviour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scoring = Scoring::new(&dir, SUBJECTS);
    // Each subject read from the store once, as after a restart; then, as a request pays it.
    for i in 0..SUBJECTS {
        assert_eq!(scoring.score(i, Scoring::later(0)), 0, "a usual request");
    }
    let mut g = c.benchmark_group("behaviour scoring");
    g.measurement_time(Duration::from_secs(5));
    let mut n = 0usize;
    g.bench_function("10000 subjects", |b| {
        b.iter(|| {
            n += 1;
            // Each subject once a simulated minute.
            let at = Scoring::later((n / SUBJECTS) as u64);
            black_box(scoring.score(black_box(n % SUBJECTS), at))
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
