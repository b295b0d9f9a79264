//! `cargo xtask demo`: Moat protecting a real MCP server (the npm "everything" server) in a
//! private network namespace: steered requests, tokens required, what the server offers pinned,
//! a denied bypass, fail closed, recovery.
use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Result,
    host::{Lab, build_moat, workspace},
    sh,
};

const PORT: u16 = 3001;

pub fn run() -> Result {
    let moat = build_moat()?;
    // Installed by `cargo xtask setup` with the test fixtures.
    let server = crate::fixtures::npm_bin("mcp-server-everything");
    let certs = workspace().join("target/moat-demo-certs");
    sh(Command::new(&moat)
        .args(["cert", "self-signed", "localhost", "--out"])
        .arg(&certs)
        .stdout(std::process::Stdio::null()))?;
    // Everyone may use the server, except its tool that reads the server's environment.
    let policy = certs.join("everything.cedar");
    std::fs::write(
        &policy,
        "@id(\"everyone\")\npermit (principal, action, resource);\n\n\
         @id(\"no-environment\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"get-env\");\n",
    )
    .map_err(|e| format!("{}: {e}", policy.display()))?;
    let servers = format!(
        "servers:\n  - name: everything\n    port: {PORT}\n    public_url: https://localhost:{PORT}/mcp\n    tls: {{cert: {}, key: {}}}\n    auth: {{issuer: local, scopes_supported: [mcp:tools], required_scopes: [mcp:tools]}}\n    policy: {{file: {}}}\n    integrity: {{mode: enforce, pin: first_use}}\n\
         authorization_server:\n  issuer: https://localhost:8443\n  tls: {{cert: {}, key: {}}}\n",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display(),
        policy.display(),
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display(),
    );
    let mut lab = Lab::new("moat-demo", moat, &servers)?;
    let direct = Target {
        url: format!("http://127.0.0.1:{PORT}/mcp"),
        cafile: None,
        token: None,
    };
    let anonymous = Target {
        url: format!("https://localhost:{PORT}/mcp"),
        cafile: Some(certs.join("localhost-ca.crt")),
        token: None,
    };

    step("1. An unmodified MCP server (server-everything, Streamable HTTP) listens on port 3001");
    let mut cmd = lab.command("env");
    cmd.arg(format!("PORT={PORT}"))
        .arg(&server)
        .arg("streamableHttp");
    lab.spawn(cmd, "server.log")?;
    wait_for(&lab, "the MCP server to listen", || {
        mcp_initialize(&lab, &direct).is_ok()
    })?;
    say("without Moat, anyone reaches it directly:");
    say(&format!(
        "  initialize -> {}",
        server_name(&mcp_initialize(&lab, &direct)?)
    ));

    step("2. Moat starts: the kernel now steers every connection to port 3001 through the agent");
    // A local user of Moat's authorization server (the password is read from stdin).
    let mut add = Command::new(&lab.moat)
        .args(["users", "add", "-c"])
        .arg(&lab.config)
        .arg("alice")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("moat users add: {e}"))?;
    if let Some(mut stdin) = add.stdin.take() {
        use std::io::Write as _;
        stdin
            .write_all(format!("{DEMO_PASSWORD}\n").as_bytes())
            .map_err(|e| format!("moat users add: {e}"))?;
    }
    if !add.wait().map_err(|e| e.to_string())?.success() {
        return Err("moat users add failed".into());
    }
    lab.start_agent()?;
    match mcp_initialize(&lab, &direct) {
        Ok(_) => return Err("plain HTTP still reached the server".into()),
        Err(e) => say(&format!(
            "  plain HTTP to the port now fails (Moat serves TLS only): {e}"
        )),
    }
    let (head, _) = post(&lab, &anonymous, None, INITIALIZE)?;
    say("  through Moat without a token (an OAuth client would now discover the issuer):");
    for l in head.lines().filter(|l| {
        l.starts_with("HTTP/") || l.to_ascii_lowercase().starts_with("www-authenticate")
    }) {
        say(&format!("    {l}"));
    }
    log_in(&lab, &certs)?;
    let out = output(
        Command::new(&lab.moat)
            .args(["token", "mint", "-c"])
            .arg(&lab.config)
            .args([
                "--server",
                "everything",
                "--sub",
                "alice",
                "--scope",
                "mcp:tools",
            ]),
    )?;
    if !out.status.success() {
        return Err(format!(
            "moat token mint: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    say(&format!(
        "  the same issuer for scripts: `moat token mint --sub alice --scope mcp:tools` -> {}...",
        &token[..token.len().min(24)]
    ));
    let tls = Target {
        token: Some(token),
        ..anonymous
    };
    let session = mcp_initialize(&lab, &tls)?;
    say(&format!(
        "  initialize through Moat with the token -> {} (session {})",
        server_name(&session),
        session.session
    ));
    let tools = mcp_call(&lab, &tls, &session.session, "tools/list")?;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    say(&format!(
        "  tools/list through Moat -> {} tools (a policy forbids get-env: {})",
        names.len(),
        if names.contains(&"get-env") {
            "still listed!"
        } else {
            "not listed"
        }
    ));
    let (_, denied) = post(
        &lab,
        &tls,
        Some(&session.session),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get-env","arguments":{}}}"#,
    )?;
    say(&format!(
        "  tools/call get-env through Moat -> {}",
        denied["error"]
    ));
    show_audit(&lab, "  audit:", |r| r["kind"] == "request", 3)?;
    let out = output(
        Command::new(&lab.moat)
            .args(["tools", "diff", "-c"])
            .arg(&lab.config)
            .args(["--server", "everything"]),
    )?;
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let pinned = entries.iter().filter(|e| e["state"] == "pinned").count();
    say(&format!(
        "  tool integrity: {pinned} of {} definitions (tools, prompts, resources, instructions) \
         pinned on first use; a changed one would be hidden and refused (`moat tools diff`)",
        entries.len()
    ));
    let metrics = output(
        lab.command("curl")
            .args(["-s", "http://127.0.0.1:9901/metrics"]),
    )?;
    say("  /metrics on the admin listener (127.0.0.1:9901), requests and policy decisions so far:");
    for l in String::from_utf8_lossy(&metrics.stdout)
        .lines()
        .filter(|l| {
            (l.starts_with("moat_requests_total") || l.starts_with("moat_policy_decisions_total"))
                && !l.ends_with(" 0")
        })
    {
        say(&format!("    {l}"));
    }

    step("3. A local process tries to take the agent's upstream identity to bypass the proxy");
    let out = output(lab.command("python3").args([
        "-c",
        "import socket\ns = socket.socket()\ntry:\n    s.bind(('127.0.0.1', 64000)); print('bound (bypass possible!)')\nexcept OSError as e:\n    print('bind 127.0.0.1:64000 ->', e)",
    ]))?;
    say(&format!(
        "  {}",
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    show_audit(&lab, "  audit:", |r| r["event"] == "bind_denied", 1)?;

    step("4. The agent is killed (SIGKILL): the port fails closed");
    lab.kill_agent();
    match mcp_initialize(&lab, &tls) {
        Ok(_) => return Err("the server was reachable with the agent down".into()),
        Err(e) => say(&format!("  initialize -> {e}")),
    }
    print_status(&lab)?;

    step("5. The agent restarts: it adopts the pinned programs and service resumes");
    lab.start_agent()?;
    let again = mcp_initialize(&lab, &tls)?;
    say(&format!(
        "  initialize through Moat -> {}",
        server_name(&again)
    ));
    show_audit(
        &lab,
        "  audit (the drop seen while the agent was down):",
        |r| r["event"] == "dropped",
        1,
    )?;
    print_status(&lab)?;

    step("6. Cleanup: `moat detach` removes the programs; the namespace is deleted");
    lab.kill_agent();
    let out = output(
        Command::new(&lab.moat)
            .args(["detach", "--bpffs"])
            .arg(&lab.bpffs),
    )?;
    say(&format!(
        "  {}",
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    let verified = output(
        Command::new(&lab.moat)
            .args(["audit", "verify"])
            .arg(&lab.audit),
    )?;
    say(&format!(
        "  `moat audit verify` -> {}",
        String::from_utf8_lossy(&verified.stdout).trim()
    ));
    say(&format!(
        "\nThe full audit log of this run: {}",
        lab.audit.display()
    ));
    Ok(())
}

fn step(s: &str) {
    println!("\n== {s}");
}

fn say(s: &str) {
    println!("{s}");
}

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|e| format!("{cmd:?}: {e}"))
}

fn wait_for(_lab: &Lab, what: &str, mut ready: impl FnMut() -> bool) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("timed out waiting for {what}"))
}

struct Session {
    session: String,
    body: Value,
}

fn server_name(s: &Session) -> String {
    let info = &s.body["result"]["serverInfo"];
    format!(
        "{} {}",
        info["name"].as_str().unwrap_or("?"),
        info["version"].as_str().unwrap_or("")
    )
}

/// POSTs JSON-RPC to the server with curl from inside the namespace; returns headers and the
/// JSON body (from a JSON or an SSE response).
/// Where a client sends its requests: the server directly, or through Moat over TLS.
struct Target {
    url: String,
    cafile: Option<PathBuf>,
    /// Sent as `Authorization: Bearer`.
    token: Option<String>,
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"moat-demo","version":"1"}}}"#;

fn post(lab: &Lab, to: &Target, session: Option<&str>, body: &str) -> Result<(String, Value)> {
    let mut cmd = lab.command("curl");
    cmd.args(["-sS", "-m", "5", "-D", "-", "-X", "POST"])
        .arg(&to.url);
    if let Some(ca) = &to.cafile {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.args([
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
    ]);
    if let Some(t) = &to.token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    if let Some(s) = session {
        cmd.args([
            "-H",
            &format!("mcp-session-id: {s}"),
            "-H",
            "mcp-protocol-version: 2025-06-18",
        ]);
    }
    let out = output(cmd.args(["-d", body]))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = rest
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(rest)
        .trim();
    let v = serde_json::from_str(json).map_err(|e| format!("unexpected response ({e}): {text}"))?;
    Ok((head.to_string(), v))
}

fn mcp_initialize(lab: &Lab, to: &Target) -> Result<Session> {
    let (head, body) = post(lab, to, None, INITIALIZE)?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/2 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    let session = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mcp-session-id:")
                .map(|_| l[15..].trim().to_string())
        })
        .unwrap_or_default();
    if !session.is_empty() {
        post(
            lab,
            to,
            Some(&session),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .ok();
    }
    Ok(Session { session, body })
}

fn mcp_call(lab: &Lab, to: &Target, session: &str, method: &str) -> Result<Value> {
    post(
        lab,
        to,
        Some(session),
        &format!(r#"{{"jsonrpc":"2.0","id":2,"method":"{method}"}}"#),
    )
    .map(|(_, v)| v)
}

fn show_audit(lab: &Lab, title: &str, pick: impl Fn(&Value) -> bool, n: usize) -> Result {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&lab.audit).unwrap_or_default();
        let recs: Vec<&str> = text
            .lines()
            .filter(|l| serde_json::from_str(l).is_ok_and(|v: Value| pick(&v)))
            .collect();
        if recs.len() >= n || Instant::now() > deadline {
            say(title);
            for r in recs.iter().rev().take(n).rev() {
                say(&format!("    {r}"));
            }
            return if recs.is_empty() {
                Err(format!("no audit record for: {title}"))
            } else {
                Ok(())
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_status(lab: &Lab) -> Result {
    let out = output(
        Command::new(&lab.moat)
            .args(["status", "--bpffs"])
            .arg(&lab.bpffs)
            .args(["-c"])
            .arg(&lab.config),
    )?;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        say(&format!("  | {l}"));
    }
    Ok(())
}

const DEMO_PASSWORD: &str = "demo password 1";

/// A real MCP client (the Python SDK's OAuth client) logs in through Moat's authorization
/// server: it registers itself, alice signs in and consents in headless chromium, and the
/// token it gets lets it call a tool.
fn log_in(lab: &Lab, certs: &std::path::Path) -> Result {
    say(
        "  a real MCP client logs in (Python SDK OAuthClientProvider; chromium signs in and consents):",
    );
    let password = format!("password={DEMO_PASSWORD}");
    let out = output(
        lab.command(crate::fixtures::python())
            .arg(crate::fixtures::fixture("mcp_oauth_client.py"))
            .arg(format!("https://localhost:{PORT}/mcp"))
            .arg("--ca")
            .arg(certs.join("localhost-ca.crt"))
            .args([
                "--browser",
                "--ignore-https-errors",
                "--fill",
                "username=alice",
                "--fill",
                &password,
                "--click",
                "Sign in",
                "--click",
                "Allow",
                "--tool",
                "echo",
                "--args",
                r#"{"message": "hello through Moat"}"#,
                "--timeout",
                "90",
            ]),
    )?;
    if !out.status.success() {
        return Err(format!(
            "the OAuth client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the OAuth client's output: {e}"))?;
    for line in r["http"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
    {
        if line.contains(":8443/") {
            say(&format!("    {line}"));
        }
    }
    let pages: Vec<&str> = r["browser"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["title"].as_str())
        .collect();
    say(&format!(
        "    pages the browser saw: {}",
        pages.join(" -> ")
    ));
    let c = &r["token_claims"];
    say(&format!(
        "    token: iss {} aud {} sub {} scope {:?}",
        c["iss"], c["aud"], c["sub"], c["scope"]
    ));
    say(&format!(
        "    tools/call echo through Moat -> {}",
        r["call"]
    ));
    show_audit(lab, "  audit:", |r| r["kind"] == "auth", 5)
}
