//! Content inspection end to end, on a plain host (no root): a secret in a tool call's
//! arguments refuses the call before anything is forwarded (also when spelled with JSON
//! escapes); personal data is flagged and forwarded, and a policy reading `context.content`
//! refuses it for one tool; secrets in results (a JSON body, an event stream cut into small
//! chunks) are redacted before the client gets them; a result with injected instructions is
//! withheld; a result too large to inspect is not passed on. The audit records name each
//! finding's rule and path, and no record holds the text found; the metrics count them.
mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"@id("all")
permit (principal, action, resource);

@id("no-personal-data-by-mail")
forbid (principal, action == Action::"tools/call", resource)
when {
  context has content && context.content.kinds.contains("personal") &&
  resource.name == "send_mail"
};
"#;

fn serve() -> (Host, std::sync::Arc<Recorded>) {
    let mut host = Host::plain();
    let policy = host.dir.join("content.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n    \
         inspect:\n      max_size_kib: 64\n      rules: {{secret: redact, personal: flag, injection: block}}\n",
        host.upstream(),
        policy.display(),
        port = host.port(),
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    (host, upstream)
}

/// A tools/call of `tool` with `arguments` written as the raw JSON text `args`.
fn call(host: &Host, token: &str, id: u64, tool: &str, args: &str) -> Reply {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    );
    let dst = host.addr();
    let raw = post(dst, &body, &format!("authorization: Bearer {token}\r\n"));
    exchange(dst, &raw).expect("a reply")
}

/// The audit record of the call with JSON-RPC id `id`.
fn record(host: &Host, id: u64) -> Value {
    host.wait_audit(&format!("the record of call {id}"), |r| {
        r["kind"] == "request" && r["mcp"]["id"] == id && r["outcome"] != "open"
    })
}

fn findings(r: &Value) -> Vec<(String, String, String, String)> {
    r["content"]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {r}"))
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("rule"), s("direction"), s("path"), s("action"))
        })
        .collect()
}

fn f(rule: &str, direction: &str, path: &str, action: &str) -> (String, String, String, String) {
    (rule.into(), direction.into(), path.into(), action.into())
}

#[test]
fn secrets_and_personal_data_are_found_both_ways() {
    let (host, upstream) = serve();
    let alice = host.mint("files", "alice");

    // A secret in the arguments: refused, never forwarded; the same key spelled with JSON
    // escapes (the server would read the same text) is refused too.
    let before = upstream.count();
    for (id, args) in [
        (1, format!(r#"{{"q": "find {AWS_KEY}"}}"#)),
        (
            2,
            format!(r#"{{"q": "\u0041\u004B\u0049\u0041{}"}}"#, &AWS_KEY[4..]),
        ),
    ] {
        let reply = call(&host, &alice, id, "search", &args);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["id"], id);
        assert_eq!(reply.body["error"]["code"], -32602, "{reply:?}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("secret content (aws_access_key_id at $.params.arguments.q)"),
            "{message}"
        );
        let r = record(&host, id);
        assert_eq!(r["decision"]["effect"], "deny", "{r}");
        assert_eq!(
            findings(&r),
            [f(
                "aws_access_key_id",
                "request",
                "$.params.arguments.q",
                "redact"
            )]
        );
        assert!(
            r["mcp"]["arguments"]["q"]
                .as_str()
                .is_some_and(|q| q.contains("[REDACTED:aws_access_key_id]")),
            "{r}"
        );
    }
    assert_eq!(upstream.count(), before, "nothing forwarded");

    // Personal data: flagged and forwarded; a policy reading `context.content` refuses it
    // for `send_mail`.
    let reply = call(&host, &alice, 3, "echo", r#"{"to": "bob@example.com"}"#);
    assert!(reply.body["result"]["peer"].is_string(), "{reply:?}");
    assert_eq!(
        findings(&record(&host, 3)),
        [f("email", "request", "$.params.arguments.to", "flag")]
    );
    let reply = call(
        &host,
        &alice,
        4,
        "send_mail",
        r#"{"to": "bob@example.com"}"#,
    );
    assert!(reply.body["error"].is_object(), "{reply:?}");
    let r = record(&host, 4);
    assert_eq!(
        r["decision"]["policies"],
        json!(["no-personal-data-by-mail"]),
        "{r}"
    );
    assert!(
        call(&host, &alice, 5, "send_mail", r#"{"to": "the team"}"#).body["result"].is_object(),
        "nothing found, nothing refused"
    );

    // Results: a JSON body and an event stream in 7-byte chunks, each redacted.
    for (id, sse) in [(6, false), (7, true)] {
        let args = format!(r#"{{"fixture": "secret", "sse": {sse}}}"#);
        let reply = call(&host, &alice, id, "read_config", &args);
        assert_eq!(reply.status, 200, "{reply:?}");
        let text = match &reply.body {
            Value::String(sse) => sse.clone(),
            json => json["result"]["content"][0]["text"].to_string(),
        };
        assert!(
            !text.contains(AWS_KEY) && !text.contains(&JWT[..40]),
            "{text}"
        );
        assert!(
            text.contains("key_id=[REDACTED:aws_access_key_id] session=[REDACTED:jwt]"),
            "{text}"
        );
        let r = record(&host, id);
        let path = "$.result.content[0].text";
        assert_eq!(
            findings(&r),
            [
                f("aws_access_key_id", "response", path, "redact"),
                f("jwt", "response", path, "redact")
            ]
        );
        assert_eq!(r["decision"]["effect"], "allow");
    }

    // Injected instructions (`block` here): the result is withheld, an error in its place.
    let reply = call(&host, &alice, 8, "read_page", r#"{"fixture": "injection"}"#);
    assert_eq!(reply.body["id"], 8);
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Withheld: the result holds injection content (model_directive"),
        "{reply:?}"
    );
    assert!(!reply.body.to_string().contains("Ignore previous"));

    // A result larger than `max_size_kib` is not passed on unread.
    let reply = call(&host, &alice, 9, "read_page", r#"{"fixture": "large"}"#);
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(!reply.body.to_string().contains("xxxxxxxx"));

    // On an event stream, an event larger than `max_size_kib` ends the stream before it.
    let reply = call(
        &host,
        &alice,
        11,
        "read_page",
        r#"{"fixture": "large", "sse": true}"#,
    );
    assert!(!reply.body.to_string().contains("xxxxxxxx"), "{reply:?}");
    let r = record(&host, 11);
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("larger than"),
        "{r}"
    );

    // A batch (2025-03-26) with a secret in its second call: refused whole.
    let before = upstream.count();
    let batch = format!(
        r#"[{{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{{"name":"echo","arguments":{{}}}}}},
            {{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{{"name":"echo","arguments":{{"k":"{AWS_KEY}"}}}}}}]"#
    );
    let dst = host.addr();
    let raw = post(
        dst,
        &batch,
        &format!("authorization: Bearer {alice}\r\nmcp-protocol-version: 2025-03-26\r\n"),
    );
    let reply = exchange(dst, &raw).unwrap();
    assert!(
        reply.body.to_string().contains("aws_access_key_id"),
        "{reply:?}"
    );
    assert_eq!(upstream.count(), before, "no call of the batch forwarded");

    // A batch whose call's result would come with a list's (read for another purpose): refused,
    // so the call's result cannot pass uninspected.
    let batch = r#"[{"jsonrpc":"2.0","id":14,"method":"tools/list"},
        {"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"name":"read_config","arguments":{"fixture":"secret"}}}]"#;
    let raw = post(
        dst,
        batch,
        &format!("authorization: Bearer {alice}\r\nmcp-protocol-version: 2025-03-26\r\n"),
    );
    let reply = exchange(dst, &raw).unwrap();
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(!reply.body.to_string().contains(AWS_KEY));
    assert_eq!(upstream.count(), before, "not forwarded");

    // The server's own stream (a GET): its messages are inspected as they pass.
    let raw = format!(
        "GET /mcp HTTP/1.1\r\nhost: {dst}\r\naccept: text/event-stream\r\nlast-event-id: fixture-secret\r\n\
         authorization: Bearer {alice}\r\n\r\n"
    );
    let reply = exchange(dst, raw.as_bytes()).unwrap();
    let text = reply.body.to_string();
    assert!(text.contains("notifications/message"), "{reply:?}");
    assert!(
        !text.contains(AWS_KEY) && text.contains("[REDACTED:aws_access_key_id]"),
        "{text}"
    );

    // A clean result passes as it came.
    let reply = call(&host, &alice, 10, "read_page", r#"{"fixture": "clean"}"#);
    assert_eq!(reply.body["result"]["content"][0]["text"], "nothing to see");
    assert!(record(&host, 10).get("content").is_none());

    // No record anywhere in the log holds what was found.
    let log = std::fs::read_to_string(&host.audit).unwrap();
    for secret in [AWS_KEY, &JWT[..40], "bob@example.com", "Ignore previous"] {
        assert!(!log.contains(secret), "the audit log holds {secret:?}");
    }

    // The metrics count the findings by kind, direction and action.
    let (_, metrics) = host.admin_get("/metrics");
    for (kind, direction, action, n) in [
        ("secret", "request", "redact", 3),
        ("secret", "response", "redact", 6),
        ("personal", "request", "flag", 2),
        ("injection", "response", "block", 3),
    ] {
        let series = format!(
            r#"moat_content_findings_total{{server="files",kind="{kind}",direction="{direction}",action="{action}"}} {n}"#
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
}

/// `moat inspect rules` lists the built-in rules an operator can name in `inspect.rules`.
#[test]
fn the_rules_are_listed() {
    let out = run(Command::new(MOAT).args(["inspect", "rules"]));
    let rules: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"aws_access_key_id") && ids.contains(&"payment_card"));
    let card = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "payment_card")
        .unwrap();
    assert_eq!(card["kind"], "personal");
    assert_eq!(card["default"], "flag");
}

/// FastMCP behind Moat with `inspect` on results only (so a secret can be sent to `echo`);
/// `sse`: the legacy transport.
fn fastmcp(sse: bool) -> Host {
    let mut host = Host::plain();
    let legacy = if sse { "    legacy_sse: /sse\n" } else { "" };
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n{legacy}    inspect: {{arguments: false}}\n",
        host.upstream(),
        port = host.port(),
    ));
    start_fastmcp(&mut host, if sse { &["--sse"] } else { &[] });
    host.start_agent();
    host
}

/// The Python SDK client's `echo` of `text` through Moat: the text it got back.
fn echo(host: &Host, sse: bool, text: &str) -> String {
    let (url, transport) = if sse {
        (format!("http://127.0.0.1:{}/sse", host.port()), "sse")
    } else {
        (format!("http://127.0.0.1:{}/mcp", host.port()), "http")
    };
    let args = json!({ "text": text }).to_string();
    let out = host
        .command(
            python().to_str().unwrap(),
            &[
                script("mcp_client.py").to_str().unwrap(),
                &url,
                "call",
                "--transport",
                transport,
                "--tool",
                "echo",
                "--args",
                &args,
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    r["call"].as_str().unwrap_or_default().to_string()
}

/// A real server's result, to a real client, on both transports: the secret it echoes is
/// redacted; the rest of the text is as the server wrote it.
#[test]
fn an_sdk_client_gets_results_redacted_on_both_transports() {
    for sse in [false, true] {
        let host = fastmcp(sse);
        let text = echo(
            &host,
            sse,
            &format!("deploy key {AWS_KEY} for jane@example.com"),
        );
        assert_eq!(
            text, "deploy key [REDACTED:aws_access_key_id] for jane@example.com",
            "sse: {sse}"
        );
        assert_eq!(echo(&host, sse, "nothing secret"), "nothing secret");
        // The finding is in the record of the request (Streamable HTTP) or of the stream
        // that carried the result (legacy).
        let r = host.wait_audit("a record with the finding", |r| {
            r["content"]["findings"][0]["rule"] == "aws_access_key_id"
        });
        assert_eq!(r["content"]["findings"][0]["direction"], "response", "{r}");
        let log = std::fs::read_to_string(&host.audit).unwrap();
        assert!(
            !log.contains(AWS_KEY),
            "sse: {sse}: the audit log holds the key"
        );
    }
}
