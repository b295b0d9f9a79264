//! Tokens already validated, until they expire: a repeat request skips the signature check.
//! Keyed by the token's SHA-256, so the cache holds no token.
use std::{collections::HashMap, sync::Arc, sync::Mutex};

use super::{Principal, clock::now};

/// At most this many tokens are remembered; when full, expired ones go, then all.
const CAPACITY: usize = 10_000;

/// A token's SHA-256 -> its principal and expiry (seconds since the epoch).
type Entries = HashMap<[u8; 32], (Arc<Principal>, u64)>;

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<Entries>,
}

impl TokenCache {
    pub fn get(&self, token: &str) -> Option<Arc<Principal>> {
        let key = digest(token);
        let entries = self.entries.lock().ok()?;
        entries
            .get(&key)
            .filter(|(_, exp)| *exp >= now())
            .map(|(p, _)| p.clone())
    }

    /// Remembers a validated token until `exp` (seconds since the epoch).
    pub fn insert(&self, token: &str, principal: Arc<Principal>, exp: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY {
            let t = now();
            entries.retain(|_, (_, exp)| *exp >= t);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest(token), (principal, exp));
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Arc<Principal> {
        Arc::new(Principal {
            sub: "alice".into(),
            client_id: None,
            iss: "i".into(),
            scopes: vec![],
            claims: Default::default(),
        })
    }

    #[test]
    fn an_expired_or_other_token_is_not_served_from_the_cache() {
        let c = TokenCache::default();
        c.insert("a.b.c", p(), now() + 60);
        assert!(c.get("a.b.c").is_some());
        assert!(c.get("a.b.d").is_none(), "another token");
        assert!(c.get("a.b.c ").is_none(), "not even a near copy");
        c.insert("x.y.z", p(), now() - 1);
        assert!(c.get("x.y.z").is_none(), "expired");
    }
}
