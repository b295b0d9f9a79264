//! Tests of the connection limits: connections beyond the limit per source are closed at once
//! and counted while the earlier ones and other sources are served (privileged: sources in a
//! remote namespace), and, on a plain host (no root), connections that never finish a TLS
//! handshake or their first request's headers are cut off and give their place back, and an
//! HTTP/2 connection kept up by pings alone is closed when idle.
mod common;

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const PER_SOURCE: usize = 8;

/// Adds `lines` (each `  key: value\n`) to the agent section of the host's config.
fn with_agent_lines(host: &Host, lines: &str) {
    let text = std::fs::read_to_string(&host.config).unwrap();
    std::fs::write(
        &host.config,
        text.replacen("agent:\n", &format!("agent:\n{lines}"), 1),
    )
    .unwrap();
}

/// The samples of /metrics, by series.
fn metrics(host: &Host) -> HashMap<String, f64> {
    let addr = host.admin_addr();
    let raw = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes();
    let r = host.in_ns(false, move || exchange(addr, &raw)).unwrap();
    let Value::String(text) = r.body else {
        panic!("{r:?}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Waits until /metrics shows `series` at `value`.
fn wait_metric(host: &Host, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(host);
        if m.get(series) == Some(&value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {:?}, expected {value}",
            m.get(series)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long until the peer closes `s` (EOF or reset; at most 15 s), and what it sent before.
fn closed_after(s: &mut TcpStream) -> Result<(Duration, Vec<u8>), String> {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((start.elapsed(), got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok((start.elapsed(), got)),
            Err(e) => return Err(format!("still open after {:?}: {e}", start.elapsed())),
        }
    }
}

fn ping_on(s: &mut TcpStream, dst: SocketAddr) -> u16 {
    s.write_all(&post(
        dst,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        "",
    ))
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = std::io::BufReader::new(s);
    read_http_with_head(&mut reader)
        .and_then(|(head, _)| head.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn connections_beyond_the_limit_per_source_are_closed_at_once_and_counted() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    with_agent_lines(
        &host,
        &format!("  max_connections_per_source: {PER_SOURCE}\n  max_connections: 100\n"),
    );
    let _upstream = host.start_server(PORT);
    host.start_agent();
    let v4 = SocketAddr::new(HOST_V4.parse().unwrap(), PORT);
    let v6 = SocketAddr::new(HOST_V6.parse().unwrap(), PORT);

    // One remote address opens its share, then more.
    let mut held: Vec<TcpStream> = host.in_ns(true, move || {
        (0..PER_SOURCE)
            .map(|_| TcpStream::connect(v4).unwrap())
            .collect()
    });
    wait_metric(&host, "moat_connections_open", PER_SOURCE as f64);
    let refused = host.in_ns(true, move || {
        (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(v4).unwrap();
                // Whatever it sends, it gets no answer: it is closed.
                let _ = s.write_all(&post(v4, r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#, ""));
                closed_after(&mut s)
            })
            .collect::<Vec<_>>()
    });
    for r in &refused {
        let (after, got) = r
            .as_ref()
            .unwrap_or_else(|e| panic!("beyond the limit: {e}"));
        assert!(*after < Duration::from_secs(5), "held {after:?}");
        assert!(got.is_empty(), "answered: {}", String::from_utf8_lossy(got));
    }
    // The earlier ones are served, and so is another source (the same remote host's IPv6
    // address), and the host itself.
    for s in &mut held {
        assert_eq!(ping_on(s, v4), 200);
    }
    let other = host.in_ns(true, move || {
        let mut s = TcpStream::connect(v6).unwrap();
        ping_on(&mut s, v6)
    });
    assert_eq!(other, 200, "another source");
    let m = metrics(&host);
    assert_eq!(
        m.get(r#"moat_connections_refused_total{reason="per_source"}"#),
        Some(&4.0),
        "{m:?}"
    );
    assert_eq!(
        m.get(r#"moat_connections_refused_total{reason="total"}"#),
        Some(&0.0)
    );

    // The places are given back when connections end: the source gets in again.
    drop(held);
    wait_metric(&host, "moat_connections_open", 0.0);
    let again = host.in_ns(true, move || {
        let mut s: Vec<TcpStream> = (0..PER_SOURCE)
            .map(|_| TcpStream::connect(v4).unwrap())
            .collect();
        s.iter_mut().map(|s| ping_on(s, v4)).collect::<Vec<_>>()
    });
    assert_eq!(again, vec![200; PER_SOURCE]);

    // One record for the burst, not one per refused connection.
    host.stop_agent();
    let records: Vec<Value> = host
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "connection" && r["event"] == "refused")
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert!(
        r["conn"]["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{REMOTE_V4}:")),
        "IPv4, not IPv4-mapped: {r}"
    );
    assert_eq!(r["conn"]["dst"], v4.to_string());
    assert_eq!(r["limit"], "per_source");
    assert_eq!(r["unrecorded"], 0);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("agent.max_connections_per_source"),
        "{r}"
    );
}

#[test]
fn connections_that_never_finish_a_handshake_or_their_headers_are_cut_off() {
    let mut host = Host::plain();
    let (plain_port, plain_upstream) = (free_port(), free_port());
    let (crt, key, _) = cert(&host.dir.join("certs"), "files.test");
    let limits = "limits: {header_timeout_ms: 500, idle_timeout_ms: 60000}";
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {}\n    upstream: {}\n    tls: {{cert: {}, key: {}}}\n    \
         dangerous: {{unauthenticated: true}}\n    {limits}\n  \
         - name: plain\n    port: {plain_port}\n    upstream: http://127.0.0.1:{plain_upstream}\n    \
         dangerous: {{plaintext: true, unauthenticated: true}}\n    {limits}\n",
        host.port(),
        host.upstream(),
        crt.display(),
        key.display()
    ));
    let _a = host.start_server(host.upstream_port());
    let _b = host.start_server(plain_upstream);
    host.start_agent();
    let tls = host.addr();
    let plain = SocketAddr::from(([127, 0, 0, 1], plain_port));
    let cases: Vec<(&str, SocketAddr, &[u8])> = vec![
        ("TLS: nothing sent", tls, b"".as_slice()),
        (
            "TLS: a ClientHello cut short",
            tls,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".as_slice(),
        ),
        ("HTTP: nothing sent", plain, b"".as_slice()),
        (
            "HTTP/1.1: headers that never end",
            plain,
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n".as_slice(),
        ),
        (
            "HTTP/2: a preface cut short",
            plain,
            b"PRI * HTTP/2.0\r\n".as_slice(),
        ),
        (
            "HTTP/2: a preface and settings, then no request",
            plain,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".as_slice(),
        ),
    ];
    let n = cases.len();
    // All at once: each holds its place until it is cut off.
    let results = host.in_ns(false, move || {
        let mut open: Vec<(&str, TcpStream)> = cases
            .into_iter()
            .map(|(what, dst, bytes)| {
                let mut s = TcpStream::connect(dst).unwrap();
                s.write_all(bytes).unwrap();
                (what, s)
            })
            .collect();
        open.iter_mut()
            .map(|(what, s)| (what.to_string(), closed_after(s)))
            .collect::<Vec<_>>()
    });
    assert_eq!(results.len(), n);
    for (what, r) in results {
        let (after, _) = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        // The idle limit is a minute: these are cut off by the header limit.
        assert!(after < Duration::from_secs(10), "{what}: held {after:?}");
    }
    // Their tasks ended and gave their places back.
    wait_metric(&host, "moat_connections_open", 0.0);
    let m = metrics(&host);
    assert_eq!(
        m.get(r#"moat_tls_handshakes_total{server="files",result="error"}"#),
        Some(&2.0)
    );
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one HTTP/2 frame: (type, flags, stream); None at EOF, reset or timeout.
fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream))
}

#[test]
fn an_http2_connection_kept_up_by_pings_only_is_closed_when_idle() {
    let mut host = Host::plain();
    host.write_config(&format!(
        "servers:\n  - name: plain\n    port: {}\n    upstream: {}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n    \
         limits: {{header_timeout_ms: 5000, idle_timeout_ms: 1000}}\n",
        host.port(),
        host.upstream()
    ));
    let _upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let dst = host.addr();
    let (answered, closed_after) = host.in_ns(false, move || {
        let mut s = TcpStream::connect(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // Prior knowledge: the preface, empty settings, and one POST (HPACK: indexed and
        // literal fields, no Huffman coding).
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let mut block = vec![0x83, 0x86, 0x04, 4];
        block.extend(b"/mcp");
        let authority = dst.to_string();
        block.extend([0x01, authority.len() as u8]);
        block.extend(authority.as_bytes());
        for (name, value) in [
            (&[0x0f, 0x10][..], "application/json"),
            (&[0x0f, 0x04][..], "application/json, text/event-stream"),
            (&[0x0f, 0x0d][..], &body.len().to_string()),
        ] {
            block.extend(name);
            block.push(value.len() as u8);
            block.extend(value.as_bytes());
        }
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(4, 0, 0, &[]));
        out.extend(frame(1, 0x4, 1, &block));
        out.extend(frame(0, 0x1, 1, body));
        s.write_all(&out).unwrap();
        // Until the response ends (settings acknowledged on the way).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answered = false;
        while !answered && Instant::now() < deadline {
            match read_frame(&mut s) {
                Some((4, 0, 0)) => s.write_all(&frame(4, 0x1, 0, &[])).unwrap(),
                Some((0, flags, 1)) if flags & 0x1 != 0 => answered = true,
                Some((1, flags, 1)) if flags & 0x1 != 0 => answered = true,
                _ => {}
            }
        }
        // Then only pings, five a second, each answered: bytes move, no request.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if s.write_all(&frame(6, 0, 0, &[7; 8])).is_err() {
                break;
            }
            match read_frame(&mut s) {
                Some((7, _, _)) => break, // GOAWAY
                Some(_) => {}
                None => {
                    let mut b = [0u8; 1];
                    s.set_nonblocking(true).unwrap();
                    let gone = matches!(s.read(&mut b), Ok(0))
                        || matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::ConnectionReset);
                    s.set_nonblocking(false).unwrap();
                    if gone {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (answered, start.elapsed())
    });
    assert!(answered, "the request was answered over HTTP/2");
    assert!(
        closed_after < Duration::from_secs(5),
        "pings kept an idle connection for {closed_after:?}"
    );
}

/// A remote client that vanishes (its network gone, no FIN, no RST) while its stream flows is
/// cut off within `limits.unresponsive_client_ms` (what Moat sends goes unacknowledged): its
/// record is written as disconnected long before the upstream's stream would have ended.
#[test]
fn a_client_that_vanishes_is_cut_off_and_recorded() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    host.write_config(&format!(
        "{}    limits: {{unresponsive_client_ms: 3000}}\n",
        host.default_servers()
    ));
    let _upstream = host.start_server(PORT);
    host.start_agent();
    let v4 = SocketAddr::new(HOST_V4.parse().unwrap(), PORT);
    // The upstream answers `stream` with an event every 50 ms for 30 s.
    let mut s = host.in_ns(true, move || {
        let mut s = TcpStream::connect(v4).unwrap();
        s.write_all(&post(
            v4,
            r#"{"jsonrpc":"2.0","id":1,"method":"stream"}"#,
            "",
        ))
        .unwrap();
        s
    });
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    // The client's network goes away: the remote end of the veth pair is taken down, and the
    // client reads nothing more (its socket stays open, as a vanished host's would).
    let remote = host
        .remote_netns
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let gone = Instant::now();
    let down = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ip -n {remote} link set dev \"$(ip -n {remote} -o link show type veth | cut -d: -f2 | cut -d@ -f1 | tr -d ' ')\" down"
        ))
        .status()
        .unwrap();
    assert!(down.success());
    let record = host.wait_audit("the vanished client's stream", |r| {
        r["kind"] == "request" && r["mcp"]["method"] == "stream"
    });
    let after = gone.elapsed();
    assert_eq!(record["outcome"], "client_disconnected", "{record}");
    assert!(after < Duration::from_secs(12), "noticed after {after:?}");
    drop(s);
}

/// Under an open-file limit too low for `agent.max_connections`, the agent takes only as many
/// connections as fit (two descriptors each, some kept for the audit log and the rest) and
/// closes the others at once, counted; nothing is left waiting in the kernel's queue, and the
/// audit log keeps working.
#[test]
fn connections_beyond_what_descriptors_allow_are_refused_at_once() {
    let mut host = Host::plain();
    let _upstream = host.start_server(host.upstream_port());
    // (600 - 512 kept) / 2 = 44 connections. As root the agent would raise the hard limit
    // itself: run it without that privilege.
    let limited: &[&str] = if nix::unistd::geteuid().is_root() {
        &[
            "setpriv",
            "--bounding-set=-sys_resource",
            "--inh-caps=-sys_resource",
            "prlimit",
            "--nofile=600:600",
        ]
    } else {
        &["prlimit", "--nofile=600:600"]
    };
    host.start_agent_under(limited, &[]);
    let addr = host.addr();
    assert!(
        host.agent_log()
            .contains("does not fit the open-file limit"),
        "{}",
        host.agent_log()
    );
    let mut held: Vec<TcpStream> = (0..44).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut held {
        assert_eq!(ping_on(s, addr), 200);
    }
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(&post(
            addr,
            r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#,
            "",
        ));
        let (after, got) = closed_after(&mut s).unwrap();
        assert!(after < Duration::from_secs(2), "left waiting {after:?}");
        assert!(
            got.is_empty(),
            "answered: {}",
            String::from_utf8_lossy(&got)
        );
    }
    let m = metrics(&host);
    let refused: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("moat_connections_refused_total"))
        .map(|(_, v)| v)
        .sum();
    assert!(refused >= 6.0, "{m:?}");
    // Places come back as connections end; requests are still audited.
    held.truncate(40);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect(addr).unwrap();
    assert_eq!(ping_on(&mut s, addr), 200);
    // Every answered request has its record (written by the audit writer shortly after).
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.request_records().len() < 45 {
        assert!(
            Instant::now() < deadline,
            "{} request records",
            host.request_records().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
