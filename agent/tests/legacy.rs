//! End-to-end tests of the legacy HTTP+SSE transport with a forbidden tool, through the real
//! SDK clients (TypeScript, Python) and the inspector, against real servers in `sse` mode, on a
//! plain host (no root): the forbidden tool is hidden from the list that comes on the stream,
//! and a call to it fails at once with the usual error, on the stream where these clients read
//! answers.
mod common;

use std::{path::PathBuf, process::Command};

use common::*;
use serde_json::{Value, json};

/// A plaintext server with the local issuer and a policy permitting everything but calls to
/// `forbidden`, serving the legacy transport at /sse.
fn host(forbidden: &str) -> Host {
    let host = Host::plain();
    let policy = host.dir.join("policy.cedar");
    std::fs::write(
        &policy,
        format!(
            "@id(\"all\")\npermit (principal, action, resource);\n\
             @id(\"no-secrets\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"{forbidden}\");\n"
        ),
    )
    .unwrap();
    host.write_config(&format!(
        "servers:\n  - name: legacy\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         legacy_sse: /sse\n    dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    \
         policy: {{file: {}}}\n",
        host.upstream(),
        policy.display(),
        port = host.port(),
    ));
    host
}

fn token(host: &Host, sub: &str) -> String {
    let out = run(Command::new(MOAT)
        .args(["token", "mint", "-c"])
        .arg(&host.config)
        .args(["--server", "legacy", "--sub", sub]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn npm() -> PathBuf {
    fixtures().join("npm/node_modules")
}

/// Runs a command in the namespace; its stdout parsed as JSON, or the whole output on failure.
fn json_out(mut cmd: Command) -> Result<Value, String> {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if !out.status.success() {
        return Err(format!(
            "{:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        ));
    }
    serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .map_err(|e| format!("{e}: {stdout}"))
}

fn ts(host: &Host, token: &str, args: &[&str]) -> Result<Value, String> {
    let url = format!("http://{}/sse", host.addr());
    let auth = format!("Authorization: Bearer {token}");
    let cmd = node_script(
        host,
        "ts_client.mjs",
        &[
            &[url.as_str()],
            args,
            &[
                "--transport",
                "sse",
                "--header",
                &auth,
                "--timeout",
                "10000",
            ],
        ]
        .concat(),
    );
    json_out(cmd)
}

fn python_client(host: &Host, token: &str, args: &[&str]) -> Result<Value, String> {
    let url = format!("http://{}/sse", host.addr());
    let auth = format!("Authorization: Bearer {token}");
    let script = script("mcp_client.py");
    let cmd = host.command(
        python().to_str().unwrap(),
        &[
            &[script.to_str().unwrap(), &url],
            args,
            &[
                "--transport",
                "sse",
                "--header",
                &auth,
                "--request-timeout",
                "10",
            ],
        ]
        .concat(),
    );
    json_out(cmd)
}

fn inspector(host: &Host, token: &str, args: &[&str]) -> std::process::Output {
    let url = format!("http://{}/sse", host.addr());
    let auth = format!("Authorization: Bearer {token}");
    let home = host.dir.join("inspector-home");
    std::fs::create_dir_all(&home).unwrap();
    let bin = npm().join(".bin/mcp-inspector");
    let mut cmd = host.command(
        bin.to_str().unwrap(),
        &[
            &["--cli", url.as_str(), "--transport", "sse"],
            args,
            &[
                "--format",
                "json",
                "-q",
                "--stored-auth-only",
                "--header",
                &auth,
            ],
        ]
        .concat(),
    );
    cmd.env("HOME", &home).env("PATH", node_path());
    cmd.output().unwrap()
}

fn names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .unwrap_or_else(|| panic!("no tool list: {tools}"))
        .iter()
        .map(|t| t.as_str().or(t["name"].as_str()).unwrap().to_string())
        .collect()
}

/// The TypeScript and Python SDK clients and the inspector, over the legacy transport: the
/// forbidden tool is not in the list that came on the stream, a call to it fails at once with
/// the usual error, and the audit log has the filtered list and the denial.
fn clients_see_the_policy(host: &Host, forbidden: &str, allowed: (&str, &str)) {
    let t = token(host, "alice");
    let (tool, args) = allowed;
    let hidden = |tools: &Value| !names(tools).iter().any(|n| n == forbidden);
    let unknown = format!("Unknown tool: {forbidden}");

    // TypeScript SDK client.
    let listed = ts(host, &t, &["list"]).unwrap();
    assert!(
        names(&listed["tools"]).iter().any(|n| n == tool),
        "{listed}"
    );
    assert!(hidden(&listed["tools"]), "{listed}");
    let started = std::time::Instant::now();
    let err = ts(host, &t, &["call", "--tool", forbidden]).unwrap_err();
    assert!(
        err.contains("\"code\":-32602") && err.contains(&unknown),
        "{err}"
    );
    assert!(err.contains("\"timed_out\":false"), "{err}");
    assert!(started.elapsed().as_secs() < 8, "answered at once: {err}");
    let ok = ts(host, &t, &["call", "--tool", tool, "--args", args]).unwrap();
    assert_eq!(ok["is_error"], false, "{ok}");
    assert!(
        ok["text"].as_str().is_some_and(|t| t.contains("hi")),
        "{ok}"
    );

    // Python SDK client.
    let r = python_client(host, &t, &["call", "--tool", forbidden, "--expect-error"]).unwrap();
    assert_eq!(r["call_error"]["code"], -32602, "{r}");
    assert_eq!(r["call_error"]["message"], unknown, "{r}");
    assert!(hidden(&r["tools"]), "{r}");

    // The inspector.
    let out = inspector(host, &t, &["--method", "tools/list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(listed.contains(&format!("\"{tool}\"")), "{listed}");
    assert!(!listed.contains(&format!("\"{forbidden}\"")), "{listed}");
    let started = std::time::Instant::now();
    let out = inspector(
        host,
        &t,
        &["--method", "tools/call", "--tool-name", forbidden],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    // The inspector looks the tool up in the (filtered) list before calling it.
    assert!(
        text.contains(&unknown) || text.contains(&format!("Tool '{forbidden}' not found")),
        "{text}"
    );
    assert!(started.elapsed().as_secs() < 8, "answered at once: {text}");

    // Audit: the listings' records name what was listed (after filtering); the denied calls
    // are denials answered on the stream, never forwarded.
    let listing = host.wait_audit("a listing", |r| {
        r["mcp"]["method"] == "tools/list" && r["tools_listed"].is_array()
    });
    assert!(hidden(&listing["tools_listed"]), "{listing}");
    let hid: Vec<&Value> = listing["hidden"].as_array().unwrap().iter().collect();
    assert!(
        hid.iter()
            .any(|h| h["name"] == forbidden && h["policies"] == json!(["no-secrets"])),
        "{listing}"
    );
    let denied: Vec<Value> = host
        .request_records()
        .into_iter()
        .filter(|r| r["mcp"]["tool"] == forbidden)
        .collect();
    assert!(denied.len() >= 2, "the SDK clients' calls: {denied:?}");
    for d in &denied {
        assert_eq!(d["decision"]["effect"], "deny", "{d}");
        assert_eq!(d["decision"]["policies"], json!(["no-secrets"]), "{d}");
        assert_eq!(d["status"], 202, "{d}");
        assert!(d["upstream"].is_null(), "{d}");
    }
}

#[test]
fn server_everything_in_sse_mode() {
    let mut host = host("get-env");
    let bin = npm().join(".bin/mcp-server-everything");
    let mut cmd = host.command(
        "env",
        &[
            &format!("PORT={}", host.upstream_port()),
            bin.to_str().unwrap(),
            "sse",
        ],
    );
    cmd.env("PATH", node_path());
    host.spawn(cmd, "everything.log");
    host.wait_port(host.upstream_port(), "server-everything (SSE)");
    host.start_agent();
    clients_see_the_policy(&host, "get-env", ("echo", r#"{"message":"hi"}"#));
}

#[test]
fn the_typescript_sdk_server_in_sse_mode() {
    let mut host = host("secret_tool");
    let log = host.dir.join("ts-upstream.jsonl");
    start_ts_server(&mut host, &["--sse"], &log);
    host.start_agent();
    clients_see_the_policy(&host, "secret_tool", ("echo", r#"{"text":"hi"}"#));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.lines()
            .any(|l| l.contains("\"handled\"") && l.contains("secret_tool")),
        "the forbidden tool ran: {log}"
    );
}
