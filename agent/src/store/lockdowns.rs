//! Lockdowns: what an operator stopped (everything, a server, a subject or a client), why, by
//! whom and when. They stay until lifted, across restarts.
use serde::{Deserialize, Serialize};

use super::{
    db::{Db as _, Records, Store, Write, all, check_key, get, put},
    error::StoreError,
    record::{Record, Timestamp},
};

const LOCKDOWNS: Records = Records::new("lockdowns");

/// One lockdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockdown {
    pub reason: String,
    /// Who ran the command (the user of the control socket's peer).
    pub by: String,
    pub at: Timestamp,
}

impl Record for Lockdown {
    const TABLE: &'static str = "lockdowns";
    const VERSION: u32 = 1;
}

pub(super) fn init(w: &Write<'_>) -> Result<(), StoreError> {
    w.table(LOCKDOWNS).map(drop)
}

/// The lockdowns, by scope (`all`, `server/NAME`, `sub/SUB`, `client/ID`).
pub struct Lockdowns<'a>(&'a Store);

impl Store {
    pub fn lockdowns(&self) -> Lockdowns<'_> {
        Lockdowns(self)
    }
}

impl Lockdowns<'_> {
    /// Every lockdown in force: (scope, lockdown), in scope order.
    pub fn all(&self) -> Result<Vec<(String, Lockdown)>, StoreError> {
        self.0.read(|r| all(&r.table(LOCKDOWNS)?, r.path))
    }

    /// Locks `scope` down (again: the reason and time are replaced); the lockdown it replaced.
    pub fn set(&self, scope: &str, lockdown: &Lockdown) -> Result<Option<Lockdown>, StoreError> {
        check_key("lockdown scope", scope)?;
        self.0.write(|w| {
            let mut t = w.table(LOCKDOWNS)?;
            let old = get::<Lockdown>(&t, scope, w.path)?;
            put(&mut t, scope, lockdown, w.path)?;
            Ok(old)
        })
    }

    /// Lifts the lockdown of `scope`; the one lifted.
    pub fn remove(&self, scope: &str) -> Result<Option<Lockdown>, StoreError> {
        self.0.write(|w| {
            let mut t = w.table(LOCKDOWNS)?;
            let old = get::<Lockdown>(&t, scope, w.path)?;
            t.remove(scope).db(w.path)?;
            Ok(old)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdowns_stay_until_lifted_across_reopening() {
        let dir = crate::store::tests::Dir::new("lockdowns");
        let dir = dir.state();
        let l = |reason: &str| Lockdown {
            reason: reason.into(),
            by: "uid 0 (root)".into(),
            at: Timestamp(9),
        };
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.lockdowns().set("all", &l("incident")).unwrap(), None);
            store.lockdowns().set("sub/alice", &l("probing")).unwrap();
            let again = store.lockdowns().set("all", &l("still")).unwrap();
            assert_eq!(again, Some(l("incident")));
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.lockdowns().all().unwrap(),
            vec![
                ("all".into(), l("still")),
                ("sub/alice".into(), l("probing"))
            ]
        );
        assert_eq!(store.lockdowns().remove("all").unwrap(), Some(l("still")));
        assert_eq!(store.lockdowns().remove("all").unwrap(), None);
        assert_eq!(store.lockdowns().all().unwrap().len(), 1);
    }
}
