//! Privileged tests of the admin listener: /metrics counts exactly the requests sent (and
//! passes `promtool check metrics`), /healthz and /readyz tell whether the agent serves, and a
//! taken address stops the agent before anything is attached.
mod common;

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

const SECURE_PORT: u16 = 8001;

fn dst(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

fn get(host: &Host, path: &str) -> (u16, String) {
    host.admin_get_at(admin_addr(), path)
        .expect("the admin listener answers")
}

/// Waits until /readyz answers `status`; returns its body.
fn wait_ready(host: &Host, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = get(host, "/readyz");
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {s} ({body}), expected {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The samples of a Prometheus text exposition, by series (`name{labels}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// `promtool check metrics` on `text`; promtool must be installed (Debian's `prometheus`).
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool: {e}: install it (`apt-get install prometheus`, or `cargo xtask setup`)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `raw` to the protected `port` on a new connection; the status.
fn send(host: &Host, port: u16, raw: Vec<u8>) -> u16 {
    host.in_ns(false, move || exchange(dst(port), &raw))
        .expect("a reply")
        .status
}

fn call(id: u32, method: &str, tool: Option<&str>) -> String {
    match tool {
        Some(t) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{"name":"{t}"}}}}"#
        ),
        None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#),
    }
}

/// Adds `admin_listen: VALUE` to the agent section of the host's config.
fn set_admin_listen(host: &Host, value: &str) {
    let text = std::fs::read_to_string(&host.config).unwrap();
    let text = text.replacen("agent:\n", &format!("agent:\n  admin_listen: {value}\n"), 1);
    std::fs::write(&host.config, text).unwrap();
}

#[test]
fn metrics_count_exactly_the_requests_sent_and_pass_promtool() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let policy = host.dir.join("p.cedar");
    std::fs::write(
        &policy,
        "permit (principal, action == Action::\"ping\", resource);\n\
         permit (principal, action == Action::\"tools/call\", resource == Tool::\"echo\");\n",
    )
    .unwrap();
    let certs = host.dir.join("certs");
    let (crt, key, ca) = cert(&certs, "localhost");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {PORT}\n    public_url: http://127.0.0.1:{PORT}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n    \
         rate_limits: {{per_tool: 5}}\n  - name: secure\n    port: {SECURE_PORT}\n    \
         tls: {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n",
        policy.display(),
        crt.display(),
        key.display()
    ));
    let files = host.start_server(PORT);
    let _secure = host.start_server(SECURE_PORT);
    host.start_agent();
    assert_eq!(get(&host, "/healthz"), (200, "ok\n".into()));
    assert_eq!(wait_ready(&host, 200), "ready\n");

    let out = run(Command::new(MOAT)
        .args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "files", "--sub", "alice"]));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let auth = format!("authorization: Bearer {token}\r\n");
    let post_files = |body: String, headers: &str| post(dst(PORT), &body, headers);
    let mut connections = 0;
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    // 4 allowed calls (the first validates the token, the rest find it in the cache).
    for _ in 0..4 {
        let r = send(
            &host,
            PORT,
            post_files(call(next(), "tools/call", Some("echo")), &auth),
        );
        assert_eq!(r, 200);
    }
    // 3 calls the policy denies (answered 200 with "Unknown tool").
    for _ in 0..3 {
        let r = send(
            &host,
            PORT,
            post_files(call(next(), "tools/call", Some("rm")), &auth),
        );
        assert_eq!(r, 200);
    }
    // 7 pings: 5 within the per-tool limit, 2 over it.
    let pings: Vec<u16> = (0..7)
        .map(|_| send(&host, PORT, post_files(call(next(), "ping", None), &auth)))
        .collect();
    assert_eq!(pings, [200, 200, 200, 200, 200, 429, 429]);
    // 2 calls without a token, 1 with a bad one, 1 to a path that is not served.
    for _ in 0..2 {
        let r = send(
            &host,
            PORT,
            post_files(call(next(), "tools/call", Some("echo")), ""),
        );
        assert_eq!(r, 401);
    }
    let bad = "authorization: Bearer abc.def.ghi\r\n";
    assert_eq!(
        send(
            &host,
            PORT,
            post_files(call(next(), "tools/list", None), bad)
        ),
        401
    );
    let lost = format!("GET /nowhere HTTP/1.1\r\nhost: {}\r\n\r\n", dst(PORT));
    assert_eq!(send(&host, PORT, lost.into_bytes()), 404);
    connections += 4 + 3 + 7 + 2 + 1 + 1;
    assert_eq!(
        files.count(),
        4 + 5,
        "only what was allowed reached the server"
    );

    // The TLS server: one good handshake (curl), one that fails (not TLS at all).
    let ping = call(1, "ping", None);
    let out = host
        .command(
            "curl",
            &["-sS", "-m", "10", "--cacert", ca.to_str().unwrap()],
        )
        .args([
            "-X",
            "POST",
            &format!("https://localhost:{SECURE_PORT}/mcp"),
        ])
        .args(["-H", "content-type: application/json", "-d", &ping])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    host.in_ns(false, || {
        let mut s = TcpStream::connect(dst(SECURE_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    });

    let total = connections + 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = host.audit_records();
        let requests = recs.iter().filter(|r| r["kind"] == "request").count();
        let steered = recs.iter().filter(|r| r["event"] == "steered").count();
        let failed_tls = recs.iter().filter(|r| r["kind"] == "connection").count();
        if requests == connections + 1 && steered == total && failed_tls == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records: {requests} requests, {steered} steered, {failed_tls} connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing else is being written now: the audit counters equal the file.
    let (status, text) = get(&host, "/metrics");
    assert_eq!(status, 200);
    let lines = std::fs::read_to_string(&host.audit)
        .unwrap()
        .lines()
        .count();
    promtool_check(&text);

    let m = samples(&text);
    let v = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let req = |server: &str, method: &str, decision: &str| {
        v(&format!(
            r#"moat_requests_total{{server="{server}",method="{method}",decision="{decision}"}}"#
        ))
    };
    assert_eq!(req("files", "tools/call", "allow"), 4.0);
    assert_eq!(req("files", "tools/call", "deny"), 3.0);
    assert_eq!(req("files", "ping", "allow"), 5.0);
    assert_eq!(req("files", "ping", "deny"), 2.0);
    // The body of a request refused for its token is never read: its method is unknown.
    assert_eq!(req("files", "tools/list", "deny"), 0.0);
    assert_eq!(req("files", "none", "deny"), 2.0 + 1.0 + 1.0);
    assert_eq!(req("secure", "ping", "allow"), 1.0);
    let all_requests: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("moat_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        all_requests,
        (connections + 1) as f64,
        "nothing else counted"
    );
    assert_eq!(
        v(r#"moat_request_duration_seconds_count{server="files"}"#),
        connections as f64
    );
    assert_eq!(
        v(r#"moat_request_duration_seconds_bucket{server="files",le="+Inf"}"#),
        connections as f64
    );
    assert!(v(r#"moat_request_duration_seconds_sum{server="files"}"#) > 0.0);

    let tok = |outcome: &str| {
        v(&format!(
            r#"moat_token_validations_total{{server="files",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(tok("valid"), 1.0);
    assert_eq!(tok("cached"), (4 + 3 + 7 - 1) as f64);
    assert_eq!(tok("missing"), 2.0);
    assert_eq!(tok("invalid"), 1.0);
    assert_eq!(
        tok("expired") + tok("wrong_audience") + tok("unavailable"),
        0.0
    );

    let policy = |effect: &str, mode: &str| {
        v(&format!(
            r#"moat_policy_decisions_total{{server="files",effect="{effect}",mode="{mode}"}}"#
        ))
    };
    assert_eq!(policy("allow", "enforce"), 4.0 + 5.0);
    assert_eq!(policy("deny", "enforce"), 3.0);
    assert_eq!(
        v(r#"moat_rate_limited_requests_total{server="files"}"#),
        2.0
    );

    let tls = |server: &str, result: &str| {
        v(&format!(
            r#"moat_tls_handshakes_total{{server="{server}",result="{result}"}}"#
        ))
    };
    assert_eq!((tls("secure", "ok"), tls("secure", "error")), (1.0, 1.0));
    // Only what a server can count has series: no TLS on `files`; no token, policy or rate
    // limit on `secure`; only the configured policy mode.
    for absent in [
        r#"moat_tls_handshakes_total{server="files""#,
        r#"moat_token_validations_total{server="secure""#,
        r#"moat_policy_decisions_total{server="secure""#,
        r#"moat_rate_limited_requests_total{server="secure""#,
        r#"mode="shadow""#,
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }

    assert_eq!(v("moat_audit_records_written_total"), lines as f64);
    assert_eq!(v("moat_audit_records_dropped_total"), 0.0);

    // The kernel's counters, as `moat status` reads them.
    let kernel = |what: &str, port: u16, server: &str| {
        v(&format!(
            r#"moat_kernel_connections_{what}_total{{port="{port}",server="{server}"}}"#
        ))
    };
    assert_eq!(kernel("steered", PORT, "files"), connections as f64);
    assert_eq!(kernel("steered", SECURE_PORT, "secure"), 2.0);
    assert_eq!(kernel("dropped", PORT, "files"), 0.0);
    for (port, server) in [(PORT, "files"), (SECURE_PORT, "secure")] {
        let c = host.port_counters(port);
        assert_eq!(
            kernel("steered", port, server),
            c["steered"].as_f64().unwrap()
        );
        assert_eq!(
            kernel("passed", port, server),
            c["passed"].as_f64().unwrap()
        );
        assert!(
            kernel("passed", port, server) >= 1.0,
            "upstream connections"
        );
    }
    assert_eq!(v("moat_kernel_binds_denied_total"), 0.0);
    assert_eq!(v("moat_kernel_events_lost_total"), 0.0);

    // Scraping is not a request: nothing changed but the audit counters' own reads.
    let (_, again) = get(&host, "/metrics");
    let again = samples(&again);
    assert_eq!(
        again[r#"moat_request_duration_seconds_count{server="files"}"#],
        connections as f64
    );
}

#[test]
fn readyz_is_not_ready_while_the_audit_log_fails_nor_after_detach() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let fs = Tmpfs::mount(&host.dir.join("auditfs"), "256k");
    host.audit = fs.0.join("audit.jsonl");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {PORT}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
    ));
    let _upstream = host.start_server(PORT);
    host.start_agent();
    assert_eq!(wait_ready(&host, 200), "ready\n");

    // A full disk under fail_closed: requests are refused, and the agent is not ready.
    let filler = fs.fill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(&host, PORT, post(dst(PORT), &call(1, "ping", None), "")) != 503 {
        assert!(Instant::now() < deadline, "never refused with a full disk");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = get(&host, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "not ready: the audit log cannot be written: requests are refused (on_failure: fail_closed)\n"
        )
    );
    assert_eq!(get(&host, "/healthz").0, 200, "alive all the same");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(wait_ready(&host, 200), "ready\n");

    // Detached under the running agent: the ports are open again, so it is not ready.
    assert!(host.detach().status.success());
    assert_eq!(
        get(&host, "/readyz"),
        (
            503,
            "not ready: the kernel programs are detached (moat detach)\n".into()
        )
    );
}

#[test]
fn a_taken_admin_address_stops_the_agent_and_off_listens_nowhere() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let _upstream = host.start_server(PORT);
    let taken = host.in_ns(false, || std::net::TcpListener::bind(admin_addr()).unwrap());
    let out = host
        .command(MOAT, &["run", "-c", host.config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot listen on 127.0.0.1:9901 (agent.admin_listen"),
        "{err}"
    );
    assert!(!host.bpffs.exists(), "nothing attached");
    drop(taken);

    // Another address.
    let text = std::fs::read_to_string(&host.config).unwrap();
    set_admin_listen(&host, "127.0.0.1:9911");
    host.start_agent();
    let other = SocketAddr::from(([127, 0, 0, 1], 9911));
    assert_eq!(host.admin_get_at(other, "/healthz").unwrap().0, 200);
    assert!(host.admin_get_at(admin_addr(), "/healthz").is_err());
    host.stop_agent();

    // Off.
    std::fs::write(&host.config, text).unwrap();
    set_admin_listen(&host, "off");
    host.start_agent();
    assert_eq!(
        send(&host, PORT, post(dst(PORT), &call(1, "ping", None), "")),
        200
    );
    assert!(host.admin_get_at(admin_addr(), "/healthz").is_err());
    assert!(host.admin_get_at(other, "/healthz").is_err());
}
