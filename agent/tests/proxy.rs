//! Adversarial tests of the HTTP proxy, through an agent on a plain host (no root, no kernel):
//! what it refuses, what it never forwards, and that every request leaves exactly one audit
//! record.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// A host whose protected server has small limits, so the tests stay fast.
fn host() -> (Host, std::sync::Arc<Recorded>) {
    let mut host = Host::plain();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {}\n    upstream: {}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n    allowed_origins: [https://claude.ai]\n    \
         limits: {{max_body: 65536, header_timeout_ms: 500, body_timeout_ms: 500, idle_timeout_ms: 1000}}\n",
        host.port(),
        host.upstream()
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    (host, upstream)
}

fn ask(host: &Host, raw: Vec<u8>) -> Reply {
    let dst = host.addr();
    host.in_ns(false, move || exchange(dst, &raw))
        .expect("a reply")
}

fn tools_call(name: &str, args_bytes: usize) -> String {
    // `name` comes after the large arguments: the proxy must decide on the whole message.
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"arguments":{{"blob":"{}"}},"name":"{name}"}}}}"#,
        "a".repeat(args_bytes)
    )
}

#[test]
fn a_tool_name_after_large_arguments_is_read_and_over_the_limit_nothing_is_forwarded() {
    let (host, upstream) = host();
    let dst = host.addr();
    let under = tools_call("delete_all", 65536 - 200);
    assert!(under.len() <= 65536);
    let r = ask(&host, post(dst, &under, ""));
    assert_eq!(r.status, 200, "{r:?}");
    let rec = host.wait_audit("the call under the limit", |r| {
        r["mcp"]["method"] == "tools/call" && r["status"] == 200
    });
    assert_eq!(
        rec["mcp"]["tool"], "delete_all",
        "decided on the real name: {rec}"
    );
    assert_eq!(upstream.count(), 1);

    let over = tools_call("delete_all", 65536);
    let r = ask(&host, post(dst, &over, ""));
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["error"]["code"], -32600, "{r:?}");
    // Without a Content-Length the limit still holds (chunked body).
    let chunked = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{over}\r\n0\r\n\r\n",
        dst,
        over.len()
    );
    let r = ask(&host, chunked.into_bytes());
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(
        upstream.count(),
        1,
        "nothing over the limit reached the server"
    );
}

#[test]
fn malformed_messages_get_json_rpc_errors_and_are_never_forwarded() {
    let (host, upstream) = host();
    let dst = host.addr();
    let cases: &[(&str, &str, u16, i64)] = &[
        ("not json", "{", 400, -32700),
        (
            "trailing garbage",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#,
            400,
            -32700,
        ),
        ("no jsonrpc", r#"{"id":1,"method":"ping"}"#, 400, -32600),
        (
            "float id",
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            400,
            -32600,
        ),
        (
            "duplicate name",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","name":"evil"}}"#,
            400,
            -32700,
        ),
        (
            "name not a string",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            400,
            -32602,
        ),
    ];
    for (what, body, status, code) in cases {
        let r = ask(&host, post(dst, body, ""));
        assert_eq!(r.status, *status, "{what}: {r:?}");
        assert_eq!(r.body["jsonrpc"], "2.0", "{what}: {r:?}");
        assert_eq!(r.body["error"]["code"], *code, "{what}: {r:?}");
    }
    // Batches were removed in 2025-06-18.
    let batch =
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
    let r = ask(
        &host,
        post(dst, batch, "mcp-protocol-version: 2025-06-18\r\n"),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = ask(
        &host,
        post(
            dst,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            "mcp-protocol-version: 1999-01-01\r\n",
        ),
    );
    assert_eq!(r.status, 400, "{r:?}");
    // Wrong content type, unknown path, wrong method.
    let text_plain = String::from_utf8(post(dst, "{}", ""))
        .unwrap()
        .replace("application/json\r\naccept", "text/plain\r\naccept");
    let r = ask(&host, text_plain.into_bytes());
    assert_eq!(r.status, 415, "{r:?}");
    let r = ask(
        &host,
        format!("GET /admin HTTP/1.1\r\nhost: {}\r\n\r\n", dst).into_bytes(),
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (404, Some(-32000)),
        "{r:?}"
    );
    let r = ask(
        &host,
        format!(
            "PUT /mcp HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\r\n",
            dst
        )
        .into_bytes(),
    );
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(
        upstream.count(),
        0,
        "nothing malformed reached the server: {:?}",
        upstream.bodies()
    );
}

#[test]
fn batches_are_decoded_whole_for_the_revision_that_allows_them() {
    let (host, upstream) = host();
    let dst = host.addr();
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}]"#;
    let r = ask(
        &host,
        post(dst, batch, "mcp-protocol-version: 2025-03-26\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let rec = host.wait_audit("the batch", |r| r["mcp"]["batch"].is_array());
    assert_eq!(rec["mcp"]["batch"][1]["tool"], "echo", "{rec}");
    assert_eq!(upstream.bodies(), [batch], "forwarded byte for byte");
}

#[test]
fn bad_origin_and_dns_rebinding_hosts_are_refused() {
    let (host, upstream) = host();
    let dst = host.addr();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = ask(&host, post(dst, body, "origin: https://evil.example\r\n"));
    assert_eq!(r.status, 403, "{r:?}");
    let rebinding = String::from_utf8(post(dst, body, ""))
        .unwrap()
        .replace(&format!("host: {}", dst), "host: attacker.example:8000");
    let r = ask(&host, rebinding.into_bytes());
    assert_eq!(r.status, 421, "{r:?}");
    assert_eq!(upstream.count(), 0);

    // An allowed origin passes, rewritten for the loopback upstream; credentials stay behind.
    let r = ask(
        &host,
        post(
            dst,
            body,
            "origin: https://claude.ai\r\nauthorization: Bearer secret-token\r\ncookie: s=1\r\n",
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let (head, _) = upstream.requests.lock().unwrap()[0].clone();
    let head = head.to_ascii_lowercase();
    let up = host.upstream_port();
    assert!(
        head.contains(&format!("origin: http://127.0.0.1:{up}")),
        "{head}"
    );
    assert!(head.contains(&format!("host: 127.0.0.1:{up}")), "{head}");
    assert!(
        !head.contains("secret-token")
            && !head.contains("authorization")
            && !head.contains("cookie"),
        "{head}"
    );
    let audit = std::fs::read_to_string(&host.audit).unwrap();
    assert!(
        !audit.contains("secret-token"),
        "the token is not in the audit log"
    );
}

#[test]
fn mcp_method_and_name_headers_must_match_the_body() {
    let (host, upstream) = host();
    let dst = host.addr();
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{}}}"#;
    let v = "mcp-protocol-version: 2026-07-28\r\n";
    let r = ask(
        &host,
        post(
            dst,
            call,
            &format!("{v}mcp-method: tools/call\r\nmcp-name: delete_all\r\n"),
        ),
    );
    assert_eq!(
        (
            r.status,
            r.body["error"]["code"].as_i64(),
            r.body["id"].as_i64()
        ),
        (400, Some(-32020), Some(3)),
        "{r:?}"
    );
    let r = ask(
        &host,
        post(
            dst,
            call,
            &format!("{v}mcp-method: tools/list\r\nmcp-name: read_file\r\n"),
        ),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = ask(&host, post(dst, call, v));
    assert_eq!(r.status, 400, "2026-07-28 requires the headers: {r:?}");
    assert_eq!(upstream.count(), 0);
    let r = ask(
        &host,
        post(
            dst,
            call,
            &format!("{v}mcp-method: tools/call\r\nmcp-name: read_file\r\n"),
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let rec = host.wait_audit("the rejected mismatch", |r| {
        r["status"] == 400 && r["mcp"]["tool"] == "read_file"
    });
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("mcp-name"),
        "{rec}"
    );
}

#[test]
fn slow_clients_are_cut_off() {
    let (host, upstream) = host();
    let dst = host.addr();
    // Headers that never finish (slowloris): the connection is closed after the header timeout.
    let closed_after = host.in_ns(false, move || {
        let mut s = TcpStream::connect(dst).unwrap();
        s.write_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        start.elapsed()
    });
    assert!(
        closed_after < Duration::from_secs(5),
        "slowloris connection held for {closed_after:?}"
    );

    // A body that never finishes: 408 after the body timeout, never forwarded.
    let r = host.in_ns(false, move || {
        let mut s = TcpStream::connect(dst).unwrap();
        s.write_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\"").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert_eq!(upstream.count(), 0);
    host.wait_audit("the slow body", |r| {
        r["status"] == 408 && r["outcome"] == "failed"
    });
}

#[test]
fn a_client_that_leaves_mid_stream_is_audited() {
    let (host, upstream) = host();
    let dst = host.addr();
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"stream"}"#;
    let first = host.in_ns(false, move || {
        let mut s = TcpStream::connect(dst).unwrap();
        s.write_all(&post(dst, body, "")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
        // dropped here: the client goes away while the server is still streaming
    });
    assert!(first.contains("text/event-stream"), "{first}");
    let rec = host.wait_audit("the abandoned stream", |r| {
        r["mcp"]["id"] == 9 && r["outcome"].is_string()
    });
    assert_eq!(rec["outcome"], "client_disconnected", "{rec}");
    assert_eq!(rec["status"], 200);
    assert_eq!(upstream.count(), 1);
}

#[test]
fn every_request_leaves_exactly_one_audit_record() {
    let (host, upstream) = host();
    let dst = host.addr();
    const N: usize = 1000;
    let sent = host.in_ns(false, move || {
        let mut statuses = Vec::new();
        for i in 0..N {
            let raw = match i % 5 {
                0 => post(dst, &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo"}}}}"#), ""),
                1 => post(dst, "{broken", ""),
                2 => post(dst, &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#), "origin: https://evil.example\r\n"),
                3 => format!("GET /nowhere/{i} HTTP/1.1\r\nhost: {}\r\n\r\n", dst).into_bytes(),
                _ => post(dst, &format!(r#"{{"jsonrpc":"2.0","method":"notifications/initialized","x":{i}}}"#), ""),
            };
            statuses.push(exchange(dst, &raw).map(|r| r.status).unwrap_or(0));
        }
        statuses
    });
    assert!(sent.iter().all(|s| *s != 0), "every request got an answer");
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records: Vec<Value> = host.request_records();
        if records.len() >= N || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.len(), N, "one record per request");
    std::thread::sleep(Duration::from_millis(300));
    let again = host.request_records().len();
    assert_eq!(again, N, "and no more");
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    for (want, n) in [
        (200u64, N / 5),
        (202, N / 5),
        (400, N / 5),
        (403, N / 5),
        (404, N / 5),
    ] {
        assert_eq!(
            statuses.iter().filter(|s| **s == want).count(),
            n,
            "status {want}"
        );
    }
    assert_eq!(upstream.count(), N / 5 * 2);
    assert!(
        records
            .iter()
            .filter(|r| r["status"] == 202)
            .all(|r| r["outcome"] == "completed"),
        "an accepted notification completed"
    );
    let seqs: Vec<u64> = host
        .audit_records()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers have no gaps"
    );
    // One unbroken hash chain; editing any record breaks it, at that record.
    let verify = |path: &std::path::Path| {
        std::process::Command::new(MOAT)
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = verify(&host.audit);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok: "),
        "{out:?}"
    );
    let text = std::fs::read_to_string(&host.audit).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // A request record in the middle (on a steered host, kernel records, which have no
    // status, interleave).
    let k = (lines.len() / 2..lines.len())
        .find(|&i| lines[i].contains("\"status\":"))
        .unwrap();
    let edited = lines[k].replacen("\"status\":", "\"status\":1", 1);
    lines[k] = &edited;
    let copy = host.dir.join("edited.jsonl");
    std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
    let out = verify(&copy);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("edited.jsonl:{}:", k + 1)) && err.contains("altered"),
        "{err}"
    );
}

#[test]
fn stopping_the_agent_during_a_stream_exits_and_writes_its_record() {
    let (mut host, upstream) = host();
    let dst = host.addr();
    let body = r#"{"jsonrpc":"2.0","id":11,"method":"stream"}"#;
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(dst).unwrap();
        s.write_all(&post(dst, body, "")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 65536];
        // Read until the agent goes away.
        while s.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stream never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    host.stop_agent();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the agent took {:?} to stop",
        start.elapsed()
    );
    client.join().unwrap();
    let rec = host.wait_audit("the interrupted stream", |r| r["mcp"]["id"] == 11);
    assert_eq!(rec["status"], 200, "{rec}");
    host.wait_audit("the stop", |r| r["event"] == "stopped");
}

#[test]
fn get_streams_deletes_and_resumption_headers_reach_the_server() {
    let (host, upstream) = host();
    let dst = host.addr();
    let get = format!(
        "GET /mcp HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\nmcp-session-id: s-1\r\n\
         mcp-protocol-version: 2025-11-25\r\nlast-event-id: ev-41\r\n\r\n",
        dst
    );
    assert_eq!(ask(&host, get.into_bytes()).status, 200);
    let delete = format!(
        "DELETE /mcp HTTP/1.1\r\nhost: {}\r\nmcp-session-id: s-1\r\ncontent-length: 0\r\n\r\n",
        dst
    );
    assert_eq!(ask(&host, delete.into_bytes()).status, 200);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let r = ask(
            &host,
            post(
                dst,
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                &format!("mcp-protocol-version: {version}\r\n"),
            ),
        );
        assert_eq!(r.status, 200, "{version}: {r:?}");
    }
    let heads: Vec<String> = upstream
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h.to_ascii_lowercase())
        .collect();
    assert!(
        heads[0].starts_with("get /mcp ")
            && heads[0].contains("last-event-id: ev-41")
            && heads[0].contains("mcp-session-id: s-1"),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("delete /mcp ") && heads[1].contains("mcp-session-id: s-1"),
        "{}",
        heads[1]
    );
    let rec = host.wait_audit("the GET stream", |r| r["http"]["method"] == "GET");
    assert_eq!(rec["mcp"]["session"], "s-1");
}

#[test]
fn tools_list_results_are_read_as_they_pass() {
    let (host, _upstream) = host();
    let dst = host.addr();
    let r = ask(
        &host,
        post(dst, r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#, ""),
    );
    assert_eq!(
        r.body["result"]["tools"][1]["name"], "add",
        "passed through unchanged: {r:?}"
    );
    let rec = host.wait_audit("the listing", |r| r["mcp"]["method"] == "tools/list");
    assert_eq!(
        rec["tools_listed"],
        serde_json::json!(["echo", "add"]),
        "{rec}"
    );
}

#[test]
fn idle_connections_are_closed() {
    let (host, _upstream) = host();
    let dst = host.addr();
    let (silent, after_request) = host.in_ns(false, move || {
        let closed_after = |s: &mut TcpStream| {
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let start = Instant::now();
            let mut buf = vec![0u8; 65536];
            while s.read(&mut buf).is_ok_and(|n| n > 0) {}
            start.elapsed()
        };
        // Connects and never sends a byte.
        let mut s = TcpStream::connect(dst).unwrap();
        let silent = closed_after(&mut s);
        // One request on a keep-alive connection, then nothing.
        let mut s = TcpStream::connect(dst).unwrap();
        s.write_all(&post(
            dst,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            "",
        ))
        .unwrap();
        let after_request = closed_after(&mut s);
        (silent, after_request)
    });
    assert!(
        silent < Duration::from_secs(5),
        "a silent connection was held {silent:?}"
    );
    assert!(
        after_request < Duration::from_secs(5),
        "an idle keep-alive connection was held {after_request:?}"
    );
}
