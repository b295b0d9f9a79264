//! Behaviour baselines: per server, what each subject and each OAuth client has done so far
//! (methods, tools, hours, addresses, processes, rates, denials) and the signals it raised last,
//! learned from traffic by [`crate::behaviour`] and kept across restarts.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, check_key, get, put},
    error::StoreError,
    record::Record,
};

const BASELINES: Records = Records::new("baselines");

/// What one subject (or client) has done on one server. Every map is bounded by the learner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Its first request (seconds since the epoch): the learning period counts from here.
    pub since: u64,
    /// Its latest request.
    pub last: u64,
    pub requests: u64,
    /// Requests refused by a policy or a rate limit.
    pub denials: u64,
    /// Requests by action (`tools/call`, `tools/list`, `stream/open`, ...).
    pub methods: BTreeMap<String, u64>,
    /// The tools it called, by name.
    pub tools: BTreeMap<String, TargetUse>,
    /// The resources it read or subscribed to, by URI.
    pub resources: BTreeMap<String, TargetUse>,
    /// The prompts it got, by name.
    pub prompts: BTreeMap<String, TargetUse>,
    /// Requests by hour of the day (UTC).
    pub hours: [u64; 24],
    /// Requests by weekday (UTC), Monday first.
    pub weekdays: [u64; 7],
    /// Requests by source address (IPv6 by its /64).
    pub addresses: BTreeMap<String, u64>,
    /// Requests by local process (`uid N comm NAME`), when the kernel named one.
    pub processes: BTreeMap<String, u64>,
    /// The most requests it made in one minute, from minutes that raised no rate signal.
    pub peak_per_minute: u64,
    /// The most denials it had in one minute.
    pub peak_denials: u64,
    /// The most different targets it called within one enumeration window after a list.
    pub peak_spread: u64,
    /// The latest requests that raised signals, oldest first.
    pub recent: Vec<Flagged>,
}

/// How a subject uses one target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetUse {
    pub calls: u64,
    /// The most calls to it in one minute, from minutes that raised no rate signal.
    pub peak_per_minute: u64,
    /// The argument keys it was called with (top level).
    pub keys: Vec<String>,
    /// The largest arguments it was called with (bytes, about).
    pub max_size: u64,
}

/// A request that raised signals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flagged {
    pub at: u64,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub score: u32,
    pub signals: Vec<String>,
}

impl Record for Baseline {
    const TABLE: &'static str = "baselines";
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(BASELINES).map(drop)
}

/// Whose baseline: a subject's or an OAuth client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Whose {
    Sub,
    Client,
}

impl Whose {
    pub fn as_str(self) -> &'static str {
        match self {
            Whose::Sub => "sub",
            Whose::Client => "client",
        }
    }
}

/// `server/sub/SUB` or `server/client/ID`: server names hold no `/`.
fn key(server: &str, whose: Whose, id: &str) -> String {
    format!("{server}/{}/{id}", whose.as_str())
}

/// The baselines.
pub struct Baselines<'a>(&'a Store);

impl Store {
    pub fn baselines(&self) -> Baselines<'_> {
        Baselines(self)
    }
}

impl Baselines<'_> {
    /// The baseline of `id` on `server`, if it has one.
    pub fn get(
        &self,
        server: &str,
        whose: Whose,
        id: &str,
    ) -> Result<Option<Baseline>, StoreError> {
        let key = key(server, whose, id);
        self.0.read(|r| get(&r.table(BASELINES)?, &key, r.path))
    }

    /// Writes `baselines` (server, whose, id, baseline) in one transaction. A key the store
    /// refuses (an overlong id) is skipped, not the rest.
    pub fn put_all<'b>(
        &self,
        baselines: impl IntoIterator<Item = (&'b str, Whose, &'b str, &'b Baseline)>,
    ) -> Result<usize, StoreError> {
        self.0.write(|w| {
            let mut t = w.table(BASELINES)?;
            let mut n = 0;
            for (server, whose, id, b) in baselines {
                let key = key(server, whose, id);
                if check_key("baseline id", &key).is_ok() {
                    put(&mut t, &key, b, w.path)?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// How many baselines the store holds.
    pub fn count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata as _;
        self.0.read(|r| r.table(BASELINES)?.len().db(r.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_are_kept_per_server_and_whose_across_reopening() {
        let dir = crate::store::tests::Dir::new("baselines");
        let dir = dir.state();
        let b = |n: u64| Baseline {
            since: 1,
            requests: n,
            ..Baseline::default()
        };
        {
            let store = Store::open(&dir).unwrap();
            let n = store
                .baselines()
                .put_all([
                    ("files", Whose::Sub, "alice", &b(3)),
                    ("files", Whose::Client, "alice", &b(4)),
                    ("files2", Whose::Sub, "alice", &b(5)),
                    ("files", Whose::Sub, &"x".repeat(3000), &b(6)),
                ])
                .unwrap();
            assert_eq!(n, 3, "the overlong id is skipped");
        }
        let store = Store::open(&dir).unwrap();
        let get = |s, w, id| store.baselines().get(s, w, id).unwrap();
        assert_eq!(get("files", Whose::Sub, "alice"), Some(b(3)));
        assert_eq!(get("files", Whose::Client, "alice"), Some(b(4)));
        assert_eq!(get("files2", Whose::Sub, "alice"), Some(b(5)));
        assert_eq!(get("files", Whose::Sub, "bob"), None);
        assert_eq!(store.baselines().count().unwrap(), 3);
    }
}
