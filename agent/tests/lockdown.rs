//! Emergency lockdown end to end, on a plain host (no root): `moat lockdown` stops requests at
//! once (503 with a JSON-RPC error naming the lockdown, nothing forwarded), cuts a call in
//! flight on its stream, survives a restart of the agent, is audited with who ran it, and
//! `moat unlock` restores service.
mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

fn ping(host: &Host) -> Reply {
    let dst = host.addr();
    let raw = post(dst, r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#, "");
    exchange(dst, &raw).unwrap()
}

#[test]
fn a_lockdown_stops_requests_at_once_survives_a_restart_and_is_lifted() {
    let mut host = Host::plain();
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    assert_eq!(ping(&host).status, 200);
    let forwarded = upstream.count();

    let locked = host.moat_json(
        &["lockdown"],
        &["--server", "files", "--reason", "incident 42"],
    );
    assert_eq!(locked["locked"], "server/files", "{locked}");
    let r = ping(&host);
    // Refused before the body is read (as a request without a token is): no id to answer.
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.body["error"]["message"], "Locked down: an operator has stopped these requests",
        "{r:?}"
    );
    assert_eq!(upstream.count(), forwarded, "nothing forwarded");
    let audit = host.wait_audit("locked", |r| r["kind"] == "lockdown");
    assert_eq!(audit["event"], "locked");
    assert_eq!(audit["scope"], "server/files");
    assert_eq!(audit["reason"], "incident 42");
    assert!(audit["by"].as_str().unwrap().starts_with("uid "), "{audit}");
    let refused = host.wait_audit("the refused ping", |r| {
        r["kind"] == "request" && r["status"] == 503
    });
    assert_eq!(refused["error"], "locked down by an operator", "{refused}");

    // A lockdown of another server stops nothing here; the list shows both.
    host.moat_json(&["lockdown"], &["--server", "mail"]);
    let list = host.moat_json(&["lockdown"], &[]);
    let scopes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["server/files", "server/mail"], "{list}");
    assert_eq!(host.status()["lockdowns"], list, "moat status shows them");

    // The agent restarts: still locked down.
    host.stop_agent();
    host.start_agent();
    assert_eq!(ping(&host).status, 503);

    let lifted = host.moat_json(&["unlock"], &["--server", "files"]);
    assert_eq!(lifted["was_locked"], true, "{lifted}");
    assert_eq!(ping(&host).status, 200);
    host.wait_audit("unlocked", |r| {
        r["kind"] == "lockdown" && r["event"] == "unlocked"
    });
    // Unlock without a scope is a usage error.
    let out = Command::new(MOAT)
        .args(["unlock", "-c"])
        .arg(&host.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --all"));
}

/// A call in flight (its answer streaming) and the session's open event stream are cut when
/// everything is locked down.
#[test]
fn a_lockdown_cuts_a_call_in_flight() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let mut host = Host::plain();
    let log = host.dir.join("ts-server.jsonl");
    start_ts_server(&mut host, &[], &log);
    host.start_agent();
    let dst = host.addr();
    let h = mcp_session(dst, "");
    // The session's own event stream (GET), left open.
    let g = std::net::TcpStream::connect(dst).unwrap();
    write!(
        &g,
        "GET /mcp HTTP/1.1\r\nhost: {dst}\r\naccept: text/event-stream\r\n{h}\r\n"
    )
    .unwrap();
    let mut stream = BufReader::new(&g);
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    // The call: its answer is an event stream that stays open for 20 s.
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":20000}}}"#;
    let s = std::net::TcpStream::connect(dst).unwrap();
    (&s).write_all(&post(dst, call, &h)).unwrap();
    let mut reader = BufReader::new(&s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(r#""name":"sleep""#)
    {
        assert!(
            Instant::now() < deadline,
            "the call never reached the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.moat_json(&["lockdown"], &["--all", "--reason", "stop everything"]);
    // The response (chunked) ends at once: its last chunk comes, without the call's answer.
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut seen, mut line) = (String::new(), String::new());
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .expect("the stream ends before the read timeout");
        seen.push_str(&line);
        if n == 0 || line == "0\r\n" {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!seen.contains("slept"), "the call was answered: {seen}");
    // The GET stream ends too.
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        line.clear();
        let n = stream
            .read_line(&mut line)
            .expect("the GET stream ends before the read timeout");
        if n == 0 || line == "0\r\n" {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let cut = host.wait_audit("the cut call", |r| {
        r["kind"] == "request" && r["mcp"]["tool"] == "sleep"
    });
    assert_ne!(cut["outcome"], "completed", "{cut}");
    assert_eq!(json!(ping(&host).status), json!(503));
}
