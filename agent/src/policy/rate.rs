//! How often: each principal's calls per tool (or method) over the last minute, counted in
//! one-second buckets, for policies (`context.rate`).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

const WINDOW: usize = 60;
/// Keys beyond this many are forgotten (oldest activity first is not tracked: all go).
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct Rates {
    counts: Mutex<HashMap<(String, String), Window>>,
}

struct Window {
    /// Calls per second, indexed by second modulo WINDOW.
    buckets: [u32; WINDOW],
    /// The second the newest bucket counts.
    newest: u64,
}

impl Rates {
    /// Counts a call by `who` to `what` at `now`; returns the calls in the last minute,
    /// this one included.
    pub fn hit(&self, who: &str, what: &str, now: SystemTime) -> u64 {
        let sec = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let Ok(mut counts) = self.counts.lock() else {
            return 1;
        };
        if counts.len() >= CAPACITY && !counts.contains_key(&(who.into(), what.into())) {
            counts.retain(|_, w| w.newest + WINDOW as u64 > sec);
            if counts.len() >= CAPACITY {
                counts.clear();
            }
        }
        let w = counts
            .entry((who.to_string(), what.to_string()))
            .or_insert(Window {
                buckets: [0; WINDOW],
                newest: sec,
            });
        if sec > w.newest {
            // Clear the buckets of the seconds that passed without calls.
            for s in (w.newest + 1)..=sec.min(w.newest + WINDOW as u64) {
                w.buckets[(s % WINDOW as u64) as usize] = 0;
            }
            w.newest = sec;
        }
        if sec + (WINDOW as u64) > w.newest {
            let b = &mut w.buckets[(sec % WINDOW as u64) as usize];
            *b = b.saturating_add(1);
        }
        w.buckets.iter().map(|&c| u64::from(c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_the_last_minute_only() {
        let r = Rates::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..5 {
            assert_eq!(r.hit("alice", "echo", t0 + Duration::from_secs(i)), i + 1);
        }
        assert_eq!(r.hit("bob", "echo", t0), 1, "per principal");
        assert_eq!(r.hit("alice", "add", t0), 1, "per tool");
        // 61 s after the first call, the first two have left the window.
        assert_eq!(r.hit("alice", "echo", t0 + Duration::from_secs(61)), 4);
        assert_eq!(r.hit("alice", "echo", t0 + Duration::from_secs(300)), 1);
    }
}
