//! Verifying keys: the issuer's JWKS, fetched from the URL pinned in the config and kept fresh,
//! or the local issuer's key. Symmetric keys in a JWKS are never used. What changes in a
//! JWKS's keys is reported as [`KeyEvent`]s to whoever runs the fetcher (the agent audits them).
use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey,
    jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::AuthError;

/// One verifying key.
pub struct Key {
    pub kid: Option<String>,
    /// The algorithm the JWK is restricted to, if it names one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// The usable keys of a JWKS, and a note for each key skipped.
    pub fn from_jwks(set: &JwkSet) -> (Self, Vec<String>) {
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &set.keys {
            match key_of(jwk) {
                Ok(k) => keys.push(k),
                Err(why) => skipped.push(format!(
                    "key {}: {why}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                )),
            }
        }
        (Self { keys }, skipped)
    }

    /// The key for a token signed with `alg` naming `kid`; without a kid, the only key of the
    /// algorithm's family.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        let fits = |k: &&Key| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut it = self.keys.iter().filter(fits);
                match (it.next(), it.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
        .map(|k| &k.key)
    }
}

fn key_of(jwk: &Jwk) -> Result<Key, String> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key".into());
    }
    if matches!(
        jwk.algorithm,
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
    ) {
        return Err("not a public key".into());
    }
    let alg = match &jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(algorithm(a).ok_or_else(|| format!("algorithm {a:?} is not used"))?),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    if key.family() == AlgorithmFamily::Hmac {
        return Err("not a public key".into());
    }
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

fn algorithm(a: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Where a server's verifying keys come from.
pub enum KeySource {
    Static(Arc<KeySet>),
    /// Moat's own authorization server's keys, replaced when it rotates them.
    Shared(Arc<std::sync::RwLock<Arc<KeySet>>>),
    Remote(Arc<Jwks>),
    /// Only introspection.
    None,
}

impl KeySource {
    /// The key for `kid`; for a remote JWKS an unknown kid makes it fetch again (at most once
    /// per MIN_REFETCH), in case the issuer rotated its keys.
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        match self {
            Self::Static(set) => set
                .find(kid, alg)
                .cloned()
                .ok_or(AuthError::Invalid(super::Invalid::UnknownKey)),
            Self::Shared(set) => {
                let set = set.read().expect("key set lock").clone();
                set.find(kid, alg)
                    .cloned()
                    .ok_or(AuthError::Invalid(super::Invalid::UnknownKey))
            }
            Self::Remote(jwks) => {
                let set = jwks.current().await?;
                if let Some(k) = set.find(kid, alg) {
                    return Ok(k.clone());
                }
                let set = jwks.refetch(set).await?;
                set.find(kid, alg)
                    .cloned()
                    .ok_or(AuthError::Invalid(super::Invalid::UnknownKey))
            }
            Self::None => Err(AuthError::Invalid(super::Invalid::Malformed)),
        }
    }
}

/// An unknown kid triggers a fetch at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// After a failed fetch, the next attempt comes this much later.
const RETRY: Duration = Duration::from_secs(5);
/// How long a request waits for a fetch it asked for.
const WAIT: Duration = Duration::from_secs(5);

/// What the fetcher last achieved.
#[derive(Default)]
struct State {
    /// The last key set fetched, with when it was fetched.
    set: Option<(Arc<KeySet>, Instant)>,
    /// Attempts so far, successful or not.
    attempts: u64,
    /// Why the last attempt failed; None after a success.
    error: Option<String>,
}

/// A change in a JWKS's keys worth recording: a new set of key ids (or keys again after
/// failures), or the first failure of a run of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    Fetched {
        jwks: String,
        kids: Vec<Option<String>>,
    },
    FetchFailed {
        jwks: String,
        error: String,
    },
}

impl KeyEvent {
    /// The event as an audit record's fields (`kind: auth`).
    pub fn fields(&self) -> Value {
        match self {
            Self::Fetched { jwks, kids } => {
                json!({"event": "keys_fetched", "jwks": jwks, "kids": kids})
            }
            Self::FetchFailed { jwks, error } => {
                json!({"event": "keys_fetch_failed", "jwks": jwks, "error": error})
            }
        }
    }
}

/// A JWKS URL's keys, fetched by `run` (one task) and read by every request.
pub struct Jwks {
    pub uri: String,
    client: reqwest::Client,
    refresh: Duration,
    max_stale: Duration,
    state: watch::Sender<State>,
    last_attempt: Mutex<Option<Instant>>,
    wake: Notify,
}

impl Jwks {
    pub fn new(
        uri: &str,
        ca_file: Option<&std::path::Path>,
        refresh: Duration,
        max_stale: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            uri: uri.to_string(),
            client: super::fetch::client(ca_file)?,
            refresh,
            max_stale,
            state: watch::channel(State::default()).0,
            last_attempt: Mutex::new(None),
            wake: Notify::new(),
        })
    }

    fn fresh(&self, s: &State) -> Option<Arc<KeySet>> {
        s.set
            .as_ref()
            .filter(|(_, at)| at.elapsed() <= self.refresh + self.max_stale)
            .map(|(k, _)| k.clone())
    }

    /// The current keys. Keys are used until `max_stale` past their next refresh: while the
    /// issuer cannot be reached beyond that, requests fail closed at once. Before the first attempt
    /// (or when the keys just aged out) a request waits for the next attempt.
    async fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        let mut rx = self.state.subscribe();
        {
            let s = rx.borrow_and_update();
            if let Some(k) = self.fresh(&s) {
                return Ok(k);
            }
            if let (Some(e), true) = (&s.error, s.attempts > 0) {
                return Err(self.unavailable(e));
            }
        }
        self.wake.notify_one();
        let _ = tokio::time::timeout(WAIT, rx.changed()).await;
        let s = rx.borrow();
        self.fresh(&s)
            .ok_or_else(|| self.unavailable(s.error.as_deref().unwrap_or("no answer in time")))
    }

    fn unavailable(&self, why: &str) -> AuthError {
        AuthError::Unavailable(format!("no current keys from {}: {why}", self.uri))
    }

    /// Fetches again if the last attempt is old enough, and returns the current set then.
    async fn refetch(&self, seen: Arc<KeySet>) -> Result<Arc<KeySet>, AuthError> {
        let due = self
            .last_attempt
            .lock()
            .map(|a| a.is_none_or(|t| t.elapsed() >= MIN_REFETCH))
            .unwrap_or(false);
        if !due {
            return Ok(seen);
        }
        let mut rx = self.state.subscribe();
        rx.mark_unchanged();
        self.wake.notify_one();
        let _ = tokio::time::timeout(WAIT, rx.changed()).await;
        self.current().await
    }

    /// Fetches the keys now, then every `refresh` (sooner after a failure, or when a request
    /// asks, but never more often than MIN_REFETCH on request); runs until the agent stops.
    /// Reports each new set of key ids and the first failure of a run of them to `report`,
    /// and waits for it before the new keys (or the failure) are seen by requests.
    pub async fn run<F, R>(self: Arc<Self>, report: F)
    where
        F: Fn(KeyEvent) -> R,
        R: Future<Output = ()>,
    {
        let mut kids: Option<Vec<Option<String>>> = None;
        let mut failing = false;
        loop {
            if let Ok(mut a) = self.last_attempt.lock() {
                *a = Some(Instant::now());
            }
            let result = self.fetch().await;
            match &result {
                Ok((set, _)) => {
                    let now: Vec<_> = set.keys.iter().map(|k| k.kid.clone()).collect();
                    if failing || kids.as_ref() != Some(&now) {
                        let (jwks, kids) = (self.uri.clone(), now.clone());
                        report(KeyEvent::Fetched { jwks, kids }).await;
                    }
                    (kids, failing) = (Some(now), false);
                }
                Err(e) if !failing => {
                    let (jwks, error) = (self.uri.clone(), e.clone());
                    report(KeyEvent::FetchFailed { jwks, error }).await;
                    failing = true;
                }
                Err(_) => {}
            }
            let next = if result.is_ok() { self.refresh } else { RETRY };
            self.state.send_modify(|s| {
                s.attempts += 1;
                match result {
                    Ok((set, skipped)) => {
                        for why in skipped {
                            tracing::warn!(jwks = %self.uri, "{why}");
                        }
                        tracing::debug!(jwks = %self.uri, keys = set.keys.len(), "keys fetched");
                        s.set = Some((Arc::new(set), Instant::now()));
                        s.error = None;
                    }
                    Err(e) => {
                        tracing::warn!(jwks = %self.uri, "cannot fetch keys: {e}");
                        s.error = Some(e);
                    }
                }
            });
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = self.wake.notified() => {
                    let since = self.last_attempt.lock().ok().and_then(|a| *a).map(|t| t.elapsed());
                    if let Some(since) = since.filter(|s| *s < MIN_REFETCH) {
                        tokio::time::sleep(MIN_REFETCH - since).await;
                    }
                }
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<String>), String> {
        let resp = self
            .client
            .get(&self.uri)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let set: JwkSet = resp.json().await.map_err(|e| e.to_string())?;
        let (keys, skipped) = KeySet::from_jwks(&set);
        if keys.keys.is_empty() {
            return Err(format!("no usable key ({})", skipped.join("; ")));
        }
        Ok((keys, skipped))
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
        sync::{mpsc, oneshot},
        time::timeout,
    };

    use super::*;
    use crate::auth::signing::SigningKey;

    /// Answers every request with `body` (a JWKS) until the task is aborted.
    async fn serve(body: String) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/jwks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.read(&mut [0; 4096]).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        (uri, task)
    }

    #[tokio::test]
    async fn key_changes_are_reported_before_requests_see_them() {
        let dir = std::env::temp_dir().join(format!("moat-jwks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = SigningKey::create(&dir.join("k.pem")).unwrap();
        let (uri, issuer) = serve(json!({"keys": [key.jwk]}).to_string()).await;
        let refresh = Duration::from_millis(100);
        let jwks = Arc::new(Jwks::new(&uri, None, refresh, Duration::from_secs(60)).unwrap());
        // Each report is held until the test lets it go.
        let (tx, mut reported) = mpsc::unbounded_channel();
        let report = move |e: KeyEvent| {
            let (done, wait) = oneshot::channel::<()>();
            tx.send((e, done)).unwrap();
            async move {
                let _ = wait.await;
            }
        };
        let fetcher = tokio::spawn(jwks.clone().run(report));

        let (first, done) = reported.recv().await.unwrap();
        let kids = vec![Some(key.kid.clone())];
        let fetched = KeyEvent::Fetched {
            jwks: uri.clone(),
            kids: kids.clone(),
        };
        assert_eq!(first, fetched);
        assert_eq!(
            first.fields(),
            json!({"event": "keys_fetched", "jwks": uri, "kids": kids})
        );
        // Not reported yet: no key for requests. (Looked at directly: a request asking for
        // keys would make the fetcher wait MIN_REFETCH before its next fetch.)
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            jwks.state.borrow().set.is_none(),
            "keys before their report"
        );
        done.send(()).unwrap();
        let mut state = jwks.state.subscribe();
        timeout(Duration::from_secs(5), state.wait_for(|s| s.set.is_some()))
            .await
            .unwrap()
            .unwrap();
        let set = jwks.current().await.unwrap();
        assert!(set.find(Some(&key.kid), Algorithm::ES256).is_some());

        // Fetched again and again with the same keys: nothing to report, until the issuer
        // goes away; then its first failure only.
        tokio::time::sleep(refresh * 3).await;
        assert!(reported.try_recv().is_err(), "the same keys again");
        issuer.abort();
        let (failed, done) = timeout(Duration::from_secs(10), reported.recv())
            .await
            .unwrap()
            .unwrap();
        done.send(()).unwrap();
        let KeyEvent::FetchFailed { jwks: at, error } = &failed else {
            panic!("{failed:?}");
        };
        assert_eq!(at, &uri);
        assert_eq!(
            failed.fields(),
            json!({"event": "keys_fetch_failed", "jwks": uri, "error": error})
        );
        fetcher.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
