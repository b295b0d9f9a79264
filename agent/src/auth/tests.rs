//! Token checks against forged, stale and misdirected tokens, without the network.
use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::{signing::SigningKey, *};
use crate::config::{Auth, Issuer};

const AUD: &str = "https://files.example.com/mcp";
const ISS: &str = "https://auth.example.com";

struct Fixture {
    dir: std::path::PathBuf,
    auth: Authenticator,
    key: SigningKey,
}

fn config(required: &[&str]) -> Auth {
    Auth {
        issuer: Issuer::Local(ISS.into()),
        audience: AUD.into(),
        authorization_servers: vec![],
        scopes_supported: vec!["mcp:tools".into(), "mcp:admin".into()],
        required_scopes: required.iter().map(|s| s.to_string()).collect(),
        algorithms: vec![Algorithm::ES256, Algorithm::RS256],
        leeway: Duration::from_secs(30),
        jwks_refresh: Duration::from_secs(300),
        jwks_max_stale: Duration::from_secs(3600),
        ca_file: None,
        introspection: None,
    }
}

fn fixture(name: &str, required: &[&str]) -> Fixture {
    let dir = std::env::temp_dir().join(format!("moat-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = SigningKey::create(&dir.join("issuer.pem")).unwrap();
    let shared: SharedKeys = Arc::new(std::sync::RwLock::new(Arc::new(KeySet {
        keys: vec![Key {
            kid: Some(key.kid.clone()),
            alg: Some(Algorithm::ES256),
            key: key.decoding.clone(),
        }],
    })));
    let (keys, _) = key_source(&config(required), Some(&shared)).unwrap();
    let auth = Authenticator::new(&config(required), AUD, "/mcp", keys).unwrap();
    Fixture { dir, auth, key }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn claims(over: Value) -> Value {
    let t = now();
    let mut c = json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "cli",
        "scope": "mcp:tools", "iat": t, "exp": t + 300,
    });
    for (k, v) in over.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

async fn check(f: &Fixture, token: &str) -> Result<Arc<Principal>, AuthError> {
    f.auth
        .authenticate(&bearer(token), &Uri::from_static("/mcp"))
        .await
        .map(|(p, _)| p)
}

#[tokio::test]
async fn a_good_token_names_the_caller() {
    let f = fixture("good", &["mcp:tools"]);
    let t = f.key.sign("at+jwt", &claims(json!({}))).unwrap();
    let p = check(&f, &t).await.unwrap();
    assert_eq!(p.sub, "alice");
    assert_eq!(p.client_id.as_deref(), Some("cli"));
    assert_eq!(p.scopes, vec!["mcp:tools"]);
    // From the cache, the same, and said to be from the cache.
    let uri = Uri::from_static("/mcp");
    assert_eq!(
        f.auth.authenticate(&bearer(&t), &uri).await.unwrap(),
        (p, true)
    );
    let other = f.key.sign("at+jwt", &claims(json!({"jti": "2"}))).unwrap();
    assert!(!f.auth.authenticate(&bearer(&other), &uri).await.unwrap().1);
}

#[tokio::test]
async fn forged_and_misdirected_tokens_are_refused() {
    let f = fixture("bad", &[]);
    let sign = |c: Value| f.key.sign("at+jwt", &c).unwrap();
    let t = now();
    let cases: Vec<(&str, String, Invalid)> = vec![
        (
            "wrong issuer",
            sign(claims(json!({"iss": "https://evil"}))),
            Invalid::Issuer,
        ),
        (
            "another audience",
            sign(claims(json!({"aud": "https://other/mcp"}))),
            Invalid::Audience,
        ),
        (
            "expired",
            sign(claims(json!({"exp": t - 120}))),
            Invalid::Expired,
        ),
        (
            "not yet valid",
            sign(claims(json!({"nbf": t + 120}))),
            Invalid::NotYetValid,
        ),
        (
            "no exp",
            sign(claims(json!({"exp": null}))),
            Invalid::MissingClaim("exp".into()),
        ),
        (
            "no aud",
            sign(claims(json!({"aud": null}))),
            Invalid::MissingClaim("aud".into()),
        ),
    ];
    for (what, token, want) in cases {
        assert_eq!(
            check(&f, &token).await,
            Err(AuthError::Invalid(want)),
            "{what}"
        );
    }
    // Within the leeway, an expired token still passes.
    assert!(
        check(&f, &sign(claims(json!({"exp": t - 10}))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn signatures_and_algorithms_cannot_be_forged() {
    let f = fixture("forge", &[]);
    let good = f.key.sign("at+jwt", &claims(json!({}))).unwrap();
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let body = good.split('.').nth(1).unwrap();
    // alg none, with and without a signature.
    let none = format!("{}.{body}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    assert!(matches!(check(&f, &none).await, Err(AuthError::Invalid(_))));
    // HS256 keyed with the public key (the classic confusion attack).
    let public = serde_json::to_vec(&f.key.jwk).unwrap();
    // Signed by hand: Moat's own crypto provider refuses to make HMAC signatures at all.
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": f.key.kid})),
        b64(&claims(json!({})))
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public);
    let mac = ring::hmac::sign(&key, input.as_bytes());
    let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    assert_eq!(
        check(&f, &hs).await,
        Err(AuthError::Invalid(Invalid::Algorithm("HS256".into())))
    );
    // Another key with the same kid: bad signature.
    let other = SigningKey::create(&f.dir.join("other.pem")).unwrap();
    let mut forged = other.sign("at+jwt", &claims(json!({}))).unwrap();
    let fh = b64(&json!({"alg": "ES256", "typ": "at+jwt", "kid": f.key.kid}));
    forged = format!("{fh}.{}", forged.split_once('.').unwrap().1);
    assert_eq!(
        check(&f, &forged).await,
        Err(AuthError::Invalid(Invalid::Signature))
    );
    // Unknown kid.
    let unknown = other.sign("at+jwt", &claims(json!({}))).unwrap();
    assert_eq!(
        check(&f, &unknown).await,
        Err(AuthError::Invalid(Invalid::UnknownKey))
    );
    // Tampered claims with the original signature.
    let sig = good.rsplit('.').next().unwrap();
    let tampered = format!(
        "{}.{}.{sig}",
        good.split('.').next().unwrap(),
        b64(&claims(json!({"sub": "root"})))
    );
    assert_eq!(
        check(&f, &tampered).await,
        Err(AuthError::Invalid(Invalid::Signature))
    );
    // Garbage.
    for junk in ["x", "a.b.c", "", "Zm9v"] {
        assert!(check(&f, junk).await.is_err(), "{junk:?}");
    }
}

#[tokio::test]
async fn missing_scopes_ask_for_step_up() {
    let f = fixture("scope", &["mcp:tools", "mcp:admin"]);
    let t = f.key.sign("at+jwt", &claims(json!({}))).unwrap();
    let e = check(&f, &t).await.unwrap_err();
    assert_eq!(
        e,
        AuthError::InsufficientScope {
            granted: vec!["mcp:tools".into()],
            missing: vec!["mcp:admin".into()]
        }
    );
    let c = f.auth.challenge(&e).unwrap();
    assert_eq!(
        c.to_str().unwrap(),
        "Bearer error=\"insufficient_scope\", scope=\"mcp:tools mcp:admin\", resource_metadata=\"https://files.example.com/.well-known/oauth-protected-resource/mcp\""
    );
}

#[tokio::test]
async fn the_token_comes_from_one_header_only() {
    let f = fixture("where", &[]);
    let t = f.key.sign("at+jwt", &claims(json!({}))).unwrap();
    let uri: Uri = format!("/mcp?access_token={t}").parse().unwrap();
    assert_eq!(
        f.auth
            .authenticate(&HeaderMap::new(), &uri)
            .await
            .map(|(p, _)| p),
        Err(AuthError::BadRequest("access token in the URL"))
    );
    assert_eq!(
        f.auth.authenticate(&bearer(&t), &uri).await.map(|(p, _)| p),
        Err(AuthError::BadRequest("access token in the URL"))
    );
    let mut two = bearer(&t);
    two.append(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
    );
    assert!(matches!(
        f.auth.authenticate(&two, &Uri::from_static("/mcp")).await,
        Err(AuthError::BadRequest(_))
    ));
    let mut basic = HeaderMap::new();
    basic.insert(
        "authorization",
        HeaderValue::from_static("Basic YWxpY2U6cHc="),
    );
    let e = f
        .auth
        .authenticate(&basic, &Uri::from_static("/mcp"))
        .await
        .unwrap_err();
    assert_eq!(e, AuthError::Missing);
    assert_eq!(
        f.auth.challenge(&e).unwrap().to_str().unwrap(),
        "Bearer resource_metadata=\"https://files.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools mcp:admin\""
    );
}

#[test]
fn metadata_names_the_resource() {
    let f = fixture("meta", &[]);
    let m = &f.auth.metadata;
    assert!(m.serves("/.well-known/oauth-protected-resource/mcp"));
    assert!(m.serves("/.well-known/oauth-protected-resource"));
    let doc: Value = serde_json::from_slice(&m.document).unwrap();
    assert_eq!(doc["resource"], AUD);
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
}
