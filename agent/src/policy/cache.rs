//! Decisions already made, by everything they were made from: the principal whole (sub,
//! client, scopes, groups, the configured claims), the server, the action, the resource, and
//! of the context and the call's arguments only what the deciding policies can read (see
//! [`super::reads`]). Keys are compared whole (never a hash alone), and each field is
//! length-prefixed, so two requests share an entry only when Cedar would see the same
//! request. Bounded: a shard that is full is emptied.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher, RandomState},
    net::IpAddr,
    sync::Mutex,
};

use serde_json::{Map, Value};

use super::{
    input::{Input, hour, text_of, weekday},
    prehashed::BuildPrehashed,
    reads::{Attr, Reads, Tags},
};
use crate::vocab::{Decision, Target};

/// At most this many decisions are kept (over all shards).
pub const ENTRIES: usize = 4096;
/// Nor more than this many bytes of keys and decisions.
const BYTES: usize = 4 << 20;
/// A request whose key would be longer (long arguments the policies read) is not cached.
const MAX_KEY: usize = 4096;
const SHARDS: usize = 16;

pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    /// Keyed per cache, so that what a client sends cannot aim at one shard or bucket.
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Decision, BuildPrehashed>,
    bytes: usize,
}

/// A key, with its hash computed once (for the shard and the map both).
pub struct Key {
    hash: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Cache {
    pub fn key(&self, bytes: Vec<u8>) -> Key {
        Key {
            hash: self.hasher.hash_one(&bytes),
            bytes,
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        // The map uses the low bits (buckets) and the top seven (tags); the shard, others.
        &self.shards[(key.hash >> 32) as usize % SHARDS]
    }

    pub fn get(&self, key: &Key) -> Option<Decision> {
        // A poisoned shard is passed by: deciding afresh is always right.
        self.shard(key).lock().ok()?.map.get(key).cloned()
    }

    pub fn insert(&self, key: Key, decision: Decision) {
        let size = key.bytes.len()
            + decision.reason.len()
            + decision.policies.iter().map(String::len).sum::<usize>()
            + 64;
        let Ok(mut shard) = self.shard(&key).lock() else {
            return;
        };
        if shard.map.len() >= ENTRIES / SHARDS || shard.bytes + size > BYTES / SHARDS {
            shard.map.clear();
            shard.bytes = 0;
        }
        shard.bytes += size;
        if shard.map.insert(key, decision).is_some() {
            // Another thread decided the same request first (the same decision).
            shard.bytes -= size;
        }
    }

    /// How many decisions are kept (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().map.len())
            .sum()
    }
}

/// What [`super::Engine::evaluate`] makes of the principal and the request, as the key reads
/// it: built by the same functions, so the two cannot drift apart.
pub struct Facts<'a> {
    pub groups: &'a [&'a str],
    /// The configured claims, in configuration order.
    pub claims: &'a [String],
    /// The call's arguments, when they become the resource's tags.
    pub tags: Option<&'a Map<String, Value>>,
    pub secs: u64,
}

/// The key bytes for `input` decided by policies that read `reads`, or `None` when it would be
/// longer than [`MAX_KEY`].
pub fn key_bytes(input: &Input<'_>, facts: &Facts<'_>, reads: &Reads) -> Option<Vec<u8>> {
    let mut k = Writer(Vec::with_capacity(256), false);
    let p = input.principal;
    // What selects the policies (and so which of the fields below there are).
    k.str(input.server);
    k.str(input.action);
    match input.target {
        None => k.byte(0),
        Some((kind, name)) => {
            k.byte(match kind {
                Target::Tool => 1,
                Target::Resource => 2,
                Target::Prompt => 3,
            });
            k.str(name);
        }
    }
    // The principal, whole.
    k.str(&p.sub);
    k.opt(p.client_id.as_deref());
    k.len(p.scopes.len());
    p.scopes.iter().for_each(|s| k.str(s));
    k.len(facts.groups.len());
    facts.groups.iter().for_each(|g| k.str(g));
    for claim in facts.claims {
        match p.claims.get(claim) {
            Some(v) => k.text(v),
            None => k.byte(0),
        }
    }
    // The context, as far as it is read.
    for attr in reads.context() {
        match attr {
            Attr::Time => k.u64(facts.secs),
            Attr::Hour => k.u64(hour(facts.secs)),
            Attr::Weekday => k.str(weekday(facts.secs)),
            Attr::SourceIp => match input.source_ip.to_canonical() {
                IpAddr::V4(a) => k.bytes(&a.octets()),
                IpAddr::V6(a) => k.bytes(&a.octets()),
            },
            Attr::Tls => k.str(input.tls.unwrap_or("none")),
            // Part of the principal, above.
            Attr::Scopes | Attr::Client => {}
            Attr::Session => k.str(input.session.unwrap_or("")),
            Attr::Rate => k.u64(input.rate),
            Attr::Listing => k.byte(u8::from(input.listing)),
            Attr::Process => match input.process {
                None => k.byte(0),
                Some(pr) => {
                    k.byte(1);
                    k.u64(pr.pid.into());
                    k.u64(pr.uid.into());
                    k.u64(pr.gid.into());
                    k.str(&pr.comm);
                    k.u64(pr.cgroup_id);
                }
            },
            Attr::Integrity => match input.integrity {
                None => k.byte(0),
                Some(s) => {
                    k.byte(1);
                    k.str(s.state);
                    k.len(s.markers.len());
                    s.markers.iter().for_each(|m| k.str(m));
                }
            },
            Attr::Behaviour => match input.behaviour {
                None => k.byte(0),
                Some(b) => {
                    k.byte(1);
                    k.u64(b.score.into());
                    k.u64(b.signals.bits().into());
                    k.byte(u8::from(b.learning));
                }
            },
            Attr::Content => match input.content {
                None => k.byte(0),
                Some(c) => {
                    k.byte(1);
                    k.len(c.rules.len());
                    c.rules.iter().for_each(|r| k.str(r));
                    k.len(c.kinds.len());
                    c.kinds.iter().for_each(|kind| k.str(kind.name()));
                }
            },
        }
    }
    // The arguments, as tags, as far as they are read.
    match &reads.tags {
        Tags::Keys(keys) => {
            for key in keys {
                match facts.tags.and_then(|t| t.get(key)) {
                    Some(v) => k.text(v),
                    None => k.byte(0),
                }
            }
        }
        Tags::All => match facts.tags {
            None => k.byte(0),
            Some(t) => {
                k.byte(1);
                k.len(t.len());
                for (key, v) in t {
                    k.str(key);
                    k.text(v);
                }
            }
        },
    }
    (!k.1).then_some(k.0)
}

/// Writes self-delimiting fields: every variable-length one is preceded by its length. Set
/// `.1` (and writes no more) once the key would be longer than [`MAX_KEY`].
struct Writer(Vec<u8>, bool);

impl Writer {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        if self.1 || self.0.len() + b.len() > MAX_KEY {
            self.1 = true;
            return;
        }
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.byte(0),
            Some(s) => {
                self.byte(1);
                self.str(s);
            }
        }
    }
    /// A value present, as the tag it becomes ([`text_of`]).
    fn text(&mut self, v: &Value) {
        self.byte(1);
        match v {
            Value::String(s) => self.str(s),
            other => self.str(&text_of(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Effect;

    fn decision(reason: &str) -> Decision {
        Decision::of(Effect::Allow, reason)
    }

    #[test]
    fn keys_are_compared_whole_and_the_cache_is_bounded() {
        let cache = Cache::default();
        cache.insert(cache.key(b"abc".to_vec()), decision("one"));
        assert_eq!(
            cache.get(&cache.key(b"abc".to_vec())),
            Some(decision("one"))
        );
        assert_eq!(cache.get(&cache.key(b"abd".to_vec())), None);
        assert_eq!(cache.get(&cache.key(b"ab".to_vec())), None);
        // Two keys with one hash are two entries.
        let (a, b) = (
            Key {
                hash: 7,
                bytes: b"a".to_vec(),
            },
            Key {
                hash: 7,
                bytes: b"b".to_vec(),
            },
        );
        cache.insert(a, decision("a"));
        assert_eq!(cache.get(&b), None);
        cache.insert(b, decision("b"));
        assert_eq!(
            cache.get(&Key {
                hash: 7,
                bytes: b"a".to_vec()
            }),
            Some(decision("a"))
        );
        assert_eq!(
            cache.get(&Key {
                hash: 7,
                bytes: b"b".to_vec()
            }),
            Some(decision("b"))
        );
        // However many requests, at most ENTRIES decisions, and BYTES bytes.
        for i in 0..20 * ENTRIES {
            cache.insert(cache.key(i.to_le_bytes().to_vec()), decision("many"));
            assert!(cache.len() <= ENTRIES);
        }
        let cache = Cache::default();
        for i in 0..2 * ENTRIES {
            let mut key = vec![0; MAX_KEY];
            key[..8].copy_from_slice(&i.to_le_bytes());
            cache.insert(cache.key(key), decision("big"));
            let bytes: usize = cache.shards.iter().map(|s| s.lock().unwrap().bytes).sum();
            assert!(bytes <= BYTES, "{bytes}");
        }
        assert!(cache.len() <= BYTES / MAX_KEY);
    }
}
