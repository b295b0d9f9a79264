use std::path::PathBuf;

use super::provider::{Pkce, challenge};
use super::*;

fn config(dir: &std::path::Path) -> OAuth2 {
    let secret = dir.join("secret");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&secret, "s3cret\n").unwrap();
    OAuth2 {
        authorization_endpoint: "https://idp.example/authorize?tenant=a".into(),
        token_endpoint: "https://idp.example:8443/token".into(),
        discovery: None,
        revocation_endpoint: None,
        client_id: "moat".into(),
        client_secret_file: secret,
        scopes: vec!["repo".into(), "read:user".into()],
        resource: Some("https://api.example/".into()),
        header: http::header::AUTHORIZATION,
        ca_file: None::<PathBuf>,
    }
}

#[test]
fn pkce_is_rfc_7636_s256() {
    // RFC 7636, appendix B.
    assert_eq!(
        challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let (a, b) = (Pkce::new().unwrap(), Pkce::new().unwrap());
    assert_ne!(a.verifier, b.verifier);
    assert_eq!(a.verifier.len(), 43);
    assert_eq!(a.challenge, challenge(&a.verifier));
}

#[test]
fn the_authorization_url_asks_for_a_code_with_pkce_state_scopes_and_resource() {
    let dir = crate::store::tests::Dir::new("thirdparty-url");
    let p = Provider::new(
        &config(&dir.state()),
        "https://auth.moat.example/upstream/callback",
    )
    .unwrap();
    assert_eq!(p.origin(), "https://idp.example:8443");
    let u = url::Url::parse(&p.authorize_url("st4te", "ch4llenge")).unwrap();
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    assert_eq!(q["tenant"], "a", "the endpoint's own query kept");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "moat");
    assert_eq!(
        q["redirect_uri"],
        "https://auth.moat.example/upstream/callback"
    );
    assert_eq!(q["state"], "st4te");
    assert_eq!(
        (
            q["code_challenge"].as_str(),
            q["code_challenge_method"].as_str()
        ),
        ("ch4llenge", "S256")
    );
    assert_eq!(q["scope"], "repo read:user");
    assert_eq!(q["resource"], "https://api.example/");
    assert!(
        !u.as_str().contains("s3cret"),
        "the client secret never goes to the browser"
    );
}
