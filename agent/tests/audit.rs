//! Tests of the audit trail: a full disk under `fail_closed` refuses requests (503) and
//! forwards nothing unaudited; when space returns, service and the hash chain resume with
//! every record written (privileged: a tmpfs is mounted). Syslog and standard output sinks,
//! rotation, redaction and the chain head, on a plain host (no root).
mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

fn ping(host: &Host, id: u32) -> u16 {
    let dst = host.addr();
    let raw = post(
        dst,
        &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
        "",
    );
    host.in_ns(false, move || exchange(dst, &raw))
        .map_or(0, |r| r.status)
}

#[test]
fn a_full_disk_refuses_requests_until_records_can_be_written_again() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let fs = Tmpfs::mount(&host.dir.join("auditfs"), "256k");
    host.audit = fs.0.join("audit.jsonl");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {PORT}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
    ));
    let upstream = host.start_server(PORT);
    host.start_agent();
    let mut sent = 0;
    assert_eq!(ping(&host, 1), 200);
    sent += 1;

    let filler = fs.fill();
    // Records already queued may still fit in the last free bytes; soon writes fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = ping(&host, 2);
        sent += 1;
        if s == 503 {
            break;
        }
        assert_eq!(s, 200);
        assert!(Instant::now() < deadline, "never refused with a full disk");
        std::thread::sleep(Duration::from_millis(20));
    }
    let forwarded = upstream.count();
    for i in 0..5 {
        assert_eq!(ping(&host, 10 + i), 503, "refused while the disk is full");
        sent += 1;
    }
    assert_eq!(upstream.count(), forwarded, "nothing forwarded unaudited");
    assert!(
        host.agent_log().contains("cannot write the audit log"),
        "{}",
        host.agent_log()
    );

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = ping(&host, 3);
        sent += 1;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    host.stop_agent();
    let records: Vec<Value> = host.request_records();
    assert_eq!(
        records.len(),
        sent,
        "every request has its record, the refused ones too"
    );
    assert_eq!(
        records.iter().filter(|r| r["status"] == 503).count(),
        sent - upstream.count(),
        "each request not forwarded was refused with 503, and audited"
    );
    let out = Command::new(MOAT)
        .args(["audit", "verify"])
        .arg(&host.audit)
        .output()
        .unwrap();
    assert!(out.status.success(), "the chain is unbroken: {out:?}");
}

/// Under `drop`, requests go on while the disk is full; the loss is counted in the first
/// record written afterwards, and the chain shows the gap.
#[test]
fn under_drop_the_loss_is_counted_and_the_chain_shows_it() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let fs = Tmpfs::mount(&host.dir.join("auditfs"), "256k");
    host.audit = fs.0.join("audit.jsonl");
    host.write_config_with_audit(
        &format!(
            "servers:\n  - name: files\n    port: {PORT}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
        ),
        "  on_failure: drop\n",
    );
    let _upstream = host.start_server(PORT);
    host.start_agent();
    assert_eq!(ping(&host, 1), 200);
    let filler = fs.fill();
    for i in 0..30 {
        assert_eq!(ping(&host, 100 + i), 200, "requests go on under drop");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ping(&host, 2), 200);
    host.stop_agent();
    let text = std::fs::read_to_string(&host.audit).unwrap();
    let notice: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "audit" && r["event"] == "records_dropped")
        .collect();
    assert_eq!(notice.len(), 1, "{text}");
    assert!(notice[0]["count"].as_u64().unwrap() > 0, "{}", notice[0]);
    let out = Command::new(MOAT)
        .args(["audit", "verify"])
        .arg(&host.audit)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the chain shows the gap: {out:?}"
    );
}

/// Secrets planted in tool arguments never reach the audit log; the rest of the arguments do.
#[test]
fn secrets_in_tool_arguments_are_redacted() {
    let mut host = Host::plain();
    host.write_config_with_audit(
        &host.default_servers(),
        "  redact: {keys: [ssn], patterns: [{name: ticket, pattern: 'TCK-[0-9]{6}'}]}\n",
    );
    let _upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let pem = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----";
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{{"name":"deploy","arguments":{{"path":"/srv/app","env":"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE","auth":"Bearer abc.def-ghi","key":"{pem}","ssn":"078-05-1120","note":"TCK-123456"}}}}}}"#
    );
    let dst = host.addr();
    let raw = post(dst, &body, "");
    let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let rec = host.wait_audit("the call", |r| r["mcp"]["tool"] == "deploy");
    assert_eq!(rec["mcp"]["arguments"]["path"], "/srv/app", "{rec}");
    let log = std::fs::read_to_string(&host.audit).unwrap();
    for secret in [
        "AKIAIOSFODNN7EXAMPLE",
        "abc.def-ghi",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "078-05-1120",
        "TCK-123456",
    ] {
        assert!(!log.contains(secret), "{secret} reached the log: {rec}");
    }
    assert!(log.contains("[REDACTED:aws_access_key]"), "{rec}");
}

/// 10,000 mixed requests (allowed, denied by policy, without a token, and streams the client
/// leaves mid-way): exactly one record each, and one unbroken chain.
#[test]
fn ten_thousand_mixed_requests_leave_one_record_each_in_one_chain() {
    use std::io::Read as _;
    const N: usize = 10_000;
    let mut host = Host::plain();
    let policy = host.dir.join("mixed.cedar");
    std::fs::write(
        &policy,
        "permit (principal, action in [Action::\"ping\", Action::\"other\"], resource);\n\
         permit (principal, action == Action::\"tools/call\", resource == Tool::\"echo\");\n",
    )
    .unwrap();
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    policy: {{file: {}}}\n",
        host.upstream(),
        policy.display(),
        port = host.port(),
    ));
    let _upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let out = run(Command::new(MOAT)
        .args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "files", "--sub", "alice"]));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let dst = host.addr();
    let answered = host.in_ns(false, move || {
        let auth = format!("authorization: Bearer {token}\r\n");
        let mut answered = 0;
        for i in 0..N {
            let call = |tool: &str| {
                format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
            };
            if i % 100 == 8 {
                // A stream the client leaves after its first bytes.
                let mut s = std::net::TcpStream::connect(dst).unwrap();
                let body = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"stream"}}"#);
                s.write_all(&post(dst, &body, &auth)).unwrap();
                let mut buf = [0u8; 64];
                if s.read(&mut buf).is_ok_and(|n| n > 0) {
                    answered += 1;
                }
                continue;
            }
            let raw = match i % 10 {
                6 => post(dst, &call("rm"), &auth),
                7 => post(dst, &call("echo"), ""),
                9 => post(dst, &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#), &auth),
                _ => post(dst, &call("echo"), &auth),
            };
            if exchange(dst, &raw).is_ok_and(|r| r.status != 0) {
                answered += 1;
            }
        }
        answered
    });
    assert_eq!(answered, N, "every request got an answer");
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = || host.request_records().len();
    while count() < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    host.stop_agent();
    let records: Vec<Value> = host.request_records();
    assert_eq!(records.len(), N, "one record per request");
    let by = |f: &dyn Fn(&Value) -> bool| records.iter().filter(|r| f(r)).count();
    assert_eq!(
        by(&|r| r["outcome"] == "client_disconnected"),
        N / 100,
        "streams left mid-way"
    );
    assert_eq!(by(&|r| r["status"] == 401), N / 10);
    assert_eq!(
        by(&|r| r["decision"]["effect"] == "deny" && r["mcp"]["tool"] == "rm"),
        N / 10,
        "denied by policy"
    );
    let out = Command::new(MOAT)
        .args(["audit", "verify"])
        .arg(&host.audit)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `moat audit verify` on `path`: Ok(its report) or Err(why it failed).
fn verify(path: &Path) -> Result<String, String> {
    let out = Command::new(MOAT)
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Runs the agent twice with `audit` as its audit section, pings it `n` times each run, and
/// waits until `written()` holds both runs' `stopped` records; returns them.
fn two_runs(host: &mut Host, audit: &str, written: impl Fn() -> Vec<Value>, n: u32) -> Vec<Value> {
    host.write_config_with_audit_section(&host.default_servers(), audit);
    let _upstream = host.start_server(host.upstream_port());
    for _ in 0..2 {
        host.start_agent();
        for i in 0..n {
            assert_eq!(ping(host, i), 200);
        }
        host.stop_agent();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = written();
        let stopped = records.iter().filter(|r| r["event"] == "stopped").count();
        if stopped == 2 {
            return records;
        }
        assert!(Instant::now() < deadline, "{} records", records.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// rsyslogd, configured as a log shipper would be: RFC 5424 over a unix datagram socket
/// (`dir/log.sock`), keeping each message's MSG (the record) as it came in `dir/received.jsonl`
/// and each message's parsed header in `dir/heads.log`. Stopped (SIGTERM: it writes what it
/// holds) when dropped.
struct Rsyslog {
    child: std::process::Child,
    socket: PathBuf,
    received: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("log.sock");
        let received = dir.join("received.jsonl");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{dir}\" maxMessageSize=\"1m\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{socket}\" UseSpecialParser=\"off\" ParseHostname=\"on\")\n\
                 template(name=\"record\" type=\"string\" string=\"%msg%\\n\")\n\
                 template(name=\"head\" type=\"string\" string=\"%syslogfacility-text% %syslogseverity-text% %app-name% %msgid%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{received}\" template=\"record\")\n\
                 *.* action(type=\"omfile\" file=\"{dir}/heads.log\" template=\"head\")\n",
                dir = dir.display(),
                socket = socket.display(),
                received = received.display(),
            ),
        )
        .unwrap();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("rsyslog.log"))
            .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rsyslogd (Debian's rsyslog; `cargo xtask setup` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not open {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            socket,
            received,
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn syslog_section(socket: &Path) -> String {
    format!(
        "  sink: syslog\n  syslog: {{socket: {}, facility: local3}}\n",
        socket.display()
    )
}

#[test]
fn records_sent_to_syslog_reach_rsyslog_as_one_verifiable_chain() {
    let mut host = Host::plain();
    let rsyslog = Rsyslog::start(&host.dir);
    let received = rsyslog.received.clone();
    let audit = syslog_section(&rsyslog.socket);
    let records = two_runs(&mut host, &audit, || records_in(&received), 20);
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "request").count(),
        40
    );
    let report = verify(&received).expect("one chain across both runs");
    assert!(
        report.contains(&format!("{} records", records.len())),
        "{report}"
    );
    // rsyslog parsed each message as RFC 5424: facility, severity, app name, msgid.
    let heads = std::fs::read_to_string(host.dir.join("heads.log")).unwrap();
    assert!(
        heads.lines().any(|l| l == "local3 info moat request"),
        "{heads}"
    );
    assert!(
        heads.lines().all(|l| l.starts_with("local3 info moat ")),
        "{heads}"
    );
}

/// The collector goes away: under `fail_closed` requests are refused (503) and nothing is
/// forwarded unaudited; when it is back, service resumes and it gets every record.
#[test]
fn a_syslog_collector_that_goes_away_refuses_requests_until_it_is_back() {
    let mut host = Host::plain();
    let rsyslog = Rsyslog::start(&host.dir);
    let received = rsyslog.received.clone();
    host.write_config_with_audit_section(&host.default_servers(), &syslog_section(&rsyslog.socket));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    let mut sent = 0;
    let mut ok = 0;
    let mut send = |host: &Host| {
        sent += 1;
        let s = ping(host, sent);
        ok += u32::from(s == 200);
        s
    };
    for _ in 0..3 {
        assert_eq!(send(&host), 200);
    }
    // The collector stops once it has what was sent (what it received but had not yet read
    // when it stopped would be lost with it: the chain would show that gap).
    let deadline = Instant::now() + Duration::from_secs(10);
    while records_in(&received)
        .iter()
        .filter(|r| r["kind"] == "request")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "rsyslog did not write the records"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rsyslog);
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(&host) != 503 {
        assert!(
            Instant::now() < deadline,
            "still served with the collector gone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        assert_eq!(send(&host), 503);
    }

    let _rsyslog = Rsyslog::start(&host.dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(&host) != 200 {
        assert!(
            Instant::now() < deadline,
            "not served with the collector back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.stop_agent();
    assert_eq!(upstream.count() as u32, ok, "nothing forwarded unaudited");

    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records = records_in(&received);
        if records.iter().any(|r| r["event"] == "stopped") {
            break records;
        }
        assert!(Instant::now() < deadline, "{} records", records.len());
        std::thread::sleep(Duration::from_millis(100));
    };
    let requests = records.iter().filter(|r| r["kind"] == "request").count();
    assert_eq!(
        requests as u32, sent,
        "one record per request, the refused ones too"
    );
    verify(&received).expect("the chain is whole");
}

#[test]
fn records_on_standard_output_form_one_verifiable_chain() {
    let mut host = Host::plain();
    let out = host.dir.join("agent.out");
    let records = two_runs(&mut host, "  sink: stdout\n", || records_in(&out), 20);
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "request").count(),
        40
    );
    // The agent's own log stays on standard error.
    assert!(host.agent_log().contains("INFO"), "{}", host.agent_log());
    verify(&out).expect("one chain across both runs");
}

#[test]
fn a_rotated_log_verifies_across_its_files_given_in_any_order() {
    let mut host = Host::plain();
    host.audit = host.dir.join("log/audit.jsonl");
    let audit = format!(
        "  path: {}\n  rotate: {{max_bytes: 8192}}\n",
        host.audit.display()
    );
    let dir = host.dir.join("log");
    let files = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let all = two_runs(
        &mut host,
        &audit,
        || files().iter().flat_map(|f| records_in(f)).collect(),
        60,
    );
    let mut files = files();
    assert!(files.len() >= 4, "{files:?}");
    files.reverse();
    assert_eq!(all.iter().filter(|r| r["kind"] == "request").count(), 120);
    let out = Command::new(MOAT)
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("{} records", all.len())),
        "{report}"
    );

    // Retention removed the oldest file: the rest verifies only when told so, and still
    // catches a file missing further on.
    files.sort();
    let oldest = files.remove(0);
    let first = records_in(&oldest).len();
    let verify = |args: &[&str], files: &[PathBuf]| {
        Command::new(MOAT)
            .args(["audit", "verify"])
            .args(args)
            .args(files)
            .output()
            .unwrap()
    };
    let out = verify(&[], &files);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not start here"));
    let out = verify(&["--mid-chain"], &files);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("{} records", all.len() - first)),
        "{report}"
    );
    files.remove(1);
    assert!(
        !verify(&["--mid-chain"], &files).status.success(),
        "a gap further on"
    );
}

#[test]
fn json_log_lines_carry_the_request_id_of_their_audit_record() {
    let mut host = Host::plain();
    // No server listens upstream: the request fails, and the agent logs why.
    host.start_agent_with(&["--log-format", "json"]);
    assert_eq!(ping(&host, 1), 502);
    let rec = host.wait_audit("the failed request", |r| r["kind"] == "request");
    let id = rec["request_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{rec}");
    assert_eq!(ping(&host, 2), 502);
    host.stop_agent();
    let ids: Vec<Value> = host
        .request_records()
        .iter()
        .map(|r| r["request_id"].clone())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "each request has its own id");

    let log = host.agent_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warned = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["span"]["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no log line for request {id}: {log}"));
    assert_eq!(warned["span"]["server"], "files");
    assert!(
        warned["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{warned}"
    );
}

/// `moat audit verify` with and without the chain head, on a real run's log: intact, with its
/// last records cut off, with its last record edited or replaced by a well-formed forgery;
/// and a log cut short while the agent was stopped, found by the agent when it starts again.
#[test]
fn the_end_of_the_log_is_checked_against_the_chain_head() {
    let mut host = Host::plain();
    let _upstream = host.start_server(host.upstream_port());
    host.start_agent();
    for i in 0..5 {
        assert_eq!(ping(&host, i), 200);
    }
    host.stop_agent();
    let head = host.dir.join("state/audit-head");
    let config = host.config.to_str().unwrap().to_string();
    let verify_with = |args: &[&str], file: &Path| -> Result<String, String> {
        let out = Command::new(MOAT)
            .args(["audit", "verify"])
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => Ok(text),
            Some(1) => Err(text),
            other => panic!("exit {other:?}: {text}"),
        }
    };
    let records = host.audit_records();
    let n = records.len();
    assert!(n >= 7, "started, 5 requests, stopped: {n}");

    // Intact: the last record is the head's.
    let report = verify_with(&["-c", &config], &host.audit).unwrap();
    assert!(
        report.contains(&format!("ok: {n} records"))
            && report.contains(&format!("ending at the chain head (record {n})")),
        "{report}"
    );
    let report = verify_with(&["--head", head.to_str().unwrap()], &host.audit).unwrap();
    assert!(report.contains("ending at the chain head"), "{report}");
    // Without a head, it passes but says what it could not check.
    let report = verify_with(&[], &host.audit).unwrap();
    assert!(
        report.contains("not checked against a chain head"),
        "{report}"
    );

    let text = std::fs::read_to_string(&host.audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let copy = host.dir.join("copy.jsonl");
    let write = |lines: &[&str]| {
        std::fs::write(
            &copy,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap()
    };
    // The last 3 records cut off: the chain alone is whole, the head shows the loss.
    write(&lines[..n - 3]);
    verify_with(&[], &copy).expect("the chain alone cannot tell");
    let e = verify_with(&["-c", &config], &copy).unwrap_err();
    assert!(e.contains("3 records missing at the end"), "{e}");
    assert!(
        e.contains(&format!("record {}", n - 3)) && e.contains(&format!("names record {n}")),
        "{e}"
    );
    // The last record edited.
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[n - 1] = edited[n - 1].replace("\"stopped\"", "\"stoppeD\"");
    assert_ne!(edited[n - 1], lines[n - 1]);
    write(&edited.iter().map(String::as_str).collect::<Vec<_>>());
    let e = verify_with(&["-c", &config], &copy).unwrap_err();
    assert!(e.contains("altered"), "{e}");
    // The last record replaced by a forgery sealed into the chain: only the head shows it.
    let last: Value = serde_json::from_str(lines[n - 1]).unwrap();
    let prev = last["prev"].as_str().unwrap();
    let mut forged = format!(
        r#"{{"ts":{},"seq":{n},"kind":"config","event":"stopped","pid":1}}"#,
        last["ts"]
    )
    .into_bytes();
    let mut chain = moat::AuditChain {
        seq: n as u64 - 1,
        prev: (0..32)
            .map(|i| u8::from_str_radix(&prev[i * 2..i * 2 + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap(),
    };
    chain.seal(&mut forged);
    let forged = String::from_utf8(forged).unwrap();
    write(&[&lines[..n - 1], &[forged.trim_end()]].concat());
    verify_with(&[], &copy).expect("a well-formed forgery keeps the chain whole");
    let e = verify_with(&["-c", &config], &copy).unwrap_err();
    assert!(e.contains("does not match the chain head"), "{e}");

    // Cut short while the agent was stopped, then started again: it records what it found,
    // and the log fails verification there from then on.
    std::fs::write(
        &host.audit,
        lines[..n - 2]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    host.start_agent();
    assert_eq!(ping(&host, 9), 200);
    host.stop_agent();
    assert!(
        host.agent_log()
            .contains("does not continue the chain head"),
        "{}",
        host.agent_log()
    );
    let e = verify_with(&["-c", &config], &host.audit).unwrap_err();
    assert!(
        e.contains(&format!(
            "the log ended at record {} but its chain head named record {n}",
            n - 2
        )),
        "{e}"
    );
    let e = verify_with(&[], &host.audit).unwrap_err();
    assert!(e.contains(&format!("audit.jsonl:{}:", n - 1)), "{e}");
}
