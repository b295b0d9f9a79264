//! Privileged end-to-end tests: the real agent and kernel programs in fresh network namespaces.
mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn local_and_remote_clients_are_steered_through_the_agent_v4_and_v6() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let accepts = host.start_server(PORT);
    host.start_agent();

    let local = [
        addr("127.0.0.1", PORT),
        addr("::1", PORT),
        addr(HOST_V4, PORT),
        addr(HOST_V6, PORT),
    ];
    for dst in local {
        let seen = host
            .in_ns(false, move || fetch(dst, None))
            .unwrap_or_else(|e| panic!("{dst}: {e}"));
        assert!(
            in_reserved(seen),
            "{dst}: server saw {seen}, not the agent's reserved identity"
        );
    }
    let remote = [addr(HOST_V4, PORT), addr(HOST_V6, PORT)];
    for dst in remote {
        let seen = host
            .in_ns(true, move || fetch(dst, None))
            .unwrap_or_else(|e| panic!("remote {dst}: {e}"));
        assert!(
            in_reserved(seen) && seen.ip().is_loopback(),
            "remote {dst}: server saw {seen}"
        );
    }
    assert_eq!(accepts.count(), 6);

    // getsockname() on the accepted socket is the original destination: the audit record of
    // each relayed connection names it.
    for dst in local.iter().chain(&remote) {
        host.wait_audit(&format!("request to {dst}"), |r| {
            r["kind"] == "request"
                && r["conn"]["dst"] == dst.to_string()
                && r["server"] == "files"
                && r["mcp"]["method"] == "ping"
                && r["outcome"] == "completed"
        });
    }
    // The kernel saw the remote peer itself.
    for (peer, dst) in [
        (REMOTE_V4.to_string(), addr(HOST_V4, PORT)),
        (format!("[{REMOTE_V6}]"), addr(HOST_V6, PORT)),
    ] {
        host.wait_audit(&format!("steered from {peer}"), |r| {
            r["event"] == "steered"
                && r["conn"]["dst"] == dst.to_string()
                && r["conn"]["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("{peer}:")))
        });
    }
    let c = host.port_counters(PORT);
    assert_eq!(c["steered"], 6, "{c}");
    assert!(
        (1..=6).contains(&c["passed"].as_u64().unwrap()),
        "upstream connections are pooled: {c}"
    );
    assert_eq!(c["dropped"], 0, "{c}");
}

#[test]
fn a_port_that_is_not_protected_is_untouched() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    let other = host.start_server(9000);
    host.start_agent();

    for dst in [addr("127.0.0.1", 9000), addr(HOST_V6, 9000)] {
        let (seen, local) = host.in_ns(false, move || {
            let s = std::net::TcpStream::connect(dst).unwrap();
            let local = s.local_addr().unwrap();
            drop(s);
            (fetch(dst, None).unwrap(), local)
        });
        assert!(!in_reserved(seen), "{dst}: {seen}");
        assert_eq!(
            seen.ip(),
            local.ip().to_canonical(),
            "{dst}: the server sees the client itself"
        );
    }
    let remote = host
        .in_ns(true, || fetch(addr(HOST_V4, 9000), None))
        .unwrap();
    assert_eq!(remote.ip().to_string(), REMOTE_V4);
    assert_eq!(other.count(), 3);
    let c = host.port_counters(PORT);
    assert_eq!(c["steered"], 0, "{c}");
    assert!(
        host.status()["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["port"] != 9000)
    );
}

#[test]
fn a_remote_peer_using_the_reserved_source_port_is_still_steered() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let accepts = host.start_server(PORT);
    host.start_agent();

    for (i, dst) in [addr(HOST_V4, PORT), addr(HOST_V6, PORT)]
        .into_iter()
        .enumerate()
    {
        let sport = RESERVED.0 + 7 + i as u16;
        let seen = host.in_ns(true, move || fetch(dst, Some(sport))).unwrap();
        // Through the agent the server sees the agent's loopback identity, never the remote peer.
        assert!(
            seen.ip().is_loopback(),
            "{dst}: server saw {seen}: the remote peer bypassed the proxy"
        );
        host.wait_audit("the remote reserved-port peer", |r| {
            r["event"] == "steered"
                && r["conn"]["peer"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!(":{sport}")))
        });
    }
    assert_eq!(accepts.count(), 2);
    assert_eq!(host.port_counters(PORT)["steered"], 2);
}

#[test]
fn a_local_process_binding_the_upstream_identity_is_denied_and_audited() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();

    let script = format!(
        "import socket, sys\n\
         for fam, ip in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n\
         \x20   s = socket.socket(fam)\n\
         \x20   try:\n\
         \x20       s.bind((ip, {port}))\n\
         \x20       print('bound', ip); sys.exit(1)\n\
         \x20   except PermissionError:\n\
         \x20       pass\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0))\n\
         print('denied')\n",
        port = RESERVED.0 + 3
    );
    let mut cmd = host.command("python3", &["-c", &script]);
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "denied",
        "{out:?}"
    );

    for a in ["127.0.0.1", "[::1]"] {
        let r = host.wait_audit("bind_denied", |r| {
            r["event"] == "bind_denied" && r["addr"] == format!("{a}:{}", RESERVED.0 + 3)
        });
        assert_eq!(r["kind"], "kernel");
        assert_eq!(r["process"]["pid"], pid, "{r}");
        assert_eq!(r["process"]["comm"], "python3", "{r}");
        assert_eq!(r["process"]["uid"], 0, "{r}");
        assert!(r["process"]["cgroup_id"].as_u64().unwrap() > 0, "{r}");
    }
    assert_eq!(host.status()["bind_denied"], 2);
}

#[test]
fn with_the_agent_killed_the_port_fails_closed_and_a_restart_resumes() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let accepts = host.start_server(PORT);
    host.start_agent();
    for _ in 0..3 {
        host.in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
            .unwrap();
    }
    let before = host.port_counters(PORT);
    assert_eq!(before["steered"], 3);

    host.kill_agent();
    assert_eq!(host.status()["proxy_socket"], serde_json::Value::Null);
    let refused = host.in_ns(false, || {
        (0..100)
            .filter(|i| {
                fetch(
                    addr(if i % 2 == 0 { "127.0.0.1" } else { HOST_V6 }, PORT),
                    None,
                )
                .is_err()
            })
            .count()
    });
    let remote_refused = host.in_ns(true, || {
        (0..10)
            .filter(|_| fetch(addr(HOST_V4, PORT), None).is_err())
            .count()
    });
    assert_eq!(refused, 100);
    assert_eq!(remote_refused, 10);
    assert_eq!(accepts.count(), 3, "a connection reached the server");
    let down = host.port_counters(PORT);
    assert!(down["dropped"].as_u64().unwrap() >= 110, "{down}");

    host.start_agent();
    let seen = host
        .in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
        .unwrap();
    assert!(in_reserved(seen));
    let after = host.port_counters(PORT);
    assert_eq!(
        after["steered"], 4,
        "counters keep counting across the restart: {after}"
    );
    assert_eq!(after["dropped"], down["dropped"]);
    // What the kernel saw while the agent was down is in the log once it is back: one
    // record for each drop it counted.
    let counted = down["dropped"].as_u64().unwrap() as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let drops: Vec<_> = host
            .audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "kernel" && r["event"] == "dropped")
            .collect();
        if drops.len() == counted {
            assert!(
                drops
                    .iter()
                    .all(|r| r["server"] == "files" && r["event_ts"].is_string())
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} drop records for {counted} drops",
            drops.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    host.wait_audit("adoption of the pins", |r| {
        r["event"] == "started" && r["adopted_pins"] == true
    });
}

#[test]
fn detach_restores_direct_access() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();
    assert!(in_reserved(
        host.in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
            .unwrap()
    ));
    host.stop_agent();
    assert!(
        host.in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
            .is_err(),
        "closed after a clean stop too"
    );

    let out = host.detach();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!host.bpffs.exists());
    assert_eq!(host.status()["attached"], false);
    let seen = host
        .in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
        .unwrap();
    assert!(!in_reserved(seen), "direct again: {seen}");
    let again = host.detach();
    assert!(
        !again.status.success(),
        "a second detach reports that nothing is attached"
    );
}

#[test]
fn a_running_agent_is_detached_too() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();
    let out = host.detach();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(100));
    let seen = host
        .in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
        .unwrap();
    assert!(
        !in_reserved(seen),
        "the program still steers after detach: {seen}"
    );
}

#[test]
fn a_bad_config_is_refused_with_the_key_and_line() {
    if !privileged() {
        return;
    }
    let host = Host::new();
    host.write_config(
        "servers:\n  - name: files\n    port: 8000\n    upstrem: http://127.0.0.1:1\n    dangerous: {plaintext: true, unauthenticated: true}\n",
    );
    host.assert_config_refused(&[&format!(
        "{}:11:5: servers[0].upstrem: unknown key",
        host.config.display()
    )]);
    assert!(!host.bpffs.exists(), "nothing is attached for a bad config");
}

#[test]
fn a_restart_reconciles_the_protected_ports_with_the_config() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_server(8001);
    host.write_config(&format!(
        "servers:\n  - {{name: files, port: {PORT}, dangerous: {{plaintext: true, unauthenticated: true}}}}\n  - {{name: notes, port: 8001, dangerous: {{plaintext: true, unauthenticated: true}}}}\n"
    ));
    host.start_agent();
    assert!(in_reserved(
        host.in_ns(false, || fetch(addr("127.0.0.1", 8001), None))
            .unwrap()
    ));
    host.kill_agent();

    host.write_config(&format!(
        "servers:\n  - {{name: files, port: {PORT}, dangerous: {{plaintext: true, unauthenticated: true}}}}\n"
    ));
    host.start_agent();
    let ports: Vec<u64> = host.status()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [u64::from(PORT)]);
    assert!(
        !in_reserved(
            host.in_ns(false, || fetch(addr("127.0.0.1", 8001), None))
                .unwrap()
        ),
        "8001 is no longer protected"
    );
    assert!(in_reserved(
        host.in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
            .unwrap()
    ));
}

#[test]
fn an_unreachable_upstream_closes_the_client_and_is_audited() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_agent(); // nothing listens on the upstream port
    let err = host
        .in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
        .unwrap_err();
    // Accepted by the agent (steered), then closed without a byte: no hang, no server.
    // Accepted by the agent (steered), answered 502 with a JSON-RPC error: no hang.
    let err = err.to_string();
    assert!(
        err.contains("no peer in reply") && err.contains("upstream unavailable"),
        "{err}"
    );
    let r = host.wait_audit("the failed upstream", |r| {
        r["kind"] == "request" && r["status"] == 502
    });
    assert!(r["error"].as_str().unwrap().contains("refused"), "{r}");
    assert_eq!(r["server"], "files");
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["mcp"]["method"], "ping");
}

#[test]
fn a_second_agent_for_the_same_instance_is_refused_and_the_first_keeps_serving() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();
    let first = host.status()["agent_pid"].clone();
    let out = host
        .command(MOAT, &["run", "-c", host.config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another agent") && err.contains(&first.to_string()),
        "{err}"
    );
    let s = host.status();
    assert_eq!(
        s["agent_pid"], first,
        "the settings still name the first agent"
    );
    assert!(s["proxy_socket"].is_u64());
    assert!(in_reserved(
        host.in_ns(false, || fetch(addr("127.0.0.1", PORT), None))
            .unwrap()
    ));
}

/// The verified size of each program, as `moat status` shows it.
fn xlated(host: &Host) -> Vec<u64> {
    host.status()["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["xlated_bytes"].as_u64().unwrap())
        .collect()
}

#[test]
fn kernel_diagnostics_cost_nothing_when_off_and_show_in_the_agent_log_when_asked() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.start_server(PORT);
    host.start_agent();
    host.ping_local().unwrap();
    let off = xlated(&host);
    host.stop_agent();
    assert!(
        !host.agent_log().contains("moat::kernel"),
        "{}",
        host.agent_log()
    );

    let config = std::fs::read_to_string(&host.config).unwrap();
    std::fs::write(
        &host.config,
        config.replacen("agent:\n", "agent:\n  kernel_log: debug\n", 1),
    )
    .unwrap();
    host.start_agent();
    host.ping_local().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !host
        .agent_log()
        .contains(&format!("steer: port {PORT} steered to the proxy"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no kernel diagnostics in the agent log: {}",
            host.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let debug = xlated(&host);
    // Off, the verifier pruned the logging from every program that has any.
    assert!(debug[0] > off[0], "steer: {debug:?} vs {off:?}");
    assert!(debug[1] > off[1], "bind4: {debug:?} vs {off:?}");

    // Back off: the programs are replaced again (the same tag, another size).
    host.stop_agent();
    std::fs::write(&host.config, config).unwrap();
    host.start_agent();
    assert_eq!(xlated(&host), off);
}
