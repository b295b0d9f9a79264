//! Moat's own authorization server, on a plain host (no root): a client registers, a local user
//! signs in and consents in a (scripted) browser, the client gets tokens and calls the server
//! through Moat; and every step is attacked: codes replayed or redeemed by another client,
//! wrong PKCE verifiers, redirect URIs that are not the registered one, forged consent, a
//! token for another server, refresh-token reuse, revocation, restarts.
mod common;

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
};

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:1/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Two servers trusting Moat's issuer; `files` is the one the tests log in to.
fn host() -> (Host, String) {
    let mut host = Host::plain();
    let other = free_port();
    let servers = format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {up}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local, scopes_supported: [mcp:tools, mcp:admin]}}\n  \
         - name: other\n    port: {other}\n    upstream: {up}\n    public_url: http://127.0.0.1:{other}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n",
        port = host.port(),
        up = host.upstream(),
    );
    host.write_config(&servers);
    host.start_server(host.upstream_port());
    moat(
        &host,
        &["users", "add", "alice"],
        Some("correct horse battery"),
    );
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    let resource = format!("http://127.0.0.1:{}/mcp", host.port());
    (host, resource)
}

fn moat(host: &Host, args: &[&str], stdin: Option<&str>) -> Value {
    let mut cmd = Command::new(MOAT);
    cmd.args(&args[..2])
        .arg("-c")
        .arg(&host.config)
        .args(&args[2..]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{s}\n").as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "moat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The value of hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn register(b: &mut Browser, name: &str) -> String {
    let r = b.post_json(
        "/register",
        &json!({"redirect_uris": [REDIRECT], "client_name": name}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["client_id"].as_str().unwrap().to_string()
}

fn authorize_url(client: &str, resource: &str, extra: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "st-1"),
            ("resource", resource),
            ("scope", "mcp:tools"),
        ])
        .finish();
    format!("/authorize?{q}{extra}")
}

/// Signs alice in and consents; the redirect's parameters (code, state, iss).
fn log_in(b: &mut Browser, client: &str, resource: &str) -> HashMap<String, String> {
    let r = b.get(&authorize_url(client, resource, ""));
    assert_eq!(r.status, 303, "{r:?}");
    let next = r.header("location").unwrap().to_string();
    let origin = b.origin();
    // Signed in already in this browser: straight to consent.
    let consent = if next.contains("/login?request=") {
        let page = b.get(&next);
        let request = hidden(&page.body, "request");
        let r = b.post_form(
            "/login",
            &[
                ("request", &request),
                ("username", "alice"),
                ("password", "correct horse battery"),
            ],
            Some(&origin),
        );
        assert_eq!(r.status, 303, "{r:?}");
        r.header("location").unwrap().to_string()
    } else {
        next
    };
    assert!(consent.contains("/consent?request="), "{consent}");
    let request = consent.split("request=").nth(1).unwrap().to_string();
    let page = b.get(&consent);
    if page.status == 303 {
        return page.redirect_params();
    }
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = hidden(&page.body, "csrf");
    let r = b.post_form(
        "/consent",
        &[
            ("request", &request),
            ("csrf", &csrf),
            ("decision", "allow"),
        ],
        Some(&origin),
    );
    assert_eq!(r.status, 303, "{r:?}");
    r.redirect_params()
}

fn redeem(b: &mut Browser, client: &str, code: &str, verifier: &str) -> Answer {
    b.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        None,
    )
}

fn refresh(b: &mut Browser, client: &str, token: &str) -> Answer {
    b.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client),
        ],
        None,
    )
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// The status of an MCP initialize sent to `port` with `token`.
fn call(port: u16, token: &str) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    exchange(
        addr,
        &post(addr, body, &format!("authorization: Bearer {token}\r\n")),
    )
    .unwrap()
    .status
}

#[test]
fn a_client_registers_a_user_signs_in_and_consents_and_the_token_opens_the_server() {
    let (host, resource) = host();
    let mut b = Browser::new(&host);
    let issuer = format!("http://127.0.0.1:{}", host.authz_port());

    // Discovery: the server's metadata names this issuer; its metadata is complete.
    let prm = exchange(
        host.addr(),
        format!(
            "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nhost: {}\r\n\r\n",
            host.addr()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        prm.body["authorization_servers"],
        json!([issuer]),
        "{prm:?}"
    );
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let m = b.get(path).json();
        assert_eq!(m["issuer"], json!(issuer), "{path}: {m}");
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            m["registration_endpoint"],
            json!(format!("{issuer}/register"))
        );
        assert_eq!(
            m["authorization_response_iss_parameter_supported"],
            json!(true)
        );
        assert_eq!(m["client_id_metadata_document_supported"], json!(true));
    }
    assert!(b.get("/jwks.json").json()["keys"][0]["kid"].is_string());

    let client = register(&mut b, "Test <b>client</b>");
    // A wrong password: the form again, with an error; nobody is signed in.
    let r = b.get(&authorize_url(&client, &resource, ""));
    let page = b.get(r.header("location").unwrap());
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let request = hidden(&page.body, "request");
    let origin = b.origin();
    let r = b.post_form(
        "/login",
        &[
            ("request", &request),
            ("username", "alice"),
            ("password", "wrong"),
        ],
        Some(&origin),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Wrong user name or password"), "{}", r.body);
    assert!(
        !b.cookies().keys().any(|k| k.contains("session")),
        "{:?}",
        b.cookies()
    );

    let params = log_in(&mut b, &client, &resource);
    assert_eq!(params["state"], "st-1");
    assert_eq!(params["iss"], issuer, "RFC 9207: the issuer names itself");
    let t = redeem(&mut b, &client, &params["code"], VERIFIER);
    assert_eq!(t.status, 200, "{t:?}");
    let tokens = t.json();
    let access = tokens["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["iss"], json!(issuer));
    assert_eq!(
        c["aud"],
        json!(resource),
        "audience-bound to the server asked for"
    );
    assert_eq!(
        (
            c["sub"].as_str(),
            c["client_id"].as_str(),
            c["scope"].as_str()
        ),
        (Some("alice"), Some(client.as_str()), Some("mcp:tools"))
    );
    assert_eq!(call(host.port(), access), 200, "the token opens the server");
    // A token for `files` is no token for `other`.
    let other = host_port_of(&host, "other");
    assert_eq!(call(other, access), 401);

    // The code is single use: a second redemption fails and ends what the first one got.
    let again = redeem(&mut b, &client, &params["code"], VERIFIER);
    assert_eq!(
        (again.status, again.json()["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let r = refresh(&mut b, &client, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(r.json()["error"], "invalid_grant", "{r:?}");

    // A fresh grant: its refresh token rotates; the old one presented again revokes the family.
    let params = log_in(&mut b, &client, &resource);
    let tokens = redeem(&mut b, &client, &params["code"], VERIFIER).json();
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&mut b, &client, &first);
    assert_eq!(r.status, 200, "{r:?}");
    let second = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(
        claims(r.json()["access_token"].as_str().unwrap())["aud"],
        json!(resource)
    );
    assert_eq!(
        refresh(&mut b, &client, &first).json()["error"],
        "invalid_grant",
        "reuse"
    );
    assert_eq!(
        refresh(&mut b, &client, &second).json()["error"],
        "invalid_grant",
        "the family is revoked"
    );

    // Records are written after the answers; the reuse is the last of those asserted on.
    host.wait_audit("the refresh token's reuse", |r| {
        r["event"] == "refresh_reuse"
    });
    let events: Vec<String> = host
        .audit_records()
        .iter()
        .filter(|r| r["kind"] == "auth")
        .filter_map(|r| r["event"].as_str().map(str::to_string))
        .collect();
    for e in [
        "client_registered",
        "login_failed",
        "login",
        "consent_given",
        "code_issued",
        "token_issued",
        "code_replayed",
        "token_refreshed",
        "refresh_reuse",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} not in {events:?}");
    }
    let log = std::fs::read_to_string(&host.audit).unwrap();
    assert!(
        !log.contains(&first) && !log.contains(&second) && !log.contains(access),
        "no token in the audit log"
    );
}

fn host_port_of(host: &Host, name: &str) -> u16 {
    let text = std::fs::read_to_string(&host.config).unwrap();
    let at = text.find(&format!("name: {name}\n")).unwrap();
    text[at..]
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .trim_start_matches("port: ")
        .parse()
        .unwrap()
}

#[test]
fn the_authorization_request_cannot_be_bent() {
    let (host, resource) = host();
    let mut b = Browser::new(&host);
    let client = register(&mut b, "Victim");
    let evil = register(&mut b, "Evil");

    // Redirect URIs other than the registered one: an error page, never a redirect.
    for redirect in [
        "http://127.0.0.1:1/cb/../evil",
        "http://127.0.0.1:1/cbx",
        "https://evil.example/cb",
        "http://127.0.0.1:1/cb?next=https://evil.example",
        "http://localhost:1/cb",
        "javascript:alert(1)",
    ] {
        let url = authorize_url(&client, &resource, "").replace(
            &url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
            &url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>(),
        );
        let r = b.get(&url);
        assert_eq!(r.status, 400, "{redirect}: {r:?}");
        assert!(r.header("location").is_none());
    }
    // A loopback redirect may change its port only (RFC 8252).
    let url =
        authorize_url(&client, &resource, "").replace("127.0.0.1%3A1%2F", "127.0.0.1%3A5555%2F");
    assert_eq!(b.get(&url).status, 303);
    // Unknown client: a page.
    assert_eq!(b.get(&authorize_url("nobody", &resource, "")).status, 400);
    // Errors after the client is trusted go back to it, with state and iss.
    for (extra, drop, error) in [
        ("", "resource", "invalid_target"),
        (
            "&resource=http://127.0.0.1:9/elsewhere",
            "resource",
            "invalid_target",
        ),
        ("", "code_challenge", "invalid_request"),
        (
            "&code_challenge_method=plain",
            "code_challenge_method",
            "invalid_request",
        ),
        ("&scope=root", "scope", "invalid_scope"),
    ] {
        let base = authorize_url(&client, &resource, "");
        let kept: Vec<&str> = base
            .split(['?', '&'])
            .skip(1)
            .filter(|p| !p.starts_with(&format!("{drop}=")))
            .collect();
        let r = b.get(&format!("/authorize?{}{extra}", kept.join("&")));
        assert_eq!(r.status, 303, "{extra} {drop}: {r:?}");
        let p = r.redirect_params();
        assert_eq!(
            (p["error"].as_str(), p["state"].as_str()),
            (error, "st-1"),
            "{drop}: {p:?}"
        );
        assert!(r.header("location").unwrap().starts_with(REDIRECT));
    }

    let params = log_in(&mut b, &client, &resource);
    // Another client cannot redeem the victim's code, nor can a wrong verifier.
    let code = params["code"].clone();
    assert_eq!(
        redeem(&mut b, &evil, &code, VERIFIER).json()["error"],
        "invalid_grant"
    );
    let params = log_in(&mut b, &client, &resource);
    let wrong = "x".repeat(43);
    assert_eq!(
        redeem(&mut b, &client, &params["code"], &wrong).json()["error"],
        "invalid_grant"
    );

    // Consent to one client is no consent to another: the evil client gets the page.
    let r = b.get(&authorize_url(&evil, &resource, ""));
    let page = b.get(r.header("location").unwrap());
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("Evil") && page.body.contains("Registered itself"),
        "{}",
        page.body
    );
    let request = hidden(&page.body, "request");
    let csrf = hidden(&page.body, "csrf");

    // Forged answers: from another site, without the page's token, from another browser.
    let r = b.post_form(
        "/consent",
        &[
            ("request", &request),
            ("csrf", &csrf),
            ("decision", "allow"),
        ],
        Some("https://evil.example"),
    );
    assert!(
        r.status == 400 && r.header("location").is_none(),
        "cross-site: {r:?}"
    );
    let origin = b.origin();
    let r = b.post_form(
        "/consent",
        &[
            ("request", &request),
            ("csrf", "guess"),
            ("decision", "allow"),
        ],
        Some(&origin),
    );
    assert!(
        r.status == 400 && r.header("location").is_none(),
        "no csrf: {r:?}"
    );
    let mut other_browser = Browser::new(&host);
    *other_browser.cookies() = b
        .cookies()
        .iter()
        .filter(|(k, _)| k.contains("session"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let r = other_browser.post_form(
        "/consent",
        &[
            ("request", &request),
            ("csrf", &csrf),
            ("decision", "allow"),
        ],
        Some(&origin),
    );
    assert!(
        r.status == 400 && r.header("location").is_none(),
        "another browser: {r:?}"
    );
    // The real answer still works, once.
    let r = b.post_form(
        "/consent",
        &[("request", &request), ("csrf", &csrf), ("decision", "deny")],
        Some(&origin),
    );
    assert_eq!(r.redirect_params()["error"], "access_denied");
    let r = b.post_form(
        "/consent",
        &[
            ("request", &request),
            ("csrf", &csrf),
            ("decision", "allow"),
        ],
        Some(&origin),
    );
    assert!(r.header("location").is_none(), "answered once: {r:?}");
}

#[test]
fn revocation_refuses_live_tokens_at_once_and_grants_survive_restarts() {
    let (mut host, resource) = host();
    let mut b = Browser::new(&host);
    let client = register(&mut b, "Client");
    let params = log_in(&mut b, &client, &resource);
    let tokens = redeem(&mut b, &client, &params["code"], VERIFIER).json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(call(host.port(), &access), 200);

    // Restart: the grant, the consent, the client and the keys are still there.
    host.stop_agent();
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    assert_eq!(call(host.port(), &access), 200, "the keys survived");
    let r = refresh(&mut b, &client, &refresh_token);
    assert_eq!(r.status, 200, "the grant survived: {r:?}");
    let refresh_token = r.json()["refresh_token"].as_str().unwrap().to_string();
    let grants = moat(&host, &["grants", "list", "--sub", "alice"], None);
    assert_eq!(grants[0]["client_id"], json!(client), "{grants}");

    // Revoked: the access token, though within its lifetime, is refused at once; the refresh
    // token is dead; both survive a restart.
    moat(&host, &["grants", "revoke", "--sub", "alice"], None);
    assert_eq!(call(host.port(), &access), 401);
    assert_eq!(
        refresh(&mut b, &client, &refresh_token).json()["error"],
        "invalid_grant"
    );
    host.stop_agent();
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    assert_eq!(
        call(host.port(), &access),
        401,
        "still revoked after a restart"
    );
    assert!(
        host.audit_records()
            .iter()
            .any(|r| r["kind"] == "auth" && r["event"] == "revoked" && r["sub"] == "alice")
    );

    // The consent went with the grants: signing in again (sessions end with the agent) asks
    // again; the new token works (once the second of the revocation is over: `iat` counts
    // seconds, and a token of that second is refused too).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = b.get(&authorize_url(&client, &resource, ""));
    let login = b.get(r.header("location").unwrap());
    let request = hidden(&login.body, "request");
    let origin = b.origin();
    let r = b.post_form(
        "/login",
        &[
            ("request", &request),
            ("username", "alice"),
            ("password", "correct horse battery"),
        ],
        Some(&origin),
    );
    let consent = r.header("location").unwrap().to_string();
    assert_eq!(b.get(&consent).status, 200, "asked again: {consent}");
    let params = log_in(&mut b, &client, &resource);
    let tokens = redeem(&mut b, &client, &params["code"], VERIFIER).json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(host.port(), &access), 200);

    // A client's grants: its tokens and consents end; the client stays registered.
    moat(&host, &["grants", "revoke", "--client", &client], None);
    assert_eq!(call(host.port(), &access), 401);
    assert_eq!(
        b.get(&authorize_url(&client, &resource, "")).status,
        303,
        "still a client"
    );
}

#[test]
fn password_guessing_locks_the_name_not_the_others() {
    let (host, resource) = host();
    moat(&host, &["users", "add", "bob"], Some("bob's long password"));
    let mut b = Browser::new(&host);
    let client = register(&mut b, "Client");
    let origin = b.origin();
    let attempt = |b: &mut Browser, user: &str, password: &str| {
        let r = b.get(&authorize_url(&client, &resource, ""));
        let page = b.get(r.header("location").unwrap());
        let request = hidden(&page.body, "request");
        b.post_form(
            "/login",
            &[
                ("request", &request),
                ("username", user),
                ("password", password),
            ],
            Some(&origin),
        )
        .status
    };
    for _ in 0..5 {
        assert_eq!(attempt(&mut b, "bob", "guess"), 200);
    }
    assert_eq!(attempt(&mut b, "bob", "guess"), 429, "locked");
    assert_eq!(
        attempt(&mut b, "bob", "bob's long password"),
        429,
        "even with the right password"
    );
    assert_eq!(
        attempt(&mut b, "alice", "correct horse battery"),
        303,
        "alice is not locked out"
    );
    // Audit records are written asynchronously: wait for it.
    host.wait_audit("the locked login", |r| {
        r["event"] == "login_failed" && r["locked"] == true
    });
}

#[test]
fn revoking_a_user_closes_their_open_stream() {
    let mut host = Host::plain();
    let servers = format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {up}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n",
        port = host.port(),
        up = host.upstream(),
    );
    host.write_config(&servers);
    let log = host.dir.join("ts.jsonl");
    start_ts_server(&mut host, &[], &log);
    host.start_agent();
    let mint = |sub: &str| {
        let out = run(Command::new(MOAT)
            .args(["token", "mint", "-c"])
            .arg(&host.config)
            .args(["--server", "files", "--sub", sub]));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (alice, bob) = (mint("alice"), mint("bob"));
    let addr = host.addr();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    // Each user's session, and its event stream (GET), left open.
    let open = |token: &str| {
        let r = exchange(
            addr,
            &post(addr, init, &format!("authorization: Bearer {token}\r\n")),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let session = r
            .head
            .lines()
            .find_map(|l| l.strip_prefix("mcp-session-id: "))
            .unwrap()
            .trim()
            .to_string();
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(8)))
            .unwrap();
        write!(
            &s,
            "GET /mcp HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\nauthorization: Bearer {token}\r\n\
             mcp-session-id: {session}\r\nmcp-protocol-version: 2025-06-18\r\n\r\n"
        )
        .unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut status = String::new();
        std::io::BufRead::read_line(&mut reader, &mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        reader
    };
    let mut alices = open(&alice);
    let mut bobs = open(&bob);
    let started = std::time::Instant::now();
    let out = run(Command::new(MOAT)
        .args(["grants", "revoke", "-c"])
        .arg(&host.config)
        .args(["--sub", "alice"]));
    assert!(out.status.success());
    // Alice's stream ends (the chunked body's last chunk) long before the server's 15 s
    // keep-alive; Bob's stays open.
    let mut rest = String::new();
    loop {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut alices, &mut line) {
            Ok(0) => break,
            Ok(_) => rest.push_str(&line),
            Err(e) => panic!("alice's stream did not end: {e}; read {rest:?}"),
        }
        if rest.ends_with("\r\n0\r\n\r\n") || rest.ends_with("\r\n\r\n0\r\n") || rest == "0\r\n" {
            break;
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    bobs.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let bob_read = std::io::Read::read(&mut bobs, &mut buf);
    assert!(
        bob_read
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut)
            || bob_read.as_ref().is_ok_and(|n| *n > 0),
        "bob's stream must stay open: {bob_read:?}"
    );
    let closed = host.wait_audit("alice's stream record", |r| {
        r["kind"] == "request"
            && r["principal"]["sub"] == "alice"
            && r.to_string().contains("revoked")
    });
    assert_eq!(closed["decision"]["effect"], "allow", "{closed}");
    assert_eq!(call(host.port(), &alice), 401);
    assert_eq!(call(host.port(), &bob), 200);
}

#[test]
fn a_client_id_metadata_document_describes_the_client_and_internal_ones_are_refused() {
    let mut host = Host::plain();
    let (client_id, ca) = serve_client_document(
        &mut host,
        json!({"client_name": "Doc Client", "redirect_uris": [REDIRECT]}),
    );
    let doc_port: u16 = client_id
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let servers = format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {up}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local, scopes_supported: [mcp:tools]}}\n{authz}  \
         registration: {{dynamic: 'off', allow_private_networks: [127.0.0.1/32], ca_file: {ca}}}\n",
        port = host.port(),
        up = host.upstream(),
        authz = host.authz_section(),
        ca = ca.display(),
    );
    host.write_config(&servers);
    host.start_server(host.upstream_port());
    moat(
        &host,
        &["users", "add", "alice"],
        Some("correct horse battery"),
    );
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    let resource = format!("http://127.0.0.1:{}/mcp", host.port());
    let mut b = Browser::new(&host);

    // Dynamic registration is off: not offered, not served.
    let m = b.get("/.well-known/oauth-authorization-server").json();
    assert!(m.get("registration_endpoint").is_none(), "{m}");
    assert_eq!(
        b.post_json("/register", &json!({"redirect_uris": [REDIRECT]}))
            .status,
        404
    );

    // The document names the client: the consent page says where it came from.
    let r = b.get(&authorize_url(&client_id, &resource, ""));
    assert_eq!(r.status, 303, "{r:?}");
    let params = log_in(&mut b, &client_id, &resource);
    let tokens = redeem(&mut b, &client_id, &params["code"], VERIFIER).json();
    assert_eq!(
        claims(tokens["access_token"].as_str().unwrap())["client_id"],
        json!(client_id)
    );
    let shown = moat(&host, &["clients", "show", &client_id], None);
    assert_eq!(shown["client"]["name"], "Doc Client", "{shown}");

    // Documents at internal addresses are never fetched (cloud metadata, other loopback ports
    // than allowed are still loopback: 127.0.0.2 is outside 127.0.0.1/32).
    for internal in [
        "https://169.254.169.254/latest/client.json",
        "https://10.0.0.1/client.json",
        &format!("https://127.0.0.2:{doc_port}/client.json"),
    ] {
        let r = b.get(&authorize_url(internal, &resource, ""));
        assert_eq!(r.status, 400, "{internal}: {r:?}");
        assert!(r.header("location").is_none());
    }
    // A redirect URI the document does not list: refused.
    let url = authorize_url(&client_id, &resource, "")
        .replace("127.0.0.1%3A1%2Fcb", "127.0.0.1%3A1%2Fother");
    assert_eq!(b.get(&url).status, 400);
}

#[test]
fn operators_list_and_remove_users_and_clients() {
    let (host, resource) = host();
    let mut b = Browser::new(&host);
    let client = register(&mut b, "Listed client");
    let params = log_in(&mut b, &client, &resource);
    let tokens = redeem(&mut b, &client, &params["code"], VERIFIER).json();
    let access = tokens["access_token"].as_str().unwrap().to_string();

    assert_eq!(moat(&host, &["users", "list"], None), json!(["alice"]));
    let clients = moat(&host, &["clients", "list"], None);
    let listed = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == json!(client))
        .unwrap();
    assert_eq!(listed["name"], "Listed client");
    let shown = moat(&host, &["clients", "show", &client], None);
    assert_eq!(shown["consents"][0][0], "alice", "{shown}");
    // No secret of any kind in what operators see.
    assert!(
        !shown
            .to_string()
            .contains(tokens["refresh_token"].as_str().unwrap())
    );

    // A client revoked for good: its tokens are refused, it cannot start a login again.
    moat(&host, &["clients", "revoke", &client], None);
    assert_eq!(call(host.port(), &access), 401);
    assert_eq!(b.get(&authorize_url(&client, &resource, "")).status, 400);
    let r = refresh(&mut b, &client, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(r.json()["error"], "invalid_client", "{r:?}");

    // A user removed: their tokens are refused and they cannot sign in.
    let other = register(&mut b, "Other");
    let params = log_in(&mut b, &other, &resource);
    let tokens = redeem(&mut b, &other, &params["code"], VERIFIER).json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(host.port(), &access), 200);
    moat(&host, &["users", "remove", "alice"], None);
    assert_eq!(call(host.port(), &access), 401);
    // Her browser session ended with her: the next request asks to sign in.
    let r = b.get(&authorize_url(&other, &resource, ""));
    assert!(r.header("location").unwrap().contains("/login?"), "{r:?}");
    assert_eq!(moat(&host, &["users", "list"], None), json!([]));
    let mut fresh = Browser::new(&host);
    let r = fresh.get(&authorize_url(&other, &resource, ""));
    let page = fresh.get(r.header("location").unwrap());
    let request = hidden(&page.body, "request");
    let origin = fresh.origin();
    let r = fresh.post_form(
        "/login",
        &[
            ("request", &request),
            ("username", "alice"),
            ("password", "correct horse battery"),
        ],
        Some(&origin),
    );
    assert_eq!(r.status, 200, "the form again: {r:?}");
    assert!(r.body.contains("Wrong user name or password"));
}

#[test]
fn a_batch_of_minted_tokens_gives_each_user_their_own_and_is_audited_once() {
    let (host, _) = host();
    let mint = |extra: &[&str]| {
        Command::new(MOAT)
            .args(["token", "mint", "-c"])
            .arg(&host.config)
            .args(["--server", "files", "--sub", "load", "--scope", "mcp:tools"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = mint(&["--count", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    let claimed: Vec<Value> = tokens.iter().map(|t| claims(t)).collect();
    let subs: Vec<&Value> = claimed.iter().map(|c| &c["sub"]).collect();
    assert_eq!(subs, [&json!("load-0"), &json!("load-1"), &json!("load-2")]);
    let jtis: std::collections::HashSet<&Value> = claimed.iter().map(|c| &c["jti"]).collect();
    assert_eq!(jtis.len(), 3, "each token its own id");
    for t in &tokens {
        assert_eq!(call(host.port(), t), 200);
    }
    let batch = host.wait_audit("the batch's record", |r| r["event"] == "token_minted");
    assert_eq!(batch["count"], 3, "{batch}");
    assert_eq!(batch["sub_prefix"], "load", "{batch}");
    assert_eq!(
        host.audit_records()
            .iter()
            .filter(|r| r["event"] == "token_minted")
            .count(),
        1,
        "one record for the batch"
    );

    // Out of range, on the command line and on the control socket: refused, nothing minted.
    for bad in ["0", "100001", "-1", "many"] {
        let out = mint(&["--count", bad]);
        assert!(!out.status.success(), "--count {bad}");
        assert!(out.stdout.is_empty(), "--count {bad}");
    }
    for bad in [0, 100_001] {
        let mut s =
            std::os::unix::net::UnixStream::connect(host.dir.join("state/control.sock")).unwrap();
        let req = json!({"command": "mint", "server": "files", "sub": "load", "count": bad,
                         "client_id": "c", "scopes": [], "claims": {}, "ttl": 60});
        writeln!(s, "{req}").unwrap();
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut answer).unwrap();
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert!(
            answer["error"].as_str().unwrap().contains("--count"),
            "{answer}"
        );
        assert!(answer.get("ok").is_none(), "{answer}");
    }
    assert_eq!(
        host.audit_records()
            .iter()
            .filter(|r| r["event"] == "token_minted")
            .count(),
        1,
        "nothing more minted"
    );
}

#[test]
fn registration_limited_to_redirect_hosts_refuses_others() {
    let mut host = Host::plain();
    let servers = format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {up}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n{authz}  \
         registration: {{dynamic: {{redirect_hosts: [app.example]}}}}\n",
        port = host.port(),
        up = host.upstream(),
        authz = host.authz_section(),
    );
    host.write_config(&servers);
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    let mut b = Browser::new(&host);
    let status = |b: &mut Browser, uris: Value| {
        let r = b.post_json(
            "/register",
            &json!({"redirect_uris": uris, "client_name": "x"}),
        );
        (r.status, r.json()["error"].as_str().map(str::to_string))
    };
    assert_eq!(status(&mut b, json!(["https://app.example/cb"])).0, 201);
    assert_eq!(
        status(&mut b, json!(["http://127.0.0.1:1/cb"])).0,
        201,
        "loopback: a native app"
    );
    for bad in [
        json!(["https://evil.example/cb"]),
        json!(["https://app.example/cb", "https://evil.example/cb"]),
        json!(["https://app.example.evil.example/cb"]),
        json!(["javascript:alert(1)"]),
        json!([]),
    ] {
        assert_eq!(
            status(&mut b, bad.clone()),
            (400, Some("invalid_redirect_uri".to_string())),
            "{bad}"
        );
    }
    let r = b.post_json("/register", &json!({"redirect_uris": ["https://app.example/cb"], "grant_types": ["client_credentials"]}));
    assert_eq!(r.json()["error"], "invalid_client_metadata", "{r:?}");
    let r = b.send(
        "POST",
        "/register",
        "content-type: application/json\r\n",
        "{not json",
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_client_metadata"))
    );
}
