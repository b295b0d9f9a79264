//! `moat doctor` on a plain host (no root, no agent): every check of the host is there, and
//! what the config names is checked for real: certificates that load and ones that do not, an
//! issuer whose JWKS answers and one that does not, an `agent.bpffs` off any bpf file system.
mod common;

use std::{
    io::{BufReader, Write as _},
    net::TcpListener,
    process::Command,
};

use common::*;
use serde_json::Value;

/// Serves `body` as JSON to every request, from a thread.
fn serve_json(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(&s);
            let _ = read_http(&mut r);
            let _ = (&s).write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

fn doctor(host: &Host) -> (bool, Vec<Value>) {
    let out = Command::new(MOAT)
        .args(["doctor", "--json", "-c"])
        .arg(&host.config)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.success(), v.as_array().unwrap().clone())
}

fn find<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:?}"))
}

#[test]
fn the_doctor_checks_the_host_and_what_the_config_names() {
    let host = Host::plain();
    let (cert, key, _) = cert(&host.dir.join("certs"), "localhost");
    let jwks = serve_json(
        r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}]}"#,
    );
    let write = |cert_path: &str, jwks_port: u16| {
        host.write_config(&format!(
            "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: https://localhost:{port}/mcp\n    \
             tls: {{cert: {cert_path}, key: {}}}\n    auth: {{issuer: https://idp.test, jwks_uri: 'http://127.0.0.1:{jwks_port}/jwks'}}\n",
            host.upstream(),
            key.display(),
            port = host.port(),
        ));
    };
    write(cert.to_str().unwrap(), jwks);
    let (_, checks) = doctor(&host);
    for name in [
        "kernel",
        "btf",
        "cgroup2",
        "bpffs",
        "privileges",
        "clock",
        "reserved_ports",
    ] {
        let c = find(&checks, name);
        assert!(
            ["ok", "warn", "missing"].contains(&c["outcome"].as_str().unwrap()),
            "{c}"
        );
        if c["outcome"] != "ok" {
            assert!(c["fix"].is_string(), "a fix is named: {c}");
        }
    }
    // As root (in CI), each program goes through this kernel's verifier.
    if privileged() {
        for p in [
            "program moat_steer (sk_lookup)",
            "program moat_bind4 (cgroup/bind)",
            "program moat_bind6 (cgroup/bind)",
            "program moat_connect (sock_ops)",
        ] {
            let c = find(&checks, p);
            assert_eq!(c["outcome"], "ok", "{c}");
        }
    } else {
        assert_eq!(find(&checks, "programs")["outcome"], "warn");
    }
    assert_eq!(find(&checks, "certificates files")["outcome"], "ok");
    let issuer = find(&checks, "issuer files");
    assert_eq!(issuer["outcome"], "ok", "{issuer}");
    assert!(
        issuer["detail"].as_str().unwrap().ends_with("1 keys"),
        "{issuer}"
    );
    // The plain host pins under its own directory, not on a bpf file system.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        let b = find(&checks, "bpffs");
        assert_eq!(b["outcome"], "missing", "{b}");
        assert!(
            b["detail"]
                .as_str()
                .unwrap()
                .contains("not on a bpf file system"),
            "{b}"
        );
    }

    // A certificate that is not there, an issuer that does not answer: missing, exit 1.
    let dead = free_port();
    write("/nonexistent/files.crt", dead);
    let (ok, checks) = doctor(&host);
    assert!(!ok, "exit status 1 when something is missing");
    let c = find(&checks, "certificates files");
    assert_eq!(c["outcome"], "missing", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/files.crt"),
        "{c}"
    );
    let i = find(&checks, "issuer files");
    assert_eq!(i["outcome"], "missing", "{i}");
    assert!(i["fix"].as_str().unwrap().contains("jwks_uri"), "{i}");
}
