//! `moat run --unprotected`: the agent serves from plain loopback listeners with no kernel
//! programs, and says so wherever one looks (log, `started` record, /healthz, /readyz, `moat
//! status`); it protects nothing the kernel would; a loopback upstream on a protected port is
//! a config error; and it does not start over the attached programs of its instance.
mod common;

use std::{net::SocketAddr, process::Command};

use common::*;
use serde_json::json;

fn ping(host: &Host) -> Reply {
    let dst = host.addr();
    let raw = post(dst, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, "");
    host.in_ns(false, move || exchange(dst, &raw)).unwrap()
}

#[test]
fn an_unprotected_agent_says_so_everywhere_and_protects_nothing() {
    let mut host = Host::plain();
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let r = ping(&host);
    assert_eq!(r.status, 200, "{r:?}");

    assert!(
        host.agent_log().contains("DANGEROUS: --unprotected"),
        "{}",
        host.agent_log()
    );
    let listener = host.addr().to_string();
    let started = host.wait_audit("the start", |r| r["event"] == "started");
    assert_eq!(started["protection"], "none", "{started}");
    assert_eq!(started["listeners"], json!([listener]), "{started}");
    assert!(started.get("sealed_ports").is_none(), "{started}");
    for path in ["/healthz", "/readyz"] {
        let (status, body) = host.admin_get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body.contains("UNPROTECTED (moat run --unprotected)"),
            "{path}: {body}"
        );
    }
    let status = host.status();
    assert_eq!(status["attached"], false, "{status}");
    assert_eq!(status["unprotected"]["listeners"], json!([listener]));
    let text = run(Command::new(MOAT).args(["status", "-c"]).arg(&host.config)).stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(&format!(
            "agent: pid {} running UNPROTECTED",
            host.agent_pid()
        )),
        "{text}"
    );

    // No kernel: no local process is named, no kernel event recorded.
    let rec = host.wait_audit("the ping", |r| r["kind"] == "request");
    assert!(rec["conn"]["process"].is_null(), "{rec}");
    assert!(
        host.audit_records().iter().all(|r| r["kind"] != "kernel"),
        "no kernel records"
    );
    // And nothing keeps a local process from the upstream: reached directly, unaudited.
    let direct = SocketAddr::from(([127, 0, 0, 1], host.upstream_port()));
    let peer = host.in_ns(false, move || fetch(direct, None)).unwrap();
    assert!(!in_reserved(peer), "not the agent's identity: {peer}");
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        host.request_records().len(),
        1,
        "only the ping through Moat"
    );

    host.stop_agent();
    host.wait_audit("the stop", |r| r["event"] == "stopped");
    let status = host.status();
    assert!(
        status.get("unprotected").is_none(),
        "no agent runs any more: {status}"
    );
}

#[test]
fn a_loopback_upstream_on_a_protected_port_is_refused_unprotected_only() {
    let host = Host::plain();
    let port = host.port();
    // Without `upstream`, the server's upstream is 127.0.0.1 and its own port.
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
    ));
    let config = host.config.display().to_string();
    host.assert_config_refused(&[&format!(
        "{config}:9:5: servers[0]: with --unprotected the agent itself listens on 127.0.0.1:{port} \
         (server `files`): the upstream must listen on another port (the default upstream is \
         127.0.0.1:{port})"
    )]);
    // Another server's protected port, on ::1.
    let other = free_port();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: 'http://[::1]:{other}'\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n  \
         - name: notes\n    port: {other}\n    upstream: {}\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n",
        host.upstream()
    ));
    host.assert_config_refused(&[&format!(
        "{config}:11:15: servers[0].upstream: with --unprotected the agent itself listens on \
         127.0.0.1:{other} (server `notes`)"
    )]);
    // With the kernel, the same config is fine: it tells the agent's connections apart.
    let out = run(Command::new(MOAT).args(["check", "-c", &config]));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok, 2 server(s)"));
}

/// The programs of the instance are attached (a protected agent was killed: its ports fail
/// closed): an unprotected agent would never see a connection, so it refuses to start; once
/// detached it serves.
#[test]
fn with_the_programs_attached_an_unprotected_agent_refuses_to_start() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {PORT}\n    upstream: http://127.0.0.1:8001\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n"
    ));
    let upstream = host.start_server(8001);
    host.start_agent();
    let started = host.wait_audit("the start", |r| r["event"] == "started");
    assert_eq!(started["protection"], "kernel", "{started}");
    host.kill_agent();

    let out = host
        .command(
            MOAT,
            &["run", "--unprotected", "-c", host.config.to_str().unwrap()],
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kernel programs of this instance are attached")
            && err.contains("moat detach"),
        "{err}"
    );
    let dst = SocketAddr::from(([127, 0, 0, 1], PORT));
    assert!(
        host.in_ns(false, move || fetch(dst, None)).is_err(),
        "the port still fails closed"
    );
    assert_eq!(upstream.count(), 0);

    assert!(host.detach().status.success());
    let mut child = host
        .command(
            MOAT,
            &["run", "--unprotected", "-c", host.config.to_str().unwrap()],
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let served = loop {
        if let Ok(peer) = host.in_ns(false, move || fetch(dst, None)) {
            break peer;
        }
        assert!(std::time::Instant::now() < deadline, "never served");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(in_reserved(served), "through the agent: {served}");
    assert_eq!(upstream.count(), 1);
    assert!(!host.bpffs.exists(), "nothing attached");
}
