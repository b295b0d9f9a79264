//! The relying party against the real OpenID provider of the test fixtures: whole logins, and
//! the callbacks an attacker would send instead of the provider's. The attacks that need a
//! provider misbehaving are in `rp` (a provider made in the test) and `id_token`.
mod id_token;
mod idp;
mod jwt;
mod provider;
mod rp;

use std::collections::HashMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};

use self::provider::{Provider, follow, params};
use super::*;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The provider, with Moat's client registered there (`method`: its authentication at the
/// token endpoint), and the relying party for it.
async fn setup(alg: &str, method: &str) -> (Provider, Federation) {
    let provider = Provider::start(alg).await;
    let (client_id, client_secret) = provider.register(REDIRECT, method).await;
    let config = OidcLogin {
        client_secret,
        ..OidcLogin::new(&provider.issuer, &client_id)
    };
    let fed = Federation::discover(config).await.unwrap();
    (provider, fed)
}

/// The same login kept twice (as by a caller that does not remove it, or by whoever stole it).
fn copy(p: &Pending) -> Pending {
    Pending {
        state: p.state.clone(),
        nonce: p.nonce.clone(),
        verifier: p.verifier.clone(),
        redirect_uri: p.redirect_uri.clone(),
        started: p.started,
    }
}

/// A login at the provider up to the callback: the login kept, and the callback's parameters.
async fn login(fed: &Federation) -> (Pending, CallbackParams) {
    let (url, pending) = fed.begin(REDIRECT);
    (pending, params(&follow(url, REDIRECT).await))
}

#[tokio::test]
async fn a_login_at_the_real_provider_gives_its_user() {
    for alg in ["ES256", "RS256"] {
        let (provider, fed) = setup(alg, "client_secret_basic").await;
        assert_eq!(fed.issuer(), provider.issuer);
        let (url, pending) = fed.begin(REDIRECT);
        assert_eq!(pending.redirect_uri(), REDIRECT);
        let asked: HashMap<_, _> = url.query_pairs().into_owned().collect();
        let challenge = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            pending.verifier.as_bytes(),
        ));
        for (key, value) in [
            ("response_type", "code"),
            ("client_id", fed.config.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile email"),
            ("state", pending.state()),
            ("nonce", pending.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ] {
            assert_eq!(asked.get(key).map(String::as_str), Some(value), "{key}");
        }
        let callback = params(&follow(url, REDIRECT).await);
        assert_eq!(callback.iss.as_deref(), Some(provider.issuer.as_str()));
        let again = copy(&pending);

        let user = fed.complete(pending, &callback).await.unwrap();
        assert_eq!(
            user,
            FederatedUser {
                issuer: provider.issuer.clone(),
                sub: "alice".into(),
                name: None,
                email: None,
                email_verified: false,
                groups: vec![],
                claims: serde_json::Map::new(),
            },
            "{alg}"
        );

        // The same callback once more, with the login kept twice: the code is spent.
        let replayed = fed.complete(again, &callback).await;
        assert!(
            matches!(&replayed, Err(FederationError::Token { error, .. }) if error == "invalid_grant"),
            "{replayed:?}"
        );
    }
}

#[tokio::test]
async fn a_public_client_logs_in_with_pkce_alone_and_a_wrong_verifier_fails() {
    let (_provider, fed) = setup("ES256", "none").await;
    assert_eq!(fed.config.client_secret, None);
    let (pending, callback) = login(&fed).await;
    let mut wrong = copy(&pending);
    wrong.verifier = pending.verifier.replace(|c: char| c.is_ascii_digit(), "x") + "x";
    let got = fed.complete(wrong, &callback).await;
    assert!(
        matches!(&got, Err(FederationError::Token { error, .. }) if error == "invalid_grant"),
        "{got:?}"
    );
    // The provider spends a code on a failed attempt too: a fresh login works.
    let (pending, callback) = login(&fed).await;
    assert_eq!(fed.complete(pending, &callback).await.unwrap().sub, "alice");
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_and_never_repeated() {
    let provider = Provider::start("ES256").await;
    let (client_id, _) = provider.register(REDIRECT, "client_secret_basic").await;
    let secret = "not-the-secret-0123456789";
    let config = OidcLogin {
        client_secret: Some(secret.into()),
        ..OidcLogin::new(&provider.issuer, &client_id)
    };
    assert!(!format!("{config:?}").contains(secret));
    let fed = Federation::discover(config).await.unwrap();
    let (pending, callback) = login(&fed).await;
    let code = callback.code.clone().unwrap();
    let err = fed.complete(pending, &callback).await.unwrap_err();
    assert!(
        matches!(&err, FederationError::Token { status: 401, error, .. } if error == "invalid_client"),
        "{err:?}"
    );
    for shown in [err.to_string(), format!("{err:?}"), format!("{callback:?}")] {
        assert!(!shown.contains(secret) && !shown.contains(&code), "{shown}");
    }
}

#[tokio::test]
async fn a_callback_of_another_login_or_none_is_refused() {
    let (_provider, fed) = setup("ES256", "client_secret_basic").await;
    let (pending, callback) = login(&fed).await;

    // Another login of the same browser (or of the attacker) gets this callback.
    let (_, other) = fed.begin(REDIRECT);
    assert_eq!(
        fed.complete(other, &callback).await,
        Err(FederationError::State)
    );
    let mut changed = callback.clone();
    changed.state = Some(format!("{}A", pending.state()));
    let no_state = CallbackParams {
        state: None,
        ..callback.clone()
    };
    for params in [changed, no_state] {
        let got = fed.complete(copy(&pending), &params).await;
        assert_eq!(got, Err(FederationError::State));
    }
    let query = format!("state=x&{}", follow_query(&callback));
    assert_eq!(
        CallbackParams::parse(&query),
        Err(FederationError::Duplicate("state".into()))
    );
    // None of that spent the code: the login itself still completes.
    assert_eq!(fed.complete(pending, &callback).await.unwrap().sub, "alice");
}

/// The callback's parameters as a query again.
fn follow_query(p: &CallbackParams) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("state", &p.state), ("code", &p.code), ("iss", &p.iss)] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused() {
    let (provider, fed) = setup("ES256", "client_secret_basic").await;
    let (pending, callback) = login(&fed).await;
    for iss in [
        Some("https://attacker.example".to_string()),
        Some(format!("{}/", provider.issuer)),
        None,
    ] {
        let mixed_up = CallbackParams {
            iss: iss.clone(),
            ..callback.clone()
        };
        let got = fed.complete(copy(&pending), &mixed_up).await;
        assert_eq!(
            got,
            Err(FederationError::CallbackIssuer {
                expected: provider.issuer.clone(),
                found: iss
            })
        );
    }
    assert_eq!(fed.complete(pending, &callback).await.unwrap().sub, "alice");
}

#[tokio::test]
async fn an_error_answer_is_refused_even_with_a_code() {
    let (provider, fed) = setup("ES256", "client_secret_basic").await;
    let (pending, callback) = login(&fed).await;
    let denied = CallbackParams {
        error: Some("access_denied".into()),
        error_description: Some("The user\r\nsaid no".into()),
        ..callback.clone()
    };
    assert_eq!(
        fed.complete(copy(&pending), &denied).await,
        Err(FederationError::Denied {
            error: "access_denied".into(),
            description: Some("The usersaid no".into()),
        })
    );
    // The same from a stranger (no state) is not even read as an answer.
    let forged = CallbackParams {
        state: None,
        iss: Some(provider.issuer.clone()),
        error: Some("access_denied".into()),
        ..CallbackParams::default()
    };
    assert_eq!(
        fed.complete(copy(&pending), &forged).await,
        Err(FederationError::State)
    );
    let no_code = CallbackParams {
        code: None,
        ..callback.clone()
    };
    assert_eq!(
        fed.complete(copy(&pending), &no_code).await,
        Err(FederationError::NoCode)
    );
}

#[tokio::test]
async fn an_id_token_for_another_nonce_is_refused() {
    let (_provider, fed) = setup("ES256", "client_secret_basic").await;
    let (mut pending, callback) = login(&fed).await;
    pending.nonce = "another-login's-nonce".into();
    assert_eq!(
        fed.complete(pending, &callback).await,
        Err(FederationError::IdToken(IdTokenError::Nonce))
    );
}

#[tokio::test]
async fn discovery_must_find_the_pinned_issuer() {
    let provider = Provider::start("ES256").await;
    // The provider's metadata names itself without the trailing slash.
    let pinned = format!("{}/", provider.issuer);
    let got = Federation::discover(OidcLogin::new(&pinned, "moat")).await;
    assert_eq!(
        got.err(),
        Some(FederationError::IssuerMismatch {
            expected: pinned,
            found: provider.issuer.clone()
        })
    );
    // Plain http to a name, even one for loopback: refused before connecting.
    let by_name = provider.issuer.replace("127.0.0.1", "localhost");
    let got = Federation::discover(OidcLogin::new(&by_name, "moat")).await;
    assert!(
        matches!(got, Err(FederationError::Url { .. })),
        "{:?}",
        got.err()
    );
}
