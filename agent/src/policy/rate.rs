//! How often: each principal's calls per tool (or method) over the last minute, counted in
//! one-second buckets, for policies (`context.rate`) and `rate_limits`.
//!
//! The table is bounded, and no caller can lower anyone's count: a count is exact while its key
//! has a window of its own, and otherwise only ever higher.
//! - Each principal has at most [`MAX_NAMES`] windows (one per tool or method name); names
//!   beyond share one overflow window of that principal, which counts them all. So made-up
//!   names count against their sender only, and never push out anyone's windows.
//! - At most [`MAX_PRINCIPALS`] principals are tracked; principals beyond share one overflow
//!   principal (their calls to the same name share a window).
//! - At most [`MAX_WINDOWS`] windows exist in all; beyond, new names go to their principal's
//!   overflow window.
//! - Only expired windows (no call in the last minute) are ever dropped, looked for at most
//!   once a second per table, when it is full. A new name gets a window of its own only while
//!   the overflow window it would otherwise use is idle (no call in the last minute): a name
//!   counted in the overflow never restarts from zero while its calls are still in the minute.
//!
//! Names and principals are kept as 128-bit keyed hashes (SipHash with random keys, two of
//! them): fixed-size entries, no allocation per call, and no name length to bound. Two names
//! with the same hash would share a window (counted higher, never lower); the chance among
//! 100,000 names is below 2^-90, and without the keys nobody can aim for it.
//!
//! Not `governor`: it answers yes or no (GCRA, a smoothed rate) for a limit known in advance,
//! while policies need the number of calls in the last minute; and its keyed stores grow until
//! they are pruned, with no bound of their own.
use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use super::prehashed::BuildPrehashed;

const WINDOW: u64 = 60;
/// Windows (tool or method names) per principal.
pub const MAX_NAMES: usize = 1024;
/// Principals tracked, each with its own names.
pub const MAX_PRINCIPALS: usize = 10_000;
/// Windows in all (about 250 bytes each).
pub const MAX_WINDOWS: usize = 100_000;

pub struct Rates {
    table: Mutex<Table>,
    /// The keys of a name's hash, one per half.
    keys: (RandomState, RandomState),
}

impl Default for Rates {
    fn default() -> Self {
        Self::with_bounds(Bounds {
            names: MAX_NAMES,
            principals: MAX_PRINCIPALS,
            windows: MAX_WINDOWS,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bounds {
    names: usize,
    principals: usize,
    windows: usize,
}

/// A name (or principal) as its 128-bit keyed hash.
type Key = u128;

/// The key of "everything": a principal's calls to anything, or the server's calls by anyone.
/// Names are never given it (see `Rates::key`), so no tool or `sub` can share its count.
const ALL: Key = u128::MAX;

/// The keys are already uniformly random: the map uses their low bits as they are.
type Map<V> = HashMap<Key, V, BuildPrehashed>;

struct Table {
    bounds: Bounds,
    principals: Map<Names>,
    /// Shared by the principals beyond `bounds.principals`.
    overflow: Names,
    /// Windows of all principals (the overflow principal's included; overflow windows not).
    windows: usize,
    /// The second expired windows and principals were last looked for in all.
    swept: Option<u64>,
}

/// One principal's windows.
#[derive(Default)]
struct Names {
    windows: Map<Window>,
    /// Shared by the names beyond the bounds.
    overflow: Window,
    /// The last second the principal called anything.
    newest: u64,
    /// The second its expired windows were last looked for.
    swept: Option<u64>,
}

#[derive(Clone)]
struct Window {
    /// Calls per second, indexed by second modulo WINDOW.
    buckets: [u32; WINDOW as usize],
    /// The second the newest bucket counts.
    newest: u64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            buckets: [0; WINDOW as usize],
            newest: 0,
        }
    }
}

impl Rates {
    fn with_bounds(bounds: Bounds) -> Self {
        Self {
            table: Mutex::new(Table {
                bounds,
                principals: Map::default(),
                overflow: Names::default(),
                windows: 0,
                swept: None,
            }),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// Counts a call by `who` to `what` at `now`; returns the calls in the last minute,
    /// this one included (see the module's doc for when it counts more).
    pub fn hit(&self, who: &str, what: &str, now: SystemTime) -> u64 {
        self.hit_keys(self.key(who), self.key(what), now)
    }

    /// Counts a call by `who` to anything; returns `who`'s calls in the last minute.
    pub fn hit_principal(&self, who: &str, now: SystemTime) -> u64 {
        self.hit_keys(self.key(who), ALL, now)
    }

    /// Counts a call by anyone; returns the server's calls in the last minute.
    pub fn hit_server(&self, now: SystemTime) -> u64 {
        self.hit_keys(ALL, ALL, now)
    }

    fn hit_keys(&self, who: Key, what: Key, now: SystemTime) -> u64 {
        let sec = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // Counts stay consistent whatever a panicking holder left: no reason to stop counting.
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.hit(who, what, sec)
    }

    /// A name's key: two keyed hashes, never [`ALL`] (the lowest bit is cleared).
    fn key(&self, s: &str) -> Key {
        ((u128::from(self.keys.0.hash_one(s)) << 64) | u128::from(self.keys.1.hash_one(s))) & !1
    }

    /// (principals, windows in all, the largest principal's windows), for tests.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize) {
        let t = self.table.lock().unwrap();
        let counted: usize = t.overflow.windows.len()
            + t.principals
                .values()
                .map(|n| n.windows.len())
                .sum::<usize>();
        assert_eq!(counted, t.windows, "the window count is kept right");
        let largest = t
            .principals
            .values()
            .chain([&t.overflow])
            .map(|n| n.windows.len())
            .max()
            .unwrap_or(0);
        (t.principals.len(), t.windows, largest)
    }
}

impl Table {
    fn hit(&mut self, who: Key, what: Key, sec: u64) -> u64 {
        if !self.principals.contains_key(&who) {
            self.admit(who, sec);
        }
        let Self {
            bounds,
            principals,
            overflow,
            windows,
            ..
        } = self;
        let names = principals.get_mut(&who).unwrap_or(overflow);
        names.newest = names.newest.max(sec);
        if let Some(w) = names.windows.get_mut(&what) {
            return w.hit(sec);
        }
        if names.windows.len() >= bounds.names {
            names.sweep(sec, windows);
        }
        if *windows >= bounds.windows {
            // Sweeping every principal: at most once a second (see `admit`).
            self.sweep_all(sec);
        }
        let Self {
            bounds,
            principals,
            overflow,
            windows,
            ..
        } = self;
        let names = principals.get_mut(&who).unwrap_or(overflow);
        if names.windows.len() < bounds.names
            && *windows < bounds.windows
            && names.overflow.idle(sec)
        {
            *windows += 1;
            return names.windows.entry(what).or_default().hit(sec);
        }
        names.overflow.hit(sec)
    }

    /// Gives `who` (not tracked yet) a table of its own if there is room and the overflow
    /// principal, where its calls of the last minute may be counted, is idle.
    fn admit(&mut self, who: Key, sec: u64) {
        if self.principals.len() >= self.bounds.principals {
            self.sweep_all(sec);
        }
        if self.principals.len() < self.bounds.principals && self.overflow.idle(sec) {
            self.principals.insert(who, Names::default());
        }
    }

    /// Drops every expired window, and principals idle for a minute (at most once a second).
    fn sweep_all(&mut self, sec: u64) {
        if self.swept == Some(sec) {
            return;
        }
        self.swept = Some(sec);
        let windows = &mut self.windows;
        self.principals.retain(|_, names| {
            if names.idle(sec) {
                *windows -= names.windows.len();
                return false;
            }
            names.sweep(sec, windows);
            true
        });
        self.overflow.sweep(sec, windows);
    }
}

impl Names {
    /// No call in the last minute.
    fn idle(&self, sec: u64) -> bool {
        self.newest + WINDOW <= sec
    }

    /// Drops expired windows (at most once a second), counting them off `windows`.
    fn sweep(&mut self, sec: u64, windows: &mut usize) {
        if self.swept == Some(sec) {
            return;
        }
        self.swept = Some(sec);
        let before = self.windows.len();
        self.windows.retain(|_, w| !w.idle(sec));
        *windows -= before - self.windows.len();
    }
}

impl Window {
    /// No call in the last minute.
    fn idle(&self, sec: u64) -> bool {
        self.newest + WINDOW <= sec || self.buckets.iter().all(|&b| b == 0)
    }

    fn hit(&mut self, sec: u64) -> u64 {
        if sec > self.newest {
            // Clear the buckets of the seconds that passed without calls.
            for s in (self.newest + 1)..=sec.min(self.newest + WINDOW) {
                self.buckets[(s % WINDOW) as usize] = 0;
            }
            self.newest = sec;
        }
        if sec + WINDOW > self.newest {
            let b = &mut self.buckets[(sec % WINDOW) as usize];
            *b = b.saturating_add(1);
        }
        self.buckets.iter().map(|&c| u64::from(c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn counts_the_last_minute_only() {
        let r = Rates::default();
        for i in 0..5 {
            assert_eq!(r.hit("alice", "echo", at(i)), i + 1);
        }
        assert_eq!(r.hit("bob", "echo", at(0)), 1, "per principal");
        assert_eq!(r.hit("alice", "add", at(0)), 1, "per tool");
        // 61 s after the first call, the first two have left the window.
        assert_eq!(r.hit("alice", "echo", at(61)), 4);
        assert_eq!(r.hit("alice", "echo", at(300)), 1);
    }

    /// The attack the table used to fall to: 100,000+ made-up names from one caller, which
    /// once emptied the whole table.
    #[test]
    fn made_up_names_from_one_caller_lower_nobody_s_count_and_grow_nothing() {
        let r = Rates::default();
        for _ in 0..5 {
            r.hit("mallory", "echo", at(0));
            r.hit("alice", "echo", at(0));
        }
        // mallory's table: echo and 1,023 made-up names; every further name goes to its
        // overflow window, which counts them all (all within the minute).
        let own = MAX_NAMES as u64 - 1;
        for i in 0..150_000u64 {
            let n = r.hit("mallory", &format!("made-up-{i}"), at(i / 5_000));
            assert_eq!(n, if i < own { 1 } else { i - own + 1 }, "name {i}");
        }
        // Their own count for a real tool, and everyone else's, are exact.
        assert_eq!(r.hit("mallory", "echo", at(29)), 6);
        assert_eq!(r.hit("alice", "echo", at(29)), 6);
        assert_eq!(r.hit("bob", "echo", at(29)), 1, "newcomers get windows");
        let (principals, windows, largest) = r.sizes();
        assert_eq!(principals, 3);
        assert!(largest <= MAX_NAMES, "{largest}");
        assert!(windows <= MAX_NAMES + 2, "{windows}");
        // A made-up name that came late shares the overflow: it counts all of them in the
        // minute, far more than its own one call, never less.
        assert!(r.hit("mallory", "made-up-late", at(29)) > 100_000);
        // A real tool mallory had not called before shares it too: higher, never lower.
        assert!(r.hit("mallory", "add", at(29)) > 100_000);
    }

    #[test]
    fn many_principals_lower_nobody_s_count_and_grow_nothing() {
        let r = Rates::default();
        for _ in 0..3 {
            r.hit("alice", "echo", at(0));
        }
        for i in 0..(MAX_PRINCIPALS as u64 + 5_000) {
            r.hit(&format!("user-{i}"), "echo", at(1));
        }
        assert_eq!(r.hit("alice", "echo", at(2)), 4);
        assert_eq!(r.hit("user-0", "echo", at(2)), 2);
        let (principals, _, _) = r.sizes();
        assert_eq!(principals, MAX_PRINCIPALS);
        // Principals beyond share the overflow principal's windows: their calls to `echo`
        // count together.
        let late = r.hit("late-comer", "echo", at(2));
        assert!(late > 5_000, "{late}");
        // A minute later every principal but alice is idle: room again, exact counts.
        assert_eq!(r.hit("alice", "echo", at(61)), 2, "calls at 2 and 61");
        assert_eq!(r.hit("late-comer", "echo", at(63)), 1);
        let (principals, _, _) = r.sizes();
        assert_eq!(principals, 2, "idle principals were dropped");
    }

    #[test]
    fn windows_in_all_are_bounded() {
        let r = Rates::default();
        let per = MAX_NAMES as u64;
        let principals = MAX_WINDOWS as u64 / per + 10;
        r.hit("alice", "echo", at(0));
        for p in 0..principals {
            for n in 0..per {
                r.hit(&format!("p{p}"), &format!("t{n}"), at(1));
            }
        }
        let (_, windows, _) = r.sizes();
        assert!(windows <= MAX_WINDOWS, "{windows}");
        assert_eq!(
            r.hit("alice", "echo", at(2)),
            2,
            "an existing window is kept"
        );
        // Beyond the bound, a new name of a new principal is counted in its overflow window.
        assert_eq!(r.hit("carol", "echo", at(2)), 1);
        assert_eq!(r.hit("carol", "add", at(2)), 2, "shares carol's overflow");
        assert_eq!(r.hit("dave", "add", at(2)), 1, "not anyone else's");
        // Once they expire, windows are dropped and names get their own again.
        assert_eq!(r.hit("alice", "other", at(62)), 1);
        let (_, windows, _) = r.sizes();
        assert!(windows < 10, "{windows}");
    }

    #[test]
    fn a_name_out_of_the_overflow_does_not_restart_from_zero_within_the_minute() {
        let r = Rates::with_bounds(Bounds {
            names: 2,
            principals: 10,
            windows: 100,
        });
        r.hit("m", "a", at(0));
        r.hit("m", "b", at(0));
        assert_eq!(r.hit("m", "c", at(0)), 1, "overflow");
        assert_eq!(r.hit("m", "c", at(30)), 2);
        // a and b expire at 60; c's calls are in the overflow until 90.
        assert_eq!(
            r.hit("m", "c", at(70)),
            2,
            "still in the overflow: calls at 30 and 70"
        );
        assert_eq!(
            r.hit("m", "d", at(131)),
            1,
            "overflow idle: d gets its own window"
        );
        assert_eq!(
            r.hit("m", "c", at(131)),
            1,
            "and c, with room: its calls expired"
        );
    }

    /// A model: every call kept. The table never counts fewer calls in the minute than were
    /// made, counts exactly while nothing went beyond the bounds, and stays within them.
    fn exact(calls: &[(u8, u8, u64)], who: u8, what: u8, sec: u64) -> u64 {
        calls
            .iter()
            .filter(|&&(p, n, s)| p == who && n == what && s + WINDOW > sec && s <= sec)
            .count() as u64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn never_lower_exact_within_bounds_and_bounded(
            steps in prop::collection::vec((0u8..6, 0u8..8, 0u64..4), 1..300)
        ) {
            let bounds = Bounds { names: 3, principals: 3, windows: 7 };
            let r = Rates::with_bounds(bounds);
            let mut calls = Vec::new();
            let mut sec = 0;
            let mut beyond = false;
            let mut seen: HashMap<u8, std::collections::HashSet<u8>> = HashMap::new();
            for (who, what, step) in steps {
                sec += step * 20;
                calls.push((who, what, sec));
                let names = seen.entry(who).or_default();
                names.insert(what);
                beyond |= names.len() > bounds.names || seen.len() > bounds.principals
                    || seen.values().map(|n| n.len()).sum::<usize>() > bounds.windows;
                let n = r.hit(&format!("p{who}"), &format!("n{what}"), at(sec));
                let e = exact(&calls, who, what, sec);
                prop_assert!(n >= e, "counted {} of {} calls", n, e);
                if !beyond {
                    prop_assert_eq!(n, e);
                }
                let (principals, windows, largest) = r.sizes();
                prop_assert!(principals <= bounds.principals);
                prop_assert!(windows <= bounds.windows);
                prop_assert!(largest <= bounds.names);
            }
        }
    }
}

#[cfg(test)]
mod aggregate_tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::Rates;

    #[test]
    fn no_name_shares_the_aggregate_counts() {
        let r = Rates::default();
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _ in 0..5 {
            r.hit("alice", "\0all", t);
            r.hit("\0all", "\0all", t);
        }
        assert_eq!(r.hit_principal("alice", t), 1);
        assert_eq!(r.hit_server(t), 1);
        assert_eq!(r.hit_server(t), 2);
    }
}
