//! Privileged tests of sealed upstream ports: a server whose upstream port is not a protected
//! port is reachable only through Moat, from this host and from others, with or without the
//! agent; and an upstream that is not on this host is refused.
mod common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// The protected port, and the port the real server listens on behind it.
const PROTECTED: u16 = 9002;
const UPSTREAM: u16 = 9003;

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn config(host: &Host, upstream: &str) {
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {PROTECTED}\n    upstream: {upstream}\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n"
    ));
}

fn sealed_counters(host: &Host, port: u16) -> Value {
    host.counters_in("sealed", port)
}

/// A local process (python3, in the test's cgroup and namespace) connects to `dst`; returns
/// its pid and what it saw: `refused` (the kernel answers a dropped lookup with a reset),
/// `timeout`, `connected`, or another error.
fn local_process_connects(host: &Host, dst: SocketAddr) -> (u32, String) {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6 if ':' in '{ip}' else socket.AF_INET)\n\
         s.settimeout(2)\n\
         try:\n\
         \x20   s.connect(('{ip}', {port}))\n\
         \x20   print('connected')\n\
         except ConnectionRefusedError:\n\
         \x20   print('refused')\n\
         except (socket.timeout, TimeoutError):\n\
         \x20   print('timeout')\n\
         except OSError as e:\n\
         \x20   print('error', e)\n",
        ip = dst.ip(),
        port = dst.port()
    );
    let child = host
        .command("python3", &["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until the `blocked` records in the audit log number `n`; returns them.
fn wait_blocked_records(host: &Host, n: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: Vec<Value> = host
            .audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "kernel" && r["event"] == "blocked")
            .collect();
        if blocked.len() as u64 == n {
            return blocked;
        }
        assert!(
            Instant::now() < deadline,
            "{} blocked records for {n} blocked connections",
            blocked.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_upstream_port_that_is_not_protected_takes_only_the_agents_connections() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(UPSTREAM);
    config(&host, &format!("http://127.0.0.1:{UPSTREAM}"));
    host.start_agent();

    // Through Moat, from this host and from another: the server sees the agent.
    for (remote, dst) in [
        (false, addr("127.0.0.1", PROTECTED)),
        (false, addr(HOST_V6, PROTECTED)),
        (true, addr(HOST_V4, PROTECTED)),
        (true, addr(HOST_V6, PROTECTED)),
    ] {
        let seen = host
            .in_ns(remote, move || fetch(dst, None))
            .unwrap_or_else(|e| panic!("{dst} (remote {remote}): {e}"));
        assert!(in_reserved(seen), "{dst}: server saw {seen}");
    }
    assert_eq!(server.count(), 4);

    // Straight to the server's port: dropped, whoever asks and on whichever address.
    let direct = [
        (true, addr(HOST_V4, UPSTREAM), None),
        (true, addr(HOST_V6, UPSTREAM), None),
        // A remote peer choosing a source port of the agent's reserved range.
        (true, addr(HOST_V4, UPSTREAM), Some(RESERVED.0 + 5)),
        (false, addr("127.0.0.1", UPSTREAM), None),
        (false, addr("::1", UPSTREAM), None),
        (false, addr(HOST_V4, UPSTREAM), None),
    ];
    for (remote, dst, sport) in direct {
        let r = host.in_ns(remote, move || fetch(dst, sport));
        assert!(
            r.is_err(),
            "{dst} (remote {remote}): reached the server: {r:?}"
        );
    }
    let (pid, seen) = local_process_connects(&host, addr("127.0.0.1", UPSTREAM));
    assert_eq!(seen, "refused", "the local process got through");
    assert_eq!(server.count(), 4, "nothing reached the server directly");

    // Counted for the sealed port (one lookup each: the client is reset at once), and the
    // protected port's counters are the agent's.
    let c = sealed_counters(&host, UPSTREAM);
    assert_eq!(
        c["server"],
        Value::Null,
        "status without a config names no server"
    );
    let blocked = c["blocked"].as_u64().unwrap();
    assert_eq!(blocked, direct.len() as u64 + 1, "{c}");
    assert!(
        c["passed"].as_u64().unwrap() >= 1,
        "the agent's own connections: {c}"
    );
    let p = host.port_counters(PROTECTED);
    assert_eq!(
        (p["steered"].as_u64(), p["dropped"].as_u64()),
        (Some(4), Some(0)),
        "{p}"
    );
    assert!(
        host.status()["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["port"] != UPSTREAM),
        "the upstream port is sealed, not protected"
    );

    // One audit record per blocked lookup, with the peer; the local process by its pid.
    let records = wait_blocked_records(&host, blocked);
    assert!(
        records
            .iter()
            .all(|r| r["server"] == "files" && r["conn"]["proto"] == "tcp")
    );
    for (peer, dst) in [
        (format!("{REMOTE_V4}:"), addr(HOST_V4, UPSTREAM)),
        (format!("[{REMOTE_V6}]:"), addr(HOST_V6, UPSTREAM)),
        (
            format!("{REMOTE_V4}:{}", RESERVED.0 + 5),
            addr(HOST_V4, UPSTREAM),
        ),
    ] {
        let r = records
            .iter()
            .find(|r| {
                r["conn"]["dst"] == dst.to_string()
                    && r["conn"]["peer"].as_str().unwrap().starts_with(&peer)
            })
            .unwrap_or_else(|| panic!("no blocked record from {peer} to {dst}: {records:?}"));
        assert!(
            r["conn"].get("process").is_none(),
            "a remote peer has no local process: {r}"
        );
        assert!(r["event_ts"].is_string());
    }
    let by_python: Vec<&Value> = records
        .iter()
        .filter(|r| r["conn"]["process"]["pid"] == pid)
        .collect();
    assert!(
        !by_python.is_empty(),
        "no record names pid {pid}: {records:?}"
    );
    for r in by_python {
        assert_eq!(r["conn"]["process"]["comm"], "python3", "{r}");
        assert_eq!(r["conn"]["process"]["uid"], 0, "{r}");
        assert!(
            r["conn"]["process"]["cgroup_id"].as_u64().unwrap() > 0,
            "{r}"
        );
        assert_eq!(r["conn"]["dst"], format!("127.0.0.1:{UPSTREAM}"), "{r}");
        assert!(
            r["conn"]["peer"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{r}"
        );
    }

    // /metrics says the same as `moat status`.
    let metrics = host.in_ns(false, || {
        exchange(
            addr("127.0.0.1", 9901),
            b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        )
    });
    let text = metrics.unwrap().body.as_str().unwrap().to_string();
    for line in [
        format!(
            r#"moat_kernel_connections_blocked_total{{port="{UPSTREAM}",server="files"}} {blocked}"#
        ),
        format!(
            r#"moat_kernel_connections_passed_total{{port="{UPSTREAM}",server="files"}} {}"#,
            c["passed"]
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    // And the text status, given the config, names the server.
    let out = run(Command::new(MOAT).args(["status", "-c"]).arg(&host.config));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 4
                && f[0] == UPSTREAM.to_string()
                && f[1] == "files"
                && f[2] == blocked.to_string()
        }),
        "{shown}"
    );

    // With the agent killed the port stays sealed, and what was blocked meanwhile is audited
    // once the agent is back.
    host.kill_agent();
    for (remote, dst) in [
        (true, addr(HOST_V4, UPSTREAM)),
        (false, addr("127.0.0.1", UPSTREAM)),
    ] {
        let r = host.in_ns(remote, move || fetch(dst, None));
        assert!(r.is_err(), "{dst} with the agent down: {r:?}");
    }
    let (_, seen) = local_process_connects(&host, addr("::1", UPSTREAM));
    assert_eq!(seen, "refused");
    assert_eq!(
        server.count(),
        4,
        "nothing reached the server with the agent down"
    );
    let down = sealed_counters(&host, UPSTREAM)["blocked"]
        .as_u64()
        .unwrap();
    assert_eq!(down, blocked + 3, "{down} after {blocked}");

    host.start_agent();
    let seen = host
        .in_ns(true, || fetch(addr(HOST_V4, PROTECTED), None))
        .unwrap();
    assert!(in_reserved(seen));
    assert_eq!(server.count(), 5);
    let records = wait_blocked_records(&host, down);
    assert!(
        records
            .iter()
            .any(|r| r["conn"]["dst"] == format!("[::1]:{UPSTREAM}")
                && r["conn"]["process"]["comm"] == "python3"),
        "{records:?}"
    );
}

#[test]
fn an_upstream_on_an_interface_address_is_accepted_and_sealed() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(UPSTREAM);
    config(&host, &format!("http://{HOST_V4}:{UPSTREAM}"));
    // The address is this namespace's, not the test's own namespace's.
    let out = host
        .command(MOAT, &["check", "-c", host.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("port {UPSTREAM} sealed")),
        "{out:?}"
    );
    host.assert_config_refused(&[&format!(
        "{}:11:15: servers[0].upstream: {HOST_V4} is not an address of this host",
        host.config.display()
    )]);

    host.start_agent();
    // The agent connects from the upstream address itself (source equals destination).
    for (remote, dst) in [
        (false, addr("127.0.0.1", PROTECTED)),
        (true, addr(HOST_V4, PROTECTED)),
    ] {
        let seen = host.in_ns(remote, move || fetch(dst, None)).unwrap();
        assert!(
            in_reserved(seen) && seen.ip().to_string() == HOST_V4,
            "{dst}: {seen}"
        );
    }
    for (remote, dst, sport) in [
        (true, addr(HOST_V4, UPSTREAM), None),
        (true, addr(HOST_V4, UPSTREAM), Some(RESERVED.0 + 9)),
        (false, addr(HOST_V4, UPSTREAM), None),
    ] {
        let r = host.in_ns(remote, move || fetch(dst, sport));
        assert!(r.is_err(), "{dst}: {r:?}");
    }
    assert_eq!(server.count(), 2);
    let c = sealed_counters(&host, UPSTREAM);
    assert!(
        c["blocked"].as_u64().unwrap() >= 3 && c["passed"].as_u64().unwrap() >= 1,
        "{c}"
    );
}

#[test]
fn an_upstream_on_another_host_or_on_no_address_is_refused() {
    if !privileged() {
        return;
    }
    let host = Host::new();
    let cases = [
        (
            format!("http://{REMOTE_V4}:{UPSTREAM}"),
            format!("{REMOTE_V4} is not an address of this host"),
        ),
        (
            "http://192.0.2.7:8000".to_string(),
            "192.0.2.7 is not an address of this host".to_string(),
        ),
        (
            format!("http://0.0.0.0:{UPSTREAM}"),
            "0.0.0.0 is no address to connect to".to_string(),
        ),
    ];
    for (upstream, why) in cases {
        config(&host, &upstream);
        let needle = format!(
            "{}:11:15: servers[0].upstream: {why}",
            host.config.display()
        );
        host.assert_config_refused(&[&needle]);
        // Also inside the namespace whose neighbour the remote address is.
        let out = host
            .command(MOAT, &["check", "-c", host.config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&needle), "{err}");
    }
    assert!(
        !host.bpffs.exists(),
        "nothing is attached for a refused config"
    );
}

#[test]
fn pins_of_an_earlier_version_without_the_sealed_map_are_upgraded_in_place() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(PROTECTED);
    config(&host, &format!("http://127.0.0.1:{PROTECTED}"));
    host.start_agent();
    host.kill_agent();
    // What an earlier version left: the same pins without the sealed-port map.
    std::fs::remove_file(host.bpffs.join("map_sealed")).unwrap();

    // While no agent runs, the old programs hold the protected port closed.
    assert!(
        host.in_ns(false, || fetch(addr("127.0.0.1", PROTECTED), None))
            .is_err()
    );
    assert_eq!(server.count(), 0);

    // The next agent adds the map and puts programs that use it in through the links.
    host.start_agent();
    assert!(host.bpffs.join("map_sealed").exists());
    assert!(in_reserved(
        host.in_ns(false, || fetch(addr("127.0.0.1", PROTECTED), None))
            .unwrap()
    ));
    let started = host.wait_audit("the upgrade", |r| {
        r["event"] == "started" && r["adopted_pins"] == true
    });
    let programs = started["programs"].as_array().unwrap();
    assert!(programs.iter().all(|p| p["how"] == "replaced"), "{started}");
}

#[test]
fn a_restart_moves_a_port_between_protected_sealed_and_open_as_the_config_says() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(UPSTREAM);
    let plain = "dangerous: {plaintext: true, unauthenticated: true}";
    let local = addr("127.0.0.1", UPSTREAM);
    let sealed_ports = |host: &Host| -> Vec<u64> {
        host.status()["sealed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect()
    };

    // Protected itself: steered through the agent.
    host.write_config(&format!(
        "servers:\n  - {{name: files, port: {UPSTREAM}, {plain}}}\n"
    ));
    host.start_agent();
    assert!(in_reserved(
        host.in_ns(false, move || fetch(local, None)).unwrap()
    ));
    assert!(sealed_ports(&host).is_empty());
    host.kill_agent();

    // The upstream of another protected port: sealed.
    config(&host, &format!("http://127.0.0.1:{UPSTREAM}"));
    host.start_agent();
    assert_eq!(sealed_ports(&host), [u64::from(UPSTREAM)]);
    assert!(host.in_ns(false, move || fetch(local, None)).is_err());
    assert!(in_reserved(
        host.in_ns(false, || fetch(addr("127.0.0.1", PROTECTED), None))
            .unwrap()
    ));
    assert_eq!(sealed_counters(&host, UPSTREAM)["blocked"], 1);
    host.kill_agent();

    // Nobody's upstream any more: open again.
    host.write_config(&format!(
        "servers:\n  - {{name: other, port: {PORT}, {plain}}}\n"
    ));
    host.start_agent();
    assert!(sealed_ports(&host).is_empty());
    let seen = host.in_ns(false, move || fetch(local, None)).unwrap();
    assert!(!in_reserved(seen), "direct again: {seen}");
    assert_eq!(server.count(), 3);
}
