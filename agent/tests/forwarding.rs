//! Adversarial tests, on a plain host (no root): Moat forwards only what it decided. A client
//! with a valid token tries to smuggle a request past the decision (framing, repeated or odd
//! headers, a request sent as a notification), and the upstream answers in a form Moat cannot
//! read; every request that reaches the server must be one Moat built, for the user who sent
//! it, with one audit record carrying its decision.
mod common;

use std::{collections::HashMap, net::SocketAddr, process::Command};

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

/// The `servers:` section of a plaintext server on `host`'s port with the local issuer, and
/// `extra` config lines.
fn servers(host: &Host, extra: &str) -> String {
    format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n{extra}",
        host.upstream(),
        port = host.port(),
    )
}

/// A plaintext server with the local issuer whose upstream gets a JWT naming the caller, and
/// `extra` config lines; its upstream recorded.
fn host(extra: &str) -> (Host, std::sync::Arc<Recorded>) {
    let mut host = Host::plain();
    let jwt = format!(
        "    upstream_auth: {{jwt: {{audience: '{}'}}}}\n{extra}",
        host.upstream()
    );
    host.write_config(&servers(&host, &jwt));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    (host, upstream)
}

fn token(host: &Host, sub: &str) -> String {
    let out = run(Command::new(MOAT)
        .args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "files", "--sub", sub]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The `sub` of the JWT Moat gave the upstream request whose head is `head`.
fn upstream_sub(head: &str) -> String {
    let jwt = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization").then(|| v.trim())
        })
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no credential upstream: {head}"));
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sub"].as_str().unwrap().to_string()
}

/// A request to the agent at `dst`.
fn request(dst: SocketAddr, method: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} /mcp HTTP/1.1\r\nhost: {dst}\r\naccept: application/json, text/event-stream\r\n{extra_headers}\r\n"
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn ping(id: u32) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string()
}

fn post_with(dst: SocketAddr, token: &str, headers: &str, body: &str) -> Vec<u8> {
    request(
        dst,
        "POST",
        &format!(
            "authorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}",
            body.len()
        ),
        body.as_bytes(),
    )
}

/// Bob's `initialize`, which opens his session: the session id.
fn open_session(host: &Host, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let dst = host.addr();
    let raw = post_with(dst, token, "", &init);
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_string())
        })
        .expect("a session")
}

/// Every framing and header trick alice (holding `alice`, a valid token) tries, to reach
/// bob's `session` (a DELETE ending it) or a path Moat answers 404, hidden in her requests.
fn attempts(dst: SocketAddr, alice: &str, session: &str) -> Vec<(&'static str, Vec<u8>)> {
    let hidden = [
        format!(
            "DELETE /mcp HTTP/1.1\r\nhost: {dst}\r\nmcp-session-id: {session}\r\ncontent-length: 0\r\n\r\n"
        ),
        format!("GET /admin HTTP/1.1\r\nhost: {dst}\r\n\r\n"),
    ];
    let mut attempts: Vec<(&str, Vec<u8>)> = Vec::new();
    for h in &hidden {
        let cl = format!(
            "authorization: Bearer {alice}\r\ncontent-length: {}\r\n",
            h.len()
        );
        attempts.push(("GET with a body", request(dst, "GET", &cl, h.as_bytes())));
        attempts.push((
            "DELETE with a body",
            request(dst, "DELETE", &cl, h.as_bytes()),
        ));
        let json = format!("{cl}content-type: application/json\r\n");
        attempts.push((
            "GET with a JSON body",
            request(dst, "GET", &json, h.as_bytes()),
        ));
        let chunked = format!("authorization: Bearer {alice}\r\ntransfer-encoding: chunked\r\n");
        let body = format!("{:x}\r\n{h}\r\n0\r\n\r\n", h.len());
        attempts.push((
            "GET chunked",
            request(dst, "GET", &chunked, body.as_bytes()),
        ));
    }
    let repeated = format!("mcp-session-id: x\r\nmcp-session-id: {session}\r\n");
    attempts.push((
        "repeated session id",
        post_with(dst, alice, &repeated, &ping(2)),
    ));
    let mut odd = post_with(dst, alice, "mcp-session-id: ", &ping(3));
    let at = odd
        .windows(16)
        .position(|w| w == b"mcp-session-id: ")
        .unwrap()
        + 16;
    odd.splice(at..at, b"\xffbob".iter().copied());
    attempts.push(("non-ASCII session id", odd));
    attempts.push((
        "repeated protocol version",
        post_with(
            dst,
            alice,
            "mcp-protocol-version: 2025-06-18\r\nmcp-protocol-version: 2025-03-26\r\n",
            &ping(4),
        ),
    ));
    attempts.push((
        "empty Mcp-Method",
        post_with(dst, alice, "mcp-method: \r\n", &ping(5)),
    ));
    attempts
}

/// Sends each attempt followed, on the same keep-alive connection, by `honest` (a request
/// alice may make): if the upstream read anything hidden, the honest request would
/// desynchronise with it. Each attempt is refused (400).
fn try_everything(host: &Host, attempts: Vec<(&'static str, Vec<u8>)>, honest: &[u8]) {
    for (what, raw) in attempts {
        let mut both = raw.clone();
        both.extend_from_slice(honest);
        let dst = host.addr();
        let replies = host.in_ns(false, move || exchanges(dst, &both));
        assert!(!replies.is_empty(), "{what}: no answer");
        assert_eq!(replies[0].status, 400, "{what}: {:?}", replies[0]);
        // Bytes that are not text in a header are refused by the HTTP parser itself (400,
        // connection closed), before Moat sees a request.
        if what != "non-ASCII session id" {
            assert_eq!(
                replies[0].body["error"]["code"], -32600,
                "{what}: {:?}",
                replies[0]
            );
        }
    }
}

/// Two users on one agent: one tries every framing and header trick on a keep-alive
/// connection to reach the other's session or a path Moat refuses. Nothing of it reaches the
/// server; what does is exactly what each user sent Moat, with one audit record each.
#[test]
fn smuggled_requests_never_reach_the_server() {
    let (host, upstream) = host("");
    let dst = host.addr();
    let (alice, bob) = (token(&host, "alice"), token(&host, "bob"));
    let session = open_session(&host, &bob);
    try_everything(
        &host,
        attempts(dst, &alice, &session),
        &post_with(dst, &alice, "", &ping(9)),
    );
    // Bob's session is alive and his.
    let raw = post_with(
        dst,
        &bob,
        &format!("mcp-session-id: {session}\r\n"),
        &ping(10),
    );
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    host.wait_audit("bob's ping", |r| r["mcp"]["id"] == 10);
    let received = upstream.requests.lock().unwrap().clone();
    for (head, body) in &received {
        let line = head.lines().next().unwrap();
        assert!(
            line.starts_with("POST /mcp "),
            "only what Moat decided: {line}"
        );
        assert!(
            !body.contains("HTTP/1.1"),
            "a request inside a body: {body}"
        );
    }
    let mut by_sub: HashMap<String, usize> = HashMap::new();
    for (head, _) in &received {
        *by_sub.entry(upstream_sub(head)).or_default() += 1;
    }
    // Bob: initialize and his ping; alice: the honest pings that followed refused attempts
    // on a connection that stayed open.
    assert_eq!(by_sub.get("bob"), Some(&2), "{by_sub:?}");
    assert!(by_sub.get("alice").is_some_and(|n| *n >= 10), "{by_sub:?}");
    let records = host.request_records();
    let forwarded: Vec<&Value> = records
        .iter()
        .filter(|r| r["upstream"]["status"].is_u64())
        .collect();
    assert_eq!(
        forwarded.len(),
        received.len(),
        "one record per forwarded request"
    );
    for sub in ["alice", "bob"] {
        let audited = forwarded
            .iter()
            .filter(|r| r["principal"]["sub"] == sub && r["decision"]["effect"] == "allow")
            .count();
        assert_eq!(Some(&audited), by_sub.get(sub), "{sub}");
    }
    assert!(
        records
            .iter()
            .filter(|r| r["status"] == 400)
            .all(|r| r["upstream"].is_null()),
        "nothing refused was forwarded"
    );
}

/// The same against the official TypeScript SDK server on Express (which answers a GET at
/// once, whatever its body): every request it logs is one Moat decided, for the user who
/// sent it, and bob's session survives.
#[test]
fn smuggling_against_the_typescript_sdk_server() {
    let mut host = Host::plain();
    let jwt = format!(
        "    upstream_auth: {{jwt: {{audience: '{}'}}}}\n",
        host.upstream()
    );
    host.write_config(&servers(&host, &jwt));
    let log = host.dir.join("ts-upstream.jsonl");
    start_ts_server(&mut host, &[], &log);
    host.start_agent();
    let dst = host.addr();
    let (alice, bob) = (token(&host, "alice"), token(&host, "bob"));
    let session = open_session(&host, &bob);
    let alice_init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "a", "version": "1"}}})
    .to_string();
    try_everything(
        &host,
        attempts(dst, &alice, &session),
        &post_with(dst, &alice, "", &alice_init),
    );
    let raw = post_with(
        dst,
        &bob,
        &format!("mcp-session-id: {session}\r\nmcp-protocol-version: 2025-06-18\r\n"),
        &ping(10),
    );
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    assert_eq!(r.status, 200, "bob's session is alive: {r:?}");

    host.wait_audit("bob's ping", |r| r["mcp"]["id"] == 10);
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["request"].is_u64())
        .collect();
    let mut by_sub: HashMap<String, usize> = HashMap::new();
    for l in &lines {
        assert_eq!(l["method"], "POST", "{l}");
        assert_eq!(l["path"], "/mcp", "{l}");
        assert!(!l["body"].as_str().unwrap().contains("HTTP/1.1"), "{l}");
        *by_sub
            .entry(l["sub"].as_str().unwrap_or("(none)").to_string())
            .or_default() += 1;
    }
    assert_eq!(by_sub.get("bob"), Some(&2), "{by_sub:?}");
    assert!(by_sub.get("alice").is_some_and(|n| *n >= 10), "{by_sub:?}");
    let forwarded = host
        .request_records()
        .into_iter()
        .filter(|r| r["upstream"]["status"].is_u64())
        .count();
    assert_eq!(
        forwarded,
        lines.len(),
        "one record per request the server received"
    );
}

/// A request method sent without an id (a "notification" named tools/call) is refused, alone
/// and inside a batch: it would reach the server without being decided as a call.
#[test]
fn requests_disguised_as_notifications_are_refused() {
    let policy = write_policy(
        "permit (principal, action, resource);\n\
         forbid (principal, action == Action::\"tools/call\", resource == Tool::\"rm\");\n",
    );
    let (host, upstream) = host(&format!("    policy: {{file: {policy}}}\n"));
    let dst = host.addr();
    let t = token(&host, "alice");
    for (body, version) in [
        (
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "rm"}}).to_string(),
            "2025-06-18",
        ),
        (
            json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                   {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "rm"}}])
            .to_string(),
            "2025-03-26",
        ),
        (
            json!({"jsonrpc": "2.0", "method": "ping"}).to_string(),
            "2025-06-18",
        ),
    ] {
        let raw = post_with(
            dst,
            &t,
            &format!("mcp-protocol-version: {version}\r\n"),
            &body,
        );
        let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.body["error"]["code"], -32600, "{body}: {r:?}");
    }
    assert_eq!(upstream.count(), 0, "nothing reached the server");
    // A real notification is decided (by `notification`) and forwarded.
    let raw = post_with(
        dst,
        &t,
        "",
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    );
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    assert_eq!(r.status, 202, "{r:?}");
    let rec = host.wait_audit("the notification", |r| {
        r["mcp"]["method"] == "notifications/initialized"
    });
    assert_eq!(rec["decision"]["effect"], "allow", "{rec}");
    assert_eq!(rec["outcome"], "completed", "{rec}");
    assert_eq!(upstream.count(), 1);
}

/// A principal the policies deny everything reaches nothing: not the stream (GET), not the end
/// of a session (DELETE), not a notification. A permitted one opens the stream.
#[test]
fn get_and_delete_are_decided_too() {
    let policy = write_policy(
        "@id(\"connect\")\npermit (principal == User::\"alice\", action in [Action::\"initialize\", \
         Action::\"notification\", Action::\"stream/open\", Action::\"session/end\"], resource);\n",
    );
    let (host, upstream) = host(&format!("    policy: {{file: {policy}}}\n"));
    let dst = host.addr();
    let (alice, mallory) = (token(&host, "alice"), token(&host, "mallory"));
    let get = |t: &str| request(dst, "GET", &format!("authorization: Bearer {t}\r\n"), b"");
    let delete = |t: &str| {
        request(
            dst,
            "DELETE",
            &format!("authorization: Bearer {t}\r\n"),
            b"",
        )
    };
    let notify = |t: &str| {
        post_with(
            dst,
            t,
            "",
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        )
    };
    for (what, raw, status) in [
        ("GET", get(&mallory), 405),
        ("DELETE", delete(&mallory), 405),
        ("notification", notify(&mallory), 403),
        ("ping", post_with(dst, &mallory, "", &ping(1)), 403),
    ] {
        let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
        assert_eq!(r.status, status, "{what}: {r:?}");
        if status == 405 {
            assert!(
                r.head.to_ascii_lowercase().contains("allow: post"),
                "{what}: {r:?}"
            );
        }
    }
    assert_eq!(upstream.count(), 0, "mallory reached nothing");
    let denied = count_records(&host, 4, |r| r["decision"]["effect"] == "deny");
    assert_eq!(denied, 4, "each refusal audited with its decision");

    for raw in [get(&alice), delete(&alice), notify(&alice)] {
        let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
        assert!(r.status < 300, "{r:?}");
    }
    assert_eq!(upstream.count(), 3);
    let rec = host.wait_audit("alice's GET", |r| {
        r["http"]["method"] == "GET" && r["principal"]["sub"] == "alice"
    });
    assert_eq!(rec["decision"]["policies"], json!(["connect"]), "{rec}");
}

/// A list result Moat must read (to filter it) that comes encoded, in a content type it cannot
/// read, or broken, is not passed on: 502, audited.
#[test]
fn unreadable_list_results_are_refused() {
    let (host, upstream) = host("");
    let dst = host.addr();
    let t = token(&host, "alice");
    let list = |respond: &str| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"respond": respond}})
            .to_string()
    };
    for respond in ["gzip", "text", "none", "broken"] {
        let raw = post_with(dst, &t, "accept-encoding: gzip, br\r\n", &list(respond));
        let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
        assert_eq!(r.status, 502, "{respond}: {r:?}");
        assert_eq!(r.body["error"]["code"], -32603, "{respond}: {r:?}");
        assert_eq!(r.body["id"], 3, "{respond}: {r:?}");
        assert!(!r.body.to_string().contains("\"add\""), "{respond}: {r:?}");
    }
    // The upstream was asked for what Moat can read, whatever the client accepts.
    for (head, _) in upstream.requests.lock().unwrap().iter() {
        let head = head.to_ascii_lowercase();
        assert!(head.contains("accept-encoding: identity"), "{head}");
        assert!(!head.contains("gzip"), "{head}");
    }
    let refused = count_records(&host, 4, |r| {
        r["status"] == 502
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be read"))
    });
    assert_eq!(refused, 4);

    // An event stream is read event by event: what passed before the broken event passed; the
    // broken one and what follows do not, and the record says so.
    let raw = post_with(dst, &t, "", &list("sse-broken"));
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    let text = r.body.as_str().unwrap_or_default();
    assert!(
        text.contains("\"echo\"") && !text.contains("not json"),
        "{r:?}"
    );
    let rec = host.wait_audit("the broken stream", |r| {
        r["outcome"] == "failed" && r["status"] == 200
    });
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("an event of the tools/list result is not JSON"),
        "{rec}"
    );
}

/// A policy file in the test's temporary directory.
fn write_policy(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "moat-forwarding-{}-{}",
        std::process::id(),
        text.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.cedar");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// How many request records match `pred`, once `want` of them are written (or 10 s passed).
fn count_records(host: &Host, want: usize, pred: impl Fn(&Value) -> bool) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = host.request_records().iter().filter(|r| pred(r)).count();
        if n >= want || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Resource URIs are decided in the spelling the server acts on: with `file:///secret`
/// forbidden, no other spelling of it reads it from FastMCP (which parses URIs as URLs), and
/// the server is sent the normalised form Moat decided on.
#[test]
fn resource_uri_spellings_are_decided_as_the_server_reads_them() {
    let mut host = Host::plain();
    let policy = write_policy(
        "@id(\"all\")\npermit (principal, action, resource);\n\
         @id(\"no-secret\")\nforbid (principal, action == Action::\"resources/read\", resource == Resource::\"file:///secret\");\n",
    );
    host.write_config(&servers(
        &host,
        &format!("    policy: {{file: {policy}}}\n"),
    ));
    let (py, fastmcp) = (python(), script("fastmcp_server.py"));
    let port = host.upstream_port().to_string();
    let cmd = host.command(
        py.to_str().unwrap(),
        &[
            fastmcp.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ],
    );
    host.spawn(cmd, "fastmcp.log");
    host.wait_port(host.upstream_port(), "FastMCP");
    host.start_agent();
    let t = token(&host, "alice");
    let url = format!("http://{}/mcp", host.addr());
    let auth = format!("Authorization: Bearer {t}");
    let read = |uri: &str| ts_client(&host, &[&url, "read", "--uri", uri, "--header", &auth]);
    let (ok, out) = read("file:///public");
    assert!(ok && out.contains("PUBLIC"), "{out}");
    for spelling in [
        "file:///secret",
        "FILE:///secret",
        "file:///./secret",
        "file:///x/../secret",
        "file:///x/%2e%2E/secret",
        "file://localhost/secret",
        "file://LOCALHOST/secret",
        " file:///secret",
        "file:///secret\n",
        "file:/secret",
        "file:///sec\tret",
        "file:///%73ecret",
        "fIlE:///secret",
    ] {
        let (ok, out) = read(spelling);
        assert!(!ok, "{spelling:?} was read: {out}");
        assert!(!out.contains("TOP-SECRET"), "{spelling:?}: {out}");
        assert!(
            out.contains("\"code\":-32002"),
            "{spelling:?}: refused by Moat: {out}"
        );
    }
    // Decided, and sent on, in one spelling.
    let (ok, out) = read("file://localhost/./public");
    assert!(ok && out.contains("PUBLIC"), "{out}");
    let rec = host.wait_audit("the read of public", |r| {
        r["mcp"]["resource"] == "file:///public" && r["http"]["method"] == "POST"
    });
    assert_eq!(rec["decision"]["effect"], "allow", "{rec}");
    let denied = count_records(&host, 13, |r| {
        r["mcp"]["resource"] == "file:///secret" && r["decision"]["effect"] == "deny"
    });
    assert_eq!(denied, 13, "every spelling was decided as file:///secret");
    // What cannot be read as a URI is refused.
    let (ok, out) = read("secret");
    assert!(!ok && out.contains("\"code\":-32602"), "{out}");
}

/// Tool names are looked up exactly by the official SDK servers: no other spelling of a
/// forbidden tool runs it (Moat decides on the exact name, which is what the server uses).
#[test]
fn no_other_spelling_of_a_forbidden_tool_runs_it() {
    let mut host = Host::plain();
    let policy = write_policy(
        "@id(\"all\")\npermit (principal, action, resource);\n\
         @id(\"no-secret\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"secret_tool\");\n",
    );
    host.write_config(&servers(
        &host,
        &format!("    policy: {{file: {policy}}}\n"),
    ));
    let log = host.dir.join("ts-upstream.jsonl");
    start_ts_server(&mut host, &[], &log);
    host.start_agent();
    let t = token(&host, "alice");
    let url = format!("http://{}/mcp", host.addr());
    let auth = format!("Authorization: Bearer {t}");
    let call = |name: &str| {
        let args = ["call", "--tool", name, "--args", r#"{"text":"hi"}"#];
        ts_client(
            &host,
            &[&[url.as_str()], &args[..], &["--header", &auth]].concat(),
        )
        .1
    };
    let out = call("secret_tool");
    assert!(out.contains("Unknown tool: secret_tool"), "{out}");
    for spelling in [
        "Secret_tool",
        "SECRET_TOOL",
        " secret_tool",
        "secret_tool ",
        "secret_tool\n",
        "secret_tool\u{200b}",
        "\u{ff53}ecret_tool",
        "secret\u{2010}tool",
    ] {
        let out = call(spelling);
        assert!(!out.contains("SECRET-TOOL-RAN"), "{spelling:?}: {out}");
    }
    let handled = std::fs::read_to_string(&log).unwrap();
    assert!(
        !handled
            .lines()
            .any(|l| l.contains("\"handled\"") && l.contains("secret_tool")),
        "{handled}"
    );
    assert!(
        call("echo").contains("is_error\":false"),
        "the server works"
    );
}
