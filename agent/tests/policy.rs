//! End-to-end tests of per-request policy: Cedar decides each call through the real proxy; a
//! denied tool is answered as unknown and never reaches the server; shadow mode lets it through
//! but audits the denial. Most run on a plain host (no root); those that decide on the local
//! process or on a remote network need the kernel and a remote namespace (privileged).
mod common;

use std::{net::SocketAddr, path::Path, process::Command};

use common::*;
use serde_json::{Value, json};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/policies")
        .join(name)
        .display()
        .to_string()
}

/// A plaintext server with the local issuer and `policy` (a YAML mapping), its upstream
/// recorded, on `host` (plain or privileged).
fn serve(mut host: Host, policy: &str) -> (Host, std::sync::Arc<Recorded>) {
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {policy}\n",
        host.upstream(),
        port = host.port(),
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    (host, upstream)
}

/// [`serve`] on a plain host.
fn host(policy: &str) -> (Host, std::sync::Arc<Recorded>) {
    serve(Host::plain(), policy)
}

fn token(host: &Host, sub: &str, claims: &[&str]) -> String {
    let mut cmd = Command::new(MOAT);
    cmd.args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "files", "--sub", sub]);
    for c in claims {
        cmd.args(["--claim", c]);
    }
    String::from_utf8(run(&mut cmd).stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn call_tool(host: &Host, token: &str, tool: &str, args: Value) -> Reply {
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}})
    .to_string();
    let dst = host.addr();
    let raw = post(dst, &body, &format!("authorization: Bearer {token}\r\n"));
    host.in_ns(false, move || exchange(dst, &raw))
        .expect("a reply")
}

fn decisions(host: &Host, tool: &str) -> Value {
    host.wait_audit(&format!("the call to {tool}"), |r| {
        r["mcp"]["tool"] == tool && r["decision"].is_object()
    })["decision"]
        .clone()
}

#[test]
fn a_denied_tool_is_unknown_to_the_caller_and_never_reaches_the_server() {
    let (host, upstream) = host(&format!(
        "{{file: {}}}",
        example("read-only-for-readers.cedar")
    ));
    let reader = token(&host, "alice", &[r#"groups=["readers"]"#]);
    let other = token(&host, "bob", &[r#"groups=["writers"]"#]);

    let r = call_tool(&host, &reader, "read_file", json!({"path": "/srv/data/a"}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["result"].is_object(), "forwarded: {r:?}");
    assert_eq!(upstream.count(), 1);
    let d = decisions(&host, "read_file");
    assert_eq!(d["effect"], "allow", "{d}");
    assert_eq!(d["policies"], json!(["readers-read-only"]), "{d}");

    for (who, tool) in [(&reader, "delete_file"), (&other, "read_file")] {
        let r = call_tool(&host, who, tool, json!({}));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["id"], 5, "{r:?}");
        assert_eq!(r.body["error"]["code"], -32602, "{r:?}");
        assert_eq!(
            r.body["error"]["message"],
            format!("Unknown tool: {tool}"),
            "{r:?}"
        );
        assert!(
            !r.body.to_string().contains("polic"),
            "the denial does not say why: {r:?}"
        );
    }
    assert_eq!(upstream.count(), 1, "no denied call reached the server");
    let d = decisions(&host, "delete_file");
    assert_eq!(d["effect"], "deny", "{d}");
    assert_eq!(d["reason"], "no policy permits it (default deny)", "{d}");

    // A batch is refused as a whole when one of its requests is denied (2025-03-26 batches).
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_file", "arguments": {}}},
    ])
    .to_string();
    let dst = host.addr();
    let raw = post(
        dst,
        &batch,
        &format!("authorization: Bearer {reader}\r\nmcp-protocol-version: 2025-03-26\r\n"),
    );
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    assert_eq!(r.body["error"]["code"], -32602, "{r:?}");
    assert_eq!(
        upstream.count(),
        1,
        "nothing of the batch reached the server"
    );
}

#[test]
fn arguments_constrain_a_call() {
    let (host, upstream) = host(&format!(
        "{{file: {}}}",
        example("paths-under-srv-data.cedar")
    ));
    let t = token(&host, "alice", &[]);
    assert!(
        call_tool(&host, &t, "read_file", json!({"path": "/srv/data/x.csv"})).body["result"]
            .is_object()
    );
    for path in ["/etc/shadow", "/srv/data/../../etc/shadow"] {
        let r = call_tool(&host, &t, "read_file", json!({"path": path}));
        assert_eq!(r.body["error"]["code"], -32602, "{path}: {r:?}");
    }
    assert_eq!(upstream.count(), 1);
}

#[test]
fn shadow_mode_audits_the_denial_and_lets_the_call_through() {
    let (host, upstream) = host(&format!(
        "{{file: {}, mode: shadow}}",
        example("read-only-for-readers.cedar")
    ));
    let t = token(&host, "bob", &[]);
    let r = call_tool(&host, &t, "delete_file", json!({}));
    assert!(r.body["result"].is_object(), "let through: {r:?}");
    assert_eq!(upstream.count(), 1);
    let d = decisions(&host, "delete_file");
    assert_eq!(d["effect"], "deny", "{d}");
    assert_eq!(d["shadow"], true, "{d}");
}

#[test]
fn a_rate_cap_holds() {
    let (host, upstream) = host(&format!("{{file: {}}}", example("rate-cap.cedar")));
    let t = token(&host, "alice", &[]);
    let ok = (0..12)
        .filter(|_| call_tool(&host, &t, "echo", json!({})).body["result"].is_object())
        .count();
    assert_eq!(ok, 10, "ten a minute");
    assert_eq!(upstream.count(), 10);
    // Another tool has its own count.
    assert!(call_tool(&host, &t, "add", json!({})).body["result"].is_object());
}

/// `moat policy test` decides a described request, at a given time, without an agent.
#[test]
fn policy_test_explains_a_decision_at_any_time() {
    let dir = std::env::temp_dir().join(format!("moat-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("moat.yaml");
    std::fs::write(
        &config,
        format!(
            "servers:\n  - name: ops\n    port: 8000\n    public_url: https://ops.example/mcp\n    \
             dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n\
             authorization_server: {{issuer: 'http://127.0.0.1:9443', dangerous: {{plaintext: true}}}}\n",
            example("deploy-in-working-hours.cedar")
        ),
    )
    .unwrap();
    let decide = |time: &str, expect: &str| {
        let request = dir.join("request.json");
        std::fs::write(
            &request,
            json!({"principal": {"sub": "alice"}, "method": "tools/call", "name": "deploy",
                   "arguments": {"env": "prod"}, "time": time})
            .to_string(),
        )
        .unwrap();
        Command::new(MOAT)
            .args(["policy", "test", "-c"])
            .arg(&config)
            .arg("--request")
            .arg(&request)
            .args(["--expect", expect])
            .output()
            .unwrap()
    };
    let out = decide("2026-11-28T12:00:00Z", "deny");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decision: deny"), "{text}");
    assert!(text.contains("policies: deploy-working-hours"), "{text}");
    assert!(text.contains("forbidden by deploy-working-hours"), "{text}");
    let out = decide("2026-11-30T10:00:00Z", "allow");
    assert!(out.status.success(), "Monday 10:00: {out:?}");
    // A wrong expectation fails, for CI.
    let out = decide("2026-11-30T10:00:00Z", "deny");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// tools/list shows only the tools the caller may call, in a JSON body and in an SSE event;
/// the audit record names each tool hidden and the policy that hid it.
#[test]
fn tools_list_is_filtered_by_the_same_policies() {
    let dir = std::env::temp_dir().join(format!("moat-policy-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("echo-only.cedar");
    std::fs::write(
        &file,
        "permit (principal, action == Action::\"tools/list\", resource);\n\
         @id(\"echo-only\")\npermit (principal, action == Action::\"tools/call\", resource) when { resource.name == \"echo\" };\n\
         @id(\"no-add\")\nforbid (principal, action == Action::\"tools/call\", resource) when { resource.name == \"add\" };\n",
    )
    .unwrap();
    let (host, _upstream) = host(&format!("{{file: {}}}", file.display()));
    let t = token(&host, "alice", &[]);
    for list in [
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"respond":"sse"}}"#,
    ] {
        let dst = host.addr();
        let raw = post(dst, list, &format!("authorization: Bearer {t}\r\n"));
        let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let text = match &r.body {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        assert!(text.contains("\"echo\""), "{list}: {text}");
        assert!(
            !text.contains("\"add\""),
            "{list}: the hidden tool is not named: {text}"
        );
    }
    let lists = || -> Vec<Value> {
        host.request_records()
            .into_iter()
            .filter(|r| r["mcp"]["method"] == "tools/list")
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lists().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let records = lists();
    assert_eq!(records.len(), 2, "{records:?}");
    for rec in records {
        assert_eq!(rec["tools_listed"], json!(["echo"]), "{rec}");
        assert_eq!(
            rec["hidden"],
            json!([{"name": "add", "policies": ["no-add"], "reason": "forbidden by no-add"}]),
            "{rec}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Policies change under load without a failed request; a broken file keeps the old ones;
/// SIGHUP reloads too.
#[test]
fn policies_reload_under_load_and_a_broken_file_keeps_the_old_ones() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    let dir = std::env::temp_dir().join(format!("moat-policy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("live.cedar");
    let only = |tool: &str| {
        format!(
            "permit (principal, action == Action::\"tools/call\", resource) when {{ resource.name == \"{tool}\" }};\n"
        )
    };
    std::fs::write(&file, only("echo")).unwrap();
    let (host, _upstream) = host(&format!("{{file: {}}}", file.display()));
    let t = token(&host, "alice", &[]);
    let allowed = |tool: &str| call_tool(&host, &t, tool, json!({})).body["result"].is_object();
    assert!(allowed("echo") && !allowed("add"));

    // Load: a client calling both tools on one connection after another, counting answers
    // that are neither a result nor the policy's refusal.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, bad, t, dst) = (
            stop.clone(),
            sent.clone(),
            bad.clone(),
            t.clone(),
            host.addr(),
        );
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let tool = if i % 2 == 0 { "echo" } else { "add" };
                i += 1;
                let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": tool}}).to_string();
                let r = exchange(
                    dst,
                    &post(dst, &body, &format!("authorization: Bearer {t}\r\n")),
                );
                sent.fetch_add(1, Ordering::Relaxed);
                let fine = r.is_ok_and(|r| {
                    r.status == 200
                        && (r.body["result"].is_object() || r.body["error"]["code"] == -32602)
                });
                if !fine {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let reloads = |event: &str| {
        host.audit_records()
            .iter()
            .filter(|r| r["kind"] == "config" && r["event"] == event)
            .count()
    };
    let wait_for = |event: &str, n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while reloads(event) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no {event} #{n}:\n{}",
                host.agent_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };

    // Records name the policies in force by their file's SHA-256 (checked with sha256sum).
    let sha256sum = |p: &std::path::Path| {
        let out = run(Command::new("sha256sum").arg(p));
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let started = host.wait_audit("the start", |r| r["event"] == "started");
    assert_eq!(
        started["servers"][0]["policy"]["sha256"],
        sha256sum(&file),
        "{started}"
    );
    assert!(
        started["config_sha256"]
            .as_str()
            .is_some_and(|h| h == sha256sum(&host.config))
    );

    std::fs::write(&file, only("add")).unwrap();
    wait_for("policy_reloaded", 1);
    let only_add = sha256sum(&file);
    let reloaded = host.wait_audit("the reload", |r| r["event"] == "policy_reloaded");
    assert_eq!(reloaded["sha256"], only_add.as_str());
    assert!(
        allowed("add") && !allowed("echo"),
        "the new policies are in force"
    );

    std::fs::write(
        &file,
        "permit (principal, action, resource) when { context.colour };\n",
    )
    .unwrap();
    wait_for("policy_reload_failed", 1);
    let failed = host.wait_audit("the failed reload", |r| {
        r["event"] == "policy_reload_failed"
    });
    assert!(
        failed["error"].as_str().unwrap().contains("live.cedar:1:"),
        "{failed}"
    );
    assert_eq!(
        failed["sha256"],
        only_add.as_str(),
        "the old policies are in force"
    );
    assert!(
        allowed("add") && !allowed("echo"),
        "a broken file keeps the old policies"
    );

    std::fs::write(&file, only("echo")).unwrap();
    wait_for("policy_reloaded", 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.agent_pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("policy_reloaded", 3);
    assert!(allowed("echo") && !allowed("add"));

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(sent.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "no request failed while policies changed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The kernel names the local process behind each connection: a policy admits one uid; root
/// on the same host and a remote client are refused; the audit record names the process.
#[test]
fn only_a_given_local_user_may_call() {
    if !privileged() {
        return;
    }
    let (host, upstream) = serve(
        Host::new(),
        &format!("{{file: {}}}", example("one-local-user.cedar")),
    );
    let t = token(&host, "alice", &[]);
    let body = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {}}})
    .to_string();
    let curl_as = |uid: Option<u32>| {
        let mut args: Vec<String> = Vec::new();
        if let Some(uid) = uid {
            args.extend([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "curl".into(),
            ]);
        }
        args.extend(
            [
                "-sS",
                "-m",
                "5",
                "-H",
                "content-type: application/json",
                "-H",
                "accept: application/json, text/event-stream",
                "-H",
                &format!("authorization: Bearer {t}"),
                "-d",
                &body,
                &format!("http://127.0.0.1:{PORT}/mcp"),
            ]
            .map(str::to_string),
        );
        let program = if uid.is_some() { "setpriv" } else { "curl" };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = host.command(program, &args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let r = curl_as(Some(1000));
    assert!(r["result"].is_object(), "uid 1000 may: {r}");
    let r = curl_as(None);
    assert_eq!(r["error"]["code"], -32602, "root may not: {r}");
    assert_eq!(r["error"]["message"], "Unknown tool: echo", "{r}");
    let remote = SocketAddr::new(HOST_V4.parse().unwrap(), PORT);
    let raw = post(remote, &body, &format!("authorization: Bearer {t}\r\n"));
    let r = host.in_ns(true, move || exchange(remote, &raw)).unwrap();
    assert_eq!(
        r.body["error"]["message"], "Unknown tool: echo",
        "a remote caller has no local process: {r:?}"
    );
    assert_eq!(
        upstream.count(),
        1,
        "only uid 1000's call reached the server"
    );

    let allowed = host.wait_audit("uid 1000's call", |r| r["decision"]["effect"] == "allow");
    assert_eq!(allowed["conn"]["process"]["uid"], 1000, "{allowed}");
    assert_eq!(allowed["conn"]["process"]["comm"], "curl", "{allowed}");
    {
        use std::os::unix::fs::MetadataExt as _;
        let cgroup = std::fs::metadata(&host.cgroup).unwrap().ino();
        assert_eq!(
            allowed["conn"]["process"]["cgroup_id"], cgroup,
            "the test's cgroup: {allowed}"
        );
    }
    assert!(
        allowed["conn"]["process"]["pid"].as_u64().unwrap() > 1,
        "{allowed}"
    );
    host.wait_audit("root's refused call", |r| {
        r["decision"]["effect"] == "deny" && r["conn"]["process"]["uid"] == 0
    });
    host.wait_audit("the remote refused call, without a process", |r| {
        r["decision"]["effect"] == "deny" && r["conn"]["process"].is_null()
    });
}

/// Configured rate limits: per principal and tool, per principal, for the server; 429 with
/// Retry-After, audited, not forwarded.
#[test]
fn rate_limits_refuse_with_429() {
    let mut host = Host::plain();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    \
         rate_limits: {{per_tool: 3, per_principal: 5, per_server: 8}}\n",
        host.upstream(),
        port = host.port(),
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let alice = token(&host, "alice", &[]);
    let bob = token(&host, "bob", &[]);
    let status = |t: &str, tool: &str| call_tool(&host, t, tool, json!({})).status;
    let echo: Vec<u16> = (0..4).map(|_| status(&alice, "echo")).collect();
    assert_eq!(echo, [200, 200, 200, 429], "three a minute per tool");
    assert_eq!(status(&alice, "add"), 200, "another tool: its own count");
    assert_eq!(
        status(&alice, "sub"),
        429,
        "the sixth call of alice: over per_principal"
    );
    let r = call_tool(&host, &bob, "echo", json!({}));
    assert_eq!(r.status, 200, "bob has his own counts");
    assert!(
        r.head.to_ascii_lowercase().contains("content-type"),
        "{r:?}"
    );
    assert_eq!(status(&bob, "add"), 200);
    // The server has taken 8 calls in all (counted, refused or not): the next is over.
    let r = call_tool(&host, &bob, "sub", json!({}));
    assert_eq!(r.status, 429, "{r:?}");
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after: 60"),
        "{r:?}"
    );
    assert_eq!(r.body["error"]["code"], -32001, "{r:?}");
    assert_eq!(
        upstream.count(),
        6,
        "only the calls within the limits were forwarded"
    );
    let rec = host.wait_audit("a refusal", |r| r["status"] == 429);
    assert!(
        rec["decision"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rate limit: more than"),
        "{rec}"
    );
}

/// Property: for random callers, tools and arguments, a call reaches the upstream exactly when
/// the policies (asked separately, through `moat policy test`) permit it; a denied one is
/// answered as an unknown tool.
#[test]
fn a_denied_call_never_reaches_the_upstream() {
    use proptest::{prelude::*, test_runner::TestRunner};
    let dir = std::env::temp_dir().join(format!("moat-policy-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mixed.cedar");
    std::fs::write(
        &file,
        std::fs::read_to_string(example("read-only-for-readers.cedar")).unwrap()
            + "\n@id(\"no-secrets\")\nforbid (principal, action == Action::\"tools/call\", resource)\n\
               when { resource.hasTag(\"path\") && resource.getTag(\"path\") like \"*secret*\" };\n",
    )
    .unwrap();
    let (host, upstream) = host(&format!("{{file: {}}}", file.display()));
    let request = dir.join("request.json");
    let strategy = (
        prop::sample::select(vec!["readers", "writers"]),
        prop::sample::select(vec![
            "read_file",
            "list_dir",
            "delete_file",
            "read",
            "readme",
            "x",
        ]),
        prop::sample::select(vec!["/srv/a", "/srv/secret/b", "secret", "", "/etc/passwd"]),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 40,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(group, tool, path)| {
            let t = token(&host, "carol", &[&format!("groups=[\"{group}\"]")]);
            std::fs::write(
                &request,
                json!({"principal": {"sub": "carol", "client_id": "moat-cli", "claims": {"groups": [group]}},
                       "method": "tools/call", "name": tool, "arguments": {"path": path}})
                .to_string(),
            )
            .unwrap();
            let decided = run(Command::new(MOAT)
                .args(["policy", "test", "--json", "-c"])
                .arg(&host.config)
                .arg("--request")
                .arg(&request));
            let decided: Value = serde_json::from_slice(&decided.stdout).unwrap();
            let before = upstream.count();
            let r = call_tool(&host, &t, tool, json!({"path": path}));
            let forwarded = upstream.count() - before;
            if decided["effect"] == "allow" {
                prop_assert_eq!(forwarded, 1, "{} {} {}: {:?}", group, tool, path, r);
                prop_assert!(r.body["result"].is_object());
            } else {
                prop_assert_eq!(forwarded, 0, "{} {} {}: {:?}", group, tool, path, r);
                prop_assert_eq!(&r.body["error"]["message"], &json!(format!("Unknown tool: {tool}")));
            }
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A policy on the source network: the remote namespace's 10.99.0.0/24 may call, loopback
/// may not.
#[test]
fn calls_from_outside_a_network_are_refused() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("moat-policy-cidr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cidr.cedar");
    std::fs::write(
        &file,
        "@id(\"lab-network\")\npermit (principal, action, resource)\nwhen { context.source_ip.isInRange(ip(\"10.99.0.0/24\")) };\n",
    )
    .unwrap();
    let (host, upstream) = serve(Host::new(), &format!("{{file: {}}}", file.display()));
    let t = token(&host, "alice", &[]);
    let body =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo"}})
            .to_string();
    let remote = SocketAddr::new(HOST_V4.parse().unwrap(), PORT);
    let raw = post(remote, &body, &format!("authorization: Bearer {t}\r\n"));
    let r = host.in_ns(true, move || exchange(remote, &raw)).unwrap();
    assert!(r.body["result"].is_object(), "from 10.99.0.2: {r:?}");
    let r = call_tool(&host, &t, "echo", json!({}));
    assert_eq!(
        r.body["error"]["message"], "Unknown tool: echo",
        "from loopback: {r:?}"
    );
    assert_eq!(upstream.count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The working-hours and office-network examples through the proxy, at the real time: `deploy`
/// is allowed exactly when it is Monday to Friday, 09:00-17:00 UTC now; loopback counts as
/// the office network, and so does the remote namespace's 10.99.0.2.
#[test]
fn the_time_and_network_examples_through_the_proxy() {
    if !privileged() {
        return;
    }
    fn open_now() -> bool {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // 1970-01-01 was a Thursday: day 0 = Thursday, 4 = Monday, ..., 1 = Friday.
        let (day, hour) = ((secs / 86_400) % 7, (secs % 86_400) / 3_600);
        ![2, 3].contains(&day) && (9..17).contains(&hour)
    }
    let policy = |name: &str| format!("{{file: {}}}", example(name));
    let (lab, upstream) = serve(Host::new(), &policy("deploy-in-working-hours.cedar"));
    let t = token(&lab, "alice", &[]);
    let before = open_now();
    let r = call_tool(&lab, &t, "deploy", json!({}));
    // The clock could turn between the readings at the edge of the window: then no verdict.
    if before == open_now() {
        assert_eq!(
            r.body["result"].is_object(),
            before,
            "open: {before}: {r:?}"
        );
    }
    assert!(call_tool(&lab, &t, "echo", json!({})).body["result"].is_object());
    drop(lab);
    drop(upstream);

    let (lab, upstream) = serve(Host::new(), &policy("office-network-only.cedar"));
    let t = token(&lab, "alice", &[]);
    assert!(
        call_tool(&lab, &t, "echo", json!({})).body["result"].is_object(),
        "loopback"
    );
    let remote = SocketAddr::new(HOST_V4.parse().unwrap(), PORT);
    let raw = post(
        remote,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        &format!("authorization: Bearer {t}\r\n"),
    );
    let r = lab.in_ns(true, move || exchange(remote, &raw)).unwrap();
    assert_eq!(r.status, 200, "10.99.0.2 is in 10.0.0.0/8: {r:?}");
    assert!(r.body["result"].is_object(), "{r:?}");
    assert_eq!(upstream.count(), 2);
}
