//! Human approval end to end, on a plain host (no root), for a client that cannot be asked
//! (no elicitation): a call an `@approval` policy permitted is held, not forwarded, until an
//! operator answers with `moat approvals` or on the admin listener; the webhook is told; no
//! answer in time denies; an answer is used once (a replay finds nothing), and an approval
//! for one argument set does not cover another; `@approval("MINUTES")` covers the same call for
//! that long. Each record says who answered, how and when.
mod common;

use std::{
    io::{BufReader, Write as _},
    net::TcpListener,
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"@id("all")
permit (principal, action, resource);

@id("approve-deploy")
@approval
permit (principal, action == Action::"tools/call", resource == Tool::"deploy");

@id("approve-restart-for-10-minutes")
@approval("10")
permit (principal, action == Action::"tools/call", resource == Tool::"restart");
"#;

const TOKEN: &str = "approver-token-0123456789";

struct Setup {
    host: Host,
    upstream: std::sync::Arc<Recorded>,
    token: String,
    /// The webhook's deliveries.
    hooks: mpsc::Receiver<Value>,
}

fn serve() -> Setup {
    let mut host = Host::plain();
    let policy = host.dir.join("approvals.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    let token_file = host.dir.join("approver.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let hook = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let (tx, hooks) = mpsc::channel();
    std::thread::spawn(move || {
        for s in hook.incoming().flatten() {
            let mut r = BufReader::new(&s);
            if let Some(body) = read_http(&mut r) {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = (&s).write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        }
    });
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n\
         approvals:\n  timeout_s: 3\n  webhook: http://{hook_addr}/hook\n  token_file: {}\n",
        host.upstream(),
        policy.display(),
        token_file.display(),
        port = host.port(),
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let token = host.mint("files", "alice");
    Setup {
        host,
        upstream,
        token,
        hooks,
    }
}

/// Sends a tools/call from a thread of its own (it is held): its reply comes on the channel.
fn call(s: &Setup, id: u64, tool: &str, args: Value) -> mpsc::Receiver<Reply> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}})
    .to_string();
    let dst = s.host.addr();
    let raw = post(
        dst,
        &body,
        &format!("authorization: Bearer {}\r\n", s.token),
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(exchange(dst, &raw).expect("a reply"));
    });
    rx
}

/// The one approval waiting, once it is there.
fn waiting(host: &Host) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = host.moat_json(&["approvals", "list"], &[]);
        if let Some(a) = list.as_array().and_then(|l| l.first()) {
            assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
            return a.clone();
        }
        assert!(Instant::now() < deadline, "nothing waits for approval");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn moat(host: &Host, args: &[&str]) -> std::process::Output {
    Command::new(MOAT)
        .args(args)
        .arg("-c")
        .arg(&host.config)
        .output()
        .unwrap()
}

fn record(host: &Host, id: u64) -> Value {
    host.wait_audit(&format!("the record of call {id}"), |r| {
        r["kind"] == "request" && r["mcp"]["id"] == id && r["outcome"] != "open"
    })
}

/// An admin request with the approver's token (or `token`).
fn admin(host: &Host, method: &str, path: &str, token: Option<&str>) -> Reply {
    let addr = host.admin_addr();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let raw =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-length: 0\r\n\r\n");
    exchange(addr, raw.as_bytes()).unwrap()
}

#[test]
fn held_calls_wait_for_an_operator() {
    let s = serve();
    let host = &s.host;

    // Held: not forwarded while it waits; listed, and the webhook told.
    let before = s.upstream.count();
    let reply = call(&s, 1, "deploy", json!({"env": "prod"}));
    let a = waiting(host);
    assert_eq!(a["server"], "files");
    assert_eq!(
        (a["method"].as_str(), a["target"].as_str()),
        (Some("tools/call"), Some("deploy"))
    );
    assert_eq!(a["sub"], "alice");
    assert_eq!(a["policy"], "approve-deploy");
    assert_eq!(a["arguments"], json!({"env": "prod"}));
    assert_eq!(a["arguments_sha256"].as_str().map(str::len), Some(64));
    let hook = s
        .hooks
        .recv_timeout(Duration::from_secs(5))
        .expect("the webhook is told");
    assert_eq!(hook["event"], "approval_requested");
    assert_eq!(hook["id"], a["id"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.upstream.count(), before, "nothing forwarded while held");
    assert!(reply.try_recv().is_err(), "no answer yet");

    // Approved with the CLI: forwarded, and the record says by whom.
    let id = a["id"].as_str().unwrap().to_string();
    let out = host.moat_json(&["approvals", "approve"], &[&id, "--by", "carol"]);
    assert_eq!(out["answer"], "approve");
    let r = reply.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(r.body["result"].is_object(), "{r:?}");
    assert_eq!(s.upstream.count(), before + 1);
    let rec = record(host, 1);
    assert_eq!(rec["approval"]["verdict"], "approved", "{rec}");
    assert_eq!(rec["approval"]["via"], "cli");
    assert!(
        rec["approval"]["by"]
            .as_str()
            .unwrap()
            .starts_with("carol (uid "),
        "{rec}"
    );
    assert_eq!(rec["approval"]["id"], id.as_str());
    assert_eq!(rec["approval"]["policy"], "approve-deploy");
    assert_eq!(rec["decision"]["effect"], "allow");

    // A replayed answer finds nothing; the same call is held again (single use) and denied on
    // the admin listener.
    let again = moat(host, &["approvals", "approve", &id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no pending approval"),
        "{again:?}"
    );
    let reply = call(&s, 2, "deploy", json!({"env": "prod"}));
    let a = waiting(host);
    assert_ne!(a["id"].as_str(), Some(id.as_str()));
    let path = format!("/approvals/{}/deny?by=dave", a["id"].as_str().unwrap());
    assert_eq!(
        admin(host, "POST", &path, None).status,
        401,
        "the token is required"
    );
    assert_eq!(
        admin(host, "POST", &path, Some("wrong-token-0123456789")).status,
        401
    );
    let listed = admin(host, "GET", "/approvals", Some(TOKEN));
    assert_eq!(listed.body[0]["id"], a["id"], "{listed:?}");
    assert_eq!(admin(host, "POST", &path, Some(TOKEN)).status, 200);
    let r = reply.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(r.body["error"]["code"], -32001, "{r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("denied by an approver")
    );
    let rec = record(host, 2);
    assert_eq!(rec["approval"]["verdict"], "denied");
    assert_eq!(rec["approval"]["via"], "admin");
    assert_eq!(rec["approval"]["by"], "dave");
    assert_eq!(rec["decision"]["effect"], "deny");
    assert_eq!(
        s.upstream.count(),
        before + 1,
        "a denied call is not forwarded"
    );

    // Approved, but its user was locked down meanwhile: refused all the same.
    let reply = call(&s, 4, "deploy", json!({"env": "prod"}));
    let a = waiting(host);
    host.moat_json(
        &["lockdown"],
        &["--sub", "alice", "--reason", "investigating"],
    );
    host.moat_json(&["approvals", "approve"], &[a["id"].as_str().unwrap()]);
    let r = reply.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Locked down"),
        "{r:?}"
    );
    assert_eq!(s.upstream.count(), before + 1, "not forwarded");
    host.moat_json(&["unlock"], &["--sub", "alice"]);

    // No answer within the timeout (3 s): denied.
    let reply = call(&s, 3, "deploy", json!({"env": "prod"}));
    let a = waiting(host);
    let r = reply.recv_timeout(Duration::from_secs(8)).unwrap();
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer in time"),
        "{r:?}"
    );
    assert_eq!(record(host, 3)["approval"]["verdict"], "timed_out");
    let late = moat(host, &["approvals", "approve", a["id"].as_str().unwrap()]);
    assert!(!late.status.success(), "a late answer finds nothing");
    assert_eq!(s.upstream.count(), before + 1);
    let (_, metrics) = host.admin_get("/metrics");
    for (verdict, n) in [("approved", 2), ("denied", 1), ("timed_out", 1)] {
        let series = format!(r#"moat_approvals_total{{server="files",verdict="{verdict}"}} {n}"#);
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
}

#[test]
fn an_approval_for_minutes_covers_the_same_call_only() {
    let s = serve();
    let host = &s.host;
    let reply = call(&s, 1, "restart", json!({"service": "web"}));
    let a = waiting(host);
    host.moat_json(&["approvals", "approve"], &[a["id"].as_str().unwrap()]);
    assert!(reply.recv_timeout(Duration::from_secs(5)).unwrap().body["result"].is_object());

    // The same call again, with its arguments in another order: covered, not held.
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{"service":"web"},"name":"restart"}}"#;
    let dst = host.addr();
    let r = exchange(
        dst,
        &post(dst, body, &format!("authorization: Bearer {}\r\n", s.token)),
    )
    .unwrap();
    assert!(r.body["result"].is_object(), "{r:?}");
    assert_eq!(record(host, 2)["approval"]["verdict"], "reused");

    // Other arguments: held; denied here.
    let reply = call(&s, 3, "restart", json!({"service": "db"}));
    let a = waiting(host);
    assert_eq!(a["arguments"], json!({"service": "db"}));
    let out = moat(host, &["approvals", "deny", a["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let r = reply.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(r.body["error"].is_object(), "{r:?}");
    // Another tool, no `@approval`: not held.
    let r = call(&s, 4, "read_file", json!({}))
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    assert!(r.body["result"].is_object(), "{r:?}");
    assert!(record(host, 4).get("approval").is_none());
}

/// FastMCP behind Moat, `add` under `@approval`; a token for alice.
fn serve_fastmcp() -> (Host, String) {
    let mut host = Host::plain();
    let policy = host.dir.join("approvals.cedar");
    std::fs::write(
        &policy,
        r#"@id("all") permit (principal, action, resource);
           @id("approve-add") @approval permit (principal, action == Action::"tools/call", resource == Tool::"add");"#,
    )
    .unwrap();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n\
         approvals:\n  timeout_s: 20\n",
        host.upstream(),
        policy.display(),
        port = host.port(),
    ));
    start_fastmcp(&mut host, &[]);
    host.start_agent();
    let token = host.mint("files", "alice");
    (host, token)
}

/// The Python SDK client calling `add` with `--elicit answer` (None: no elicitation).
fn python_call(host: &Host, token: &str, elicit: Option<&str>) -> std::process::Output {
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let header = format!("Authorization: Bearer {token}");
    let mut args = vec![
        script("mcp_client.py").to_str().unwrap().to_string(),
        url,
        "call".into(),
        "--tool".into(),
        "add".into(),
        "--args".into(),
        r#"{"a": 2, "b": 3}"#.into(),
        "--header".into(),
        header,
        "--timeout".into(),
        "30".into(),
    ];
    if let Some(e) = elicit {
        args.extend(["--elicit".into(), e.into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.command(python().to_str().unwrap(), &args)
        .output()
        .unwrap()
}

fn ts_call(host: &Host, token: &str, elicit: &str) -> (bool, Value) {
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let header = format!("Authorization: Bearer {token}");
    let out = node_script(
        host,
        "ts_client.mjs",
        &[
            &url,
            "call",
            "--tool",
            "add",
            "--args",
            r#"{"a": 2, "b": 3}"#,
            "--header",
            &header,
            "--timeout",
            "30000",
            "--elicit",
            elicit,
        ],
    )
    .output()
    .unwrap();
    outcome(&out)
}

#[test]
fn the_sdk_clients_are_asked_through_elicitation() {
    let (host, token) = serve_fastmcp();

    // The Python SDK client approves: the call goes through; it was shown the call.
    let (ok, r) = outcome(&python_call(&host, &token, Some("accept")));
    assert!(ok, "{r}\n{}", host.agent_log());
    assert!(r.to_string().contains('5'), "the sum came back: {r}");
    let asked = r["elicitations"][0]["message"].as_str().unwrap_or_default();
    assert!(
        asked.contains("tools/call `add`")
            && asked.contains(r#""a":2"#)
            && asked.contains("approve-add"),
        "{r}"
    );
    let rec = host.wait_audit("the approved call", |r| {
        r["mcp"]["tool"] == "add" && r["approval"]["verdict"] == "approved"
    });
    assert_eq!(rec["approval"]["via"], "elicitation");
    assert_eq!(rec["approval"]["by"], "alice");

    // It declines: refused, nothing forwarded.
    let (ok, r) = outcome(&python_call(&host, &token, Some("decline")));
    assert!(!ok, "{r}");
    assert_eq!(r["code"], -32001, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not approved"),
        "{r}"
    );
    host.wait_audit("the declined call", |r| {
        r["mcp"]["tool"] == "add" && r["approval"]["verdict"] == "denied"
    });

    // The TypeScript SDK client: approves, then cancels.
    let (ok, r) = ts_call(&host, &token, "accept");
    assert!(ok, "{r}");
    assert_eq!(r["text"], "5.0", "{r}");
    assert_eq!(r["elicitations"].as_array().map(Vec::len), Some(1), "{r}");
    let (ok, r) = ts_call(&host, &token, "cancel");
    assert!(!ok, "{r}");
    assert_eq!(r["code"], -32001, "{r}");

    // A client that cannot be asked is held out of band: approved here with the CLI.
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = tx.send(python_call(&host, &token, None));
        });
        let a = waiting(&host);
        assert_eq!(a["target"], "add");
        host.moat_json(&["approvals", "approve"], &[a["id"].as_str().unwrap()]);
        let (ok, r) = outcome(&rx.recv_timeout(Duration::from_secs(30)).unwrap());
        assert!(ok, "{r}");
        assert_eq!(
            r["elicitations"],
            json!([]),
            "not asked through the client: {r}"
        );
    });
}

/// A raw Streamable HTTP session whose client declares elicitation: its header lines.
fn eliciting_session(host: &Host, token: &str) -> String {
    let auth = format!("authorization: Bearer {token}\r\n");
    mcp_session_declaring(host.addr(), &auth, r#"{"elicitation":{}}"#)
}

/// The `data:` of the next event on a response stream.
fn next_event(r: &mut impl std::io::BufRead) -> Value {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended");
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
        } else if line.is_empty() && !data.is_empty() {
            return serde_json::from_str(&data).unwrap();
        }
    }
}

/// Only the caller asked can answer, once: another principal, or the same one on another
/// session, is refused, and a replayed answer finds nothing.
#[test]
fn an_elicitation_is_answered_only_by_whom_it_asked() {
    let (host, alice) = serve_fastmcp();
    let mallory = host.mint("files", "mallory");
    let dst = host.addr();
    let h = eliciting_session(&host, &alice);
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#;
    let s = std::net::TcpStream::connect(dst).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(&post(dst, call, &h)).unwrap();
    let mut r = BufReader::new(&s);
    let ask = next_event(&mut r);
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    let id = ask["id"].as_str().unwrap().to_string();
    let answer = json!({"jsonrpc": "2.0", "id": id,
                        "result": {"action": "accept", "content": {"approve": true}}})
    .to_string();
    let send = |headers: &str| exchange(dst, &post(dst, &answer, headers)).unwrap();

    let theirs = eliciting_session(&host, &mallory);
    assert_eq!(send(&theirs).status, 403, "another principal");
    let other_session = eliciting_session(&host, &alice);
    assert_eq!(
        send(&other_session).status,
        403,
        "another session of the same principal"
    );
    assert_eq!(waiting(&host)["target"], "add", "still waiting");

    let r2 = send(&h);
    assert_eq!(r2.status, 202, "{r2:?}");
    let result = next_event(&mut r);
    assert_eq!(result["id"], 7, "{result}");
    assert!(result["result"].to_string().contains('5'), "{result}");
    assert_eq!(send(&h).status, 404, "a replayed answer finds nothing");
    let rec = host.wait_audit("the approved call", |r| {
        r["mcp"]["id"] == 7 && r["approval"]["verdict"] == "approved"
    });
    assert_eq!(rec["approval"]["via"], "elicitation");
    // None of the answers reached the server: Moat answered each itself.
    host.wait_audit("the replayed answer", |r| {
        r["mcp"]["id"] == id.as_str() && r["status"] == 404
    });
    let answers: Vec<Value> = host
        .request_records()
        .into_iter()
        .filter(|r| r["mcp"]["id"] == id.as_str())
        .collect();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert!(
        answers.iter().all(|r| r.get("upstream").is_none()),
        "{answers:?}"
    );
}
