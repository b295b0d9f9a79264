//! Tests of the OAuth resource server, on a plain host (no root): every attack in the catalogue
//! refused (with the right status and challenge), audited and never forwarded; token separation
//! and the upstream JWT; session binding; fail closed when the issuer's keys go stale.
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const PUBLIC_URL: &str = "https://files.test/mcp";
const KID: &str = "k1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signing key and its public JWK.
struct Key {
    encoding: EncodingKey,
    jwk: Value,
}

fn key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    Key {
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                    "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..])}),
    }
}

impl Key {
    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }
}

/// Claims from `issuer` for the protected server, with `over` replacing some.
fn claims(issuer: &str, over: Value) -> Value {
    let t = now();
    let mut c = json!({"iss": issuer, "aud": PUBLIC_URL, "sub": "alice", "client_id": "cli",
                       "scope": "mcp:tools", "iat": t, "exp": t + 600});
    for (k, v) in over.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// The issuer's JWKS endpoint, on a loopback port of the host, until stopped.
struct Jwks {
    /// The issuer's URL (its JWKS at `/jwks`).
    issuer: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Jwks {
    fn serve(host: &Host, document: Value) -> Self {
        let l = host.in_ns(false, || TcpListener::bind(("127.0.0.1", 0)).unwrap());
        let issuer = format!("http://{}", l.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                l.set_nonblocking(true).unwrap();
                let body = document.to_string();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((s, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let mut line = String::new();
                    let mut r = BufReader::new(&s);
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let _ = (&s).write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
            }
        });
        Self {
            issuer,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Setup {
    host: Host,
    upstream: Arc<Recorded>,
    key: Key,
    jwks: Jwks,
}

/// A protected server trusting the test issuer (keys at its JWKS URL), needing `mcp:tools`,
/// giving the upstream a JWT minted by Moat.
fn setup(refresh_s: u32, max_stale_s: u32) -> Setup {
    let mut host = Host::plain();
    let key = key(KID);
    let jwks = Jwks::serve(&host, json!({"keys": [key.jwk]}));
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {}\n    upstream: {upstream}\n    public_url: {PUBLIC_URL}\n    allowed_hosts: [files.test]\n    \
         dangerous: {{plaintext: true}}\n    \
         auth:\n      issuer: {issuer}\n      jwks_uri: {issuer}/jwks\n      scopes_supported: [mcp:tools, mcp:admin]\n      \
         required_scopes: [mcp:tools]\n      jwks_refresh_s: {refresh_s}\n      jwks_max_stale_s: {max_stale_s}\n    \
         upstream_auth: {{jwt: {{audience: '{upstream}', ttl_s: 60}}}}\n",
        host.port(),
        upstream = host.upstream(),
        issuer = jwks.issuer,
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    Setup {
        host,
        upstream,
        key,
        jwks,
    }
}

impl Setup {
    /// Claims from the test issuer, with `over` replacing some.
    fn claims(&self, over: Value) -> Value {
        claims(&self.jwks.issuer, over)
    }
}

fn call(host: &Host, raw: Vec<u8>) -> Reply {
    let dst = host.addr();
    host.in_ns(false, move || exchange(dst, &raw))
        .expect("a reply")
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}\r\n")
}

const PING: &str = r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_attack_catalogue_is_refused_audited_and_never_forwarded() {
    let s = setup(300, 3600);
    let dst = s.host.addr();
    let t = now();
    let good = s.key.sign(KID, &s.claims(json!({})));
    let body = good.split('.').nth(1).unwrap().to_string();
    let none = format!(
        "{}.{body}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string())
    );
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(KID.into());
        let secret = EncodingKey::from_secret(s.key.jwk.to_string().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, &s.claims(json!({})), &secret).unwrap()
    };
    let other = key("k2");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no token", String::new(), 401, ""),
        ("malformed token", bearer("not-a-jwt"), 401, "invalid_token"),
        ("alg none", bearer(&none), 401, "invalid_token"),
        (
            "HS256 keyed with the public key",
            bearer(&hs256),
            401,
            "invalid_token",
        ),
        (
            "unknown kid",
            bearer(&other.sign("k2", &s.claims(json!({})))),
            401,
            "invalid_token",
        ),
        (
            "known kid, another key",
            bearer(&other.sign(KID, &s.claims(json!({})))),
            401,
            "invalid_token",
        ),
        (
            "wrong issuer",
            bearer(
                &s.key
                    .sign(KID, &s.claims(json!({"iss": "https://evil.example"}))),
            ),
            401,
            "invalid_token",
        ),
        (
            "another resource",
            bearer(
                &s.key
                    .sign(KID, &s.claims(json!({"aud": "https://other.test/mcp"}))),
            ),
            401,
            "invalid_token",
        ),
        (
            "expired",
            bearer(&s.key.sign(KID, &s.claims(json!({"exp": t - 600})))),
            401,
            "invalid_token",
        ),
        (
            "not yet valid",
            bearer(&s.key.sign(KID, &s.claims(json!({"nbf": t + 600})))),
            401,
            "invalid_token",
        ),
        (
            "missing scope",
            bearer(&s.key.sign(KID, &s.claims(json!({"scope": "mcp:admin"})))),
            403,
            "insufficient_scope",
        ),
    ];
    for (what, auth, status, code) in &cases {
        let r = call(&s.host, post(dst, PING, auth));
        assert_eq!(r.status, *status, "{what}: {r:?}");
        let challenge =
            header(&r, "www-authenticate").unwrap_or_else(|| panic!("{what}: no challenge: {r:?}"));
        assert!(
            challenge.contains(
                "resource_metadata=\"https://files.test/.well-known/oauth-protected-resource/mcp\""
            ),
            "{what}: {challenge}"
        );
        if code.is_empty() {
            assert!(
                !challenge.contains("error="),
                "{what}: no error code without a token: {challenge}"
            );
            assert!(
                challenge.contains("scope=\"mcp:tools\""),
                "{what}: {challenge}"
            );
        } else {
            assert!(
                challenge.contains(&format!("error=\"{code}\"")),
                "{what}: {challenge}"
            );
        }
        assert_eq!(
            r.body["error"]["code"], -32001,
            "{what}: a JSON-RPC error: {r:?}"
        );
        // The body of an unauthenticated request is not parsed: no id to echo.
        assert_eq!(r.body["id"], Value::Null, "{what}: {r:?}");
    }
    // Step-up: the scopes already granted plus those needed.
    let r = call(&s.host, post(dst, PING, &cases[10].1));
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("scope=\"mcp:admin mcp:tools\""),
        "{r:?}"
    );
    // A token in the URL is refused even with a good header.
    let raw = String::from_utf8(post(dst, PING, &bearer(&good)))
        .unwrap()
        .replacen("POST /mcp ", &format!("POST /mcp?access_token={good} "), 1);
    let r = call(&s.host, raw.into_bytes());
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("invalid_request"),
        "{r:?}"
    );

    assert_eq!(
        s.upstream.count(),
        0,
        "no refused request reached the server"
    );
    let want = cases.len() + 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let denied = loop {
        let d: Vec<Value> = s
            .host
            .audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "request" && r["decision"]["effect"] == "deny")
            .collect();
        if d.len() >= want || std::time::Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        denied.len(),
        cases.len() + 2,
        "each refusal audited: {denied:#?}"
    );
    let text = std::fs::read_to_string(&s.host.audit).unwrap();
    assert!(!text.contains(&good), "no token in the audit log");
    assert!(
        !s.host.agent_log().contains(&good),
        "no token in the agent's log"
    );
    // The refusal says why.
    assert!(
        denied
            .iter()
            .any(|r| r["decision"]["reason"] == "invalid token: expired")
    );
    assert!(
        denied
            .iter()
            .any(|r| r["decision"]["reason"] == "invalid token: wrong issuer")
    );
}

#[test]
fn the_client_token_never_reaches_the_upstream_which_gets_its_own() {
    let s = setup(300, 3600);
    let dst = s.host.addr();
    let good = s.key.sign(KID, &s.claims(json!({})));
    let r = call(&s.host, post(dst, PING, &bearer(&good)));
    assert_eq!(r.status, 200, "{r:?}");
    let rec = s
        .host
        .wait_audit("the allowed ping", |r| r["status"] == 200);
    assert_eq!(rec["principal"]["sub"], "alice", "{rec}");
    assert_eq!(rec["principal"]["client_id"], "cli", "{rec}");
    assert_eq!(rec["principal"]["iss"], s.jwks.issuer, "{rec}");
    assert_eq!(rec["principal"]["scopes"], json!(["mcp:tools"]), "{rec}");

    let (head, _) = s.upstream.requests.lock().unwrap()[0].clone();
    assert!(
        !head.contains(&good),
        "the client's token was forwarded: {head}"
    );
    let minted = head
        .lines()
        .find_map(|l| l.strip_prefix("authorization: Bearer "))
        .unwrap_or_else(|| panic!("no upstream token: {head}"))
        .trim()
        .to_string();
    // It verifies against the JWKS Moat publishes, for this upstream and this caller.
    let raw = format!(
        "GET /.well-known/moat/upstream-jwks.json HTTP/1.1\r\nhost: {}\r\n\r\n",
        dst
    );
    let jwks = call(&s.host, raw.into_bytes());
    assert_eq!(jwks.status, 200, "{jwks:?}");
    let kid = jsonwebtoken::decode_header(&minted).unwrap().kid.unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap()
            .clone(),
    )
    .unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[s.host.upstream()]);
    v.set_issuer(&[PUBLIC_URL]);
    let c = jsonwebtoken::decode::<Value>(&minted, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
        .unwrap()
        .claims;
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], "cli");
    let ttl = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert_eq!(ttl, 60, "{c}");

    // Protected resource metadata, at the path-inserted and root URLs, to anyone.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nhost: files.test\r\norigin: https://evil.example\r\n\r\n"
        );
        let m = call(&s.host, raw.into_bytes());
        assert_eq!(m.status, 200, "{path}: {m:?}");
        assert_eq!(m.body["resource"], PUBLIC_URL, "{m:?}");
        assert_eq!(
            m.body["authorization_servers"],
            json!([s.jwks.issuer]),
            "{m:?}"
        );
        assert_eq!(
            m.body["bearer_methods_supported"],
            json!(["header"]),
            "{m:?}"
        );
        assert_eq!(
            m.body["scopes_supported"],
            json!(["mcp:tools", "mcp:admin"]),
            "{m:?}"
        );
    }
}

#[test]
fn a_session_is_refused_to_another_principal() {
    let s = setup(300, 3600);
    let dst = s.host.addr();
    let alice = bearer(&s.key.sign(KID, &s.claims(json!({}))));
    let mallory = bearer(&s.key.sign(KID, &s.claims(json!({"sub": "mallory"}))));
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let r = call(&s.host, post(dst, init, &alice));
    let session = header(&r, "mcp-session-id")
        .unwrap_or_else(|| panic!("{r:?}"))
        .to_string();
    let with = |who: &str| {
        format!("{who}mcp-session-id: {session}\r\nmcp-protocol-version: 2025-06-18\r\n")
    };
    assert_eq!(call(&s.host, post(dst, PING, &with(&alice))).status, 200);
    let before = s.upstream.count();
    let r = call(&s.host, post(dst, PING, &with(&mallory)));
    assert_eq!(r.status, 404, "another principal's session: {r:?}");
    assert_eq!(r.body["error"]["message"], "Session not found", "{r:?}");
    // A session id Moat never saw is refused too.
    let forged = format!("{alice}mcp-session-id: s999\r\nmcp-protocol-version: 2025-06-18\r\n");
    assert_eq!(call(&s.host, post(dst, PING, &forged)).status, 404);
    assert_eq!(s.upstream.count(), before, "neither reached the server");
    let rec = s.host.wait_audit("the hijack", |r| {
        r["principal"]["sub"] == "mallory" && r["decision"]["effect"] == "deny"
    });
    assert_eq!(
        rec["decision"]["reason"], "session belongs to another principal",
        "{rec}"
    );
    assert_eq!(rec["mcp"]["session"], session.as_str(), "{rec}");
}

#[test]
fn stale_keys_fail_closed() {
    let mut s = setup(1, 2);
    let dst = s.host.addr();
    let good = bearer(&s.key.sign(KID, &s.claims(json!({}))));
    assert_eq!(call(&s.host, post(dst, PING, &good)).status, 200);
    s.jwks.stop();
    std::thread::sleep(Duration::from_secs(4));
    // A new token (not in the validated-token cache) cannot be checked against stale keys.
    let fresh = bearer(&s.key.sign(KID, &s.claims(json!({"jti": "another"}))));
    let r = call(&s.host, post(dst, PING, &fresh));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again"),
        "{r:?}"
    );
    assert_eq!(s.upstream.count(), 1, "nothing forwarded unauthenticated");
    s.host.wait_audit("the fail-closed refusal", |r| {
        r["status"] == 503 && r["decision"]["effect"] == "deny"
    });
    // The key set's history is in the audit log: fetched once, then failing (once, not on
    // every retry).
    let auth: Vec<Value> = s
        .host
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "auth")
        .collect();
    let events: Vec<&str> = auth.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["keys_fetched", "keys_fetch_failed"], "{auth:?}");
    assert_eq!(auth[0]["kids"], json!([KID]));
    assert_eq!(auth[1]["jwks"], format!("{}/jwks", s.jwks.issuer));
}

/// A legacy (HTTP+SSE) message URL belongs to the principal that opened its stream.
#[test]
fn a_legacy_message_url_is_refused_to_another_principal() {
    use std::io::Read as _;
    let mut host = Host::plain();
    let key = key(KID);
    let jwks = Jwks::serve(&host, json!({"keys": [key.jwk]}));
    host.write_config(&format!(
        "servers:\n  - name: legacy\n    port: {}\n    upstream: {}\n    public_url: {PUBLIC_URL}\n    legacy_sse: /sse\n    \
         dangerous: {{plaintext: true}}\n    \
         auth: {{issuer: '{issuer}', jwks_uri: '{issuer}/jwks'}}\n",
        host.port(),
        host.upstream(),
        issuer = jwks.issuer,
    ));
    let server = host.command(
        python().to_str().unwrap(),
        &[
            script("fastmcp_server.py").to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &host.upstream_port().to_string(),
            "--sse",
        ],
    );
    host.spawn(server, "fastmcp.log");
    host.wait_port(host.upstream_port(), "FastMCP (SSE)");
    host.start_agent();
    let alice = key.sign(KID, &claims(&jwks.issuer, json!({})));
    let mallory = key.sign(KID, &claims(&jwks.issuer, json!({"sub": "mallory"})));

    // Alice opens the stream and reads the message URL it announces; the stream stays open
    // while the POSTs are made.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let dst = host.addr();
    let opener = alice.clone();
    let reader = std::thread::spawn(move || {
        let alice = opener;
        let mut s = std::net::TcpStream::connect(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /sse HTTP/1.1\r\nhost: {dst}\r\naccept: text/event-stream\r\nauthorization: Bearer {alice}\r\n\r\n"
        )
        .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let url = loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(url) = seen
                .split("event: endpoint")
                .nth(1)
                .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("data: ")))
            {
                break url.trim().to_string();
            }
        };
        tx.send(url).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
    });
    let url = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("an endpoint event");
    let path = url
        .find("/messages")
        .map_or(url.as_str(), |i| &url[i..])
        .to_string();
    let ping = |token: &str| {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nhost: {dst}\r\ncontent-type: application/json\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n{PING}",
            PING.len()
        );
        call(&host, raw.into_bytes())
    };
    let r = ping(&mallory);
    assert_eq!(r.status, 404, "mallory posting to alice's stream: {r:?}");
    let r = ping(&alice);
    assert_eq!(r.status, 202, "alice posting to her own stream: {r:?}");
    let rec = host.wait_audit("the refused post", |r| {
        r["principal"]["sub"] == "mallory" && r["decision"]["effect"] == "deny"
    });
    assert_eq!(
        rec["decision"]["reason"], "session belongs to another principal",
        "{rec}"
    );
    done_tx.send(()).unwrap();
    reader.join().unwrap();
}
