//! Tool integrity end to end, on a plain host (no root): a real MCP server (the Python SDK's
//! low-level server, tests/fixtures/integrity_server.py) whose offer changes after approval,
//! the official Python SDK client listing and calling through Moat, and the operator's
//! `moat tools diff` and `moat tools approve`. In JSON and in SSE responses.
mod common;

use std::{path::PathBuf, process::Command};

use common::*;
use serde_json::{Value, json};

/// The fixture server on the host's upstream port; the file its calls are logged to.
fn start_server(host: &mut Host, args: &[&str]) -> PathBuf {
    let log = host.dir.join("calls.log");
    let (script, port) = (
        script("integrity_server.py"),
        host.upstream_port().to_string(),
    );
    let mut all = vec![
        script.to_str().unwrap(),
        "--port",
        &port,
        "--log",
        log.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let cmd = host.command(python().to_str().unwrap(), &all);
    host.spawn(cmd, "integrity-server.log");
    host.wait_port(host.upstream_port(), "the integrity fixture server");
    log
}

fn config(host: &Host, integrity: &str) {
    host.write_config(&format!(
        "{}    integrity: {integrity}\n",
        host.default_servers()
    ));
}

/// The SDK client's `call` scenario: it lists the tools, then calls `tool`.
fn call(host: &Host, tool: &str, expect_error: bool) -> Value {
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let mut args = vec![
        script("mcp_client.py").to_str().unwrap().to_string(),
        url,
        "call".into(),
        "--tool".into(),
        tool.into(),
        "--args".into(),
        json!({"a": 2, "b": 3, "text": "x"}).to_string(),
    ];
    if expect_error {
        args.push("--expect-error".into());
    }
    let out = Command::new(python()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "client calling {tool}: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        host.agent_log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn calls(log: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The request records of `method`, in order, once the audit log has been still for 150 ms
/// (a request's record is written as its response ends, just after the client has it).
fn records(host: &Host, method: &str) -> Vec<Value> {
    let len = || std::fs::metadata(&host.audit).map_or(0, |m| m.len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut last = len();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let now = len();
        if now == last || std::time::Instant::now() > deadline {
            break;
        }
        last = now;
    }
    host.request_records()
        .into_iter()
        .filter(|r| r["mcp"]["method"] == method)
        .collect()
}

fn rug_pull_is_hidden_and_refused(json_responses: bool) {
    let mut host = Host::plain();
    config(&host, "{mode: enforce, recheck_s: 0}");
    let mut args = vec!["--rug-pull-after", "3"];
    if json_responses {
        args.push("--json");
    }
    let log = start_server(&mut host, &args);
    host.start_agent();

    // The operator asks the server what it offers (Moat lists it as a client would).
    let offer = host.moat_json(&["tools", "pin"], &["--server", "files"]);
    let states: Vec<(&str, &str)> = offer
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("add", "unpinned"), ("echo", "unpinned")],
        "{offer}"
    );

    // Nothing is pinned: the client sees no tools, and its call never reaches the server.
    let r = call(&host, "add", true);
    assert_eq!(r["tools"], json!([]), "{r}");
    assert_eq!(r["call_error"]["code"], -32602, "{r}");
    assert_eq!(r["call_error"]["message"], "Unknown tool: add", "{r}");
    assert!(calls(&log).is_empty());
    let refused = records(&host, "tools/call").pop().unwrap();
    assert_eq!(refused["decision"]["effect"], "deny", "{refused}");
    assert_eq!(
        refused["decision"]["reason"], "tool integrity: the tool has no pin",
        "{refused}"
    );
    assert_eq!(refused["pins"][0]["state"], "unpinned", "{refused}");

    // The operator reviews what the server offers, and approves it.
    let diff = host.moat_json(&["tools", "diff"], &["--server", "files"]);
    let names: Vec<&str> = diff
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "echo"], "{diff}");
    assert!(
        diff.as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "unpinned")
    );
    assert!(
        diff[0]["definition"]
            .as_str()
            .unwrap()
            .contains("Adds two numbers.")
    );
    let approved = host.moat_json(&["tools", "approve"], &["--server", "files", "--all"]);
    assert_eq!(approved.as_array().unwrap().len(), 2, "{approved}");
    let pinned = integrity_records(&host, "pinned", 2);
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    assert!(
        pinned
            .iter()
            .all(|p| p["by"] == "operator" && p["server"] == "files")
    );

    // Approved: listed and callable.
    let r = call(&host, "add", false);
    assert_eq!(r["tools"], json!(["add", "echo"]), "{r}");
    assert_eq!(r["call"], "5", "{r}");
    assert_eq!(calls(&log), ["CALLED add"]);

    // The rug pull: `add` changes its description, `echo` is renamed and a tool appears.
    let r = call(&host, "add", true);
    assert_eq!(r["tools"], json!([]), "{r}");
    assert_eq!(r["call_error"]["message"], "Unknown tool: add", "{r}");
    assert_eq!(
        calls(&log),
        ["CALLED add"],
        "the changed tool was never called"
    );
    let list = records(&host, "tools/list").pop().unwrap();
    let pins = list["pins"].as_array().unwrap();
    let add = pins.iter().find(|p| p["name"] == "add").unwrap();
    assert_eq!(add["state"], "changed", "{list}");
    assert_eq!(add["hidden"], true, "{list}");
    assert_eq!(
        add["markers"],
        json!(["model_directive", "sensitive_reference"]),
        "{list}"
    );
    for new in ["echo2", "notes"] {
        let p = pins.iter().find(|p| p["name"] == new).unwrap();
        assert_eq!(p["state"], "unpinned", "{list}");
    }
    let hidden: Vec<&str> = list["hidden"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hidden, ["add", "echo2", "notes"], "{list}");
    let refused = records(&host, "tools/call").pop().unwrap();
    assert_eq!(
        refused["decision"]["reason"], "tool integrity: the tool's definition differs from its pin",
        "{refused}"
    );
    assert_eq!(refused["pins"][0]["hash"], add["hash"], "{refused}");
    // The renamed tool has no pin either.
    let r = call(&host, "echo2", true);
    assert_eq!(r["call_error"]["message"], "Unknown tool: echo2", "{r}");
    assert_eq!(calls(&log), ["CALLED add"]);

    // `moat status` and the metrics count how the entries stand.
    let status = host.status();
    assert_eq!(
        status["integrity"]["files"],
        json!({"pinned": 1, "changed": 1, "unpinned": 2, "flagged": 1}),
        "echo pinned (no longer listed, as last seen), add changed (and flagged), echo2 and \
         notes unpinned: {status}"
    );
    let (_, metrics) = host.admin_get("/metrics");
    for (state, n) in [
        ("pinned", 1),
        ("changed", 1),
        ("unpinned", 2),
        ("flagged", 1),
    ] {
        let series = format!("moat_integrity_entries{{server=\"files\",state=\"{state}\"}} {n}");
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }

    // Approving the new definition is an explicit, audited act.
    let diff = host.moat_json(&["tools", "diff"], &["--server", "files"]);
    let add = diff
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "add")
        .unwrap();
    assert_eq!(add["state"], "changed", "{diff}");
    assert_ne!(add["pinned"], add["seen"], "{diff}");
    host.moat_json(&["tools", "approve"], &["--server", "files", "add"]);
    let r = call(&host, "add", false);
    assert_eq!(r["tools"], json!(["add"]), "{r}");
    let pinned = integrity_records(&host, "pinned", 3).pop().unwrap();
    assert_eq!(pinned["name"], "add", "{pinned}");
    assert_eq!(
        pinned["previous"],
        approved_hash(&approved, "add"),
        "{pinned}"
    );
}

/// The integrity records of `event`, once there are `n` (records are written asynchronously).
fn integrity_records(host: &Host, event: &str, n: usize) -> Vec<Value> {
    let records = || -> Vec<Value> {
        host.audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "integrity" && r["event"] == event)
            .collect()
    };
    host.wait_audit(&format!("{n} integrity {event}"), |_| records().len() >= n);
    records()
}

fn approved_hash(approved: &Value, name: &str) -> Value {
    approved
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["hash"].clone())
        .unwrap()
}

#[test]
fn a_rug_pull_is_hidden_and_its_calls_refused_in_sse_responses() {
    rug_pull_is_hidden_and_refused(false);
}

#[test]
fn a_rug_pull_is_hidden_and_its_calls_refused_in_json_responses() {
    rug_pull_is_hidden_and_refused(true);
}

#[test]
fn trust_on_first_use_pins_what_is_first_listed_and_holds_to_it() {
    let mut host = Host::plain();
    config(&host, "{mode: enforce, pin: first_use, recheck_s: 0}");
    let log = start_server(&mut host, &["--rug-pull-after", "1"]);
    host.start_agent();
    let r = call(&host, "add", false);
    assert_eq!(r["tools"], json!(["add", "echo"]), "{r}");
    assert_eq!(r["call"], "5", "{r}");
    let pinned = integrity_records(&host, "pinned", 2);
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    assert!(pinned.iter().all(|p| p["by"] == "first_use"));
    // New tools are pinned at first sight too; the changed one is not. The TypeScript SDK's
    // client sees the same.
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let args = json!({"a": 2, "b": 3}).to_string();
    let (ok, out) = ts_client(
        &host,
        &[&url, "call", "--list", "--tool", "add", "--args", &args],
    );
    assert!(!ok, "{out}");
    let err: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(err["tools"], json!(["echo2", "notes"]), "{err}");
    assert_eq!(err["code"], -32602, "{err}");
    let (ok, out) = ts_client(
        &host,
        &[
            &url,
            "call",
            "--list",
            "--tool",
            "notes",
            "--args",
            r#"{"text":"n"}"#,
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(calls(&log), ["CALLED add", "CALLED notes"]);
}

#[test]
fn warn_mode_passes_everything_and_audits_markers() {
    let mut host = Host::plain();
    config(&host, "{mode: warn, recheck_s: 0}");
    let log = start_server(&mut host, &["--poisoned"]);
    host.start_agent();
    let r = call(&host, "add", false);
    assert_eq!(r["tools"].as_array().unwrap().len(), 9, "{r}");
    assert_eq!(calls(&log), ["CALLED add"]);
    let list = records(&host, "tools/list").pop().unwrap();
    let markers: Vec<(String, Value)> = list["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["markers"].clone(),
            )
        })
        .filter(|(_, m)| !m.is_null())
        .collect();
    let expected = [
        ("tagged", "invisible_unicode"),
        ("reversed", "bidi_control"),
        ("escaped", "control_characters"),
        ("\u{430}dd", "confusable_name"),
        ("directive", "model_directive"),
        ("secrets", "sensitive_reference"),
        ("long", "unusual_length"),
    ];
    assert_eq!(markers.len(), expected.len(), "{markers:?}");
    for (name, marker) in expected {
        let found = markers.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(found.1, json!([marker]), "{name}: {markers:?}");
    }
    assert!(list["hidden"].is_null(), "warn hides nothing: {list}");
}

#[test]
fn hide_flagged_keeps_pinned_poison_from_the_client() {
    let mut host = Host::plain();
    config(
        &host,
        "{mode: enforce, pin: first_use, hide_flagged: true, recheck_s: 0}",
    );
    start_server(&mut host, &["--poisoned"]);
    host.start_agent();
    let r = call(&host, "directive", true);
    assert_eq!(r["tools"], json!(["add", "echo"]), "{r}");
    assert_eq!(r["call_error"]["message"], "Unknown tool: directive", "{r}");
}

#[test]
fn a_tool_name_offered_twice_and_a_description_naming_another_servers_tool_are_flagged() {
    let mut host = Host::plain();
    let (mail_port, mail_upstream) = (free_port(), free_port());
    host.write_config(&format!(
        "{}    integrity: {{mode: warn, recheck_s: 0}}\n  - name: mail\n    port: {mail_port}\n    upstream: http://127.0.0.1:{mail_upstream}\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n    integrity: {{mode: warn, recheck_s: 0}}\n",
        host.default_servers()
    ));
    start_server(&mut host, &["--steer", "send_email"]);
    let (script, port, log) = (
        script("integrity_server.py"),
        mail_upstream.to_string(),
        host.dir.join("mail-calls.log"),
    );
    let mail = host.command(
        python().to_str().unwrap(),
        &[
            script.to_str().unwrap(),
            "--port",
            &port,
            "--log",
            log.to_str().unwrap(),
            "--extra-tool",
            "send_email",
        ],
    );
    host.spawn(mail, "mail-server.log");
    host.wait_port(mail_upstream, "the mail fixture server");
    host.start_agent();

    let list = |port: u16| {
        let url = format!("http://127.0.0.1:{port}/mcp");
        let (ok, out) = ts_client(&host, &[&url, "list"]);
        assert!(ok, "{out}");
    };
    list(mail_port);
    list(host.port());
    let files = records(&host, "tools/list")
        .into_iter()
        .find(|r| r["server"] == "files")
        .unwrap();
    let markers = |name: &str| {
        files["pins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["markers"].clone())
            .unwrap()
    };
    assert_eq!(markers("add"), json!(["shared_name"]), "{files}");
    assert_eq!(markers("echo"), json!(["shared_name"]), "{files}");
    assert_eq!(
        markers("steer"),
        json!(["cross_server_reference"]),
        "{files}"
    );
}

/// Moat checks the server itself: when it starts (pinning on first use here), and at once when
/// the server announces a change on a stream passing to a client; a client that never lists
/// is then refused the changed tool.
fn moat_checks_by_itself(json_responses: bool) {
    let mut host = Host::plain();
    config(&host, "{mode: enforce, pin: first_use, recheck_s: 3600}");
    let mut args = vec!["--mutate"];
    if json_responses {
        args.push("--json");
    }
    let log = start_server(&mut host, &args);
    host.start_agent();
    let pinned = integrity_records(&host, "pinned", 3);
    let mut names: Vec<&str> = pinned.iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["add", "echo", "mutate"],
        "pinned when the agent started"
    );
    assert_eq!(records(&host, "tools/list").len(), 0, "no client listed");

    // A client that never lists: the tool is callable.
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let args = json!({"a": 2, "b": 3}).to_string();
    let (ok, out) = ts_client(&host, &[&url, "call", "--tool", "add", "--args", &args]);
    assert!(ok, "{out}");

    // The server changes, and says so on a stream passing to a client.
    let r = call(&host, "mutate", false);
    assert_eq!(r["is_error"], false, "{r}");
    let checked = integrity_records(&host, "checked", 1).pop().unwrap();
    assert_eq!(checked["source"], "list_changed", "{checked}");
    let add = checked["notable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "add")
        .cloned()
        .unwrap();
    assert_eq!(add["state"], "changed", "{checked}");
    let (ok, out) = ts_client(&host, &[&url, "call", "--tool", "add", "--args", &args]);
    assert!(
        !ok,
        "the changed tool is refused to a client that never listed: {out}"
    );
    assert!(out.contains("-32602"), "{out}");
    assert_eq!(calls(&log), ["CALLED add", "CALLED mutate"]);
}

#[test]
fn moat_checks_by_itself_at_start_and_on_list_changed_in_sse() {
    moat_checks_by_itself(false);
}

#[test]
fn moat_checks_by_itself_at_start_and_on_list_changed_in_json() {
    moat_checks_by_itself(true);
}

/// The TypeScript SDK's server changes a tool as its API does (`RegisteredTool.update`, which
/// sends `notifications/tools/list_changed`): Moat sees the notification pass, checks the
/// server itself, and refuses the changed tool to a client that never lists.
#[test]
fn a_typescript_sdk_servers_rug_pull_is_caught_on_its_list_changed() {
    let mut host = Host::plain();
    config(&host, "{mode: enforce, pin: first_use, recheck_s: 3600}");
    let log = host.dir.join("ts-server.jsonl");
    start_ts_server(&mut host, &["--rug-pull"], &log);
    host.start_agent();
    let pinned = integrity_records(&host, "pinned", 7);
    assert!(pinned.iter().any(|p| p["name"] == "add"), "{pinned:?}");

    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let args = json!({"a": 2, "b": 3}).to_string();
    let (ok, out) = ts_client(&host, &[&url, "call", "--tool", "add", "--args", &args]);
    assert!(ok, "{out}");
    let r = call(&host, "mutate", false);
    assert_eq!(r["call"], "mutated", "{r}");
    let checked = integrity_records(&host, "checked", 1).pop().unwrap();
    assert_eq!(checked["source"], "list_changed", "{checked}");
    let (ok, out) = ts_client(&host, &[&url, "call", "--tool", "add", "--args", &args]);
    assert!(!ok, "{out}");
    assert!(out.contains("-32602"), "{out}");
    let handled: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["handled"] == "tools/call")
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        handled,
        ["add", "mutate"],
        "the changed tool never ran again"
    );
}

/// A policy reads how a tool stands against its pin (`context.integrity`): with the example
/// policy, flagged tools are neither listed nor called, in `warn` mode too.
#[test]
fn a_policy_keeps_flagged_tools_from_callers() {
    let mut host = Host::plain();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/policies/no-flagged-tools.cedar");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n    \
         integrity: {{mode: warn, pin: first_use, recheck_s: 0}}\n",
        host.upstream(),
        policy.display(),
        port = host.port(),
    ));
    let log = start_server(&mut host, &["--poisoned"]);
    host.start_agent();
    let mut mint = Command::new(MOAT);
    mint.args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "files", "--sub", "alice"]);
    let token = String::from_utf8(run(&mut mint).stdout).unwrap();
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let out = Command::new(python())
        .args([
            script("mcp_client.py").to_str().unwrap(),
            &url,
            "call",
            "--tool",
            "directive",
            "--args",
            r#"{"text": "x"}"#,
            "--expect-error",
            "--header",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tools"], json!(["add", "echo"]), "{r}");
    assert_eq!(r["call_error"]["message"], "Unknown tool: directive", "{r}");
    assert!(calls(&log).is_empty());
    let refused = records(&host, "tools/call").pop().unwrap();
    assert_eq!(
        refused["decision"]["policies"],
        json!(["no-flagged-tools"]),
        "{refused}"
    );
    assert_eq!(
        refused["pins"][0]["markers"],
        json!(["model_directive"]),
        "{refused}"
    );
}

/// A server's `initialize` instructions are pinned like its tools: changed ones are removed
/// from the result the client gets (enforce), and audited.
#[test]
fn changed_instructions_never_reach_the_client() {
    let mut host = Host::plain();
    config(&host, "{mode: enforce, pin: first_use, recheck_s: 3600}");
    start_server(
        &mut host,
        &["--mutate", "--instructions", "Use add for sums."],
    );
    host.start_agent();
    let pinned = integrity_records(&host, "pinned", 4);
    assert!(
        pinned.iter().any(|p| p["entry"] == "instructions"),
        "{pinned:?}"
    );
    let r = call(&host, "mutate", false);
    assert_eq!(r["instructions"], "Use add for sums.", "{r}");
    // A new session gets the changed instructions from the server: not from Moat.
    let r = call(&host, "echo", false);
    assert!(r["instructions"].is_null(), "{r}");
    let init = records(&host, "initialize").pop().unwrap();
    let check = &init["pins"][0];
    assert_eq!(check["kind"], "instructions", "{init}");
    assert_eq!(check["state"], "changed", "{init}");
    assert_eq!(check["hidden"], true, "{init}");
    assert_eq!(
        check["markers"],
        json!(["model_directive", "sensitive_reference"]),
        "{init}"
    );
    let diff = host.moat_json(&["tools", "diff"], &["--server", "files"]);
    let i = diff
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "instructions")
        .unwrap();
    assert_eq!(i["state"], "changed", "{diff}");
    // Approved, they pass again.
    host.moat_json(
        &["tools", "approve"],
        &["--server", "files", "instructions"],
    );
    let r = call(&host, "echo", false);
    assert!(
        r["instructions"].as_str().unwrap().contains("IMPORTANT"),
        "{r}"
    );
}

/// Resource templates are pinned like tools: a changed one is removed from
/// `resources/templates/list` results (here read raw, as JSON), and Moat's own check sees it.
#[test]
fn a_changed_resource_template_is_hidden() {
    let mut host = Host::plain();
    config(&host, "{mode: enforce, pin: first_use, recheck_s: 3600}");
    start_server(&mut host, &["--mutate", "--templates", "--json"]);
    host.start_agent();
    let pinned = integrity_records(&host, "pinned", 4);
    assert!(
        pinned
            .iter()
            .any(|p| p["entry"] == "template" && p["name"] == "memo://{name}"),
        "{pinned:?}"
    );
    let templates = |host: &Host| -> Value {
        let dst = host.addr();
        let h = mcp_session(dst, "");
        let list = r#"{"jsonrpc":"2.0","id":2,"method":"resources/templates/list"}"#;
        exchange(dst, &post(dst, list, &h)).unwrap().body
    };
    let before = templates(&host);
    assert_eq!(
        before["result"]["resourceTemplates"][0]["uriTemplate"], "memo://{name}",
        "{before}"
    );
    call(&host, "mutate", false);
    let checked = integrity_records(&host, "checked", 1).pop().unwrap();
    let t = checked["notable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "template")
        .cloned()
        .unwrap();
    assert_eq!(t["state"], "changed", "{checked}");
    let after = templates(&host);
    assert_eq!(after["result"]["resourceTemplates"], json!([]), "{after}");
    // Its record is written as the response ends: wait for it.
    let record = host.wait_audit("the templates list's record", |r| {
        r["mcp"]["method"] == "resources/templates/list" && r["pins"].is_array()
    });
    assert_eq!(record["pins"][0]["state"], "changed", "{record}");
    assert_eq!(record["pins"][0]["hidden"], true, "{record}");
}
