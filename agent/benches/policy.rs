//! What a policy decision by Cedar (the cache aside) costs with 10, 100 and 1,000 policies
//! (criterion): a tools/call by a user in several groups, decided against policies of the
//! shapes users write (group, time, address and argument conditions), where the permitting
//! policy is the last one. Two styles: `scoped` names each policy's tool in its scope
//! (`resource == Tool::"x"`, as Cedar recommends: Moat then evaluates only the policies that
//! can apply), `conditions` names it in a `when` condition (`resource.name == "x"`: every
//! policy of the action is evaluated). Then the decision cache: the `moat full` proxy bench's
//! call (`echo`, by a member of engineering, staff and oncall, against
//! `xtask/src/bench/proxy/full.cedar`) decided from the cache and by Cedar, on one thread and
//! on two at once.
use std::{
    hint::black_box,
    path::PathBuf,
    thread,
    time::{Duration, Instant, SystemTime},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use moat::bench::{Engine, Input, Policy, PolicyMode, Principal, Target, load};
use serde_json::json;

fn policies(n: usize, scoped: bool) -> String {
    let tool = |i: usize| {
        if scoped {
            (format!("resource == Tool::\"tool{i}\""), "true".to_string())
        } else {
            (
                "resource".to_string(),
                format!("resource.name == \"tool{i}\""),
            )
        }
    };
    let mut text = String::new();
    for i in 0..n - 1 {
        let (scope, name) = tool(i);
        text += &match i % 4 {
            0 => format!(
                "@id(\"p{i}\")\npermit (principal in Group::\"team{i}\", action == Action::\"tools/call\", {scope})\nwhen {{ {name} }};\n"
            ),
            1 => format!(
                "@id(\"p{i}\")\nforbid (principal, action == Action::\"tools/call\", {scope})\nwhen {{ {name} && (context.hour < 8 || context.hour > 18) }};\n"
            ),
            2 => format!(
                "@id(\"p{i}\")\nforbid (principal, action == Action::\"tools/call\", {scope})\nwhen {{ {name} && !context.source_ip.isInRange(ip(\"10.{}.0.0/16\")) }};\n",
                i % 250
            ),
            _ => format!(
                "@id(\"p{i}\")\npermit (principal, action == Action::\"tools/call\", {scope})\nwhen {{ {name} && resource.hasTag(\"path\") && resource.getTag(\"path\") like \"/srv/{i}/*\" }};\n"
            ),
        };
    }
    let (scope, name) = if scoped {
        (
            "resource == Tool::\"read_file\"".to_string(),
            "true".to_string(),
        )
    } else {
        (
            "resource".to_string(),
            "resource.name == \"read_file\"".to_string(),
        )
    };
    text += &format!(
        "@id(\"last\")\npermit (principal in Group::\"readers\", action == Action::\"tools/call\", {scope})\nwhen {{ {name} && resource.hasTag(\"path\") && resource.getTag(\"path\") like \"/srv/data/*\" }};\n"
    );
    text
}

fn engine(n: usize, scoped: bool) -> Engine {
    let dir = std::env::temp_dir().join(format!("moat-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("p{n}-{scoped}.cedar"));
    std::fs::write(&file, policies(n, scoped)).unwrap();
    let e = load(&Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: vec!["department".into()],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    e
}

fn bench(c: &mut Criterion) {
    let principal = Principal {
        sub: "alice".into(),
        client_id: Some("cli".into()),
        iss: "https://idp".into(),
        scopes: vec!["mcp:tools".into()],
        claims: json!({"groups": ["readers", "team0", "team4"], "department": "eng"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let args = json!({"path": "/srv/data/report.csv", "limit": 10});
    let mut g = c.benchmark_group("policy decision");
    g.measurement_time(Duration::from_secs(3));
    for (style, scoped, n) in [10, 100, 1000]
        .into_iter()
        .flat_map(|n| [("scoped", true, n), ("conditions", false, n)])
    {
        let e = engine(n, scoped);
        let input = tool_call("files", "read_file", &args, &principal, "10.1.2.3");
        let d = e.decide(&input);
        assert!(d.allowed(), "the last policy permits it: {d:?}");
        g.bench_with_input(BenchmarkId::new(style, n), &input, |b, input| {
            b.iter(|| black_box(e.decide_uncached(black_box(input))))
        });
    }
    g.finish();
}

/// A `tools/call` of `tool` on `server` by `principal` from `source_ip`, over TLS, in session
/// `s1`, its third call this minute.
fn tool_call<'a>(
    server: &'a str,
    tool: &'a str,
    arguments: &'a serde_json::Value,
    principal: &'a Principal,
    source_ip: &str,
) -> Input<'a> {
    Input {
        server,
        action: "tools/call",
        target: Some((Target::Tool, tool)),
        arguments: Some(arguments),
        principal,
        source_ip: source_ip.parse().unwrap(),
        tls: Some("TLSv1_3"),
        session: Some("s1"),
        process: None,
        rate: 3,
        now: SystemTime::now(),
        listing: false,
        integrity: None,
        behaviour: None,
        content: None,
    }
}

fn cache(c: &mut Criterion) {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/src/bench/proxy/full.cedar");
    let e = load(&Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: vec!["department".into()],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let principal = Principal {
        sub: "alice".into(),
        client_id: Some("bench".into()),
        iss: "https://idp".into(),
        scopes: vec!["mcp:tools".into()],
        claims: json!({"groups": ["engineering", "staff", "oncall"], "department": "platform"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let args = json!({"text": "hi"});
    let input = tool_call("bench", "echo", &args, &principal, "127.0.0.1");
    let d = e.decide(&input);
    assert!(d.allowed(), "staff-echo permits it: {d:?}");
    assert_eq!(d, e.decide_uncached(&input));
    let mut g = c.benchmark_group("full.cedar echo");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("cached", |b| {
        b.iter(|| black_box(e.decide(black_box(&input))))
    });
    g.bench_function("uncached", |b| {
        b.iter(|| black_box(e.decide_uncached(black_box(&input))))
    });
    // Two threads deciding the same request (the same cache shard): the time per decision
    // over both, so that contention shows as a time above half the one-thread time.
    for (name, cached) in [("cached, 2 threads", true), ("uncached, 2 threads", false)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            for _ in 0..iters.div_ceil(2) {
                                black_box(match cached {
                                    true => e.decide(black_box(&input)),
                                    false => e.decide_uncached(black_box(&input)),
                                });
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, cache);
criterion_main!(benches);
