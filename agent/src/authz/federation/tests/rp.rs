//! The relying party against a provider made in the test: what it sends to the token and
//! userinfo endpoints, and providers (or whoever answers in their place) that misbehave.
use std::{collections::HashMap, time::Duration};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64},
};
use serde_json::{Value, json};

use super::{
    REDIRECT,
    idp::{ACCESS_TOKEN, CLIENT, Idp, SECRET},
    jwt::TestKey,
};
use crate::authz::federation::*;

/// One login through `fed`, the provider answering with the ID token `make` makes for it.
async fn login_with(
    idp: &Idp,
    fed: &Federation,
    make: impl FnOnce(&Idp, &Pending) -> String,
) -> Result<FederatedUser, FederationError> {
    let (_, pending) = fed.begin(REDIRECT);
    idp.state().id_token = make(idp, &pending);
    let callback = idp.callback(&pending);
    fed.complete(pending, &callback).await
}

fn good(idp: &Idp, pending: &Pending) -> String {
    idp.key.sign(&idp.claims(pending))
}

#[tokio::test]
async fn the_token_request_authenticates_the_client_and_proves_the_verifier() {
    // Over HTTPS, trusting the provider's certificate from the configured CA file only.
    let idp = Idp::start(true).await;
    assert!(idp.issuer.starts_with("https://"));
    let untrusted = OidcLogin {
        ca_file: None,
        ..idp.config()
    };
    let got = Federation::discover(untrusted).await;
    assert!(
        matches!(got, Err(FederationError::Fetch { .. })),
        "{:?}",
        got.err()
    );

    let fed = idp.discover(idp.config()).await;
    let (url, pending) = fed.begin(REDIRECT);
    assert!(url.as_str().starts_with(&format!("{}/auth?", idp.issuer)));
    let asked: HashMap<String, String> = url.query_pairs().into_owned().collect();
    idp.state().id_token = good(&idp, &pending);
    let (verifier, callback) = (pending.verifier.clone(), idp.callback(&pending));
    let user = fed.complete(pending, &callback).await.unwrap();
    assert_eq!(user.sub, "alice");
    assert_eq!(user.issuer, idp.issuer);

    let seen = idp.state().seen.clone();
    let token = seen.iter().find(|s| s.path == "/token").unwrap();
    // RFC 6749 2.3.1: id and secret form-encoded, then Basic.
    let basic = STANDARD.encode(format!("{CLIENT}:s3cr%3At%2F%2B%26%3D"));
    assert_eq!(token.authorization, Some(format!("Basic {basic}")));
    let form: HashMap<String, String> = url::form_urlencoded::parse(token.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "code-1");
    assert_eq!(form["redirect_uri"], REDIRECT);
    assert_eq!(form["code_verifier"], verifier);
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    assert_eq!(B64.encode(digest), asked["code_challenge"]);
    assert!(!form.contains_key("client_secret") && !token.body.contains(SECRET));
    // No claim was missing from the ID token: userinfo was not asked.
    assert_eq!(idp.count("/me"), 0);
}

#[tokio::test]
async fn a_provider_without_basic_authentication_gets_the_secret_in_the_form() {
    let idp = Idp::start(false).await;
    idp.state().metadata["token_endpoint_auth_methods_supported"] = json!(["client_secret_post"]);
    let fed = idp.discover(idp.config()).await;
    assert_eq!(login_with(&idp, &fed, good).await.unwrap().sub, "alice");
    let token = idp
        .state()
        .seen
        .iter()
        .find(|s| s.path == "/token")
        .cloned();
    let token = token.unwrap();
    let form: HashMap<String, String> = url::form_urlencoded::parse(token.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        (form["client_id"].as_str(), form["client_secret"].as_str()),
        (CLIENT, SECRET)
    );
    assert_eq!(token.authorization, None);
}

#[tokio::test]
async fn userinfo_completes_the_id_token_and_must_be_about_the_same_user() {
    let idp = Idp::start(false).await;
    let config = OidcLogin {
        groups_claim: Some("groups".into()),
        claims: vec!["department".into()],
        ..idp.config()
    };
    let fed = idp.discover(config).await;
    idp.state().userinfo = json!({
        "sub": "alice", "groups": ["ops", "admins"], "department": "infra",
        "name": "Alice", "email": "alice@example.com", "email_verified": true,
    });
    let user = login_with(&idp, &fed, good).await.unwrap();
    assert_eq!(user.groups, ["ops", "admins"]);
    assert_eq!(user.claims["department"], "infra");
    assert_eq!(user.name.as_deref(), Some("Alice"));
    assert_eq!(user.email.as_deref(), Some("alice@example.com"));
    assert!(user.email_verified);
    let asked = idp.state().seen.iter().find(|s| s.path == "/me").cloned();
    assert_eq!(
        asked.unwrap().authorization,
        Some(format!("Bearer {ACCESS_TOKEN}"))
    );

    // Claims in the ID token are taken from there, and userinfo is not asked.
    let before = idp.count("/me");
    let user = login_with(&idp, &fed, |idp, p| {
        let mut c = idp.claims(p);
        (c["groups"], c["department"]) = (json!("ops"), json!("x"));
        idp.key.sign(&c)
    })
    .await
    .unwrap();
    assert_eq!(
        (user.groups, &user.claims["department"]),
        (vec!["ops".to_string()], &json!("x"))
    );
    assert_eq!(idp.count("/me"), before);

    // Userinfo about someone else, about no one, or not JSON: the login fails.
    for (userinfo, want) in [
        (
            json!({"sub": "mallory", "groups": ["admins"]}),
            Some("mallory"),
        ),
        (json!({"groups": ["admins"]}), Some("(none)")),
        (json!({"sub": ["alice"]}), Some("[\"alice\"]")),
    ] {
        idp.state().userinfo = userinfo;
        assert_eq!(
            login_with(&idp, &fed, good).await,
            Err(FederationError::UserinfoSubject {
                expected: "alice".into(),
                found: want.unwrap().into()
            })
        );
    }
    let me = "/me".to_string();
    let jwt = (
        200,
        vec![("content-type", "application/jwt".into())],
        b"a.b.c".to_vec(),
    );
    idp.state().raw.insert(me.clone(), jwt);
    let got = login_with(&idp, &fed, good).await;
    assert!(matches!(got, Err(FederationError::Body { .. })), "{got:?}");
    idp.state().raw.insert(me, (401, vec![], vec![]));
    let got = login_with(&idp, &fed, good).await;
    assert!(
        matches!(got, Err(FederationError::Status { status: 401, .. })),
        "{got:?}"
    );
}

#[tokio::test]
async fn keys_are_fetched_again_for_a_new_kid_but_not_for_every_forged_one() {
    let idp = Idp::start(false).await;
    let fed = idp.discover(idp.config()).await;
    assert_eq!(idp.count("/jwks"), 1);

    // Another key under the provider's kid.
    let impostor = TestKey::es256("key-1");
    let got = login_with(&idp, &fed, |idp, p| impostor.sign(&idp.claims(p))).await;
    assert_eq!(got, Err(FederationError::IdToken(IdTokenError::Signature)));

    // Forged kids, one after another: the keys are fetched at most once more.
    for n in 0..5 {
        let stranger = TestKey::es256(&format!("forged-{n}"));
        let got = login_with(&idp, &fed, |idp, p| stranger.sign(&idp.claims(p))).await;
        assert_eq!(got, Err(FederationError::IdToken(IdTokenError::UnknownKey)));
    }
    assert!(idp.count("/jwks") <= 2, "{} fetches", idp.count("/jwks"));

    // The provider rotates its key: the new kid is fetched (once the limit allows).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rotated = TestKey::ed25519("key-2");
    idp.state().jwks = json!({"keys": [rotated.jwk()]});
    let fetches = idp.count("/jwks");
    let user = login_with(&idp, &fed, |idp, p| rotated.sign(&idp.claims(p))).await;
    assert_eq!(user.unwrap().sub, "alice");
    assert_eq!(idp.count("/jwks"), fetches + 1);
    // The old key is gone with it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = login_with(&idp, &fed, good).await;
    assert_eq!(got, Err(FederationError::IdToken(IdTokenError::UnknownKey)));
}

#[tokio::test]
async fn discovery_refuses_another_issuer_insecure_endpoints_and_unusable_keys() {
    let idp = Idp::start(true).await;
    let metadata = idp.state().metadata.clone();
    let with = |key: &str, value: Value| {
        let mut m = metadata.clone();
        m[key] = value;
        m
    };
    let plain = format!("http://127.0.0.1:{}/token", idp.addr.port());
    for (doc, want) in [
        (with("issuer", json!("https://idp.example.com")), "mismatch"),
        (
            with("token_endpoint", json!("http://idp.example.com/token")),
            "url",
        ),
        // The issuer is https: plain http is refused even to loopback.
        (with("token_endpoint", json!(plain)), "url"),
        (with("jwks_uri", json!("http://10.0.0.1/jwks")), "url"),
        (
            with("userinfo_endpoint", json!("file:///etc/passwd")),
            "url",
        ),
    ] {
        idp.state().metadata = doc.clone();
        let got = Federation::discover(idp.config()).await.err();
        let ok = match want {
            "mismatch" => matches!(got, Some(FederationError::IssuerMismatch { .. })),
            _ => matches!(got, Some(FederationError::Url { .. })),
        };
        assert!(ok, "{doc}: {got:?}");
    }
    idp.state().metadata = metadata;
    idp.state().jwks = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "key-1"}]});
    let got = Federation::discover(idp.config()).await.err();
    assert!(matches!(got, Some(FederationError::Keys { .. })), "{got:?}");
    // Nothing of a refused provider was fetched beyond the metadata and the keys.
    assert_eq!(idp.count("/token") + idp.count("/me"), 0);
}

#[tokio::test]
async fn fetches_are_bounded_in_size_and_time_and_never_redirected() {
    let idp = Idp::start(false).await;
    let well_known = "/.well-known/openid-configuration".to_string();
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let huge = vec![b' '; limits.max_bytes + 1];
    idp.state()
        .raw
        .insert(well_known.clone(), (200, vec![], huge));
    let got = Federation::discover_with(idp.config(), limits.clone())
        .await
        .err();
    assert!(
        matches!(got, Some(FederationError::TooLarge { .. })),
        "{got:?}"
    );

    let elsewhere = Idp::start(false).await;
    let to = format!("{}/.well-known/openid-configuration", elsewhere.issuer);
    idp.state()
        .raw
        .insert(well_known.clone(), (302, vec![("location", to)], vec![]));
    let got = Federation::discover_with(idp.config(), limits.clone())
        .await
        .err();
    assert!(
        matches!(got, Some(FederationError::Status { status: 302, .. })),
        "{got:?}"
    );
    assert!(elsewhere.state().seen.is_empty());

    idp.state().raw.clear();
    idp.state().delay = Duration::from_secs(2);
    let got = Federation::discover_with(idp.config(), limits).await.err();
    assert!(
        matches!(got, Some(FederationError::Timeout { .. })),
        "{got:?}"
    );
}

#[tokio::test]
async fn token_endpoint_failures_and_old_logins_are_refused() {
    let idp = Idp::start(false).await;
    let fed = idp.discover(idp.config()).await;
    idp.state().token = Some((
        400,
        json!({"error": "invalid_grant", "error_description": "code\nexpired"}),
    ));
    assert_eq!(
        login_with(&idp, &fed, good).await,
        Err(FederationError::Token {
            status: 400,
            error: "invalid_grant".into(),
            description: Some("codeexpired".into()),
        })
    );
    idp.state().token = Some((200, json!({"access_token": "x", "token_type": "Bearer"})));
    let got = login_with(&idp, &fed, good).await;
    assert!(matches!(got, Err(FederationError::Body { .. })), "{got:?}");
    idp.state().token = Some((500, json!("oops")));
    let got = login_with(&idp, &fed, good).await;
    assert!(
        matches!(got, Err(FederationError::Status { status: 500, .. })),
        "{got:?}"
    );

    // A login started longer ago than the TTL: refused before its code is used.
    idp.state().token = None;
    let tokens = idp.count("/token");
    let (_, mut pending) = fed.begin(REDIRECT);
    pending.started -= PENDING_TTL.as_secs() + 1;
    idp.state().id_token = good(&idp, &pending);
    let callback = idp.callback(&pending);
    assert_eq!(
        fed.complete(pending, &callback).await,
        Err(FederationError::Expired(PENDING_TTL))
    );
    assert_eq!(idp.count("/token"), tokens);
}
