//! Session binding: an `Mcp-Session-Id` belongs to the principal whose request created it, and
//! is refused to anyone else (a session id is not a credential).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::Principal;

/// Who a session belongs to: the same user through the same client, from the same issuer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    iss: String,
    sub: String,
    client_id: Option<String>,
}

impl From<&Principal> for Owner {
    fn from(p: &Principal) -> Self {
        Self {
            iss: p.iss.clone(),
            sub: p.sub.clone(),
            client_id: p.client_id.clone(),
        }
    }
}

/// What a request's session id is, for the principal presenting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Own,
    /// Bound to another principal.
    Foreign,
    /// Not created through Moat (or forgotten): refused like a foreign one, so the client
    /// starts a new session.
    Unknown,
}

/// Sessions idle this long are forgotten (the upstream has most likely ended them).
const IDLE: Duration = Duration::from_secs(24 * 3600);
/// At most this many sessions per server; beyond, the least recently used is forgotten.
const CAPACITY: usize = 100_000;

/// One session: its owner, when it was last used, and what its client declared it can do.
struct Entry {
    owner: Owner,
    used: Instant,
    elicits: Elicits,
}

/// What a session's client declared of elicitation in `initialize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elicits {
    /// The capability (a person can be asked through the client).
    pub form: bool,
    /// Its URL mode (MCP 2025-11-25).
    pub url: bool,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// Binds a session the upstream just issued to the principal of the request, with what
    /// its client declared; a session already bound keeps its owner.
    pub fn bind(&self, id: &str, p: &Principal, elicits: Elicits) {
        let Ok(mut map) = self.map.lock() else { return };
        if let Some(e) = map.get_mut(id) {
            e.used = Instant::now();
            return;
        }
        if map.len() >= CAPACITY {
            map.retain(|_, e| e.used.elapsed() < IDLE);
            if map.len() >= CAPACITY
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = Entry {
            owner: Owner::from(p),
            used: Instant::now(),
            elicits,
        };
        map.insert(id.to_string(), entry);
    }

    /// What the client of session `id` declared of elicitation (nothing for an unknown one).
    pub fn elicits(&self, id: &str) -> Elicits {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(id).map(|e| e.elicits))
            .unwrap_or_default()
    }

    pub fn check(&self, id: &str, p: &Principal) -> Binding {
        let Ok(mut map) = self.map.lock() else {
            return Binding::Unknown;
        };
        match map.get_mut(id) {
            Some(e) if e.owner == Owner::from(p) => {
                e.used = Instant::now();
                Binding::Own
            }
            Some(_) => Binding::Foreign,
            None => Binding::Unknown,
        }
    }

    /// The session ended (DELETE answered with success).
    pub fn end(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sub: &str, client: &str) -> Principal {
        Principal {
            sub: sub.into(),
            client_id: Some(client.into()),
            iss: "https://idp".into(),
            scopes: vec![],
            claims: Default::default(),
        }
    }

    #[test]
    fn a_session_belongs_to_its_creator_only() {
        let s = Sessions::default();
        let form = Elicits {
            form: true,
            url: false,
        };
        s.bind("abc", &p("alice", "cli"), form);
        assert_eq!(s.elicits("abc"), form);
        assert_eq!(s.elicits("nope"), Elicits::default());
        assert_eq!(s.check("abc", &p("alice", "cli")), Binding::Own);
        assert_eq!(s.check("abc", &p("mallory", "cli")), Binding::Foreign);
        assert_eq!(
            s.check("abc", &p("alice", "other-client")),
            Binding::Foreign
        );
        assert_eq!(s.check("nope", &p("alice", "cli")), Binding::Unknown);
        // A second bind does not change the owner.
        s.bind("abc", &p("mallory", "cli"), Elicits::default());
        assert_eq!(s.check("abc", &p("mallory", "cli")), Binding::Foreign);
        assert_eq!(s.elicits("abc"), form, "nor what its client declared");
        s.end("abc");
        assert_eq!(s.check("abc", &p("alice", "cli")), Binding::Unknown);
        assert_eq!(s.elicits("abc"), Elicits::default());
    }
}
