//! Behaviour monitoring end to end, on a plain host (no root): a subject's baseline is learned
//! from its permitted requests, a request unlike it raises signals that policies read (a
//! denial is not learned, so retrying does not help), the signals are in the audit record,
//! the metrics and `moat behaviour show`, the baseline survives a restart, a `@lockdown`
//! policy locks the subject down, and in shadow mode the policies see nothing.
mod common;

use std::{process::Command, time::Duration};

use common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"@id("all")
permit (principal, action, resource);

@id("no-deploy-when-unusual")
forbid (principal, action == Action::"tools/call", resource)
when { context has behaviour && context.behaviour.score >= 20 && resource.name == "deploy" };

@id("lock-down-attacks")
@lockdown
forbid (principal, action, resource)
when { context has behaviour && context.behaviour.score >= 60 };
"#;

/// A plaintext server with the local issuer, [`POLICY`] and `behaviour` in `mode`, learning
/// from five requests.
fn serve(mode: &str) -> (Host, std::sync::Arc<Recorded>) {
    let mut host = Host::plain();
    let policy = host.dir.join("behaviour.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n    \
         behaviour: {{mode: {mode}, learn_days: 0, learn_requests: 5}}\n",
        host.upstream(),
        policy.display(),
        port = host.port(),
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    (host, upstream)
}

fn token(host: &Host, sub: &str) -> String {
    let mut cmd = Command::new(MOAT);
    cmd.args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "files", "--sub", sub]);
    String::from_utf8(run(&mut cmd).stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn send(host: &Host, token: &str, method: &str, tool: Option<&str>) -> Reply {
    let mut body = json!({"jsonrpc": "2.0", "id": 5, "method": method});
    if let Some(t) = tool {
        body["params"] = json!({"name": t, "arguments": {"path": "/srv/a"}});
    }
    let dst = host.addr();
    let raw = post(
        dst,
        &body.to_string(),
        &format!("authorization: Bearer {token}\r\n"),
    );
    exchange(dst, &raw).expect("a reply")
}

/// The `n`th (1-based) audit record of a request naming `tool`.
fn record(host: &Host, tool: &str, n: usize) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = host
            .request_records()
            .into_iter()
            .filter(|r| r["mcp"]["tool"] == tool)
            .collect();
        if let Some(r) = found.get(n - 1) {
            return r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no record {n} of {tool}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signals(r: &Value) -> Vec<&str> {
    r["behaviour"]["signals"]
        .as_array()
        .unwrap_or_else(|| panic!("no behaviour in {r}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn show(host: &Host) -> Value {
    let shown = host.moat_json(&["behaviour", "show"], &["--sub", "alice"]);
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    shown[0].clone()
}

#[test]
fn signals_reach_policies_audit_metrics_and_lock_an_attacker_down() {
    let (mut host, upstream) = serve("enforce");
    let alice = token(&host, "alice");
    // Learning: five calls of her usual tool.
    for i in 1..=5 {
        assert_eq!(
            send(&host, &alice, "tools/call", Some("read_file")).status,
            200
        );
        let r = record(&host, "read_file", i);
        assert_eq!(r["behaviour"]["learning"], true, "{r}");
        assert!(signals(&r).is_empty());
    }
    // Learned: her usual tool raises nothing; a tool she never used is refused by the policy
    // reading the signal, and refused again when retried (a refusal teaches nothing).
    send(&host, &alice, "tools/call", Some("read_file"));
    let r = record(&host, "read_file", 6);
    assert_eq!(
        r["behaviour"],
        json!({"score": 0, "signals": [], "learning": false})
    );
    let forwarded = upstream.count();
    for n in 1..=2 {
        let reply = send(&host, &alice, "tools/call", Some("deploy"));
        assert!(reply.body["error"].is_object(), "{reply:?}");
        let r = record(&host, "deploy", n);
        assert_eq!(signals(&r), ["new_tool"], "{r}");
        assert_eq!(r["behaviour"]["score"], 20);
        assert_eq!(r["decision"]["policies"], json!(["no-deploy-when-unusual"]));
    }
    assert_eq!(upstream.count(), forwarded, "nothing forwarded");

    // `moat behaviour show`: the baseline and the recent signals.
    let shown = show(&host);
    assert_eq!(shown["learning"], false, "{shown}");
    let b = &shown["baseline"];
    assert_eq!(b["requests"], 6, "{shown}");
    assert_eq!(b["denials"], 2);
    assert_eq!(b["tools"]["read_file"]["calls"], 6);
    assert_eq!(b["tools"]["read_file"]["keys"], json!(["path"]));
    assert!(
        b["tools"].get("deploy").is_none(),
        "a refused tool is not learned"
    );
    assert_eq!(b["recent"][1]["signals"], json!(["new_tool"]));
    assert_eq!(b["recent"][1]["target"], "deploy");

    // Metrics: counted per signal.
    let (_, metrics) = host.admin_get("/metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("moat_behaviour_signals_total") && l.contains("signal=\"new_tool\"")
        })
        .unwrap_or_else(|| panic!("no new_tool series in:\n{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");

    // The baseline survives a restart (written when the agent stops), and is shown from the
    // store while no agent runs.
    host.stop_agent();
    assert_eq!(show(&host)["baseline"]["requests"], 6);
    host.start_agent();
    send(&host, &alice, "tools/call", Some("read_file"));
    assert!(signals(&record(&host, "read_file", 7)).is_empty());

    // Enumeration: a list, then calls to one new tool after another. Each new tool alone
    // passes (score 20); the ninth different one after the list is enumeration too (60), which
    // the `@lockdown` policy refuses and locks her down.
    send(&host, &alice, "tools/list", None);
    for i in 1..=9 {
        let tool = format!("tool{i}");
        let reply = send(&host, &alice, "tools/call", Some(&tool));
        let r = record(&host, &tool, 1);
        if i < 9 {
            assert_eq!(reply.status, 200, "{tool}: {reply:?}");
            assert_eq!(signals(&r), ["new_tool"], "{r}");
        } else {
            assert_eq!(signals(&r), ["new_tool", "enumeration"], "{r}");
            assert_eq!(r["decision"]["policies"], json!(["lock-down-attacks"]));
        }
    }
    let locked = host.wait_audit("the lockdown", |r| r["kind"] == "lockdown");
    assert_eq!(locked["scope"], "sub/alice", "{locked}");
    assert_eq!(locked["by"], "policy lock-down-attacks");
    let reply = send(&host, &alice, "tools/call", Some("read_file"));
    assert_eq!(reply.status, 503, "{reply:?}");
    // Another subject is not locked down.
    let bob = token(&host, "bob");
    assert_eq!(
        send(&host, &bob, "tools/call", Some("read_file")).status,
        200
    );
    host.moat_json(&["unlock"], &["--sub", "alice"]);
    assert_eq!(
        send(&host, &alice, "tools/call", Some("read_file")).status,
        200
    );
}

#[test]
fn in_shadow_mode_signals_are_recorded_and_policies_do_not_see_them() {
    let (host, upstream) = serve("shadow");
    let alice = token(&host, "alice");
    for _ in 0..5 {
        send(&host, &alice, "tools/call", Some("read_file"));
    }
    let forwarded = upstream.count();
    let reply = send(&host, &alice, "tools/call", Some("deploy"));
    assert!(reply.body["error"].is_null(), "{reply:?}");
    assert_eq!(upstream.count(), forwarded + 1, "forwarded");
    let r = record(&host, "deploy", 1);
    assert_eq!(
        r["behaviour"],
        json!({"score": 20, "signals": ["new_tool"], "learning": false, "shadow": true})
    );
    assert_eq!(r["decision"]["policies"], json!(["all"]));
    assert_eq!(show(&host)["mode"], "shadow");
}
