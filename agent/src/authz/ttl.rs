//! A bounded map whose entries expire: the authorization server's short-lived state (requests
//! waiting for login and consent, browser sessions, authorization codes), kept in memory only.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct TtlMap<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
    ttl: Duration,
    capacity: usize,
}

impl<V: Clone> TtlMap<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    /// Adds `value` under `key`; `false` when the map is full of live entries (nothing is
    /// evicted early: a flood of new entries never pushes out someone's pending one).
    pub fn insert(&self, key: String, value: V) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("ttl map lock");
        if entries.len() >= self.capacity {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.capacity {
                return false;
            }
        }
        entries.insert(key, (now + self.ttl, value));
        true
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().expect("ttl map lock");
        entries
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v.clone())
    }

    /// Removes every entry whose value `pred` holds for.
    pub fn remove_where(&self, pred: impl Fn(&V) -> bool) {
        self.entries
            .lock()
            .expect("ttl map lock")
            .retain(|_, (_, v)| !pred(v));
    }

    /// Removes `key` and returns its value if it was live: a value taken is gone for everyone
    /// (single use).
    pub fn take(&self, key: &str) -> Option<V> {
        let mut entries = self.entries.lock().expect("ttl map lock");
        entries
            .remove(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_bounded_and_expiring() {
        let m = TtlMap::new(Duration::from_secs(60), 2);
        assert!(m.insert("a".into(), 1));
        assert!(m.insert("b".into(), 2));
        assert!(!m.insert("c".into(), 3), "full of live entries");
        assert_eq!(m.get("a"), Some(1));
        assert_eq!(m.take("a"), Some(1));
        assert_eq!(m.take("a"), None, "taken once");
        assert!(m.insert("c".into(), 3));
        let short = TtlMap::new(Duration::ZERO, 1);
        assert!(short.insert("x".into(), 1));
        assert_eq!(short.get("x"), None, "expired");
        assert!(short.insert("y".into(), 2), "expired entries make room");
    }
}
