//! Bounds on what anyone may make the authorization server do: password guesses per user
//! name, and dynamic registrations (each one a record in the store).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failed sign-ins of one name within this window...
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// ...at most this many; then the name cannot sign in until the window has passed.
const MAX_FAILURES: u32 = 5;
/// Names tracked at once.
const MAX_TRACKED: usize = 10_000;

/// Failed sign-ins per user name, within [`FAILURE_WINDOW`] of the first.
#[derive(Default)]
pub(super) struct Failures(Mutex<HashMap<String, (u32, Instant)>>);

impl Failures {
    pub(super) fn locked(&self, name: &str) -> bool {
        let map = self.0.lock().expect("failures lock");
        map.get(name)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    pub(super) fn failed(&self, name: &str) {
        let mut map = self.0.lock().expect("failures lock");
        if map.len() >= MAX_TRACKED && !map.contains_key(name) {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                // Bounded memory: a flood of names is not tracked past this (argon2id keeps
                // each guess slow regardless).
                return;
            }
        }
        let entry = map.entry(name.to_string()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub(super) fn succeeded(&self, name: &str) {
        self.0.lock().expect("failures lock").remove(name);
    }
}

/// At most this many dynamic registrations...
const MAX_REGISTRATIONS: u32 = 100;
/// ...in this window (each one is a record in the store: nobody may fill it at will).
const REGISTRATION_WINDOW: Duration = Duration::from_secs(600);

/// Dynamic registrations in the current window.
#[derive(Default)]
pub(super) struct Budget(Mutex<Option<(Instant, u32)>>);

impl Budget {
    /// Takes one registration from the window's budget; false when it is spent.
    pub(super) fn take(&self) -> bool {
        let mut w = self.0.lock().expect("budget lock");
        let now = Instant::now();
        match w.as_mut() {
            Some((start, n)) if now.duration_since(*start) < REGISTRATION_WINDOW => {
                if *n >= MAX_REGISTRATIONS {
                    return false;
                }
                *n += 1;
            }
            _ => *w = Some((now, 1)),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_bounded_per_window() {
        let b = Budget::default();
        for _ in 0..MAX_REGISTRATIONS {
            assert!(b.take());
        }
        assert!(!b.take(), "the window's budget is spent");
    }

    #[test]
    fn failures_lock_one_name() {
        let f = Failures::default();
        for _ in 0..MAX_FAILURES {
            assert!(!f.locked("bob"));
            f.failed("bob");
        }
        assert!(f.locked("bob") && !f.locked("alice"));
        f.succeeded("bob");
        assert!(!f.locked("bob"));
    }
}
