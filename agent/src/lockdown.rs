//! Emergency lockdown: one command stops everything, one server, one subject or one client, at
//! once. New requests are refused (503, a JSON-RPC error naming the lockdown), open streams
//! and the requests in flight on them are cut, the lockdown stays across restarts (the store),
//! and locking and unlocking are audited with who did it.
use std::{
    collections::HashSet,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    audit::AuditLog,
    auth::Revoked,
    store::{Store, StoreError, lockdowns::Lockdown, record::Timestamp},
    vocab::Principal,
};

/// What a lockdown stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    All,
    Server(String),
    Sub(String),
    Client(String),
}

impl Scope {
    /// Its key in the store.
    pub fn key(&self) -> String {
        match self {
            Scope::All => "all".into(),
            Scope::Server(s) => format!("server/{s}"),
            Scope::Sub(s) => format!("sub/{s}"),
            Scope::Client(c) => format!("client/{c}"),
        }
    }
}

/// The lockdowns in force.
pub struct Lockdowns {
    store: Arc<Store>,
    /// The keys of the scopes locked down.
    scopes: RwLock<HashSet<String>>,
    /// Whether any is: the common case (none) costs one load per request.
    any: AtomicBool,
    /// Bumped at each change: open streams check again.
    changed: tokio::sync::watch::Sender<u64>,
    audit: OnceLock<AuditLog>,
}

impl Lockdowns {
    /// The lockdowns the store holds.
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let scopes: HashSet<String> = store
            .lockdowns()
            .all()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &scopes {
            tracing::warn!(scope = %k, "locked down (since before the agent started)");
        }
        Ok(Self {
            any: AtomicBool::new(!scopes.is_empty()),
            scopes: RwLock::new(scopes),
            store,
            changed: tokio::sync::watch::Sender::new(0),
            audit: OnceLock::new(),
        })
    }

    pub fn set_audit(&self, audit: AuditLog) {
        let _ = self.audit.set(audit);
    }

    /// Whether a request to `server` by `principal` (None: anonymous) is stopped.
    pub fn stops(&self, server: &str, principal: Option<&Principal>) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let scopes = self.scopes.read().unwrap_or_else(|p| p.into_inner());
        let mut keys = vec![Scope::All.key(), Scope::Server(server.into()).key()];
        if let Some(p) = principal {
            keys.push(Scope::Sub(p.sub.clone()).key());
            keys.extend(p.client_id.clone().map(|c| Scope::Client(c).key()));
        }
        keys.iter().any(|k| scopes.contains(k))
    }

    /// Ends when a lockdown stops requests to `server` by `principal` (an open stream is then
    /// cut).
    pub fn cut(self: &Arc<Self>, server: Arc<str>, principal: Option<Arc<Principal>>) -> Revoked {
        let (me, mut changed) = (self.clone(), self.changed.subscribe());
        Box::pin(async move {
            loop {
                if me.stops(&server, principal.as_deref()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }

    /// Locks `scope` down, by `by`, for `reason`.
    pub fn lock(&self, scope: &Scope, reason: &str, by: &str) -> Result<Value, StoreError> {
        let key = scope.key();
        let lockdown = Lockdown {
            reason: reason.into(),
            by: by.into(),
            at: Timestamp::now(),
        };
        self.store.lockdowns().set(&key, &lockdown)?;
        self.scopes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        self.any.store(true, Ordering::Release);
        self.changed.send_modify(|n| *n += 1);
        tracing::warn!(scope = %key, reason, by, "LOCKED DOWN");
        self.record("locked", &key, Some(reason), by);
        Ok(json!({ "locked": key, "reason": reason, "by": by }))
    }

    /// Lifts the lockdown of `scope`.
    pub fn unlock(&self, scope: &Scope, by: &str) -> Result<Value, StoreError> {
        let key = scope.key();
        let lifted = self.store.lockdowns().remove(&key)?;
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        scopes.remove(&key);
        self.any.store(!scopes.is_empty(), Ordering::Release);
        drop(scopes);
        if lifted.is_some() {
            tracing::warn!(scope = %key, by, "lockdown lifted");
            self.record("unlocked", &key, None, by);
        }
        Ok(json!({ "unlocked": key, "was_locked": lifted.is_some() }))
    }

    /// The lockdowns in force.
    pub fn list(&self) -> Result<Value, StoreError> {
        let all = self.store.lockdowns().all()?;
        Ok(Value::Array(
            all.into_iter()
                .map(|(scope, l)| json!({"scope": scope, "reason": l.reason, "by": l.by, "at": l.at.0}))
                .collect(),
        ))
    }

    fn record(&self, event: &str, scope: &str, reason: Option<&str>, by: &str) {
        if let Some(a) = self.audit.get() {
            a.record_sync(
                "lockdown",
                json!({ "event": event, "scope": scope, "reason": reason, "by": by }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(sub: &str, client: Option<&str>) -> Principal {
        Principal {
            sub: sub.into(),
            client_id: client.map(str::to_string),
            iss: "https://idp".into(),
            scopes: Vec::new(),
            claims: serde_json::Map::new(),
        }
    }

    #[tokio::test]
    async fn each_scope_stops_what_it_names_and_open_streams_are_cut() {
        let dir = std::env::temp_dir().join(format!("moat-lockdown-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let l = Arc::new(Lockdowns::open(store.clone()).unwrap());
        let (alice, bob) = (principal("alice", Some("cli")), principal("bob", None));
        assert!(!l.stops("files", Some(&alice)));
        let stream = l.cut("files".into(), Some(Arc::new(alice.clone())));
        let stream = tokio::spawn(stream);
        l.lock(&Scope::Sub("alice".into()), "probing", "uid 0")
            .unwrap();
        assert!(l.stops("files", Some(&alice)) && l.stops("mail", Some(&alice)));
        assert!(!l.stops("files", Some(&bob)) && !l.stops("files", None));
        tokio::time::timeout(std::time::Duration::from_secs(5), stream)
            .await
            .expect("alice's open stream is cut")
            .unwrap();
        l.lock(&Scope::Client("cli".into()), "leaked", "uid 0")
            .unwrap();
        l.unlock(&Scope::Sub("alice".into()), "uid 0").unwrap();
        assert!(l.stops("files", Some(&alice)), "still, by its client");
        l.unlock(&Scope::Client("cli".into()), "uid 0").unwrap();
        assert!(!l.stops("files", Some(&alice)));
        l.lock(&Scope::Server("files".into()), "incident", "uid 0")
            .unwrap();
        assert!(l.stops("files", None) && !l.stops("mail", None));
        l.lock(&Scope::All, "incident", "uid 0").unwrap();
        assert!(l.stops("mail", Some(&bob)));
        // They stay across a restart.
        drop(l);
        let l = Lockdowns::open(store).unwrap();
        assert!(l.stops("mail", None));
        l.unlock(&Scope::All, "uid 0").unwrap();
        assert!(!l.stops("mail", None) && l.stops("files", None));
        let _ = std::fs::remove_dir_all(dir);
    }
}
