//! The ID token validator on its own, against tokens made here: every check, and a token that
//! tries to get past it.
use jsonwebtoken::{Algorithm, DecodingKey, jwk::JwkSet};
use serde_json::{Map, Value, json};

use super::jwt::{TestKey, claims, hs256, signing_input, unsigned};
use crate::{
    auth::KeySet,
    authz::federation::id_token::{Expected, Header, IdTokenError, LEEWAY, header, verify},
};

const ISSUER: &str = "https://idp.example.com";
const CLIENT: &str = "moat";
const NONCE: &str = "n-0S6_WzA2Mj";

struct Setup {
    key: TestKey,
    ed: TestKey,
    set: KeySet,
}

fn setup() -> Setup {
    crate::auth::install_crypto();
    let (key, ed) = (TestKey::es256("k1"), TestKey::ed25519("k2"));
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [key.jwk(), ed.jwk()]})).unwrap();
    let (set, skipped) = KeySet::from_jwks(&jwks);
    assert!(skipped.is_empty(), "{skipped:?}");
    Setup { key, ed, set }
}

fn now() -> u64 {
    crate::authz::federation::login::now()
}

/// What `complete` does with a token: the header, the provider's key, the checks.
fn check(s: &Setup, token: &str) -> Result<Map<String, Value>, IdTokenError> {
    let h = header(token)?;
    let key = s
        .set
        .find(h.kid.as_deref(), h.alg)
        .ok_or(IdTokenError::UnknownKey)?;
    verify(token, &h, key, &expected())
}

fn expected() -> Expected<'static> {
    Expected {
        issuer: ISSUER,
        client_id: CLIENT,
        nonce: NONCE,
        now: now(),
    }
}

fn good() -> Value {
    claims(ISSUER, CLIENT, NONCE)
}

fn with(changes: Value) -> Value {
    let mut c = good();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

#[test]
fn a_good_token_of_either_algorithm_is_accepted() {
    let s = setup();
    for key in [&s.key, &s.ed] {
        let claims = check(&s, &key.sign(&good())).unwrap();
        assert_eq!(claims["sub"], "alice");
    }
    // Several audiences, with Moat's client as the authorized party.
    let c = with(json!({"aud": ["other", CLIENT], "azp": CLIENT}));
    assert!(check(&s, &s.key.sign(&c)).is_ok());
    // Within the leeway.
    let c = with(json!({"exp": now() - LEEWAY + 5, "iat": now() + LEEWAY - 5}));
    assert!(check(&s, &s.key.sign(&c)).is_ok());
}

#[test]
fn claims_that_do_not_fit_the_login_are_refused() {
    let s = setup();
    let n = now();
    for (changes, want) in [
        (json!({"nonce": "another"}), IdTokenError::Nonce),
        (json!({"nonce": null}), IdTokenError::MissingClaim("nonce")),
        (json!({"aud": "another-client"}), IdTokenError::Audience),
        (json!({"aud": ["a", "b"]}), IdTokenError::Audience),
        (json!({"aud": null}), IdTokenError::MissingClaim("aud")),
        (
            json!({"aud": [CLIENT, "other"]}),
            IdTokenError::AuthorizedParty,
        ),
        (json!({"azp": "other"}), IdTokenError::AuthorizedParty),
        (
            json!({"aud": [CLIENT, "other"], "azp": "other"}),
            IdTokenError::AuthorizedParty,
        ),
        (
            json!({"iss": "https://evil.example"}),
            IdTokenError::Issuer("https://evil.example".into()),
        ),
        (
            json!({"iss": format!("{ISSUER}/")}),
            IdTokenError::Issuer(format!("{ISSUER}/")),
        ),
        (json!({"iss": null}), IdTokenError::MissingClaim("iss")),
        (json!({"exp": n - LEEWAY - 1}), IdTokenError::Expired),
        (json!({"exp": null}), IdTokenError::MissingClaim("exp")),
        (
            json!({"iat": n + LEEWAY + 60}),
            IdTokenError::IssuedInFuture,
        ),
        (json!({"iat": null}), IdTokenError::MissingClaim("iat")),
        (json!({"nbf": n + 3600}), IdTokenError::NotYetValid),
        (json!({"sub": ""}), IdTokenError::MissingClaim("sub")),
        (json!({"sub": null}), IdTokenError::MissingClaim("sub")),
        (
            json!({"sub": 42}),
            IdTokenError::Malformed("a claim of the wrong type"),
        ),
        (
            json!({"exp": "tomorrow"}),
            IdTokenError::Malformed("a time that is not a number"),
        ),
    ] {
        let got = check(&s, &s.key.sign(&with(changes.clone())));
        assert_eq!(got, Err(want), "{changes}");
    }
}

#[test]
fn unsigned_and_symmetric_tokens_are_refused_before_any_key_is_used() {
    let s = setup();
    assert_eq!(
        check(&s, &unsigned(&good())),
        Err(IdTokenError::Algorithm("none".into()))
    );
    // A signature over `alg: none` does not help either.
    let none = s
        .key
        .sign_with(&json!({"alg": "none", "kid": "k1"}), &good());
    assert_eq!(
        check(&s, &none),
        Err(IdTokenError::Algorithm("none".into()))
    );
    // HMAC keyed with the provider's public key (in every form an attacker could pick).
    let pem_ish = serde_json::to_vec(&s.key.jwk()).unwrap();
    for secret in [s.key.public(), pem_ish] {
        let forged = hs256("k1", &secret, &good());
        assert_eq!(
            check(&s, &forged),
            Err(IdTokenError::Algorithm("HS256".into()))
        );
    }
    // Even handed an HMAC header and key directly, the verifier refuses HMAC.
    let forged = hs256("k1", &s.key.public(), &good());
    let h = Header {
        alg: Algorithm::HS256,
        kid: Some("k1".into()),
    };
    let key = DecodingKey::from_secret(&s.key.public()).unwrap();
    assert_eq!(
        verify(&forged, &h, &key, &expected()),
        Err(IdTokenError::Signature)
    );
    for alg in ["HS384", "HS512", "RSA-OAEP", "", "es256"] {
        let t = s.key.sign_with(&json!({"alg": alg, "kid": "k1"}), &good());
        assert_eq!(check(&s, &t), Err(IdTokenError::Algorithm(alg.into())));
    }
}

#[test]
fn only_the_providers_keys_verify() {
    let s = setup();
    // Another key under a kid the provider does not publish.
    let stranger = TestKey::es256("k9");
    assert_eq!(
        check(&s, &stranger.sign(&good())),
        Err(IdTokenError::UnknownKey)
    );
    // Another key claiming the provider's kid.
    let impostor = TestKey::es256("k1");
    assert_eq!(
        check(&s, &impostor.sign(&good())),
        Err(IdTokenError::Signature)
    );
    // ... with its own public key in the header (or a URL to fetch it from): never used.
    let header = json!({
        "alg": "ES256", "kid": "k1", "jwk": impostor.jwk(),
        "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert",
    });
    assert_eq!(
        check(&s, &impostor.sign_with(&header, &good())),
        Err(IdTokenError::Signature)
    );
    // The provider's EdDSA kid with an ES256 header: the key does not fit the algorithm.
    let t = s
        .key
        .sign_with(&json!({"alg": "ES256", "kid": "k2"}), &good());
    assert_eq!(check(&s, &t), Err(IdTokenError::UnknownKey));
    // A token whose claims were changed after signing.
    let token = s.key.sign(&good());
    let forged_claims = signing_input(&json!({}), &with(json!({"sub": "admin"})));
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let (_, body) = forged_claims.split_once('.').unwrap();
    assert_eq!(
        check(&s, &format!("{head}.{body}.{signature}")),
        Err(IdTokenError::Signature)
    );
}

#[test]
fn headers_of_other_token_kinds_are_refused() {
    let s = setup();
    for (header, want) in [
        (
            json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
            IdTokenError::Type("at+jwt".into()),
        ),
        (
            json!({"alg": "ES256", "kid": "k1", "typ": "logout+jwt"}),
            IdTokenError::Type("logout+jwt".into()),
        ),
        (
            json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
            IdTokenError::Critical,
        ),
        (
            json!({"kid": "k1"}),
            IdTokenError::Malformed("no algorithm in the header"),
        ),
        (
            json!({"alg": "ES256", "kid": 1}),
            IdTokenError::Malformed("kid is not a string"),
        ),
    ] {
        let t = s.key.sign_with(&header, &good());
        assert_eq!(check(&s, &t), Err(want), "{header}");
    }
    for token in ["a.b.c.d.e", "abc", "", "a.b", "!!!.e30.sig"] {
        assert!(
            matches!(check(&s, token), Err(IdTokenError::Malformed(_))),
            "{token}"
        );
    }
}
