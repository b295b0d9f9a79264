//! Behaviour monitoring: per server, each subject's and each OAuth client's baseline (learned
//! from the requests permitted, kept in the store), the signals a request raises against its
//! subject's baseline, and their score, for policies, the audit record and metrics.
mod judge;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{Value, json};

use self::judge::Live;
pub use self::judge::{Event, Learning};
pub use crate::vocab::{Assessment, Signal, Signals};
use crate::{
    config::{Behaviour, BehaviourMode},
    store::{
        Store, StoreError,
        baselines::{Baseline, Flagged, Whose},
    },
    vocab::Principal,
};

/// How many requests that raised signals a baseline keeps.
const RECENT: usize = 20;
/// A request scoring this or more is not learned, even when permitted: what looks like an
/// attack does not become the subject's normal by being repeated.
pub const LEARN_BELOW: u32 = 50;
/// Baselines are spread over this many locks.
const SHARDS: usize = 16;

/// One server's baselines, as far as its requests have needed them.
pub struct Monitor {
    server: Arc<str>,
    learning: Learning,
    shadow: bool,
    store: Arc<Store>,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    subs: HashMap<String, Entry>,
    clients: HashMap<String, Entry>,
}

impl Shard {
    fn of(&mut self, whose: Whose) -> &mut HashMap<String, Entry> {
        match whose {
            Whose::Sub => &mut self.subs,
            Whose::Client => &mut self.clients,
        }
    }
}

#[derive(Default)]
struct Entry {
    baseline: Baseline,
    live: Live,
    /// Changed since it was last written to the store.
    dirty: bool,
}

impl Monitor {
    /// The monitor of `server`, or None when its `behaviour` is off.
    pub fn new(server: &str, config: Behaviour, store: Arc<Store>) -> Option<Self> {
        (config.mode != BehaviourMode::Off).then(|| Self {
            server: server.into(),
            learning: Learning {
                days: config.learn_days,
                requests: config.learn_requests,
            },
            shadow: config.mode == BehaviourMode::Shadow,
            store,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    /// The signals `events` (one request's) raise against `sub`'s baseline.
    pub fn judge<'a>(&self, sub: &str, events: impl IntoIterator<Item = Event<'a>>) -> Assessment {
        let mut shard = self.shard(sub);
        let entry = self.entry(&mut shard, Whose::Sub, sub);
        let (mut signals, mut learning) = (Signals::default(), false);
        for e in events {
            let (s, l) = judge::judge(&mut entry.baseline, &mut entry.live, &e, self.learning);
            signals = signals.union(s);
            learning |= l;
        }
        Assessment::new(signals, learning, self.shadow)
    }

    /// Settles a judged request: when permitted (and scoring under [`LEARN_BELOW`]), the
    /// subject's and its client's baselines learn it; when refused, the subject's counts a
    /// denial. A request that raised signals
    /// is kept among the subject's recent ones.
    pub fn settle<'a>(
        &self,
        principal: &Principal,
        events: impl IntoIterator<Item = Event<'a>> + Clone,
        assessment: &Assessment,
        permitted: bool,
    ) {
        let sub = principal.sub.as_str();
        let learn = permitted && assessment.score < LEARN_BELOW;
        {
            let mut shard = self.shard(sub);
            let entry = self.entry(&mut shard, Whose::Sub, sub);
            let b = &mut entry.baseline;
            let first = events.clone().into_iter().next();
            for e in events.clone() {
                if learn {
                    judge::learn(b, &e);
                } else if !permitted {
                    judge::denied(b, &mut entry.live, e.at);
                }
            }
            if let (false, Some(e)) = (assessment.signals.is_empty(), first) {
                if b.recent.len() >= RECENT {
                    b.recent.remove(0);
                }
                b.recent.push(Flagged {
                    at: e.at,
                    action: e.action.to_string(),
                    target: e.target.map(|(_, t)| t.to_string()),
                    score: assessment.score,
                    signals: assessment.signals.names().map(String::from).collect(),
                });
            }
            entry.dirty = true;
        }
        if let (true, Some(client)) = (learn, principal.client_id.as_deref()) {
            let mut shard = self.shard(client);
            let entry = self.entry(&mut shard, Whose::Client, client);
            for e in events {
                judge::learn(&mut entry.baseline, &e);
            }
            entry.dirty = true;
        }
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        let h = id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `id`'s entry, read from the store the first time it is needed.
    fn entry<'s>(&self, shard: &'s mut Shard, whose: Whose, id: &str) -> &'s mut Entry {
        let map = shard.of(whose);
        if !map.contains_key(id) {
            let baseline = match self.store.baselines().get(&self.server, whose, id) {
                Ok(b) => b.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(server = %self.server, "reading the baseline of {} {id:?}: {e}; starting a new one", whose.as_str());
                    Baseline::default()
                }
            };
            map.insert(
                id.to_string(),
                Entry {
                    baseline,
                    ..Entry::default()
                },
            );
        }
        map.get_mut(id).expect("inserted above")
    }

    /// Writes the baselines changed since the last time to the store, in one transaction;
    /// how many.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let mut changed: Vec<(Whose, String, Baseline)> = Vec::new();
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for whose in [Whose::Sub, Whose::Client] {
                for (id, e) in shard.of(whose).iter_mut().filter(|(_, e)| e.dirty) {
                    changed.push((whose, id.clone(), e.baseline.clone()));
                    e.dirty = false;
                }
            }
        }
        if changed.is_empty() {
            return Ok(0);
        }
        let put = self.store.baselines().put_all(
            changed
                .iter()
                .map(|(w, id, b)| (&*self.server, *w, id.as_str(), b)),
        );
        if put.is_err() {
            // Written next time.
            for shard in &self.shards {
                let mut shard = shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (whose, id, _) in &changed {
                    if let Some(e) = shard.of(*whose).get_mut(id) {
                        e.dirty = true;
                    }
                }
            }
        }
        put
    }

    /// `id`'s baseline and recent signals, as `moat behaviour show` prints them.
    pub fn show(&self, whose: Whose, id: &str) -> Value {
        let mut shard = self.shard(id);
        let map = shard.of(whose);
        let stored;
        let b = match map.get(id) {
            Some(e) => &e.baseline,
            None => {
                stored = self
                    .store
                    .baselines()
                    .get(&self.server, whose, id)
                    .ok()
                    .flatten();
                match &stored {
                    Some(b) => b,
                    None => {
                        return json!({"server": &*self.server, whose.as_str(): id, "baseline": null});
                    }
                }
            }
        };
        let now = crate::store::record::Timestamp::now().0;
        let learning_until = b
            .since
            .saturating_add(self.learning.days.saturating_mul(86_400));
        json!({
            "server": &*self.server,
            whose.as_str(): id,
            "mode": if self.shadow { "shadow" } else { "enforce" },
            "learning": b.requests == 0 || self.learning.is_learning(b, now),
            "learning_until": {"time": learning_until, "requests": self.learning.requests},
            "baseline": b,
            "signals": Signal::ALL
                .iter()
                .map(|s| (s.name().to_string(), json!({"weight": s.weight(), "means": s.explain()})))
                .collect::<serde_json::Map<String, Value>>(),
        })
    }
}

/// The monitors of the servers with `behaviour` on, by server name.
pub fn monitors(
    config: &crate::config::Config,
    store: &Arc<Store>,
) -> HashMap<String, Arc<Monitor>> {
    config
        .servers
        .iter()
        .filter_map(|s| {
            let m = Monitor::new(&s.name, s.behaviour, store.clone())?;
            Some((s.name.clone(), Arc::new(m)))
        })
        .collect()
}
