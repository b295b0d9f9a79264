//! The documents fetched lately, so one client is not fetched on every authorization request:
//! bounded in entries, each kept for its own time (failures only briefly).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderMap, header::CACHE_CONTROL};

/// How long a document is kept without a `Cache-Control: max-age`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// The longest a document is kept, whatever its `max-age`.
pub const MAX_TTL: Duration = Duration::from_secs(60 * 60);
/// The shortest a document or a failure is kept: one authorization flow sees one document, and
/// a client cannot make Moat fetch on every request.
pub const MIN_TTL: Duration = Duration::from_secs(30);

/// How long to keep a document served with these headers: its `max-age` (`no-store` and
/// `no-cache` count as 0), within [`MIN_TTL`, `MAX_TTL`]; [`DEFAULT_TTL`] without one.
pub fn ttl(headers: &HeaderMap) -> Duration {
    let mut age: Option<u64> = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            let seconds = if directive == "no-store" || directive == "no-cache" {
                Some(0)
            } else if let Some(n) = directive.strip_prefix("max-age=") {
                let n = n.trim_matches('"');
                // All digits but too many for a u64 is "a very long time".
                n.parse::<u64>().ok().or_else(|| {
                    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(u64::MAX)
                })
            } else {
                None
            };
            if let Some(s) = seconds {
                age = Some(age.map_or(s, |a| a.min(s)));
            }
        }
    }
    age.map_or(DEFAULT_TTL, |s| {
        Duration::from_secs(s).clamp(MIN_TTL, MAX_TTL)
    })
}

/// At most `capacity` entries; when full, expired entries go first, then the one that would
/// expire soonest.
pub struct Cache<V> {
    capacity: usize,
    entries: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> Cache<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str, now: Instant) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: String, value: V, ttl: Duration, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (value, now + ttl));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ttl_of(values: &[&str]) -> Duration {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        ttl(&headers)
    }

    #[test]
    fn max_age_sets_the_time_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(ttl_of(&[]), DEFAULT_TTL);
        assert_eq!(ttl_of(&["public"]), DEFAULT_TTL);
        assert_eq!(ttl_of(&["max-age=600"]), s(600));
        assert_eq!(ttl_of(&["public, MAX-AGE=\"120\""]), s(120));
        assert_eq!(ttl_of(&["max-age=99999999"]), MAX_TTL);
        assert_eq!(ttl_of(&["max-age=99999999999999999999999"]), MAX_TTL);
        assert_eq!(ttl_of(&["max-age=1"]), MIN_TTL);
        assert_eq!(ttl_of(&["no-store"]), MIN_TTL);
        assert_eq!(ttl_of(&["max-age=600", "no-cache"]), MIN_TTL);
        assert_eq!(ttl_of(&["max-age=600, max-age=120"]), s(120));
        assert_eq!(ttl_of(&["max-age=-5"]), DEFAULT_TTL);
        assert_eq!(ttl_of(&["max-age=abc"]), DEFAULT_TTL);
    }

    #[test]
    fn entries_expire() {
        let cache = Cache::new(4);
        let t0 = Instant::now();
        cache.insert("a".into(), 1, Duration::from_secs(10), t0);
        assert_eq!(cache.get("a", t0), Some(1));
        assert_eq!(cache.get("a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get("a", t0 + Duration::from_secs(10)), None);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get("b", t0), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = Cache::new(3);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        cache.insert("long".into(), 1, s(100), t0);
        cache.insert("short".into(), 2, s(10), t0);
        cache.insert("mid".into(), 3, s(50), t0);
        // Full: the one expiring soonest goes.
        cache.insert("new".into(), 4, s(60), t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("short", t0), None);
        assert_eq!(cache.get("long", t0), Some(1));
        // Replacing a key does not evict another.
        cache.insert("long".into(), 5, s(100), t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("mid", t0), Some(3));
        // Expired entries go before live ones.
        let later = t0 + s(55);
        cache.insert("other".into(), 6, s(100), later);
        assert_eq!(cache.get("mid", later), None);
        assert_eq!(cache.get("new", later), Some(4));
        assert_eq!(cache.get("long", later), Some(5));
        for i in 0..100 {
            cache.insert(format!("k{i}"), i, s(100), later);
        }
        assert_eq!(cache.len(), 3);
    }
}
