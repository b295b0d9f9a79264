//! Revocation that takes effect at once: the store's revocations mirrored in memory, checked
//! by the resource servers on every request (cached tokens included), and a signal that ends
//! the open streams of what was revoked.
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::{
    auth::RevocationCheck,
    store::{Store, StoreError, record::Timestamp},
};

/// Access tokens issued (by `iat`) before these moments are refused.
#[derive(Default)]
pub struct Revocations {
    subjects: RwLock<HashMap<String, u64>>,
    clients: RwLock<HashMap<String, u64>>,
    /// Bumped on every revocation: streams watch it and re-check their principal.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Revocations {
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let r = Self::default();
        let revocations = store.revocations();
        *r.subjects.write().expect("revocations lock") = revocations
            .subjects()?
            .into_iter()
            .map(|(k, v)| (k, v.before.0))
            .collect();
        *r.clients.write().expect("revocations lock") = revocations
            .clients()?
            .into_iter()
            .map(|(k, v)| (k, v.before.0))
            .collect();
        Ok(r)
    }

    pub fn refuses(&self, sub: &str, client: Option<&str>, iat: u64) -> bool {
        let by_sub = self
            .subjects
            .read()
            .expect("revocations lock")
            .get(sub)
            .copied();
        let by_client = client.and_then(|c| {
            self.clients
                .read()
                .expect("revocations lock")
                .get(c)
                .copied()
        });
        [by_sub, by_client]
            .into_iter()
            .flatten()
            .any(|before| iat < before)
    }

    pub fn subject_revoked(&self, sub: &str, before: Timestamp) {
        self.subjects
            .write()
            .expect("revocations lock")
            .insert(sub.to_string(), before.0);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn client_revoked(&self, id: &str, before: Timestamp) {
        self.clients
            .write()
            .expect("revocations lock")
            .insert(id.to_string(), before.0);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The check the resource servers run.
    pub fn check(self: &Arc<Self>) -> RevocationCheck {
        let me = self.clone();
        Arc::new(move |sub, client, iat| me.refuses(sub, client, iat))
    }

    /// Changes whenever something is revoked.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_tokens_issued_before_the_revocation_only() {
        let r = Revocations::default();
        assert!(!r.refuses("alice", Some("c"), 100));
        r.subject_revoked("alice", Timestamp(101));
        assert!(r.refuses("alice", Some("c"), 100));
        assert!(!r.refuses("alice", Some("c"), 101), "a token issued after");
        assert!(!r.refuses("bob", Some("c"), 100));
        r.client_revoked("c", Timestamp(50));
        assert!(r.refuses("bob", Some("c"), 49));
        assert!(!r.refuses("bob", None, 49));
    }
}
