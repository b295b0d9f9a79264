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

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, (Owner, Instant)>>,
    /// The sessions whose client declared the elicitation capability (a person can be asked
    /// through it).
    elicits: Mutex<std::collections::HashSet<String>>,
    /// ... and its URL mode.
    elicits_url: Mutex<std::collections::HashSet<String>>,
}

impl Sessions {
    /// Binds a session the upstream just issued to the principal of the request; a session
    /// already bound keeps its owner.
    pub fn bind(&self, id: &str, p: &Principal, elicits: bool, elicits_url: bool) {
        let Ok(mut map) = self.map.lock() else { return };
        if let Some((_, used)) = map.get_mut(id) {
            *used = Instant::now();
            return;
        }
        if map.len() >= CAPACITY {
            map.retain(|_, (_, used)| used.elapsed() < IDLE);
            if map.len() >= CAPACITY
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
            if let Ok(mut e) = self.elicits.lock() {
                e.retain(|id| map.contains_key(id));
            }
            if let Ok(mut e) = self.elicits_url.lock() {
                e.retain(|id| map.contains_key(id));
            }
        }
        map.insert(id.to_string(), (Owner::from(p), Instant::now()));
        if elicits && let Ok(mut e) = self.elicits.lock() {
            e.insert(id.to_string());
        }
        if elicits_url && let Ok(mut e) = self.elicits_url.lock() {
            e.insert(id.to_string());
        }
    }

    /// Whether the client of session `id` declared the elicitation capability.
    pub fn elicits(&self, id: &str) -> bool {
        self.elicits.lock().is_ok_and(|e| e.contains(id))
    }

    /// Whether it declared elicitation's URL mode.
    pub fn elicits_url(&self, id: &str) -> bool {
        self.elicits_url.lock().is_ok_and(|e| e.contains(id))
    }

    pub fn check(&self, id: &str, p: &Principal) -> Binding {
        let Ok(mut map) = self.map.lock() else {
            return Binding::Unknown;
        };
        match map.get_mut(id) {
            Some((owner, used)) if *owner == Owner::from(p) => {
                *used = Instant::now();
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
        if let Ok(mut e) = self.elicits.lock() {
            e.remove(id);
        }
        if let Ok(mut e) = self.elicits_url.lock() {
            e.remove(id);
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
        s.bind("abc", &p("alice", "cli"), true, false);
        assert!(s.elicits("abc") && !s.elicits("nope"));
        assert_eq!(s.check("abc", &p("alice", "cli")), Binding::Own);
        assert_eq!(s.check("abc", &p("mallory", "cli")), Binding::Foreign);
        assert_eq!(
            s.check("abc", &p("alice", "other-client")),
            Binding::Foreign
        );
        assert_eq!(s.check("nope", &p("alice", "cli")), Binding::Unknown);
        // A second bind does not change the owner.
        s.bind("abc", &p("mallory", "cli"), false, false);
        assert_eq!(s.check("abc", &p("mallory", "cli")), Binding::Foreign);
        assert!(s.elicits("abc"), "nor what its client declared");
        s.end("abc");
        assert_eq!(s.check("abc", &p("alice", "cli")), Binding::Unknown);
        assert!(!s.elicits("abc"));
    }
}
