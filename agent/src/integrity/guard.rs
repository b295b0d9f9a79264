//! One server's pins at work: each entry a listing shows is checked against its pin (and
//! remembered as seen), each call's target against its pin and what was last seen of it; what
//! an operator approves, or what is first seen under trust on first use, becomes a pin.
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use serde_json::{Value, json};

use super::{
    Definition, Marker, definition,
    fetch::{self, Offer},
    markers,
    shadowing::Offers,
};
use crate::{
    audit::AuditLog,
    config::{Integrity, IntegrityMode},
    store::{Store, StoreError, pins::Pin, record::Timestamp},
    upstream::pool::Pool,
    vocab::{List, PinCheck, PinState, Target},
};

/// What a pin is of: an entry of a list, or the server's `instructions` (from `initialize`,
/// pinned under the name `instructions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Entry(List),
    /// A resource template, named by its `uriTemplate`.
    Template,
    Instructions,
}

/// The name a server's instructions are pinned and shown under.
pub const INSTRUCTIONS: &str = "instructions";

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Entry(l) => l.target().noun(),
            Kind::Template => "template",
            Kind::Instructions => INSTRUCTIONS,
        }
    }

    fn named(noun: &str) -> Option<Self> {
        match noun {
            INSTRUCTIONS => Some(Kind::Instructions),
            "template" => Some(Kind::Template),
            _ => [List::Tools, List::Prompts, List::Resources]
                .into_iter()
                .find(|l| l.target().noun() == noun)
                .map(Kind::Entry),
        }
    }

    /// Whether `a` and `b` (as listed) have one definition, without canonicalising them.
    fn same(self, a: &Value, b: &Value) -> bool {
        match self {
            Kind::Entry(l) => definition::same(l, a, b),
            Kind::Template => definition::same_fields(definition::TEMPLATE, a, b),
            Kind::Instructions => a == b,
        }
    }

    /// Its definition and the markers of poisoning in it.
    fn judge(self, name: &str, v: &Value) -> Option<(Definition, BTreeSet<Marker>)> {
        match self {
            Kind::Entry(l) => Some((Definition::of(l, v)?, markers::of_entry(l, v))),
            Kind::Template => Some((
                Definition::of_fields("uriTemplate", definition::TEMPLATE, v)?,
                markers::of_named(Some(name), v),
            )),
            Kind::Instructions => {
                Some((Definition::of_text(name, v), markers::of_text(v.as_str()?)))
            }
        }
    }
}

type Key = (Kind, String);

/// The most entries remembered as seen per server: a server that lists without end cannot grow
/// the agent's memory without bound (an entry beyond is still judged, by its pin, each time).
const MAX_SEEN: usize = 20_000;

/// What was last seen of an entry.
struct Seen {
    definition: Definition,
    /// The entry as listed.
    entry: Value,
    /// The markers of its own definition.
    own: BTreeSet<Marker>,
    /// Those and the markers of shadowing, as of its last check.
    markers: BTreeSet<Marker>,
}

#[derive(Default)]
struct State {
    /// The pinned hash of each entry.
    pins: HashMap<Key, String>,
    seen: HashMap<Key, Seen>,
}

pub struct Guard {
    server: Arc<str>,
    config: Integrity,
    store: Arc<Store>,
    /// What every server with `integrity` on offers: for shadowing.
    offers: Arc<Offers>,
    audit: OnceLock<AuditLog>,
    state: Mutex<State>,
    /// Told when the server announced that a list changed: it is checked at once.
    changed: tokio::sync::Notify,
    /// How Moat asks the server itself (set once the agent's upstream identity is known).
    asker: OnceLock<Asker>,
}

/// Moat's own client of one server.
pub struct Asker {
    pub pool: Pool,
    pub target: fetch::Target,
}

/// The list whose entries a call's target is one of.
pub fn list_of(target: Target) -> List {
    match target {
        Target::Tool => List::Tools,
        Target::Prompt => List::Prompts,
        Target::Resource => List::Resources,
    }
}

/// How an entry with this pin stands, given what was last seen of it (if anything was).
fn standing(pin: Option<&String>, seen: Option<&Seen>) -> PinState {
    match (pin, seen) {
        (None, _) => PinState::Unpinned,
        (Some(p), Some(seen)) if *p != seen.definition.hash => PinState::Changed,
        (Some(_), _) => PinState::Pinned,
    }
}

impl Guard {
    /// The guard of `server`, with the pins the store holds for it; `offers` is shared by the
    /// guards of every server.
    pub fn open(
        server: Arc<str>,
        config: Integrity,
        store: Arc<Store>,
        offers: Arc<Offers>,
    ) -> Result<Self, StoreError> {
        let mut state = State::default();
        for (kind, name, pin) in store.pins().of_server(&server)? {
            if let Some(kind) = Kind::named(&kind) {
                state.pins.insert((kind, name), pin.hash);
            }
        }
        Ok(Self {
            server,
            config,
            store,
            offers,
            audit: OnceLock::new(),
            state: Mutex::new(state),
            changed: tokio::sync::Notify::new(),
            asker: OnceLock::new(),
        })
    }

    /// Where changes to the pins are recorded (set once, when the audit log is open).
    pub fn set_audit(&self, audit: AuditLog) {
        let _ = self.audit.set(audit);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the maps are still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an entry in this state is kept from the client.
    fn hides(&self, state: PinState, markers: &BTreeSet<Marker>) -> bool {
        self.config.mode == IntegrityMode::Enforce
            && (state != PinState::Pinned || self.config.hide_flagged && !markers.is_empty())
    }

    /// Checks one entry of a `list` result and remembers it as seen; None when it has no
    /// name (such an entry is never passed on). Under trust on first use an entry with no pin
    /// is pinned here. An entry as it was last seen is not canonicalised again.
    pub fn entry(&self, list: List, entry: &Value) -> Option<PinCheck> {
        let name = entry.get(list.target().param())?.as_str()?;
        self.judge(Kind::Entry(list), name, entry)
    }

    /// Checks an entry of a `resources/templates/list` result as [`Self::entry`] checks a
    /// list's entry.
    pub fn template(&self, entry: &Value) -> Option<PinCheck> {
        let name = entry.get("uriTemplate")?.as_str()?;
        self.judge(Kind::Template, name, entry)
    }

    /// Checks the server's `instructions` (from `initialize`) as [`Self::entry`] checks an
    /// entry.
    pub fn instructions(&self, text: &str) -> PinCheck {
        let v = Value::String(text.to_string());
        self.judge(Kind::Instructions, INSTRUCTIONS, &v)
            .expect("instructions are a string")
    }

    fn judge(&self, kind: Kind, name: &str, entry: &Value) -> Option<PinCheck> {
        let key = (kind, name.to_string());
        let known = {
            let s = self.lock();
            s.seen
                .get(&key)
                .filter(|seen| kind.same(&seen.entry, entry))
                .map(|seen| (seen.definition.hash.clone(), seen.own.clone()))
        };
        let (fresh, hash, mut found) = match known {
            Some((hash, markers)) => (None, hash, markers),
            None => {
                let (d, markers) = kind.judge(name, entry)?;
                let hash = d.hash.clone();
                (Some(d), hash, markers)
            }
        };
        let own = found.clone();
        if kind == Kind::Entry(List::Tools) {
            found.extend(self.offers.tool(&self.server, name, entry));
        }
        let mut state = {
            let s = self.lock();
            match s.pins.get(&key) {
                Some(h) if *h == hash => PinState::Pinned,
                Some(_) => PinState::Changed,
                None => PinState::Unpinned,
            }
        };
        if state == PinState::Unpinned && self.config.pin_on_first_use {
            let pinned = match &fresh {
                Some(d) => self.pin(kind, d, "first_use").ok(),
                None => kind
                    .judge(name, entry)
                    .and_then(|(d, _)| self.pin(kind, &d, "first_use").ok()),
            };
            // Another listing may have pinned its definition first.
            state = match pinned {
                Some(h) if h == hash => PinState::Pinned,
                Some(_) => PinState::Changed,
                None => PinState::Unpinned,
            };
        }
        let check = PinCheck {
            kind: kind.noun(),
            name: name.to_string(),
            state,
            hash: Some(hash),
            markers: found.iter().map(|m| m.as_str()).collect(),
            hidden: self.hides(state, &found),
        };
        let Some(definition) = fresh else {
            // As last seen; the markers of shadowing may have changed with other servers.
            if let Some(seen) = self.lock().seen.get_mut(&key) {
                seen.markers = found;
            }
            return Some(check);
        };
        if check.notable() {
            tracing::warn!(
                server = %self.server,
                kind = check.kind,
                name = %check.name,
                state = state.as_str(),
                hash = %definition.hash,
                markers = ?check.markers,
                hidden = check.hidden,
                "a definition the pins do not vouch for"
            );
        }
        let mut s = self.lock();
        if s.seen.len() < MAX_SEEN || s.seen.contains_key(&key) {
            s.seen.insert(
                key,
                Seen {
                    definition,
                    entry: entry.clone(),
                    own,
                    markers: found,
                },
            );
        }
        Some(check)
    }

    /// Checks a call's target: pinned when it has a pin and what was last listed of it (if
    /// anything was, since the agent started) is the pinned definition.
    pub fn call(&self, target: Target, name: &str) -> PinCheck {
        self.standing_of(&(Kind::Entry(list_of(target)), name.to_string()))
    }

    /// How `key` stands, from its pin and what was last seen of it.
    fn standing_of(&self, key: &Key) -> PinCheck {
        let s = self.lock();
        let pin = s.pins.get(key);
        let seen = s.seen.get(key);
        let state = standing(pin, seen);
        let none = BTreeSet::new();
        let found = seen.map_or(&none, |s| &s.markers);
        PinCheck {
            kind: key.0.noun(),
            name: key.1.clone(),
            state,
            hash: seen.map(|s| s.definition.hash.clone()).or(pin.cloned()),
            markers: found.iter().map(|m| m.as_str()).collect(),
            hidden: self.hides(state, found),
        }
    }

    /// Checks what Moat's own client fetched (`source`: why it asked), as if a client had
    /// listed it; records what the pins do not vouch for. The checks worth noting.
    pub fn check_offer(&self, offer: &Offer, source: &str) -> Vec<PinCheck> {
        let notable: Vec<PinCheck> = offer
            .lists
            .iter()
            .flat_map(|(list, entries)| entries.iter().filter_map(|e| self.entry(*list, e)))
            .filter(PinCheck::notable)
            .collect();
        let mut notable = notable;
        notable.extend(
            offer
                .templates
                .iter()
                .filter_map(|t| self.template(t))
                .filter(PinCheck::notable),
        );
        if let Some(text) = &offer.instructions {
            notable.extend(Some(self.instructions(text)).filter(PinCheck::notable));
        }
        let entries: usize =
            offer.lists.iter().map(|(_, e)| e.len()).sum::<usize>() + offer.templates.len();
        if notable.is_empty() {
            tracing::debug!(server = %self.server, source, entries, "checked: every entry pinned");
        } else {
            self.record(json!({
                "event": "checked",
                "server": &*self.server,
                "source": source,
                "entries": entries,
                "notable": notable,
            }));
        }
        notable
    }

    /// How Moat asks the server itself.
    pub fn set_asker(&self, asker: Asker) {
        let _ = self.asker.set(asker);
    }

    /// Asks the server what it offers now and checks it (`source`: why); the checks worth
    /// noting.
    pub async fn check_now(&self, source: &str) -> Result<Vec<PinCheck>, String> {
        let a = self
            .asker
            .get()
            .ok_or("no running agent asks the server (`moat tools pin` needs one)")?;
        let offer = fetch::offer(&a.pool, &a.target).await?;
        Ok(self.check_offer(&offer, source))
    }

    /// The server announced that a list changed.
    pub fn list_changed(&self) {
        self.changed.notify_one();
    }

    /// Waits until the server announces that a list changed.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn server(&self) -> &Arc<str> {
        &self.server
    }

    /// Pins `definition` (by `operator` or `first_use`), recording the change.
    /// Pins `definition` (by `operator`, replacing its pin, or on `first_use`, only if it has
    /// none: the first definition stays, however many listings race); the hash pinned now.
    fn pin(&self, kind: Kind, definition: &Definition, by: &str) -> Result<String, StoreError> {
        let key = (kind, definition.name.clone());
        let kind = kind.noun();
        let pin = Pin {
            canonical: definition.canonical.clone(),
            hash: definition.hash.clone(),
            at: Timestamp::now(),
            by: by.to_string(),
        };
        let pins = self.store.pins();
        let written = match by {
            "first_use" => pins.put_new(&self.server, kind, &definition.name, &pin),
            _ => pins.put(&self.server, kind, &definition.name, &pin),
        };
        let old = written.inspect_err(|e| {
            tracing::error!(server = %self.server, kind, name = %definition.name, "pinning: {e}");
        })?;
        if by == "first_use"
            && let Some(first) = old
        {
            self.lock().pins.insert(key, first.hash.clone());
            return Ok(first.hash);
        }
        self.lock().pins.insert(key, pin.hash.clone());
        tracing::warn!(
            server = %self.server,
            kind,
            name = %definition.name,
            hash = %pin.hash,
            by,
            "pinned"
        );
        self.record(json!({
            "event": "pinned",
            "server": &*self.server,
            "entry": kind,
            "name": definition.name,
            "hash": pin.hash,
            "previous": old.map(|o| o.hash),
            "by": by,
        }));
        Ok(pin.hash)
    }

    /// Pins what was last seen of the entries named (all of them: `names` None), by an
    /// operator; the checks of the entries pinned.
    pub fn approve(&self, names: Option<&[String]>) -> Result<Vec<PinCheck>, String> {
        let wanted: Vec<(Kind, Definition)> = {
            let s = self.lock();
            let mut v: Vec<_> = s
                .seen
                .iter()
                .filter(|((_, n), _)| names.is_none_or(|ns| ns.contains(n)))
                .filter(|(k, seen)| s.pins.get(*k) != Some(&seen.definition.hash))
                .map(|((k, _), seen)| (*k, seen.definition.clone()))
                .collect();
            v.sort_by(|a, b| a.1.name.cmp(&b.1.name));
            v
        };
        if let Some(names) = names {
            let s = self.lock();
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !s.seen.keys().any(|(_, k)| k == *n))
                .collect();
            if !unknown.is_empty() {
                return Err(format!(
                    "server `{}` has listed no entry named {unknown:?} since the agent started",
                    self.server
                ));
            }
        }
        let mut done = Vec::new();
        for (kind, d) in wanted {
            self.pin(kind, &d, "operator").map_err(|e| e.to_string())?;
            done.push(self.standing_of(&(kind, d.name)));
        }
        Ok(done)
    }

    /// Every entry pinned or seen, with its state: what `moat tools diff` shows.
    pub fn entries(&self) -> Vec<Value> {
        let s = self.lock();
        let mut keys: BTreeSet<(&'static str, &str)> = BTreeSet::new();
        for (k, n) in s.pins.keys().chain(s.seen.keys()) {
            keys.insert((k.noun(), n));
        }
        keys.into_iter()
            .filter_map(|(kind, name)| {
                let key = (Kind::named(kind)?, name.to_string());
                let (pin, seen) = (s.pins.get(&key), s.seen.get(&key));
                let state = standing(pin, seen);
                Some(json!({
                    "kind": kind,
                    "name": name,
                    "state": state.as_str(),
                    "pinned": pin,
                    "seen": seen.map(|s| &s.definition.hash),
                    "definition": seen.map(|s| &s.definition.canonical),
                    "markers": seen.map(|s| s.markers.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                }))
            })
            .collect()
    }

    /// How many entries are pinned as they are, changed, unpinned (pinned or seen since the
    /// agent started), and how many carry markers: (`pinned`, `changed`, `unpinned`,
    /// `flagged`).
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        let s = self.lock();
        let mut n = [0u64; 4];
        let keys: std::collections::HashSet<&Key> = s.pins.keys().chain(s.seen.keys()).collect();
        for key in keys {
            let seen = s.seen.get(key);
            let i = match standing(s.pins.get(key), seen) {
                PinState::Pinned => 0,
                PinState::Changed => 1,
                PinState::Unpinned => 2,
            };
            n[i] += 1;
            if seen.is_some_and(|seen| !seen.markers.is_empty()) {
                n[3] += 1;
            }
        }
        [
            ("pinned", n[0]),
            ("changed", n[1]),
            ("unpinned", n[2]),
            ("flagged", n[3]),
        ]
    }

    fn record(&self, fields: Value) {
        if let Some(a) = self.audit.get() {
            a.record_sync("integrity", fields);
        }
    }
}

#[cfg(test)]
mod tests;
