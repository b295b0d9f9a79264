//! The decision cache: that no input a policy can read is left out of the key (each one
//! flipped after the cache is warm), that cached and fresh decisions agree on many random
//! requests (`differential`), and that a reload decides afresh. (What the walker finds:
//! `reads.rs`.)
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::*;
use crate::{
    config::{Policy, PolicyMode},
    vocab::{Assessment, ContentFacts, ContentKind, Signal, Signals},
    vocab::{Principal, Process},
};

mod differential;

// --- Engines and requests ---

static N: AtomicUsize = AtomicUsize::new(0);

fn engine_of(text: &str) -> Engine {
    let dir = std::env::temp_dir().join(format!("moat-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("p{}.cedar", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, text).unwrap();
    load_file(file)
}

fn load_file(file: PathBuf) -> Engine {
    load(&config(file)).unwrap_or_else(|e| panic!("{e}"))
}

fn config(file: PathBuf) -> Policy {
    Policy {
        file,
        mode: PolicyMode::Enforce,
        groups_claim: "groups".into(),
        claims: vec!["department".into(), "level".into()],
    }
}

/// A request, owned.
#[derive(Clone, Debug)]
struct Req {
    server: String,
    action: &'static str,
    target: Option<(Target, String)>,
    args: Option<Value>,
    principal: Principal,
    ip: IpAddr,
    tls: Option<String>,
    session: Option<String>,
    process: Option<Process>,
    rate: u64,
    at: u64,
    listing: bool,
    integrity: Option<(&'static str, Vec<&'static str>)>,
    behaviour: Option<crate::vocab::Assessment>,
    content: Option<crate::vocab::ContentFacts>,
}

/// Monday 2026-11-30 10:00 UTC.
const MON_TEN: u64 = 1_796_032_800;

impl Req {
    fn echo() -> Self {
        Self {
            server: "files".into(),
            action: "tools/call",
            target: Some((Target::Tool, "echo".into())),
            args: Some(json!({"text": "hi"})),
            principal: Principal {
                sub: "alice".into(),
                client_id: Some("cli".into()),
                iss: "https://idp".into(),
                scopes: vec!["mcp:tools".into()],
                claims: json!({"groups": ["engineering", "staff", "oncall"],
                               "department": "platform"})
                .as_object()
                .unwrap()
                .clone(),
            },
            ip: "127.0.0.1".parse().unwrap(),
            tls: Some("TLSv1_3".into()),
            session: Some("s1".into()),
            process: None,
            rate: 1,
            at: MON_TEN,
            listing: false,
            integrity: None,
            behaviour: None,
            content: None,
        }
    }

    fn input(&self) -> Input<'_> {
        Input {
            server: &self.server,
            action: self.action,
            target: self.target.as_ref().map(|(k, n)| (*k, n.as_str())),
            arguments: self.args.as_ref(),
            principal: &self.principal,
            source_ip: self.ip,
            tls: self.tls.as_deref(),
            session: self.session.as_deref(),
            process: self.process.as_ref(),
            rate: self.rate,
            now: UNIX_EPOCH + Duration::from_secs(self.at),
            listing: self.listing,
            integrity: self
                .integrity
                .as_ref()
                .map(|(state, markers)| Standing { state, markers }),
            behaviour: self.behaviour.as_ref(),
            content: self.content.as_ref(),
        }
    }

    fn claim(mut self, k: &str, v: Value) -> Self {
        self.principal.claims.insert(k.into(), v);
        self
    }
}

/// [`flips_with`] a policy permitting tools/call when `condition`.
fn flips(what: &str, condition: &str, a: &Req, b: &Req) {
    let policy = format!(
        "@id(\"p\") permit (principal, action == Action::\"tools/call\", resource) when {{ {condition} }};"
    );
    flips_with(what, &policy, a, b);
}

/// Decides `a` (warming the cache), then `b`, each cached and fresh: `b`'s cached decision is
/// its fresh one and differs from `a`'s, and `a` asked again is still `a`'s.
fn flips_with(what: &str, policy: &str, a: &Req, b: &Req) {
    let condition = policy;
    let e = engine_of(policy);
    let da = e.decide(&a.input());
    assert_eq!(da, e.decide_uncached(&a.input()), "{what}");
    let warm = e.cache.len();
    assert!(warm >= 1, "{what}: the first decision is cached");
    assert_eq!(e.decide(&a.input()), da, "{what}");
    assert_eq!(e.cache.len(), warm, "{what}: asked again, it was found");
    let db = e.decide(&b.input());
    assert_eq!(
        db,
        e.decide_uncached(&b.input()),
        "{what}: the cached decision is fresh"
    );
    assert_ne!(
        da.effect, db.effect,
        "{what}: the input decides ({condition})"
    );
    assert_eq!(e.cache.len(), warm + 1, "{what}: a new entry");
    assert_eq!(e.decide(&b.input()), db, "{what}");
    assert_eq!(e.decide(&a.input()), da, "{what}");
}

fn with(f: impl FnOnce(&mut Req)) -> Req {
    let mut r = Req::echo();
    f(&mut r);
    r
}

#[test]
fn every_context_attribute_is_in_the_key_when_read() {
    let a = Req::echo();
    let time = format!(
        "context.time < datetime(\"{}\")",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(MON_TEN + 1))
    );
    let cases: Vec<(&str, &str, Req)> = vec![
        (
            "time",
            &time,
            // One second later: the same hour and weekday.
            with(|r| r.at += 1),
        ),
        ("hour", "context.hour == 10", with(|r| r.at += 3600)),
        (
            "weekday",
            "context.weekday == \"Mon\"",
            with(|r| r.at += 86_400 * 7 + 86_400),
        ),
        (
            "source_ip",
            "context.source_ip.isLoopback()",
            with(|r| r.ip = "10.0.0.1".parse().unwrap()),
        ),
        ("tls", "context.tls == \"TLSv1_3\"", with(|r| r.tls = None)),
        (
            "scopes",
            "context.scopes.contains(\"mcp:tools\")",
            with(|r| r.principal.scopes = vec!["read".into()]),
        ),
        (
            "client",
            "context.client == Client::\"cli\"",
            with(|r| r.principal.client_id = Some("other".into())),
        ),
        (
            "session",
            "context.session == \"s1\"",
            with(|r| r.session = None),
        ),
        ("rate", "context.rate < 2", with(|r| r.rate = 2)),
        ("listing", "!context.listing", with(|r| r.listing = true)),
    ];
    for (what, condition, b) in &cases {
        flips(what, condition, &a, b);
    }
    let local = |uid: u32, comm: &str| {
        with(|r| {
            r.process = Some(Process {
                pid: 7,
                uid,
                gid: 0,
                comm: comm.into(),
                cgroup_id: 1,
            })
        })
    };
    let process =
        "context has process && context.process.uid == 1000 && context.process.comm == \"py\"";
    flips("process: remote, local", process, &a, &local(1000, "py"));
    flips("process: uid", process, &local(1000, "py"), &local(0, "py"));
    flips(
        "process: comm",
        process,
        &local(1000, "py"),
        &local(1000, "sh"),
    );
    let standing = |state: &'static str, markers: Vec<&'static str>| {
        with(|r| r.integrity = Some((state, markers.clone())))
    };
    let clean = "context has integrity && context.integrity.state == \"pinned\" && \
                 context.integrity.markers.isEmpty()";
    flips(
        "integrity: none, pinned",
        clean,
        &a,
        &standing("pinned", vec![]),
    );
    flips(
        "integrity: state",
        clean,
        &standing("pinned", vec![]),
        &standing("changed", vec![]),
    );
    flips(
        "integrity: markers",
        clean,
        &standing("pinned", vec![]),
        &standing("pinned", vec!["shared_name"]),
    );
    let judged = |signals: &[Signal], learning: bool| {
        let signals: Signals = signals.iter().copied().collect();
        with(|r| r.behaviour = Some(Assessment::new(signals, learning, false)))
    };
    let calm = "context has behaviour && !context.behaviour.learning && \
                context.behaviour.score < 30 && !context.behaviour.signals.contains(\"off_hours\")";
    flips("behaviour: none, calm", calm, &a, &judged(&[], false));
    flips(
        "behaviour: learning",
        calm,
        &judged(&[], false),
        &judged(&[], true),
    );
    flips(
        "behaviour: score",
        "context has behaviour && context.behaviour.score < 30",
        &judged(&[Signal::NewTool], false),
        &judged(&[Signal::NewTool, Signal::NewAddress], false),
    );
    flips(
        "behaviour: signals, same score",
        calm,
        &judged(&[Signal::NewTool], false),
        &judged(&[Signal::OffHours], false),
    );
    let found = |rules: &[&str], kinds: &[ContentKind]| {
        let rules = rules.iter().map(|r| (*r).into()).collect();
        let kinds = kinds.to_vec();
        with(|r| r.content = Some(ContentFacts { rules, kinds }))
    };
    let clean = "context has content && context.content.kinds.isEmpty()";
    flips(
        "content: none, inspected",
        "context has content",
        &a,
        &found(&[], &[]),
    );
    flips(
        "content: clean, found",
        clean,
        &found(&[], &[]),
        &found(&["email"], &[ContentKind::Personal]),
    );
    flips(
        "content: kinds",
        "context has content && context.content.kinds.contains(\"secret\")",
        &found(&["x"], &[ContentKind::Personal]),
        &found(&["x"], &[ContentKind::Secret]),
    );
    flips(
        "content: rules, same kinds",
        "context has content && context.content.rules.contains(\"jwt\")",
        &found(&["aws_access_key_id"], &[ContentKind::Secret]),
        &found(&["jwt"], &[ContentKind::Secret]),
    );
    // Context read whole.
    flips(
        "whole",
        r#"{"c": context}.c.session == "s1""#,
        &a,
        &with(|r| r.session = Some("s2".into())),
    );
    flips(
        "whole",
        "context == context && context.rate < 2",
        &a,
        &with(|r| r.rate = 5),
    );
}

#[test]
fn every_tag_read_is_in_the_key() {
    let a = Req::echo();
    let text = |v: Value| with(|r| r.args = Some(json!({ "text": v })));
    let literal = r#"resource.hasTag("text") && resource.getTag("text") == "hi""#;
    flips("literal key: value", literal, &a, &text(json!("bye")));
    flips(
        "literal key: absent",
        literal,
        &a,
        &with(|r| r.args = Some(json!({}))),
    );
    flips(
        "literal key: not an object",
        literal,
        &a,
        &with(|r| r.args = Some(json!("hi"))),
    );
    flips(
        "literal key: no arguments",
        literal,
        &a,
        &with(|r| r.args = None),
    );
    flips(
        "literal key: text of JSON",
        r#"resource.hasTag("text") && resource.getTag("text") == "[1]""#,
        &text(json!([1])),
        &text(json!([2])),
    );
    flips(
        "computed key",
        "resource.hasTag(context.session)",
        &with(|r| r.args = Some(json!({"s1": 1}))),
        &with(|r| r.args = Some(json!({"s2": 1}))),
    );
    flips(
        "computed key: value",
        "resource.hasTag(context.session) && resource.getTag(context.session) == \"x\"",
        &with(|r| r.args = Some(json!({"s1": "x"}))),
        &with(|r| r.args = Some(json!({"s1": "y"}))),
    );
    flips(
        "computed key, other tags",
        r#"principal.hasTag("department") && resource.hasTag(principal.getTag("department"))"#,
        &with(|r| r.args = Some(json!({"platform": 1}))),
        &with(|r| r.args = Some(json!({"x": 1}))),
    );
    flips(
        "entity literal",
        r#"Tool::"echo".hasTag("text") && Tool::"echo".getTag("text") == "hi""#,
        &a,
        &text(json!("bye")),
    );
    // A tag read through the principal's key names is read from the arguments too.
    flips(
        "a claim's key on the resource",
        r#"resource.hasTag("department")"#,
        &with(|r| r.args = Some(json!({"department": "x"}))),
        &a,
    );
}

#[test]
fn the_principal_is_in_the_key_whole() {
    let a = Req::echo();
    let cases: Vec<(&str, &str, Req)> = vec![
        (
            "sub",
            "principal == User::\"alice\"",
            with(|r| r.principal.sub = "bob".into()),
        ),
        (
            "group",
            "principal in Group::\"oncall\"",
            a.clone()
                .claim("groups", json!(["engineering", "staff", "sre"])),
        ),
        (
            "group as a string",
            "principal in Group::\"oncall\"",
            a.clone().claim("groups", json!("staff sre")),
        ),
        (
            "claim",
            "principal.hasTag(\"department\") && principal.getTag(\"department\") == \"platform\"",
            a.clone().claim("department", json!("eng")),
        ),
        (
            "claim absent",
            "principal.hasTag(\"level\")",
            a.clone().claim("level", json!(3)),
        ),
        (
            "claim computed",
            r#"principal.hasTag("department") && principal.hasTag(principal.getTag("department"))"#,
            a.clone()
                .claim("department", json!("level"))
                .claim("level", json!(1)),
        ),
        (
            "client",
            "context.client == Client::\"\"",
            with(|r| r.principal.client_id = None),
        ),
    ];
    for (what, condition, b) in &cases {
        flips(what, condition, &a, b);
    }
    // Claims not configured are not tags: they cannot decide, and the key does not hold them.
    let e = engine_of("permit (principal, action, resource) when { principal.hasTag(\"team\") };");
    let d = e.decide(&a.input());
    assert!(!d.allowed());
    assert_eq!(e.decide(&a.clone().claim("team", json!("x")).input()), d);
    assert_eq!(e.cache.len(), 1);
}

#[test]
fn the_server_action_and_resource_are_in_the_key() {
    let a = Req::echo();
    flips(
        "server",
        "resource in Server::\"files\"",
        &a,
        &with(|r| r.server = "git".into()),
    );
    flips(
        "tool",
        "resource.name == \"echo\"",
        &a,
        &with(|r| r.target = Some((Target::Tool, "echo2".into()))),
    );
    let read = |uri: &str| {
        with(|r| {
            r.action = "resources/read";
            r.target = Some((Target::Resource, uri.into()));
        })
    };
    flips_with(
        "resource",
        "permit (principal, action == Action::\"resources/read\", resource) when { resource.uri like \"wiki://*\" };",
        &read("wiki://a"),
        &read("file:///a"),
    );
    flips(
        "action",
        "true",
        &a,
        &with(|r| {
            r.action = "tools/list";
            r.target = None;
        }),
    );
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn fields_cannot_run_into_each_other() {
    // `ab` then `c`, and `a` then `bc`: the same bytes in a row, two requests.
    let policy = r#"permit (principal == User::"ab", action, resource)
                    when { context.client == Client::"c" };"#;
    let run = |sub: &str, client: &str| {
        with(|r| {
            r.principal.sub = sub.into();
            r.principal.client_id = Some(client.into());
        })
    };
    flips_with("sub, client", policy, &run("ab", "c"), &run("a", "bc"));
    let groups = |g: Value| Req::echo().claim("groups", g);
    flips_with(
        "groups",
        r#"permit (principal in Group::"a b", action, resource);"#,
        &groups(json!(["a b"])),
        &groups(json!(["a", "b"])),
    );
}

#[test]
fn a_request_too_long_to_keep_is_decided_uncached() {
    let e = load_file(repo("xtask/src/bench/proxy/full.cedar"));
    let long = with(|r| r.args = Some(json!({"text": "x".repeat(10_000)})));
    let d = e.decide(&long.input());
    assert!(d.allowed(), "{d:?}");
    assert_eq!(e.cache.len(), 0);
    let key = with(|r| r.args = Some(json!({"text": "x".repeat(10_000) + "BEGIN PRIVATE KEY"})));
    assert!(!e.decide(&key.input()).allowed());
}

/// The fields of a record type of the schema, in order.
fn schema_fields(ty: &str) -> Vec<String> {
    let start = SCHEMA.find(&format!("type {ty} = {{")).expect(ty);
    let body = &SCHEMA[start..start + SCHEMA[start..].find("};").unwrap()];
    body.lines()
        .skip(1)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| l.split([':', '?']).next().unwrap().to_string())
        .collect()
}

#[test]
fn the_key_knows_every_context_attribute() {
    // What the request's context holds, what the schema says it holds, and what the walker
    // and the key know of: the same. (A context attribute the key did not know would be left
    // out of it even when a policy reads the whole context.)
    let r = with(|r| {
        r.process = Some(Process {
            pid: 1,
            uid: 2,
            gid: 3,
            comm: "x".into(),
            cgroup_id: 4,
        });
        r.integrity = Some(("pinned", vec![]));
        r.behaviour = Some(Assessment::default());
        r.content = Some(Default::default());
    });
    let built: Vec<String> = context_pairs(&r.input(), 0, uid("Client", "c").unwrap())
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let known = super::reads::CONTEXT.map(|(name, _)| name);
    assert_eq!(built, known);
    assert_eq!(schema_fields("RequestContext"), known);
    // And the key holds each field of the process.
    assert_eq!(
        schema_fields("Process"),
        ["pid", "uid", "gid", "comm", "cgroup_id"],
        "cache.rs: key_bytes"
    );
}

#[test]
fn the_bench_request_is_cached_and_allowed() {
    let e = load_file(repo("xtask/src/bench/proxy/full.cedar"));
    let r = Req::echo();
    let d = e.decide(&r.input());
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.policies, ["staff-echo"]);
    assert_eq!(e.decide(&r.input()), d);
    assert_eq!(e.cache.len(), 1);
    // The rate is not read by echo's policies: a new rate is the same entry.
    assert_eq!(e.decide(&with(|r| r.rate = 9).input()), d);
    assert_eq!(e.cache.len(), 1);
}

#[test]
fn a_reload_decides_afresh() {
    let dir = std::env::temp_dir().join(format!("moat-cache-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.cedar");
    std::fs::write(&file, "@id(\"all\") permit (principal, action, resource);").unwrap();
    let live = Live::new(config(file.clone()), load_file(file.clone()));
    let r = Req::echo();
    assert!(live.current().decide(&r.input()).allowed());
    assert!(live.current().decide(&r.input()).allowed());
    std::fs::write(&file, "@id(\"none\") forbid (principal, action, resource);").unwrap();
    assert!(matches!(live.reload(true), Reloaded::Replaced));
    let d = live.current().decide(&r.input());
    assert!(!d.allowed());
    assert_eq!(d.policies, ["none"]);
    let _ = std::fs::remove_dir_all(&dir);
}
